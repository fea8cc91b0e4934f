//! xDS metrics, with upstream istiod's names so dashboards keep working. Label values come
//! from fixed sets ([`crate::metrics::Label`]): a type URL or version a client sends is
//! mapped onto them, never copied.

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::types;
use crate::metrics::Label;

/// Versions `pilot_xds` counts apart at once; proxies of further versions count as `other`.
/// Upstream supports proxies up to two minor releases behind, so a few are in use at a time.
pub const MAX_VERSIONS: usize = 16;

/// The `type` label of the push and rejection metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    r#type: Label,
}

/// `<short>_senderr` of every known type, as upstream names failed sends.
const SEND_ERRORS: [Label; 10] = [
    Label::new("cds_senderr"),
    Label::new("eds_senderr"),
    Label::new("lds_senderr"),
    Label::new("rds_senderr"),
    Label::new("sds_senderr"),
    Label::new("ecds_senderr"),
    Label::new("nds_senderr"),
    Label::new("pcds_senderr"),
    Label::new("wds_senderr"),
    Label::new("wads_senderr"),
];

/// The `version` label of `pilot_xds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabel {
    version: Release,
}

/// A proxy's release as a label value: digits and dots (`1.22.3`), or `unknown`/`other`.
/// Built only by [`Release::of`], so no other text reaches the exposition.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Release(String);

impl Release {
    /// The release of an `ISTIO_VERSION`: its leading `MAJOR[.MINOR[.PATCH]]` (`1.23` of
    /// `1.23-alpha.f00d`, `1.22.3` of `1.22.3-distroless`), `unknown` when empty, `other`
    /// when it does not start with one.
    fn of(istio_version: &str) -> Release {
        if istio_version.is_empty() {
            return Release("unknown".to_owned());
        }
        let numeric = istio_version
            .split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .next()
            .unwrap_or("");
        let parts: Vec<&str> = numeric.split('.').take(3).collect();
        let valid = parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
        if valid {
            Release(parts.join("."))
        } else {
            Release(Label::OTHER.as_str().to_owned())
        }
    }
}

impl EncodeLabelValue for Release {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(&self.0)
    }
}

fn histogram_family() -> Family<TypeLabel, Histogram> {
    Family::new_with_constructor(|| Histogram::new([0.01, 0.1, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0]))
}

/// Metrics of the xDS server and push pipeline.
#[derive(Clone)]
pub struct Metrics {
    /// `pilot_xds`: connected proxies by Istio release (see [`Metrics::connected`]).
    connections: Family<VersionLabel, Gauge>,
    /// Connected proxies per release shown in `pilot_xds`; a release leaves the gauge (and
    /// frees its place) when its last proxy disconnects.
    live_versions: Arc<Mutex<HashMap<VersionLabel, i64>>>,
    /// `pilot_xds_pushes`: responses sent, by short type (`cds`...), and `*_senderr`.
    pub pushes: Family<TypeLabel, Counter>,
    /// `pilot_xds_push_time`: seconds to generate and send one type to one proxy.
    pub push_time: Family<TypeLabel, Histogram>,
    /// `pilot_proxy_convergence_time`: seconds from a config change to a proxy being pushed.
    pub convergence_time: Histogram,
    /// `pilot_proxy_queue_time`: seconds a proxy waited for a push slot.
    pub queue_time: Histogram,
    /// `pilot_debounce_time`: seconds changes were held by the debouncer.
    pub debounce_time: Histogram,
    /// `pilot_pushcontext_init_seconds`.
    pub push_context_init: Histogram,
    /// `pilot_push_triggers`: pushes by reason.
    pub push_triggers: Family<TypeLabel, Counter>,
    /// `pilot_inbound_updates`: config events received by type.
    pub inbound_updates: Family<TypeLabel, Counter>,
    /// `pilot_services`.
    pub services: Gauge,
    /// `pilot_virt_services`.
    pub virtual_services: Gauge,
    /// `pilot_total_xds_rejects`: NACKs by type.
    pub rejects: Family<TypeLabel, Counter>,
    /// `pilot_xds_expired_nonce`: requests with a stale nonce, by type.
    pub expired_nonce: Family<TypeLabel, Counter>,
    /// `pilot_xds_config_size_bytes`: response sizes by full type URL, as upstream.
    pub config_size: Family<TypeLabel, Histogram>,
    /// `pilot_total_xds_internal_errors`.
    pub internal_errors: Counter,
    /// `pilot_xds_write_timeout`: streams closed because the client took no response
    /// within `PILOT_XDS_SEND_TIMEOUT`.
    pub write_timeouts: Counter,
    /// `pilot_xds_rejected_streams`: streams refused at `PILOT_MAX_XDS_STREAMS`.
    pub rejected_streams: Counter,
    /// `pilot_sds_certificate_errors_total`: SDS names left out of a response (not
    /// parsable, refused, or a Secret missing or unusable), as upstream counts them.
    pub sds_certificate_errors: Counter,
}

impl Metrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = Metrics {
            connections: Family::default(),
            live_versions: Arc::default(),
            pushes: Family::default(),
            push_time: histogram_family(),
            convergence_time: Histogram::new([0.1, 0.5, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0]),
            queue_time: Histogram::new([0.1, 0.5, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0]),
            debounce_time: Histogram::new([0.01, 0.1, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0]),
            push_context_init: Histogram::new([0.01, 0.1, 0.5, 1.0, 3.0, 5.0]),
            push_triggers: Family::default(),
            inbound_updates: Family::default(),
            services: Gauge::default(),
            virtual_services: Gauge::default(),
            rejects: Family::default(),
            expired_nonce: Family::default(),
            config_size: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(1.0, 10.0, 8))
            }),
            internal_errors: Counter::default(),
            write_timeouts: Counter::default(),
            rejected_streams: Counter::default(),
            sds_certificate_errors: Counter::default(),
        };
        registry.register(
            "pilot_xds",
            "Number of endpoints connected to this pilot using XDS.",
            m.connections.clone(),
        );
        registry.register(
            "pilot_xds_pushes",
            "Pilot build and send errors for lds, rds, cds and eds.",
            m.pushes.clone(),
        );
        registry.register(
            "pilot_xds_push_time",
            "Total time in seconds Pilot takes to push lds, rds, cds and eds.",
            m.push_time.clone(),
        );
        registry.register("pilot_proxy_convergence_time", "Delay in seconds between config change and a proxy receiving all required configuration.", m.convergence_time.clone());
        registry.register(
            "pilot_proxy_queue_time",
            "Time in seconds, a proxy is in the push queue before being dequeued.",
            m.queue_time.clone(),
        );
        registry.register("pilot_debounce_time", "Delay in seconds between the first config enters debouncing and the merged push request is pushed into the push queue.", m.debounce_time.clone());
        registry.register(
            "pilot_pushcontext_init_seconds",
            "Total time in seconds Pilot takes to init pushContext.",
            m.push_context_init.clone(),
        );
        registry.register(
            "pilot_push_triggers",
            "Total number of times a push is triggered, labeled by reason for the push.",
            m.push_triggers.clone(),
        );
        registry.register(
            "pilot_inbound_updates",
            "Total number of updates received by pilot.",
            m.inbound_updates.clone(),
        );
        registry.register(
            "pilot_services",
            "Total services known to pilot.",
            m.services.clone(),
        );
        registry.register(
            "pilot_virt_services",
            "Total virtual services known to pilot.",
            m.virtual_services.clone(),
        );
        registry.register(
            "pilot_total_xds_rejects",
            "Total number of XDS responses from pilot rejected by proxy.",
            m.rejects.clone(),
        );
        registry.register(
            "pilot_xds_expired_nonce",
            "Total number of XDS requests with an expired nonce.",
            m.expired_nonce.clone(),
        );
        registry.register(
            "pilot_xds_config_size_bytes",
            "Distribution of configuration sizes pushed to clients",
            m.config_size.clone(),
        );
        registry.register(
            "pilot_total_xds_internal_errors",
            "Total number of internal XDS errors in pilot.",
            m.internal_errors.clone(),
        );
        registry.register(
            "pilot_xds_write_timeout",
            "Pilot XDS response write timeouts.",
            m.write_timeouts.clone(),
        );
        registry.register(
            "pilot_xds_rejected_streams",
            "xDS streams refused because the replica serves PILOT_MAX_XDS_STREAMS streams.",
            m.rejected_streams.clone(),
        );
        registry.register(
            "pilot_sds_certificate_errors_total",
            "Total number of failures to fetch SDS key and certificate.",
            m.sds_certificate_errors.clone(),
        );
        m
    }

    /// A fixed `type` label: a push reason (`config`, `endpoint`, `global`) or the kind of an
    /// inbound update (`config`, `eds`, `svc`); a value with unsafe characters is `other`.
    pub fn label(value: &'static str) -> TypeLabel {
        TypeLabel {
            r#type: Label::from_static(value),
        }
    }

    /// The `type` label of a response type: its short name (`cds`...), `other` for a type
    /// URL istiod does not know.
    pub fn type_label(type_url: &str) -> TypeLabel {
        let r#type =
            types::known(type_url).map_or(Label::OTHER, |(_, short)| Label::from_static(short));
        TypeLabel { r#type }
    }

    /// The `type` label of a failed send: `<short>_senderr`, `other_senderr` for a type URL
    /// istiod does not know.
    pub fn send_error_label(type_url: &str) -> TypeLabel {
        let r#type = match types::known(type_url) {
            Some((_, short)) => Label::pick(&format!("{short}_senderr"), &SEND_ERRORS),
            None => Label::new("other_senderr"),
        };
        TypeLabel { r#type }
    }

    /// The `type` label of `pilot_xds_config_size_bytes`: the full type URL, as upstream,
    /// `other` for one istiod does not know.
    pub fn type_url_label(type_url: &str) -> TypeLabel {
        let r#type =
            types::known(type_url).map_or(Label::OTHER, |(url, _)| Label::from_static(url));
        TypeLabel { r#type }
    }

    /// Counts a connected proxy under its release (`ISTIO_VERSION`, see [`Release::of`]);
    /// pass the returned label to [`Metrics::disconnected`]. Past [`MAX_VERSIONS`] releases
    /// in use, further ones count as `other`.
    pub fn connected(&self, istio_version: &str) -> VersionLabel {
        let mut live = self.live_versions.lock().unwrap_or_else(|p| p.into_inner());
        let mut label = VersionLabel {
            version: Release::of(istio_version),
        };
        if !live.contains_key(&label) && live.len() >= MAX_VERSIONS {
            label = VersionLabel {
                version: Release(Label::OTHER.as_str().to_owned()),
            };
        }
        let count = live.entry(label.clone()).or_default();
        *count += 1;
        self.connections.get_or_create(&label).set(*count);
        label
    }

    /// Counts a proxy of `label` gone; the last one removes the release's series.
    pub fn disconnected(&self, label: &VersionLabel) {
        let mut live = self.live_versions.lock().unwrap_or_else(|p| p.into_inner());
        let Some(count) = live.get_mut(label) else {
            return;
        };
        *count -= 1;
        if *count > 0 {
            self.connections.get_or_create(label).set(*count);
        } else {
            live.remove(label);
            self.connections.remove(label);
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(&mut Registry::default())
    }
}
