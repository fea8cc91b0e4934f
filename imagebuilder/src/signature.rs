//! Image signatures in the format cosign writes and containers/image ("sigstore" signatures,
//! `use-sigstore-attachments`) verifies: an ECDSA P-256 signature over a simple-signing
//! payload that names the repository and the manifest digest, stored as a layer of an OCI
//! image tagged `sha256-<hex>.sig` beside the signed image.
//!
//! [`key`] reads and writes the key files, [`payload`] builds and reads the signed claims,
//! [`attachment`] builds and reads the `.sig` image; `registry::sign` moves them to and from a
//! registry.

pub mod attachment;
pub mod key;
pub mod payload;

/// Errors of keys, payloads and signature images.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {reason}")]
    KeyFile { path: String, reason: String },
    #[error("not a PEM file: {0}")]
    Pem(String),
    #[error("unsupported key file type `{0}` (expected ENCRYPTED SIGSTORE PRIVATE KEY, PRIVATE KEY or PUBLIC KEY)")]
    Label(String),
    #[error("not an ECDSA P-256 key: {0}")]
    NotP256(String),
    #[error(
        "the private key is encrypted: set {} to its passphrase",
        key::PASSWORD_ENV
    )]
    PassphraseRequired,
    #[error(
        "wrong passphrase: the private key did not decrypt (check {})",
        key::PASSWORD_ENV
    )]
    WrongPassphrase,
    #[error("encrypted key envelope: {0}")]
    Envelope(String),
    #[error("key generation or signing failed: {0}")]
    Crypto(String),
    #[error("signature does not verify with the public key")]
    BadSignature,
    #[error("signature payload: {0}")]
    Payload(String),
    #[error("signature image: {0}")]
    Attachment(String),
}
