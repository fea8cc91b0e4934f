//! Debian packages: the signed indexes, dependency resolution, the `.deb` cache and the
//! lock file that pins what an image is made of.

pub mod deb;
pub mod fetch;
pub mod index;
pub mod lock;
pub mod resolve;
pub mod sources;
pub mod verify;
pub mod version;

/// Errors from reading Debian repositories and packages.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("HTTP client: {0}")]
    Client(String),
    #[error("GET {url}: {reason}")]
    Http { url: String, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("InRelease signature check failed for {url}: {reason}")]
    Signature { url: String, reason: String },
    #[error("{what}: SHA256 mismatch (expected {expected}, got {actual})")]
    Checksum {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{0} is not listed in the signed InRelease file")]
    NotInRelease(String),
    #[error("cannot resolve {package}: {reason}")]
    Resolve { package: String, reason: String },
    #[error("offline build: {0} is not in the cache")]
    NotCached(String),
    #[error("malformed package {package}: {reason}")]
    Malformed { package: String, reason: String },
    #[error("lock file {path}: {reason}")]
    Lock { path: String, reason: String },
}

impl Error {
    pub(crate) fn io(path: impl std::fmt::Display, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_string(),
            source,
        }
    }
}
