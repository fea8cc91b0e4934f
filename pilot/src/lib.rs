//! istiod (`pilot-discovery`): Istio's control plane.
//!
//! Data flows one way: config sources → [`config::ConfigStore`] → [`model::PushContext`]
//! (an immutable snapshot) → [`xds`] generators (pure functions of snapshot and proxy) →
//! connections.

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
