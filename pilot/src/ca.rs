//! istiod's certificate authority: the root of trust (self-signed or plugged in), the
//! signing of workload certificates, caller authentication, the
//! `istio.v1.auth.IstioCertificateService` gRPC service, istiod's own serving certificate
//! and the secure gRPC server on 15012 that carries both the CA and ADS.

pub mod authn;
pub mod authority;
pub mod bootstrap;
pub mod config;
pub mod csr;
pub mod file;
pub mod jwt;
pub mod keys;
pub mod metrics;
pub mod root;
pub mod rotation;
pub mod secure;
pub mod service;
pub mod serving;
pub mod store;

/// Generated code for `istio.v1.auth` (see `pilot/proto`).
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("istio.v1.auth");
}

pub use authority::Authority;
pub use bootstrap::{Ca, SecureOptions};
pub use config::CaConfig;
pub use store::{RootStore, SharedRoot};

/// Everything that can go wrong in the CA subsystem.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("CA key material in {dir} is incomplete: missing {missing}")]
    IncompleteBundle { dir: String, missing: String },
    #[error("invalid certificate in {what}: {reason}")]
    BadCertificate { what: String, reason: String },
    #[error("invalid private key in {what}: {reason}")]
    BadKey { what: String, reason: String },
    #[error("generating key: {0}")]
    KeyGeneration(String),
    #[error("signing certificate: {0}")]
    Signing(#[from] rcgen::Error),
    #[error(transparent)]
    Csr(#[from] csr::CsrError),
    #[error("requested TTL {requested:?} is greater than the max allowed TTL {max:?}")]
    TtlTooLong {
        requested: std::time::Duration,
        max: std::time::Duration,
    },
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

/// Reads a file, naming it in the error.
pub(crate) fn read_file(path: &std::path::Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}
