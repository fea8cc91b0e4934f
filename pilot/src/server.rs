//! Every listener istiod serves: plaintext xDS (15010) and xDS + CA over TLS (15012) in
//! [`grpc`], the webhook port (15017) in [`https`] over the shared TLS acceptor ([`tls`]),
//! readiness and debug (8080) and metrics (15014) in [`http`]; gauges of the async runtime
//! in [`runtime_metrics`].

pub mod debug;
pub mod dump;
pub mod grpc;
pub mod http;
pub mod https;
pub mod monitoring;
pub mod runtime_metrics;
pub mod tls;
