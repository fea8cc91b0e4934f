//! The xDS server: ADS over gRPC (state of the world and delta), subscriptions, the push
//! pipeline and the shared wire forms. What is sent is generated in [`gen`].

pub mod ads;
pub mod cache;
pub mod debounce;
pub mod delta;
pub mod discovery;
pub mod gen;
pub mod metrics;
pub mod requests;
pub mod secrets;
pub mod sotw;
pub mod stream;
pub mod subscriptions;
pub mod types;
pub mod watch;
pub mod wire;

pub use ads::AdsService;
pub use discovery::DiscoveryServer;
