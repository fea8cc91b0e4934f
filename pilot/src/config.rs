//! Configuration: command-line flags and environment, the config store, and its sources.

pub mod file;
pub mod istio;
pub mod kind;
pub mod object;
pub mod secrets;
pub mod store;
pub mod yaml;

pub use kind::Kind;
pub use object::{Config, ConfigKey, Spec};
pub use store::{ChangeSet, ConfigStore, Snapshot};
