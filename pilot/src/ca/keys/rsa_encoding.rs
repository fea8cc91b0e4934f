//! The only code that uses the `rsa` crate: generating an RSA key and converting between
//! the PKCS#1 and PKCS#8 encodings. No private-key operation (signing, decryption) of that
//! crate is reachable from here or anywhere else: every RSA signature istiod makes goes
//! through ring, which rcgen and rustls use with the PKCS#8 form this module hands over.
//! `rsa` 0.9's private-key operations are not constant-time (RUSTSEC-2023-0071); keeping
//! them out of the build is why this module exists (see docs/security.md). `clippy.toml`
//! forbids them by name, and a unit test fails if any other module names the crate.

use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};

/// A new RSA key in the two encodings istiod needs.
pub(super) struct GeneratedRsa {
    /// `PrivateKeyInfo` DER, for ring.
    pub pkcs8_der: Vec<u8>,
    /// `RSA PRIVATE KEY` PEM, as upstream writes `ca-key.pem`.
    pub pkcs1_pem: String,
}

/// Generates a key of `bits` from `rng`.
pub(super) fn generate(
    bits: usize,
    rng: &mut (impl rand::CryptoRng + rand::RngCore),
) -> Result<GeneratedRsa, String> {
    let key = rsa::RsaPrivateKey::new(rng, bits).map_err(|e| e.to_string())?;
    let pkcs8_der = key.to_pkcs8_der().map_err(|e| e.to_string())?;
    let pkcs1_pem = key
        .to_pkcs1_pem(LineEnding::LF)
        .map_err(|e| e.to_string())?;
    Ok(GeneratedRsa {
        pkcs8_der: pkcs8_der.as_bytes().to_vec(),
        pkcs1_pem: pkcs1_pem.to_string(),
    })
}

/// Re-encodes a PKCS#1 `RSA PRIVATE KEY` PEM as PKCS#8 DER.
pub(super) fn pkcs1_pem_to_pkcs8_der(pem: &str) -> Result<Vec<u8>, String> {
    let key = rsa::RsaPrivateKey::from_pkcs1_pem(pem).map_err(|e| e.to_string())?;
    let der = key.to_pkcs8_der().map_err(|e| e.to_string())?;
    Ok(der.as_bytes().to_vec())
}

/// Checks that PKCS#8 DER holds a consistent RSA key (ring's own error for a bad RSA
/// key says little).
pub(super) fn check_pkcs8_der(der: &[u8]) -> Result<(), String> {
    rsa::RsaPrivateKey::from_pkcs8_der(der)
        .map(drop)
        .map_err(|e| e.to_string())
}
