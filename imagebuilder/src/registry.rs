//! Pushing the built images to an OCI distribution registry.

pub mod auth;
pub mod push;
pub mod referrers;

/// Errors while pushing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("docker config {path}: {reason}")]
    DockerConfig { path: String, reason: String },
    #[error("credential helper {helper} for {server}: {reason}")]
    CredentialHelper {
        helper: String,
        server: String,
        reason: String,
    },
    #[error(
        "authentication to {registry} failed ({detail}); check the credentials `docker login` left in the Docker config"
    )]
    Auth { registry: String, detail: String },
    #[error("{what}: {source}")]
    Registry {
        what: String,
        #[source]
        source: oci_client::errors::OciDistributionError,
    },
    #[error("registry returned digest {got} for {what}, expected {want}")]
    DigestMismatch {
        what: String,
        want: String,
        got: String,
    },
    #[error("reading the build output {path}: {reason}")]
    Output { path: String, reason: String },
    #[error("{0}: {1}")]
    Policy(String, crate::policy::Violations),
    #[error("invalid reference {0}: {1}")]
    Reference(String, String),
}
