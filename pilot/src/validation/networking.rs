//! `networking.istio.io`: VirtualService, Gateway, DestinationRule, ServiceEntry, Sidecar,
//! WorkloadEntry, WorkloadGroup, EnvoyFilter, ProxyConfig — one module per kind
//! (WorkloadEntry and WorkloadGroup share `workload`), TLS settings in `tls`. This module
//! keeps what several kinds share: unix domain socket addresses.

mod destination_rule;
mod envoy_filter;
mod gateway;
mod proxy_config;
mod service_entry;
mod sidecar;
mod tls;
mod virtual_service;
mod workload;

pub use destination_rule::destination_rule;
pub use envoy_filter::envoy_filter;
pub use gateway::gateway;
pub use proxy_config::proxy_config;
pub use service_entry::service_entry;
pub use sidecar::sidecar;
pub use virtual_service::virtual_service;
pub use workload::{workload_entry, workload_group};

/// The scheme of a unix domain socket address (binds, endpoint addresses).
const UNIX_PREFIX: &str = "unix://";

/// A unix domain socket address: `unix://` and an absolute file path or an abstract (`@`) name.
fn validate_unix_address(addr: &str) -> Result<(), String> {
    let path = addr.strip_prefix(UNIX_PREFIX).unwrap_or(addr);
    if path.is_empty() {
        return Err("unix address must not be empty".to_owned());
    }
    if path.starts_with('@') {
        return Ok(()); // abstract socket
    }
    if !path.starts_with('/') || path.ends_with('/') {
        return Err(format!("{path} is not an absolute path to a file"));
    }
    Ok(())
}
