//! Per-type subscription state of one connection, and how a request changes it: the
//! nonce/version/ACK/NACK rules of the xDS protocol (state of the world).

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use serde::{Serialize, Serializer};

use super::cache::ProxyResources;
use super::gen::Subscription;
use super::subscriptions::NameSets;
use super::types;

/// What one type of one connection has asked for and been sent.
#[derive(Debug, Clone, Serialize)]
pub struct Watch {
    pub type_url: String,
    /// `None` until the first request of the type; then what the proxy subscribes to.
    #[serde(skip)]
    pub subscription: Subscription,
    /// The names of the last request (shared with `subscription` when it names them).
    #[serde(rename = "resource_names", serialize_with = "names_list")]
    requested: Arc<BTreeSet<String>>,
    pub nonce_sent: String,
    pub nonce_acked: String,
    pub version_sent: String,
    pub version_acked: String,
    pub last_error: Option<String>,
    #[serde(with = "humantime_serde_opt")]
    pub last_sent: Option<SystemTime>,
    /// What the last response was made of. Holding it keeps it in the push's shared
    /// cache for proxies of the same shape; the cache keeps nothing nobody holds.
    #[serde(skip)]
    held: Option<ProxyResources>,
}

fn names_list<S: Serializer>(names: &Arc<BTreeSet<String>>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(names.iter())
}

/// The empty name set, shared by every watch that names nothing.
fn no_names() -> Arc<BTreeSet<String>> {
    static EMPTY: OnceLock<Arc<BTreeSet<String>>> = OnceLock::new();
    EMPTY.get_or_init(Arc::default).clone()
}

/// Whether `names` (a request's list) holds exactly the names of `set`.
fn same_names(set: &BTreeSet<String>, names: &[String]) -> bool {
    names.len() == set.len() && names.iter().all(|n| set.contains(n))
}

mod humantime_serde_opt {
    use std::time::SystemTime;

    pub fn serialize<S: serde::Serializer>(
        t: &Option<SystemTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&humantime::format_rfc3339_seconds(*t).to_string()),
            None => s.serialize_none(),
        }
    }
}

/// What to do with a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Send the type's resources now.
    Respond,
    /// The proxy accepted what we sent; nothing to send.
    Ack,
    /// The proxy rejected what we sent; keep serving, send nothing.
    Nack(String),
    /// A reply to a response that has since been superseded.
    StaleNonce,
    /// The proxy dropped every resource of the type.
    Unsubscribed,
}

impl Watch {
    pub fn new(type_url: &str) -> Watch {
        Watch {
            type_url: type_url.to_owned(),
            subscription: Subscription::Names(no_names()),
            requested: no_names(),
            nonce_sent: String::new(),
            nonce_acked: String::new(),
            version_sent: String::new(),
            version_acked: String::new(),
            last_error: None,
            last_sent: None,
            held: None,
        }
    }

    /// Applies a SotW request. `first` is whether this is the first request of the type;
    /// requested names are shared through `sets`.
    pub fn on_request(
        &mut self,
        first: bool,
        names: &[String],
        nonce: &str,
        error: Option<String>,
        sets: &NameSets,
    ) -> Decision {
        // A first request carrying a nonce is a proxy reconnecting with what it had: answer.
        if !first && !nonce.is_empty() && nonce != self.nonce_sent {
            return Decision::StaleNonce;
        }
        if let Some(e) = error {
            self.last_error = Some(e.clone());
            return Decision::Nack(e);
        }
        // An ACK repeats the names it had: compared in place, nothing is copied.
        let unchanged = same_names(&self.requested, names);
        let requested = if unchanged {
            self.requested.clone()
        } else if names.is_empty() {
            no_names()
        } else {
            sets.intern(names)
        };
        let previous = std::mem::replace(&mut self.requested, requested.clone());
        if !nonce.is_empty() && !first {
            self.nonce_acked = nonce.to_owned();
            self.version_acked = self.version_sent.clone();
            self.last_error = None;
        }
        if first || nonce.is_empty() {
            // A new subscription (or a reconnect that re-sends what it had).
            self.subscription = if requested.is_empty() && types::is_wildcard(&self.type_url) {
                Subscription::Wildcard
            } else {
                Subscription::Names(requested)
            };
            return Decision::Respond;
        }
        if unchanged || requested == previous {
            return Decision::Ack;
        }
        if requested.is_empty() {
            // Empty names after named ones: unsubscribe, never a wildcard subscription.
            self.subscription = Subscription::Names(no_names());
            return Decision::Unsubscribed;
        }
        if self.subscription != Subscription::Wildcard {
            self.subscription = Subscription::Names(requested);
        }
        Decision::Respond
    }

    /// Records the names a delta stream subscribes to, for the debug views.
    pub fn record_names(&mut self, names: Arc<BTreeSet<String>>) {
        self.requested = names;
    }

    /// Records a response sent.
    pub fn sent(&mut self, nonce: &str, version: &str) {
        self.nonce_sent = nonce.to_owned();
        self.version_sent = version.to_owned();
        self.last_sent = Some(SystemTime::now());
    }

    /// What the last response was made of, if kept.
    pub fn held(&self) -> Option<&ProxyResources> {
        self.held.as_ref()
    }

    /// Keeps what the last response was made of (see `held`).
    pub fn hold(&mut self, generated: Option<ProxyResources>) {
        self.held = generated;
    }

    /// Whether anything is subscribed.
    pub fn is_active(&self) -> bool {
        match &self.subscription {
            Subscription::Wildcard => true,
            Subscription::Names(n) => !n.is_empty(),
        }
    }

    /// syncz status as istioctl shows it.
    pub fn status(&self) -> &'static str {
        if self.last_error.is_some() {
            "ERROR"
        } else if self.nonce_sent.is_empty() {
            "NOT_SENT"
        } else if self.nonce_acked == self.nonce_sent {
            "SYNCED"
        } else {
            "STALE"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sets() -> NameSets {
        NameSets::default()
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn wildcard_ack_and_stale_nonce() {
        let mut w = Watch::new(types::CLUSTER);
        assert_eq!(
            w.on_request(true, &[], "", None, &sets()),
            Decision::Respond
        );
        assert_eq!(w.subscription, Subscription::Wildcard);
        w.sent("n1", "v1");
        assert_eq!(w.status(), "STALE");
        assert_eq!(
            w.on_request(false, &[], "old", None, &sets()),
            Decision::StaleNonce
        );
        assert_eq!(w.on_request(false, &[], "n1", None, &sets()), Decision::Ack);
        assert_eq!(w.status(), "SYNCED");
        assert_eq!(w.version_acked, "v1");
    }

    #[test]
    fn nack_keeps_subscription_and_reports_error() {
        let mut w = Watch::new(types::ENDPOINT);
        assert_eq!(
            w.on_request(true, &names(&["a"]), "", None, &sets()),
            Decision::Respond
        );
        w.sent("n1", "v1");
        assert_eq!(
            w.on_request(
                false,
                &names(&["a"]),
                "n1",
                Some("bad cluster".into()),
                &sets()
            ),
            Decision::Nack("bad cluster".into())
        );
        assert_eq!(w.status(), "ERROR");
        assert!(w.subscription.contains("a"));
        assert_eq!(w.version_acked, "");
    }

    #[test]
    fn subscription_changes() {
        let mut w = Watch::new(types::LISTENER);
        assert_eq!(
            w.on_request(true, &names(&["a:1"]), "", None, &sets()),
            Decision::Respond
        );
        w.sent("n1", "v1");
        assert_eq!(
            w.on_request(false, &names(&["a:1", "b:2"]), "n1", None, &sets()),
            Decision::Respond
        );
        assert!(w.subscription.contains("b:2"));
        w.sent("n2", "v1");
        assert_eq!(
            w.on_request(false, &[], "n2", None, &sets()),
            Decision::Unsubscribed
        );
        assert!(!w.is_active());
    }

    #[test]
    fn empty_first_request_for_named_type_subscribes_nothing() {
        let mut w = Watch::new(types::ROUTE);
        assert_eq!(
            w.on_request(true, &[], "", None, &sets()),
            Decision::Respond
        );
        assert!(!w.is_active());
    }
}

#[cfg(test)]
mod sharing_tests {
    use super::*;

    #[test]
    fn watches_with_equal_names_share_one_set() {
        let sets = NameSets::default();
        let names: Vec<String> = (0..100).map(|i| format!("outbound|80||s{i}.ns")).collect();
        let mut a = Watch::new(types::ENDPOINT);
        let mut b = Watch::new(types::ENDPOINT);
        a.on_request(true, &names, "", None, &sets);
        b.on_request(true, &names, "", None, &sets);
        assert!(Arc::ptr_eq(&a.requested, &b.requested));
        match (&a.subscription, &b.subscription) {
            (Subscription::Names(x), Subscription::Names(y)) => assert!(Arc::ptr_eq(x, y)),
            other => panic!("{other:?}"),
        }
        a.sent("n1", "v1");
        let reordered: Vec<String> = names.iter().rev().cloned().collect();
        assert_eq!(
            a.on_request(false, &reordered, "n1", None, &sets),
            Decision::Ack
        );
        assert_eq!(sets.len(), 1);
    }

    #[test]
    fn serializes_the_requested_names() {
        let mut w = Watch::new(types::ENDPOINT);
        w.on_request(
            true,
            &["b".to_owned(), "a".to_owned()],
            "",
            None,
            &NameSets::default(),
        );
        let json = serde_json::to_value(&w).expect("serializes");
        assert_eq!(json["resource_names"], serde_json::json!(["a", "b"]));
    }
}
