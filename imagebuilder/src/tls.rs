//! The process-wide rustls crypto provider.
//!
//! reqwest (the registry client's and the Debian downloads') and kube take rustls' process
//! default provider; ring is the only one linked, and rustls does not install it by itself.

/// Installs ring as rustls' process-wide crypto provider, unless one is installed already.
pub fn install_crypto_provider() {
    // An error only says that a provider is installed already, which is what is wanted.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
