//! Building blocks shared by the generators: config sources, the HTTP connection manager.

use envoy_types::pb::envoy::config::core::v3::{
    config_source::ConfigSourceSpecifier, AggregatedConfigSource, ApiVersion, ConfigSource,
};
use envoy_types::pb::envoy::config::listener::v3::{filter, Filter};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::Cors;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, http_filter, HttpConnectionManager, HttpFilter, Rds,
};
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};

pub const HCM_FILTER: &str = "envoy.filters.network.http_connection_manager";
pub const TCP_PROXY_FILTER: &str = "envoy.filters.network.tcp_proxy";
pub const ROUTER_FILTER: &str = "envoy.filters.http.router";
pub const FAULT_FILTER: &str = "envoy.filters.http.fault";
pub const CORS_FILTER: &str = "envoy.filters.http.cors";

/// Packs a message into `Any`.
pub fn any<M: Message + Name>(m: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: m.encode_to_vec(),
    }
}

/// "Fetch this over the same ADS stream."
pub fn ads_config_source() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        resource_api_version: ApiVersion::V3 as i32,
        ..Default::default()
    }
}

/// The router HTTP filter, last in every chain.
pub fn router_filter() -> HttpFilter {
    HttpFilter {
        name: ROUTER_FILTER.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(
            any(&Router::default()),
        )),
        ..Default::default()
    }
}

/// The fault filter, configured per route through `typed_per_filter_config`.
pub fn fault_filter() -> HttpFilter {
    HttpFilter {
        name: FAULT_FILTER.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(any(
            &HttpFault::default(),
        ))),
        ..Default::default()
    }
}

/// The CORS filter, configured per route.
pub fn cors_filter() -> HttpFilter {
    HttpFilter {
        name: CORS_FILTER.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(any(&Cors::default()))),
        ..Default::default()
    }
}

/// The HTTP filters of a sidecar's connection managers, in upstream's order: the filters
/// routes configure (fault, CORS), then the router last.
pub fn sidecar_http_filters() -> Vec<HttpFilter> {
    vec![fault_filter(), cors_filter(), router_filter()]
}

/// An HTTP connection manager with its route config inline (inbound chains).
pub fn inline_connection_manager(
    stat_prefix: &str,
    route_config: RouteConfiguration,
    http_filters: Vec<HttpFilter>,
) -> HttpConnectionManager {
    HttpConnectionManager {
        stat_prefix: stat_prefix.to_owned(),
        route_specifier: Some(RouteSpecifier::RouteConfig(route_config)),
        http_filters,
        ..Default::default()
    }
}

/// An HTTP connection manager that fetches route config `route_name` over ADS.
pub fn rds_connection_manager(
    stat_prefix: &str,
    route_name: &str,
    http_filters: Vec<HttpFilter>,
) -> HttpConnectionManager {
    HttpConnectionManager {
        stat_prefix: stat_prefix.to_owned(),
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ads_config_source()),
            route_config_name: route_name.to_owned(),
        })),
        http_filters,
        ..Default::default()
    }
}

/// A network filter with a typed config.
pub fn network_filter<M: Message + Name>(name: &str, config: &M) -> Filter {
    Filter {
        name: name.to_owned(),
        config_type: Some(filter::ConfigType::TypedConfig(any(config))),
    }
}
