//! The Kubernetes source: watches the API server and feeds the same config store as the
//! `--configDir` source, so the model and generators do not care where config came from.

pub mod ca_secret;
pub mod client;
pub mod leader;
pub mod mesh;
pub mod rate_limit;
pub mod root_cert;
pub mod secrets;
pub mod tokenreview;
pub mod watch;
pub mod webhook_patch;

pub use client::{clients, ClientError, Clients};
pub use rate_limit::RateLimit;
pub use watch::{KubeSource, SyncTracker};
