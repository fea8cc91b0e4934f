//! Build version information.

/// The version of this istiod build.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Istio API version this build is compatible with.
pub const ISTIO_COMPAT_VERSION: &str = "1.32";

/// The one-line build string printed by `pilot-discovery version` and served on `/version`.
pub fn build_info() -> String {
    format!(
        "version.BuildInfo{{Version:\"{VERSION}\", IstioCompat:\"{ISTIO_COMPAT_VERSION}\", Rust:\"{}\"}}",
        option_env!("CARGO_PKG_RUST_VERSION").unwrap_or("unknown")
    )
}
