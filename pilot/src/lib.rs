//! istiod (`pilot-discovery`): Istio's control plane.
//!
//! Data flows one way: config sources → [`config::ConfigStore`] → [`model::PushContext`]
//! (an immutable snapshot) → [`xds`] generators (pure functions of snapshot and proxy) →
//! connections.

/// jemalloc, in every program built on this crate (so the allocator gauges in
/// [`server::runtime_metrics`] always describe the allocator in use): with its background
/// thread on (see `main.rs`), memory freed after a burst of requests goes back to the system
/// within seconds instead of staying at the peak. Without the `jemalloc` feature the system
/// allocator is used, which heap profilers (heaptrack, valgrind's massif) can see.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

pub mod app;
#[cfg(test)]
mod arbitrary;
pub mod args;
pub mod ca;
pub mod config;
pub mod inject;
pub mod kube;
pub mod metrics;
pub mod model;
pub mod security;
pub mod server;
pub mod settings;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod validation;
pub mod version;
pub mod webhook;
pub mod xds;
