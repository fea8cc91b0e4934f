//! Checks on a workload's certificate signing request: size, PEM, DER, key type and size,
//! and the self-signature. Only the public key of a valid CSR is used for signing.

use rustls_pki_types::pem::{PemObject, SectionKind};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
};
use x509_parser::prelude::FromDer;

/// The largest CSR we read; real CSRs are around 1 KiB.
pub const MAX_CSR_BYTES: usize = 64 * 1024;
/// The smallest RSA modulus we sign for.
pub const MIN_RSA_BITS: usize = 2048;
/// The largest RSA modulus we sign for (also the limit of the verifier).
pub const MAX_RSA_BITS: usize = 8192;

/// Why a CSR was refused. Every variant maps to gRPC `InvalidArgument`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CsrError {
    #[error("CSR is {size} bytes, larger than the limit of {max} bytes")]
    TooLarge { size: usize, max: usize },
    #[error("CSR is empty")]
    Empty,
    #[error("CSR is not a PEM-encoded CERTIFICATE REQUEST: {0}")]
    Pem(String),
    #[error("CSR could not be parsed as PKCS#10: {0}")]
    Parse(String),
    #[error("CSR key type is not supported: {0} (use ECDSA P-256, ECDSA P-384 or RSA >= 2048)")]
    UnsupportedKey(String),
    #[error("CSR RSA key is {bits} bits; the allowed range is {MIN_RSA_BITS}..={MAX_RSA_BITS}")]
    RsaKeySize { bits: usize },
    #[error("CSR signature does not verify with its own public key")]
    BadSignature,
}

/// The key kinds we sign for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsrKey {
    EcdsaP256,
    EcdsaP384,
    Rsa(usize),
}

/// A CSR that passed every check.
#[derive(Debug, Clone)]
pub struct ValidCsr {
    /// The DER `SubjectPublicKeyInfo` the certificate will carry.
    pub spki_der: Vec<u8>,
    pub key: CsrKey,
    /// The SANs the CSR asked for, kept for logs only: the issued SAN is the caller's.
    pub requested_sans: Vec<String>,
}

/// Parses and checks a PEM CSR.
pub fn parse(pem: &str) -> Result<ValidCsr, CsrError> {
    if pem.len() > MAX_CSR_BYTES {
        return Err(CsrError::TooLarge {
            size: pem.len(),
            max: MAX_CSR_BYTES,
        });
    }
    if pem.trim().is_empty() {
        return Err(CsrError::Empty);
    }
    let der = csr_der(pem)?;
    let (rest, req) =
        X509CertificationRequest::from_der(&der).map_err(|e| CsrError::Parse(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CsrError::Parse(
            "trailing bytes after the request".to_owned(),
        ));
    }
    let info = &req.certification_request_info;
    let spki = &info.subject_pki;
    let key = key_kind(spki)?;
    req.verify_signature().map_err(|_| CsrError::BadSignature)?;
    let requested_sans = req
        .requested_extensions()
        .into_iter()
        .flatten()
        .filter_map(|ext| match ext {
            x509_parser::extensions::ParsedExtension::SubjectAlternativeName(san) => Some(
                san.general_names
                    .iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
        .flatten()
        .collect();
    Ok(ValidCsr {
        spki_der: spki.raw.to_vec(),
        key,
        requested_sans,
    })
}

fn csr_der(pem: &str) -> Result<Vec<u8>, CsrError> {
    let mut first = None;
    for item in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem.as_bytes()) {
        let (kind, der) = item.map_err(|e| CsrError::Pem(e.to_string()))?;
        if kind == SectionKind::Csr {
            first = Some(der);
            break;
        }
    }
    first.ok_or_else(|| CsrError::Pem("no CERTIFICATE REQUEST block found".to_owned()))
}

fn key_kind(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> Result<CsrKey, CsrError> {
    let alg = &spki.algorithm.algorithm;
    if *alg == OID_PKCS1_RSAENCRYPTION {
        let bits = match spki.parsed() {
            Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => modulus_bits(rsa.modulus),
            _ => return Err(CsrError::UnsupportedKey("malformed RSA key".to_owned())),
        };
        if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
            return Err(CsrError::RsaKeySize { bits });
        }
        return Ok(CsrKey::Rsa(bits));
    }
    if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        return match curve {
            Some(c) if c == OID_EC_P256 => Ok(CsrKey::EcdsaP256),
            Some(c) if c == OID_NIST_EC_P384 => Ok(CsrKey::EcdsaP384),
            Some(c) => Err(CsrError::UnsupportedKey(format!("EC curve {c}"))),
            None => Err(CsrError::UnsupportedKey(
                "EC key without a named curve".to_owned(),
            )),
        };
    }
    Err(CsrError::UnsupportedKey(format!("algorithm {alg}")))
}

fn modulus_bits(modulus: &[u8]) -> usize {
    let trimmed: &[u8] = match modulus.iter().position(|b| *b != 0) {
        Some(i) => &modulus[i..],
        None => return 0,
    };
    trimmed.len() * 8 - trimmed[0].leading_zeros() as usize
}

#[cfg(test)]
mod tests;
