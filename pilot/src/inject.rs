//! Sidecar injection, as upstream's injector does it for the `/inject` webhook: whether a
//! pod is injected ([`policy`]), the injector's configuration ([`config`], read from
//! files by [`files`]), the templates ([`template`], run by [`render`]) laid over the pod
//! by strategic merge ([`merge`]), then what templates cannot do ([`post`], [`probe`]).
//! [`Injector`] ties them together; the webhook turns its result into a JSON patch.

pub mod config;
pub mod files;
mod injector;
pub mod merge;
pub mod pod;
pub mod policy;
pub mod post;
pub mod probe;
pub mod render;
pub mod selector;
pub mod template;

pub use self::injector::{patch, Injector, CLUSTER_ENV, NETWORK_ENV, PROXY_CONFIG_ANNOTATION};

use crate::config::yaml::YamlError;

/// Why a pod could not be injected; the message goes back to the API server.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("requested template {name:?} not found; have {have}")]
    NoTemplate { name: String, have: String },
    #[error("failed to run injection template {name:?}: {source}")]
    Template {
        name: String,
        #[source]
        source: template::Error,
    },
    #[error("failed parsing generated injected YAML of template {name:?} (check Istio sidecar injector configuration): {source}")]
    Yaml {
        name: String,
        #[source]
        source: YamlError,
    },
    #[error("template {name:?} did not render a pod (a YAML map)")]
    NotAPod { name: String },
    #[error("invalid {annotation} annotation: {message}")]
    Annotation {
        annotation: &'static str,
        message: String,
    },
}
