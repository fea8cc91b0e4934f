//! Assembles `pilot-discovery` into hardened, reproducible OCI images from Debian 12
//! packages, with CycloneDX SBOMs, pushes them to registries, migrates installations to
//! them and debugs the shell-less containers they run as.
//!
//! Build and push: [`debian`] (signed indexes, resolution, the `.deb` cache, the lock
//! file) → [`variant`] and [`layer`] (file trees, deterministic tar) → [`image`] (OCI
//! config, manifest, index), checked by [`policy`], driven by [`assemble`]; [`registry`]
//! pushes a build's output. [`migrate`] and [`debug`] are the two other commands.

pub mod assemble;
pub mod debian;
pub mod debug;
pub mod image;
pub mod layer;
pub mod migrate;
pub mod policy;
pub mod registry;
pub mod variant;
