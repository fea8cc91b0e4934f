//! DestinationRule traffic policy → Envoy cluster settings: load balancer, connection pool
//! (circuit breakers, timeouts, HTTP protocol options), outlier detection, and the route
//! hash policy consistent hashing needs.

use std::time::Duration as StdDuration;

use envoy_types::pb::envoy::config::cluster::v3::{
    circuit_breakers::Thresholds,
    cluster::{
        ClusterDiscoveryType, CommonLbConfig, DiscoveryType, LbConfig, LbPolicy, MaglevLbConfig,
        RingHashLbConfig,
    },
    CircuitBreakers, Cluster, OutlierDetection as EnvoyOutlierDetection,
};
use envoy_types::pb::envoy::config::core::v3::{
    Http1ProtocolOptions, Http2ProtocolOptions, HttpProtocolOptions as CoreHttpProtocolOptions,
};
use envoy_types::pb::envoy::config::route::v3::route_action::{hash_policy, HashPolicy};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    http_protocol_options::{
        explicit_http_config::ProtocolConfig, ExplicitHttpConfig, UpstreamProtocolOptions,
        UseDownstreamHttpConfig,
    },
    HttpProtocolOptions,
};
use envoy_types::pb::envoy::r#type::v3::Percent as EnvoyPercent;
use envoy_types::pb::google::protobuf::{UInt32Value, UInt64Value};
use prost::Message;

use crate::config::istio::{
    parse_duration, ClientTlsSettings, ConnectionPoolSettings, ConsistentHash,
    LoadBalancerSettings, OutlierDetection, TrafficPolicy,
};
use crate::xds::gen::filters::any;
use crate::xds::gen::route::duration;

/// Key of the upstream HTTP protocol options in `typed_extension_protocol_options`.
pub const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// Envoy's own default ring size, which upstream sets explicitly.
const DEFAULT_RING_SIZE: u64 = 1024;

/// The policy components that apply to one cluster, after subset and port merging.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EffectivePolicy {
    pub load_balancer: Option<LoadBalancerSettings>,
    pub connection_pool: Option<ConnectionPoolSettings>,
    pub outlier_detection: Option<OutlierDetection>,
    pub tls: Option<ClientTlsSettings>,
}

impl EffectivePolicy {
    fn of(p: &TrafficPolicy) -> EffectivePolicy {
        EffectivePolicy {
            load_balancer: p.load_balancer.clone(),
            connection_pool: p.connection_pool.clone(),
            outlier_detection: p.outlier_detection.clone(),
            tls: p.tls.clone(),
        }
    }

    /// Port-level settings replace every component (they do not inherit, as upstream
    /// documents).
    fn with_port(mut self, p: &TrafficPolicy, port: u16) -> EffectivePolicy {
        let port_level = p
            .port_level_settings
            .iter()
            .find(|s| s.port.as_ref().is_some_and(|s| s.number == u32::from(port)));
        if let Some(s) = port_level {
            self.load_balancer = s.load_balancer.clone();
            self.connection_pool = s.connection_pool.clone();
            self.outlier_detection = s.outlier_detection.clone();
            self.tls = s.tls.clone();
        }
        self
    }
}

/// Merges a subset's policy over the top-level policy for traffic on `port`: the top level
/// with its port-level settings first, then each component the subset sets, then the
/// subset's own port-level settings.
pub fn merge_traffic_policy(
    top: Option<&TrafficPolicy>,
    subset: Option<&TrafficPolicy>,
    port: u16,
) -> EffectivePolicy {
    let mut merged = top
        .map(|t| EffectivePolicy::of(t).with_port(t, port))
        .unwrap_or_default();
    let Some(s) = subset else { return merged };
    if s.load_balancer.is_some() {
        merged.load_balancer = s.load_balancer.clone();
    }
    if s.connection_pool.is_some() {
        merged.connection_pool = s.connection_pool.clone();
    }
    if s.outlier_detection.is_some() {
        merged.outlier_detection = s.outlier_detection.clone();
    }
    if s.tls.is_some() {
        merged.tls = s.tls.clone();
    }
    merged.with_port(s, port)
}

/// Which way traffic flows through the cluster; inbound clusters only take the
/// connection pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyDirection {
    Outbound,
    Inbound,
}

/// Applies `policy` to `cluster`. `http2` asks for HTTP/2 upstream (gRPC, HTTP2 ports);
/// inbound clusters take only the connection pool and protocol.
pub fn apply_policy(
    cluster: &mut Cluster,
    policy: &EffectivePolicy,
    http2: bool,
    direction: PolicyDirection,
) {
    let mut options = HttpProtocolOptions::default();
    apply_connection_pool(
        cluster,
        &mut options,
        policy.connection_pool.as_ref().cloned().unwrap_or_default(),
    );
    if http2 {
        let h2 = Http2ProtocolOptions {
            max_concurrent_streams: policy
                .connection_pool
                .as_ref()
                .and_then(|c| c.http.as_ref())
                .and_then(|h| h.max_concurrent_streams)
                .filter(|n| *n > 0)
                .map(|value| UInt32Value { value }),
            ..Default::default()
        };
        options.upstream_protocol_options = Some(UpstreamProtocolOptions::ExplicitHttpConfig(
            ExplicitHttpConfig {
                protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(h2)),
            },
        ));
    }
    if direction == PolicyDirection::Outbound {
        apply_outlier_detection(cluster, policy.outlier_detection.as_ref());
        apply_load_balancer(cluster, policy.load_balancer.as_ref());
    }
    if options != HttpProtocolOptions::default() {
        store_http_protocol_options(cluster, options);
    }
}

/// The cluster's upstream HTTP protocol options as set so far (defaults when none are).
pub fn http_protocol_options(cluster: &Cluster) -> HttpProtocolOptions {
    cluster
        .typed_extension_protocol_options
        .get(HTTP_PROTOCOL_OPTIONS)
        .and_then(|a| HttpProtocolOptions::decode(a.value.as_slice()).ok())
        .unwrap_or_default()
}

/// Stores `options` on the cluster. Envoy requires an upstream protocol: without one, plain
/// HTTP/1.1 is set, as upstream's cluster builder does.
pub fn store_http_protocol_options(cluster: &mut Cluster, mut options: HttpProtocolOptions) {
    if options.upstream_protocol_options.is_none() {
        options.upstream_protocol_options = Some(UpstreamProtocolOptions::ExplicitHttpConfig(
            ExplicitHttpConfig {
                protocol_config: Some(ProtocolConfig::HttpProtocolOptions(
                    Http1ProtocolOptions::default(),
                )),
            },
        ));
    }
    cluster
        .typed_extension_protocol_options
        .insert(HTTP_PROTOCOL_OPTIONS.to_owned(), any(&options));
}

/// Upstream's thresholds when nothing is configured: effectively unlimited, because
/// Envoy's defaults (1024 connections, 3 retries) cause 503s during rollouts.
fn default_thresholds() -> Thresholds {
    let max = Some(UInt32Value { value: u32::MAX });
    Thresholds {
        max_connections: max,
        max_pending_requests: max,
        max_requests: max,
        max_retries: max,
        track_remaining: true,
        ..Default::default()
    }
}

fn apply_connection_pool(
    cluster: &mut Cluster,
    options: &mut HttpProtocolOptions,
    settings: ConnectionPoolSettings,
) {
    let mut t = default_thresholds();
    let mut common = CoreHttpProtocolOptions::default();
    let positive = |v: Option<u32>| v.filter(|n| *n > 0).map(|value| UInt32Value { value });
    if let Some(http) = &settings.http {
        if let Some(v) = positive(http.http2_max_requests) {
            t.max_requests = Some(v);
        }
        if let Some(v) = positive(http.http1_max_pending_requests) {
            t.max_pending_requests = Some(v);
        }
        if let Some(v) = positive(http.max_retries) {
            t.max_retries = Some(v);
        }
        common.idle_timeout = http
            .idle_timeout
            .as_deref()
            .and_then(parse_duration)
            .map(duration);
        common.max_requests_per_connection = positive(http.max_requests_per_connection);
    }
    if let Some(tcp) = &settings.tcp {
        if let Some(d) = tcp.connect_timeout.as_deref().and_then(parse_duration) {
            cluster.connect_timeout = Some(duration(d));
        }
        if let Some(v) = positive(tcp.max_connections) {
            t.max_connections = Some(v);
        }
        if let Some(d) = tcp
            .max_connection_duration
            .as_deref()
            .and_then(parse_duration)
        {
            common.max_connection_duration = Some(duration(d));
        }
        // A TCP idle timeout applies to HTTP connections too, unless HTTP sets its own.
        if common.idle_timeout.is_none() {
            common.idle_timeout = tcp
                .idle_timeout
                .as_deref()
                .and_then(parse_duration)
                .map(duration);
        }
    }
    cluster.circuit_breakers = Some(CircuitBreakers {
        thresholds: vec![t],
        ..Default::default()
    });
    if common != CoreHttpProtocolOptions::default() {
        options.common_http_protocol_options = Some(common);
    }
}

fn apply_outlier_detection(cluster: &mut Cluster, outlier: Option<&OutlierDetection>) {
    let Some(o) = outlier else { return };
    let enforcing = |v: u32| {
        Some(UInt32Value {
            value: if v > 0 { 100 } else { 0 },
        })
    };
    let mut out = EnvoyOutlierDetection {
        // Success-rate ejection is off: istio only exposes consecutive-error ejection.
        enforcing_success_rate: Some(UInt32Value { value: 0 }),
        ..Default::default()
    };
    if let Some(v) = o.consecutive_5xx_errors {
        out.consecutive_5xx = Some(UInt32Value { value: v });
        out.enforcing_consecutive_5xx = enforcing(v);
    }
    if let Some(v) = o.consecutive_gateway_errors {
        out.consecutive_gateway_failure = Some(UInt32Value { value: v });
        out.enforcing_consecutive_gateway_failure = enforcing(v);
    }
    out.interval = o.interval.as_deref().and_then(parse_duration).map(duration);
    if let Some(base) = o.base_ejection_time.as_deref().and_then(parse_duration) {
        out.base_ejection_time = Some(duration(base));
        // Envoy caps ejection at max_ejection_time (300s); keep a longer base effective.
        if base > StdDuration::from_secs(300) {
            out.max_ejection_time = Some(duration(base));
        }
    }
    out.max_ejection_percent = o
        .max_ejection_percent
        .filter(|n| *n > 0)
        .map(|value| UInt32Value { value });
    cluster.outlier_detection = Some(out);
    // Envoy's panic mode (at 50% healthy) is rarely useful with few pods per service, so
    // the threshold is always set, to 0 unless configured.
    cluster
        .common_lb_config
        .get_or_insert_with(CommonLbConfig::default)
        .healthy_panic_threshold = Some(EnvoyPercent {
        value: f64::from(o.min_health_percent.unwrap_or(0)),
    });
}

fn apply_load_balancer(cluster: &mut Cluster, lb: Option<&LoadBalancerSettings>) {
    if is_original_dst(cluster) {
        cluster.lb_policy = LbPolicy::ClusterProvided as i32;
        return;
    }
    let simple = lb.and_then(|l| l.simple.as_deref()).unwrap_or_default();
    cluster.lb_policy = match simple {
        "RANDOM" => LbPolicy::Random,
        "ROUND_ROBIN" => LbPolicy::RoundRobin,
        "PASSTHROUGH" => {
            cluster.cluster_discovery_type = Some(ClusterDiscoveryType::Type(
                DiscoveryType::OriginalDst as i32,
            ));
            // A static or EDS source makes no sense for original-destination clusters.
            cluster.load_assignment = None;
            cluster.eds_cluster_config = None;
            LbPolicy::ClusterProvided
        }
        // LEAST_CONN, LEAST_REQUEST and unset: upstream's default.
        _ => LbPolicy::LeastRequest,
    } as i32;
    if let Some(ch) = lb.and_then(|l| l.consistent_hash.as_ref()) {
        apply_consistent_hash(cluster, ch);
    }
}

fn apply_consistent_hash(cluster: &mut Cluster, ch: &ConsistentHash) {
    if let Some(m) = &ch.maglev {
        cluster.lb_policy = LbPolicy::Maglev as i32;
        cluster.lb_config = m.table_size.filter(|n| *n > 0).map(|value| {
            LbConfig::MaglevLbConfig(MaglevLbConfig {
                table_size: Some(UInt64Value { value }),
            })
        });
        return;
    }
    cluster.lb_policy = LbPolicy::RingHash as i32;
    let size = match &ch.ring_hash {
        Some(r) => r.minimum_ring_size.filter(|n| *n > 0),
        None => Some(
            ch.minimum_ring_size
                .filter(|n| *n > 0)
                .unwrap_or(DEFAULT_RING_SIZE),
        ),
    };
    cluster.lb_config = size.map(|value| {
        LbConfig::RingHashLbConfig(RingHashLbConfig {
            minimum_ring_size: Some(UInt64Value { value }),
            ..Default::default()
        })
    });
}

fn is_original_dst(cluster: &Cluster) -> bool {
    cluster.cluster_discovery_type
        == Some(ClusterDiscoveryType::Type(
            DiscoveryType::OriginalDst as i32,
        ))
}

/// The route hash policy a consistent-hash load balancer needs, if any.
pub fn hash_policy(lb: Option<&LoadBalancerSettings>) -> Option<HashPolicy> {
    let ch = lb?.consistent_hash.as_ref()?;
    let specifier = if let Some(name) = &ch.http_header_name {
        hash_policy::PolicySpecifier::Header(hash_policy::Header {
            header_name: name.clone(),
            ..Default::default()
        })
    } else if let Some(c) = &ch.http_cookie {
        hash_policy::PolicySpecifier::Cookie(hash_policy::Cookie {
            name: c.name.clone(),
            path: c.path.clone(),
            ttl: c.ttl.as_deref().and_then(parse_duration).map(duration),
            ..Default::default()
        })
    } else if ch.use_source_ip == Some(true) {
        hash_policy::PolicySpecifier::ConnectionProperties(hash_policy::ConnectionProperties {
            source_ip: true,
        })
    } else if let Some(name) = &ch.http_query_parameter_name {
        hash_policy::PolicySpecifier::QueryParameter(hash_policy::QueryParameter {
            name: name.clone(),
        })
    } else {
        return None;
    };
    Some(HashPolicy {
        policy_specifier: Some(specifier),
        ..Default::default()
    })
}

/// Upstream HTTP options of the passthrough clusters: follow the downstream protocol and
/// close idle connections after five minutes.
pub fn passthrough_protocol_options() -> HttpProtocolOptions {
    HttpProtocolOptions {
        common_http_protocol_options: Some(CoreHttpProtocolOptions {
            idle_timeout: Some(duration(StdDuration::from_secs(300))),
            ..Default::default()
        }),
        upstream_protocol_options: Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(
            UseDownstreamHttpConfig {
                http_protocol_options: Some(Http1ProtocolOptions::default()),
                http2_protocol_options: Some(Http2ProtocolOptions::default()),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}
