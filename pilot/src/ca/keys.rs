//! Private keys of the CA and of istiod's serving certificate: generation and the PEM
//! encodings upstream istiod reads and writes (PKCS#1 for RSA, SEC1 or PKCS#8 for ECDSA).

use std::fmt;
use std::str::FromStr;

use rcgen::KeyPair;

use super::Error;

mod rsa_encoding;

/// The kind of key a CA or serving certificate is generated with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    Rsa(usize),
    EcdsaP256,
    EcdsaP384,
}

impl Default for KeyType {
    /// Upstream's self-signed root is RSA 2048.
    fn default() -> Self {
        KeyType::Rsa(2048)
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyType::Rsa(bits) => write!(f, "RSA {bits}"),
            KeyType::EcdsaP256 => f.write_str("ECDSA P-256"),
            KeyType::EcdsaP384 => f.write_str("ECDSA P-384"),
        }
    }
}

impl FromStr for KeyType {
    type Err = String;

    /// Accepts `RSA`, `ECDSA`/`ECDSA_P256`/`P256`, `ECDSA_P384`/`P384` (any case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().replace('-', "_").as_str() {
            "RSA" => Ok(KeyType::Rsa(2048)),
            "ECDSA" | "ECDSA_P256" | "P256" | "EC" => Ok(KeyType::EcdsaP256),
            "ECDSA_P384" | "P384" => Ok(KeyType::EcdsaP384),
            other => Err(format!(
                "unknown key type {other:?}: expected RSA, ECDSA_P256 or ECDSA_P384"
            )),
        }
    }
}

/// A generated or loaded private key, in the form rcgen signs with, and its PEM encoding.
pub struct PrivateKey {
    pub pair: KeyPair,
    pub pem: String,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("algorithm", &self.pair.algorithm())
            .finish_non_exhaustive()
    }
}

/// Generates a key; RSA keys are written as PKCS#1 (`RSA PRIVATE KEY`) as upstream does.
pub fn generate(kind: KeyType) -> Result<PrivateKey, Error> {
    match kind {
        KeyType::Rsa(bits) => generate_rsa(bits, &mut rand::rngs::OsRng),
        KeyType::EcdsaP256 | KeyType::EcdsaP384 => {
            let alg = if kind == KeyType::EcdsaP256 {
                &rcgen::PKCS_ECDSA_P256_SHA256
            } else {
                &rcgen::PKCS_ECDSA_P384_SHA384
            };
            let pair =
                KeyPair::generate_for(alg).map_err(|e| Error::KeyGeneration(e.to_string()))?;
            let pem = pair.serialize_pem();
            Ok(PrivateKey { pair, pem })
        }
    }
}

/// Generates an RSA key from the given random source (seeded in tests).
pub fn generate_rsa(
    bits: usize,
    rng: &mut (impl rand::CryptoRng + rand::RngCore),
) -> Result<PrivateKey, Error> {
    if bits < 2048 {
        return Err(Error::KeyGeneration(format!(
            "RSA key size {bits} is below the minimum of 2048"
        )));
    }
    let key = rsa_encoding::generate(bits, rng).map_err(Error::KeyGeneration)?;
    let pair = rsa_pair(&key.pkcs8_der, "generated key")?;
    Ok(PrivateKey {
        pair,
        pem: key.pkcs1_pem,
    })
}

fn rsa_pair(pkcs8: &[u8], what: &str) -> Result<KeyPair, Error> {
    KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8.into(), &rcgen::PKCS_RSA_SHA256).map_err(|e| {
        Error::BadKey {
            what: what.to_owned(),
            reason: e.to_string(),
        }
    })
}

/// Parses a PEM private key in any of the encodings upstream accepts for `ca-key.pem`:
/// `PRIVATE KEY` (PKCS#8), `RSA PRIVATE KEY` (PKCS#1) or `EC PRIVATE KEY` (SEC1).
pub fn parse_pem(pem: &str, what: &str) -> Result<PrivateKey, Error> {
    let bad = |reason: String| Error::BadKey {
        what: what.to_owned(),
        reason,
    };
    let block = pem
        .lines()
        .find_map(|l| {
            l.strip_prefix("-----BEGIN ")
                .and_then(|r| r.strip_suffix("-----"))
        })
        .ok_or_else(|| bad("no PEM private key block".to_owned()))?;
    let pair = match block {
        "RSA PRIVATE KEY" => {
            let der = rsa_encoding::pkcs1_pem_to_pkcs8_der(pem).map_err(bad)?;
            rsa_pair(&der, what)?
        }
        "EC PRIVATE KEY" => {
            let sec1 = pem_contents(pem).map_err(bad)?;
            let pkcs8 = sec1_to_pkcs8(&sec1).map_err(bad)?;
            KeyPair::try_from(pkcs8.as_slice()).map_err(|e| bad(e.to_string()))?
        }
        "PRIVATE KEY" => {
            let der = pem_contents(pem).map_err(bad)?;
            match KeyPair::try_from(der.as_slice()) {
                Ok(pair) => pair,
                // ring picks no algorithm for RSA keys on its own.
                Err(_) => {
                    rsa_encoding::check_pkcs8_der(&der).map_err(bad)?;
                    rsa_pair(&der, what)?
                }
            }
        }
        other => return Err(bad(format!("unsupported PEM block {other:?}"))),
    };
    Ok(PrivateKey {
        pair,
        pem: pem.to_owned(),
    })
}

fn pem_contents(pem: &str) -> Result<Vec<u8>, String> {
    let mut items = <(rustls_pki_types::pem::SectionKind, Vec<u8>) as rustls_pki_types::pem::PemObject>::pem_slice_iter(pem.as_bytes());
    match items.next() {
        Some(item) => item
            .map(|(_kind, der)| der)
            .map_err(|e| format!("PEM: {e}")),
        None => Err("empty PEM".to_owned()),
    }
}

// OIDs, DER-encoded with tag and length.
const OID_EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

/// Wraps a SEC1 `ECPrivateKey` in a PKCS#8 `PrivateKeyInfo`, which is what ring reads.
fn sec1_to_pkcs8(sec1: &[u8]) -> Result<Vec<u8>, String> {
    let curve = if contains(sec1, OID_P256) {
        OID_P256
    } else if contains(sec1, OID_P384) {
        OID_P384
    } else {
        return Err("EC key on an unsupported curve (want P-256 or P-384)".to_owned());
    };
    let alg = der(0x30, &[OID_EC_PUBLIC_KEY, curve].concat());
    let body = [&[0x02, 0x01, 0x00][..], &alg, &der(0x04, sec1)].concat();
    Ok(der(0x30, &body))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

#[cfg(test)]
mod tests;
