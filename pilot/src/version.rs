//! Build version information.

/// The version of this istiod build.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Istio API version this build is compatible with.
pub const ISTIO_COMPAT_VERSION: &str = "1.32";

/// The release of the Rust compiler that built this binary (set by `build.rs`).
pub const RUSTC_VERSION: &str = env!("PILOT_RUSTC_VERSION");

/// The one-line build string printed by `pilot-discovery version` and served on `/version`.
pub fn build_info() -> String {
    format!(
        "version.BuildInfo{{Version:\"{VERSION}\", IstioCompat:\"{ISTIO_COMPAT_VERSION}\", Rust:\"{RUSTC_VERSION}\"}}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_the_compiler_that_built_it() {
        // A release number such as "1.95.0", not the `rust-version` floor of Cargo.toml.
        let parts: Vec<&str> = RUSTC_VERSION.split('.').collect();
        assert_eq!(parts.len(), 3, "{RUSTC_VERSION}");
        assert!(
            parts[..2].iter().all(|p| p.parse::<u32>().is_ok()),
            "{RUSTC_VERSION}"
        );
        assert!(build_info().contains(&format!("Rust:\"{RUSTC_VERSION}\"")));
    }
}
