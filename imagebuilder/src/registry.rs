//! Pushing the built images to an OCI distribution registry, and signing and verifying
//! images there.

pub mod auth;
pub mod challenge;
pub mod push;
pub mod referrers;
pub mod sign;

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
    #[error("HTTP client: {0}")]
    Client(String),
    #[error("refusing to send the credentials for {registry} over plain HTTP to {target} ({why}); only --plain-http allows plain HTTP for a registry")]
    PlainHttpCredentials {
        registry: String,
        target: String,
        why: String,
    },
    #[error("{url}: {reason} (a registry that serves plain HTTP needs --plain-http)")]
    Unreachable { url: String, reason: String },
    #[error(transparent)]
    Signature(#[from] crate::signature::Error),
    #[error("{reference}: no signature verifies: {}", reasons.join("; "))]
    NotVerified {
        reference: String,
        reasons: Vec<String>,
    },
}
