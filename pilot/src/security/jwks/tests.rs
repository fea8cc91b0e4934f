use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

use super::*;

const KEYS_A: &str = r#"{"keys":[{"kty":"RSA","kid":"a","e":"AQAB","n":"aaaa"}]}"#;
const KEYS_AB: &str = r#"{"keys":[{"kty":"RSA","kid":"a","e":"AQAB","n":"aaaa"},{"kty":"RSA","kid":"b","e":"AQAB","n":"bbbb"}]}"#;
const KEYS_BA: &str = r#"{"keys": [{"kty":"RSA","kid":"b","e":"AQAB","n":"bbbb"}, {"kid":"a","kty":"RSA","e":"AQAB","n":"aaaa"}]}"#;

/// What the test JWKS server answers on `/jwks`; `/.well-known/openid-configuration`
/// points there.
#[derive(Clone)]
struct Served {
    status: StatusCode,
    body: String,
}

/// The server's state: what it serves and how many `/jwks` requests it had.
type ServerState = (Arc<Mutex<Served>>, Arc<Mutex<u32>>);

struct KeyServer {
    addr: SocketAddr,
    served: Arc<Mutex<Served>>,
    hits: Arc<Mutex<u32>>,
}

impl KeyServer {
    async fn spawn(body: &str) -> KeyServer {
        let served = Arc::new(Mutex::new(Served {
            status: StatusCode::OK,
            body: body.to_owned(),
        }));
        let hits = Arc::new(Mutex::new(0));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route(
                "/jwks",
                get(|State((served, hits)): State<ServerState>| async move {
                    *hits.lock().unwrap() += 1;
                    let s = served.lock().unwrap().clone();
                    (s.status, s.body)
                }),
            )
            .route(
                "/.well-known/openid-configuration",
                get(move || async move {
                    format!(r#"{{"issuer":"http://{addr}","jwks_uri":"http://{addr}/jwks"}}"#)
                }),
            )
            .with_state((served.clone(), hits.clone()));
        tokio::spawn(async move { axum::serve(listener, app).await });
        KeyServer { addr, served, hits }
    }

    fn uri(&self) -> String {
        format!("http://{}/jwks", self.addr)
    }

    fn source(&self) -> JwksSource {
        JwksSource {
            issuer: "https://issuer.example".into(),
            jwks_uri: self.uri(),
        }
    }

    fn serve(&self, status: StatusCode, body: &str) {
        *self.served.lock().unwrap() = Served {
            status,
            body: body.to_owned(),
        };
    }

    fn hits(&self) -> u32 {
        *self.hits.lock().unwrap()
    }
}

fn resolver() -> Arc<JwksResolver> {
    JwksResolver::new(JwksSettings::default()).unwrap()
}

fn wanted(source: &JwksSource) -> BTreeMap<JwksSource, Duration> {
    BTreeMap::from([(source.clone(), Duration::from_secs(5))])
}

#[tokio::test]
async fn fetches_new_sources_once() {
    let server = KeyServer::spawn(KEYS_A).await;
    let r = resolver();
    let before = r.keys_for(wanted(&server.source()));
    assert_eq!(before.get(&server.source()), None, "not fetched yet");
    let keys = r.fetch_pending().await.expect("something fetched");
    assert_eq!(keys.get(&server.source()), Some(KEYS_A));
    assert_eq!(r.fetch_pending().await, None, "nothing left to fetch");
    // Asking again serves the cache.
    let again = r.keys_for(wanted(&server.source()));
    assert_eq!(again.get(&server.source()), Some(KEYS_A));
    assert_eq!(r.fetch_pending().await, None);
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn refresh_reports_changes_and_ignores_reordering() {
    let server = KeyServer::spawn(KEYS_AB).await;
    let r = resolver();
    let changes = r.subscribe();
    r.keys_for(wanted(&server.source()));
    r.fetch_pending().await;

    server.serve(StatusCode::OK, KEYS_BA);
    let same = r.refresh().await;
    assert_eq!(same, Refreshed::default(), "same keys in another order");
    assert!(!changes.has_changed().unwrap());

    server.serve(StatusCode::OK, KEYS_A);
    let changed = r.refresh().await;
    assert!(changed.changed && !changed.failed);
    assert!(changes.has_changed().unwrap(), "the push loop is told");
    let keys = r.keys_for(wanted(&server.source()));
    assert_eq!(keys.get(&server.source()), Some(KEYS_A));
}

#[tokio::test]
async fn failures_keep_known_keys_and_never_invent_any() {
    let server = KeyServer::spawn("").await;
    let r = resolver();
    for (status, body) in [
        (StatusCode::INTERNAL_SERVER_ERROR, KEYS_A),
        (StatusCode::OK, "<html>login</html>"),
        (StatusCode::OK, r#"{"keys": "none"}"#),
    ] {
        server.serve(status, body);
        r.keys_for(wanted(&server.source()));
        let keys = r
            .fetch_pending()
            .await
            .unwrap_or_else(|| r.keys_for(wanted(&server.source())));
        assert_eq!(keys.get(&server.source()), None, "{status} {body}");
        // Start over for the next case.
        r.keys_for(BTreeMap::new());
    }

    server.serve(StatusCode::OK, KEYS_A);
    r.keys_for(wanted(&server.source()));
    r.fetch_pending().await;
    server.serve(StatusCode::SERVICE_UNAVAILABLE, "");
    let failed = r.refresh().await;
    assert!(failed.failed && !failed.changed);
    let keys = r.keys_for(wanted(&server.source()));
    assert_eq!(
        keys.get(&server.source()),
        Some(KEYS_A),
        "last good keys kept"
    );
}

#[tokio::test]
async fn refuses_oversized_bodies() {
    let big = format!(r#"{{"keys":[],"pad":"{}"}}"#, "x".repeat(MAX_JWKS_BYTES));
    let server = KeyServer::spawn(&big).await;
    let r = resolver();
    let err = r
        .fetch_source(&server.source(), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(err, JwksError::TooLarge { .. }), "{err}");
}

#[tokio::test]
async fn finds_keys_through_openid_discovery() {
    let server = KeyServer::spawn(KEYS_A).await;
    let r = resolver();
    let source = JwksSource {
        issuer: format!("http://{}/", server.addr),
        jwks_uri: String::new(),
    };
    r.keys_for(wanted(&source));
    let keys = r.fetch_pending().await.unwrap();
    assert_eq!(keys.get(&source), Some(KEYS_A));
}

#[tokio::test]
async fn forgets_sources_no_policy_names() {
    let server = KeyServer::spawn(KEYS_A).await;
    let r = resolver();
    r.keys_for(wanted(&server.source()));
    r.fetch_pending().await;
    let keys = r.keys_for(BTreeMap::new());
    assert_eq!(keys.get(&server.source()), None);
    assert_eq!(r.refresh().await, Refreshed::default());
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn blocks_metadata_addresses() {
    let r = JwksResolver::new(JwksSettings {
        blocked: vec![Cidr::parse("10.0.0.0/8").unwrap()],
        ..JwksSettings::default()
    })
    .unwrap();
    for uri in [
        "http://169.254.169.254/latest/meta-data",
        "http://[fe80::1]/keys",
        "http://100.100.100.200/keys",
        "http://10.1.2.3/keys",
    ] {
        let err = r.get(uri, Duration::from_secs(1)).await.unwrap_err();
        assert!(matches!(err, JwksError::Blocked { .. }), "{uri}: {err}");
    }
    let err = r
        .get("ftp://example.com/keys", Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(err, JwksError::Url { .. }), "{err}");
}

#[tokio::test]
async fn a_key_change_becomes_a_full_push() {
    use crate::config::object::parse_manifests;
    use crate::config::ConfigStore;
    use crate::model::{MeshConfig, PushContext};
    use crate::settings::Features;
    use crate::xds::discovery::DiscoveryServer;
    use crate::xds::metrics::Metrics;

    let server = KeyServer::spawn(KEYS_A).await;
    let store = ConfigStore::new();
    let yaml = format!(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: jwt, namespace: default}}\nspec: {{jwtRules: [{{issuer: https://issuer.example, jwksUri: '{}'}}]}}\n",
        server.uri()
    );
    let env = Env::from_pairs([("PILOT_DEBOUNCE_AFTER", "1ms")]);
    let discovery = DiscoveryServer::new(
        Features::from_env(&env).unwrap(),
        Metrics::default(),
        PushContext::default(),
    );
    let r = resolver();
    let (_mesh_tx, mesh_rx) = watch::channel(MeshConfig::default());
    let shutdown = CancellationToken::new();
    tokio::spawn(discovery.clone().run_pushes(
        store.clone(),
        store.subscribe(),
        mesh_rx,
        "cluster.local".into(),
        r.clone(),
        shutdown.clone(),
    ));
    let pushes = discovery.subscribe();
    let wait_for_keys = |want: &'static str| {
        let source = server.source();
        let mut pushes = pushes.clone();
        async move {
            tokio::time::timeout(
                Duration::from_secs(10),
                pushes.wait_for(|ev| ev.push.jwks.get(&source) == Some(want)),
            )
            .await
            .expect("a push with the keys")
            .expect("server alive")
            .seq
        }
    };

    // A config change: the push that carries the policy carries its keys.
    store.replace_source("f", parse_manifests(&yaml).unwrap().configs);
    let first = wait_for_keys(KEYS_A).await;

    server.serve(StatusCode::OK, KEYS_AB);
    r.refresh().await;
    let second = wait_for_keys(KEYS_AB).await;
    assert!(second > first);
    let ev = pushes.borrow().clone();
    assert_eq!(ev.full_seq, ev.seq, "a full push");
    shutdown.cancel();
}

#[test]
fn refresh_schedule() {
    let base = Duration::from_secs(20 * 60);
    assert_eq!(next_interval(base, base, false, false), base);
    assert_eq!(next_interval(base, base, true, false), REFRESH_ON_FAILURE);
    assert_eq!(
        next_interval(base, REFRESH_ON_FAILURE, true, true),
        REFRESH_ON_FAILURE * 2
    );
    assert_eq!(
        next_interval(base, FAILURE_BACKOFF_CAP, true, true),
        FAILURE_BACKOFF_CAP
    );
    assert_eq!(next_interval(base, FAILURE_BACKOFF_CAP, false, true), base);
}

#[test]
fn cidrs() {
    let c = Cidr::parse("10.0.0.0/8").unwrap();
    assert!(c.contains("10.200.1.1".parse().unwrap()));
    assert!(!c.contains("11.0.0.1".parse().unwrap()));
    assert!(!c.contains("::1".parse().unwrap()));
    assert!(Cidr::parse("0.0.0.0/0")
        .unwrap()
        .contains("8.8.8.8".parse().unwrap()));
    assert!(Cidr::parse("fd00:ec2::/32")
        .unwrap()
        .contains("fd00:ec2::254".parse().unwrap()));
    for bad in ["10.0.0.0", "10.0.0.0/33", "x/8", "::/129"] {
        assert_eq!(Cidr::parse(bad), None, "{bad}");
    }
    // An IPv4 address mapped into IPv6 is checked as itself.
    assert!(Blocklist(Vec::new()).blocks("::ffff:169.254.169.254".parse().unwrap()));
}

#[test]
fn settings() {
    let s = JwksSettings::from_env(&Env::default()).unwrap();
    assert_eq!(s.fetch_mode, JwksFetchMode::Istiod);
    assert_eq!(s.refresh_interval, Duration::from_secs(1200));
    let s = JwksSettings::from_env(&Env::from_pairs([
        (PILOT_JWT_ENABLE_REMOTE_JWKS, "true"),
        (PILOT_JWT_PUB_KEY_REFRESH_INTERVAL, "1m"),
        (
            BLOCKED_CIDRS_IN_JWKS_URIS,
            "10.0.0.0/8, nonsense ,192.168.0.0/16",
        ),
    ]))
    .unwrap();
    assert_eq!(s.fetch_mode, JwksFetchMode::Hybrid);
    assert_eq!(s.refresh_interval, Duration::from_secs(60));
    assert_eq!(s.blocked.len(), 2, "unreadable entries skipped");
    for (v, mode) in [
        ("istiod", JwksFetchMode::Istiod),
        ("false", JwksFetchMode::Istiod),
        ("hybrid", JwksFetchMode::Hybrid),
        ("envoy", JwksFetchMode::Envoy),
        ("bogus", JwksFetchMode::Istiod),
    ] {
        assert_eq!(JwksFetchMode::parse(v), mode, "{v}");
    }
    assert!(JwksSettings::from_env(&Env::from_pairs([(
        PILOT_JWT_PUB_KEY_REFRESH_INTERVAL,
        "0s"
    )]))
    .is_err());
}

#[tokio::test]
async fn sources_without_keys_are_retried() {
    let server = KeyServer::spawn("").await;
    server.serve(StatusCode::BAD_GATEWAY, "");
    let r = resolver();
    r.keys_for(wanted(&server.source()));
    r.fetch_pending().await;
    assert!(r.has_missing());
    let still = r.retry_missing().await;
    assert!(still.failed && !still.changed);

    server.serve(StatusCode::OK, KEYS_A);
    let changes = r.subscribe();
    let got = r.retry_missing().await;
    assert!(got.changed, "keys at last");
    assert!(changes.has_changed().unwrap(), "and a push for them");
    assert!(!r.has_missing());
    let hits = server.hits();
    assert_eq!(r.retry_missing().await, Refreshed::default());
    assert_eq!(
        server.hits(),
        hits,
        "sources with keys wait for the refresh"
    );
}

#[tokio::test]
async fn the_refresh_task_retries_a_failed_first_fetch() {
    let server = KeyServer::spawn("").await;
    server.serve(StatusCode::BAD_GATEWAY, "");
    let r = resolver();
    let shutdown = CancellationToken::new();
    tokio::spawn(r.clone().run(shutdown.clone()));
    r.keys_for(wanted(&server.source()));
    r.fetch_pending().await;
    server.serve(StatusCode::OK, KEYS_A);
    let mut changes = r.subscribe();
    // The first retry comes MISSING_RETRY after the failure.
    tokio::time::timeout(MISSING_RETRY * 3, changes.changed())
        .await
        .expect("retried within the deadline")
        .unwrap();
    assert_eq!(
        r.keys_for(wanted(&server.source())).get(&server.source()),
        Some(KEYS_A)
    );
    shutdown.cancel();
}
