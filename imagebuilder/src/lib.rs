//! Assembles `pilot-discovery` into hardened, reproducible OCI images from Debian 12
//! packages, with CycloneDX SBOMs, pushes them to registries, migrates installations to
//! them and debugs the shell-less containers they run as.
//!
//! Build and push: [`debian`] (signed indexes, resolution, the `.deb` cache, the lock
//! file) → [`variant`] and [`layer`] (file trees, deterministic tar) → [`image`] (OCI
//! config, manifest, index), checked by [`policy`], driven by [`assemble`], described by
//! [`provenance`]; [`registry`] pushes a build's output and signs and verifies images there,
//! with keys and signatures in cosign's formats from [`signature`]. [`scan`] matches an SBOM
//! against advisory data read offline, with [`vex`] statements suppressing what does not apply.
//! `migrate` and `debug`, the two other commands, sit behind the cargo features of the same
//! names (on by default) so that build and push compile without the Kubernetes client, the
//! Docker engine API and the terminal.

pub mod assemble;
pub mod debian;
#[cfg(feature = "debug")]
pub mod debug;
pub mod image;
pub mod layer;
#[cfg(feature = "migrate")]
pub mod migrate;
pub mod policy;
pub mod provenance;
pub mod registry;
pub mod scan;
pub mod signature;
pub mod tls;
pub mod variant;
pub mod vex;
