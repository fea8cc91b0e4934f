//! The model generators read: services, endpoints, proxies and the push context snapshot.

pub mod authorization;
pub mod credentials;
pub mod gateway;
pub mod mesh;
pub mod proxy;
pub mod push_context;
pub mod registry;
pub mod service;

pub use mesh::MeshConfig;
pub use proxy::Proxy;
pub use push_context::{PushContext, SidecarScope};
pub use service::{Endpoint, Port, Protocol, Service};
