//! `citadel_server_*` metrics with upstream's names. Upstream's exporter writes counters
//! without the `_total` suffix, so counters here are encoded that way too.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use crate::metrics::Label;

/// A monotonic counter exposed under its exact name (no `_total`), as upstream does.
#[derive(Debug, Clone, Default)]
pub struct PlainCounter(Arc<AtomicU64>);

impl PlainCounter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl TypedMetric for PlainCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for PlainCounter {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.encode_gauge(&self.get())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

/// The `error` label of `citadel_server_csr_sign_err_count`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SignErrorLabels {
    pub error: Label,
}

/// The CA's metrics; cheap to clone.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Every CreateCertificate call.
    pub csr_count: PlainCounter,
    /// Calls with no valid caller identity.
    pub authentication_failure_count: PlainCounter,
    /// CSRs refused by the checks (PEM, signature, key, size).
    pub csr_parsing_err_count: PlainCounter,
    /// Authenticated callers whose identity could not be used.
    pub id_extraction_err_count: PlainCounter,
    /// Signing refused or failed, by reason (e.g. `ttl_error`, `cert_chain_error`).
    pub csr_sign_err_count: Family<SignErrorLabels, PlainCounter>,
    /// Certificates issued.
    pub success_cert_issuance_count: PlainCounter,
    pub root_cert_expiry_timestamp: Gauge,
    pub root_cert_expiry_seconds: Gauge,
    pub cert_chain_expiry_timestamp: Gauge,
    pub cert_chain_expiry_seconds: Gauge,
}

impl Metrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = Metrics {
            csr_count: PlainCounter::default(),
            authentication_failure_count: PlainCounter::default(),
            csr_parsing_err_count: PlainCounter::default(),
            id_extraction_err_count: PlainCounter::default(),
            csr_sign_err_count: Family::default(),
            success_cert_issuance_count: PlainCounter::default(),
            root_cert_expiry_timestamp: Gauge::default(),
            root_cert_expiry_seconds: Gauge::default(),
            cert_chain_expiry_timestamp: Gauge::default(),
            cert_chain_expiry_seconds: Gauge::default(),
        };
        registry.register(
            "citadel_server_csr_count",
            "The number of CSRs received by Citadel server.",
            m.csr_count.clone(),
        );
        registry.register(
            "citadel_server_authentication_failure_count",
            "The number of authentication failures.",
            m.authentication_failure_count.clone(),
        );
        registry.register(
            "citadel_server_csr_parsing_err_count",
            "The number of errors occurred when parsing the CSR.",
            m.csr_parsing_err_count.clone(),
        );
        registry.register(
            "citadel_server_id_extraction_err_count",
            "The number of errors occurred when extracting the ID from CSR.",
            m.id_extraction_err_count.clone(),
        );
        registry.register(
            "citadel_server_csr_sign_err_count",
            "The number of errors occurred when signing the CSR.",
            m.csr_sign_err_count.clone(),
        );
        registry.register(
            "citadel_server_success_cert_issuance_count",
            "The number of certificates issuances that have succeeded.",
            m.success_cert_issuance_count.clone(),
        );
        registry.register(
            "citadel_server_root_cert_expiry_timestamp",
            "The unix timestamp, in seconds, when Citadel root cert will expire.",
            m.root_cert_expiry_timestamp.clone(),
        );
        registry.register(
            "citadel_server_root_cert_expiry_seconds",
            "The time remaining, in seconds, before the root cert will expire.",
            m.root_cert_expiry_seconds.clone(),
        );
        registry.register(
            "citadel_server_cert_chain_expiry_timestamp",
            "The unix timestamp, in seconds, when Citadel cert chain will expire.",
            m.cert_chain_expiry_timestamp.clone(),
        );
        registry.register(
            "citadel_server_cert_chain_expiry_seconds",
            "The time remaining, in seconds, before the cert chain will expire.",
            m.cert_chain_expiry_seconds.clone(),
        );
        m
    }

    /// Counts a signing failure under `error`, one of a fixed set (`ttl_error`...).
    pub fn sign_error(&self, error: &'static str) {
        self.csr_sign_err_count
            .get_or_create(&SignErrorLabels {
                error: Label::from_static(error),
            })
            .inc();
    }

    /// Sets the expiry gauges from `(root, chain)` expiry timestamps.
    pub fn set_expiries(&self, root: i64, chain: i64, now: i64) {
        self.root_cert_expiry_timestamp.set(root);
        self.root_cert_expiry_seconds.set(root - now);
        self.cert_chain_expiry_timestamp.set(chain);
        self.cert_chain_expiry_seconds.set(chain - now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_have_upstream_names() {
        let mut registry = Registry::default();
        let m = Metrics::new(&mut registry);
        m.csr_count.inc();
        m.sign_error("ttl_error");
        m.set_expiries(2000, 1500, 1000);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        assert!(
            out.contains("# TYPE citadel_server_csr_count counter\n"),
            "{out}"
        );
        assert!(out.contains("\ncitadel_server_csr_count 1\n"), "{out}");
        assert!(!out.contains("_total"), "{out}");
        assert!(out.contains("citadel_server_csr_sign_err_count{error=\"ttl_error\"} 1"));
        assert!(out.contains("citadel_server_root_cert_expiry_seconds 1000"));
    }
}
