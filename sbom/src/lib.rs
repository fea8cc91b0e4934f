//! CycloneDX SBOMs for the pilot images.
//!
//! The model is built from three kinds of input: the Debian packages in an image, the Rust
//! crates compiled into `pilot-discovery` (see [`cargo`]), and files (the binary). The image
//! itself is the metadata component. Output is CycloneDX JSON, spec 1.5 (the newest version
//! `cyclonedx-bom` writes). [`vulnerabilities`] adds a scan's findings to an SBOM.

pub mod cargo;
mod model;
pub mod vulnerabilities;

pub use model::{
    render, BinaryFile, DebPackage, Distro, ImageInfo, RustCrate, SbomInput, PROP_CODENAME,
    PROP_SOURCE, PROP_SOURCE_VERSION,
};

/// Errors raised while collecting inputs or rendering an SBOM.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cargo metadata failed: {0}")]
    CargoMetadata(#[from] cargo_metadata::Error),
    #[error("package {0} not found in cargo metadata")]
    MissingPackage(String),
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid timestamp {0:?}: {1}")]
    Timestamp(String, String),
    #[error("invalid package URL for {0}: {1}")]
    Purl(String, String),
    #[error("generated SBOM does not validate: {0}")]
    Invalid(String),
    #[error("writing SBOM JSON: {0}")]
    Json(String),
}
