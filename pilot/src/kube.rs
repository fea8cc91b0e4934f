//! The Kubernetes source: watches the API server and feeds the same config store as the
//! `--configDir` source, so the model and generators do not care where config came from.

pub mod client;
pub mod mesh;
pub mod watch;

pub use client::{client, ClientError};
pub use watch::{KubeSource, SyncTracker};
