//! xDS metrics, with upstream istiod's names so dashboards keep working.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    pub r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabel {
    pub version: String,
}

fn histogram_family() -> Family<TypeLabel, Histogram> {
    Family::new_with_constructor(|| Histogram::new([0.01, 0.1, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0]))
}

/// Metrics of the xDS server and push pipeline.
#[derive(Clone)]
pub struct Metrics {
    /// `pilot_xds`: connected proxies by Istio version.
    pub connections: Family<VersionLabel, Gauge>,
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
    /// `pilot_xds_config_size_bytes`: response sizes by type URL.
    pub config_size: Family<TypeLabel, Histogram>,
    /// `pilot_total_xds_internal_errors`.
    pub internal_errors: Counter,
    /// `pilot_xds_write_timeout`: streams closed because the client took no response
    /// within `PILOT_XDS_SEND_TIMEOUT`.
    pub write_timeouts: Counter,
    /// `pilot_xds_rejected_streams`: streams refused at `PILOT_MAX_XDS_STREAMS`.
    pub rejected_streams: Counter,
}

impl Metrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = Metrics {
            connections: Family::default(),
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
        m
    }

    pub fn label(t: &str) -> TypeLabel {
        TypeLabel {
            r#type: t.to_owned(),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(&mut Registry::default())
    }
}
