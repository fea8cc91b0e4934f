//! The xDS server: ADS over gRPC (state of the world and delta), push pipeline, and the
//! generators that turn a push context into Envoy and gRPC resources.

pub mod ads;
pub mod cds;
pub mod common;
pub mod debounce;
pub mod delta;
pub mod discovery;
pub mod eds;
pub mod generator;
pub mod grpc;
pub mod lds;
pub mod metrics;
pub mod naming;
pub mod rds;
pub mod route;
pub mod sotw;
pub mod stream;
pub mod types;
pub mod watch;
pub mod wire;

pub use ads::AdsService;
pub use discovery::DiscoveryServer;
