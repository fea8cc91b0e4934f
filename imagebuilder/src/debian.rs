//! Debian packages: the signed indexes, dependency resolution, the `.deb` cache and the
//! lock file that pins what an image is made of.

pub mod deb;
pub mod fetch;
pub mod index;
pub mod lock;
pub mod release;
pub mod resolve;
pub mod sha256;
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
    #[error("{what}: size mismatch (expected {expected} bytes, got {actual})")]
    Size {
        what: String,
        expected: u64,
        actual: String,
    },
    #[error("{url}: the Release expired on {valid_until} ({ago} ago; Valid-Until), so its package lists may be outdated or replayed; refusing it, as apt does")]
    Expired {
        url: String,
        valid_until: String,
        ago: String,
    },
    #[error("{url}: the Release is dated {date}, in the future; refusing it, as apt does (check the clock)")]
    NotYetValid { url: String, date: String },
    #[error("{url} is the Release of Suite {suite}, Codename {codename}, not of {asked}: refusing a Release of another suite")]
    WrongSuite {
        url: String,
        asked: String,
        suite: String,
        codename: String,
    },
    #[error("{url}: malformed Release: {reason}")]
    BadRelease { url: String, reason: String },
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
