//! ECDSA P-256 keys in the files cosign writes and reads.
//!
//! `cosign.pub` is a PEM `PUBLIC KEY` (SubjectPublicKeyInfo, as openssl writes it).
//! `cosign.key` is a PEM `ENCRYPTED SIGSTORE PRIVATE KEY` whose body is a JSON envelope:
//! the key's PKCS#8 DER sealed with NaCl secretbox (XSalsa20-Poly1305) under a key that scrypt
//! derives from the passphrase, with the KDF parameters, salt and nonce beside it. An
//! unencrypted PKCS#8 `PRIVATE KEY` (what `openssl genpkey` writes) is read too.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use crypto_secretbox::aead::{Aead, KeyInit};
use crypto_secretbox::{Key, Nonce, XSalsa20Poly1305};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{
    EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_ASN1,
    ECDSA_P256_SHA256_ASN1_SIGNING,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::Error;

/// The environment variable holding the private key's passphrase, as cosign names it.
pub const PASSWORD_ENV: &str = "COSIGN_PASSWORD";
/// PEM label of the public key.
pub const PUBLIC_KEY_LABEL: &str = "PUBLIC KEY";
/// PEM label of the encrypted private key cosign writes.
pub const ENCRYPTED_KEY_LABEL: &str = "ENCRYPTED SIGSTORE PRIVATE KEY";
/// The label cosign releases before 2.0 wrote, around the same envelope.
const LEGACY_ENCRYPTED_KEY_LABEL: &str = "ENCRYPTED COSIGN PRIVATE KEY";
const PKCS8_LABEL: &str = "PRIVATE KEY";

/// SubjectPublicKeyInfo { id-ecPublicKey, prime256v1 } up to the uncompressed point. DER
/// is canonical, so every P-256 key with an uncompressed point is exactly this prefix and the
/// 65 bytes of the point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
const POINT_LEN: usize = 65;

/// scrypt's cost as cosign sets it: N = 2^15, r = 8, p = 1 (32 MiB, ~100 ms).
const SCRYPT_LOG_N: u8 = 15;
const SCRYPT_R: u32 = 8;
const SCRYPT_P: u32 = 1;
/// The most memory (128·r·N bytes) and parallelism a key file may ask scrypt for.
const SCRYPT_MAX_MEMORY: u64 = 1 << 30;
const SCRYPT_MAX_P: u32 = 16;
const SALT_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const BOX_KEY_LEN: usize = 32;
const KDF_NAME: &str = "scrypt";
const CIPHER_NAME: &str = "nacl/secretbox";

/// The JSON inside an encrypted key's PEM; field names and order as cosign writes them.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    kdf: Kdf,
    cipher: Cipher,
    #[serde(with = "b64")]
    ciphertext: Vec<u8>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Kdf {
    name: String,
    params: ScryptParams,
    #[serde(with = "b64")]
    salt: Vec<u8>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ScryptParams {
    #[serde(rename = "N")]
    n: u64,
    r: u32,
    p: u32,
}

#[derive(Debug, Serialize, Deserialize)]
struct Cipher {
    name: String,
    #[serde(with = "b64")]
    nonce: Vec<u8>,
}

/// Byte strings as standard, padded base64 (how Go encodes `[]byte` in JSON).
mod b64 {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s).map_err(D::Error::custom)
    }
}

fn random<const N: usize>(rng: &SystemRandom) -> Result<[u8; N], Error> {
    let mut b = [0u8; N];
    rng.fill(&mut b)
        .map_err(|_| Error::Crypto("the system random source failed".into()))?;
    Ok(b)
}

/// The secretbox key scrypt derives from `passphrase`, within bounds a key file cannot push
/// past (a hostile file could otherwise ask for any amount of memory).
fn derive(
    passphrase: &[u8],
    salt: &[u8],
    p: &ScryptParams,
) -> Result<Zeroizing<[u8; BOX_KEY_LEN]>, Error> {
    let bad = |why: String| Error::Envelope(format!("scrypt N={} r={} p={}: {why}", p.n, p.r, p.p));
    if p.n < 2 || !p.n.is_power_of_two() {
        return Err(bad("N is not a power of two".into()));
    }
    let memory = 128u64
        .checked_mul(u64::from(p.r))
        .and_then(|m| m.checked_mul(p.n));
    if memory.is_none_or(|m| m > SCRYPT_MAX_MEMORY) || p.p > SCRYPT_MAX_P {
        return Err(bad(format!(
            "more than {} MiB or p > {SCRYPT_MAX_P}",
            SCRYPT_MAX_MEMORY >> 20
        )));
    }
    let params = scrypt::Params::new(p.n.trailing_zeros() as u8, p.r, p.p, BOX_KEY_LEN)
        .map_err(|e| bad(e.to_string()))?;
    let mut key = Zeroizing::new([0u8; BOX_KEY_LEN]);
    scrypt::scrypt(passphrase, salt, &params, key.as_mut_slice())
        .map_err(|e| bad(e.to_string()))?;
    Ok(key)
}

/// Seals `secret` under `passphrase` with scrypt cost 2^`log_n`.
fn seal(secret: &[u8], passphrase: &[u8], log_n: u8) -> Result<Envelope, Error> {
    let rng = SystemRandom::new();
    let salt: [u8; SALT_LEN] = random(&rng)?;
    let nonce: [u8; NONCE_LEN] = random(&rng)?;
    let params = ScryptParams {
        n: 1 << log_n,
        r: SCRYPT_R,
        p: SCRYPT_P,
    };
    let key = derive(passphrase, &salt, &params)?;
    let ciphertext = XSalsa20Poly1305::new(Key::from_slice(key.as_slice()))
        .encrypt(Nonce::from_slice(&nonce), secret)
        .map_err(|_| Error::Crypto("secretbox sealing failed".into()))?;
    Ok(Envelope {
        kdf: Kdf {
            name: KDF_NAME.into(),
            params,
            salt: salt.to_vec(),
        },
        cipher: Cipher {
            name: CIPHER_NAME.into(),
            nonce: nonce.to_vec(),
        },
        ciphertext,
    })
}

/// Opens an envelope; a wrong passphrase fails Poly1305's authentication.
fn open(env: &Envelope, passphrase: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
    if env.kdf.name != KDF_NAME {
        return Err(Error::Envelope(format!(
            "KDF `{}` (only {KDF_NAME})",
            env.kdf.name
        )));
    }
    if env.cipher.name != CIPHER_NAME {
        return Err(Error::Envelope(format!(
            "cipher `{}` (only {CIPHER_NAME})",
            env.cipher.name
        )));
    }
    let nonce: [u8; NONCE_LEN] = env.cipher.nonce.as_slice().try_into().map_err(|_| {
        Error::Envelope(format!(
            "nonce of {} bytes (not {NONCE_LEN})",
            env.cipher.nonce.len()
        ))
    })?;
    let key = derive(passphrase, &env.kdf.salt, &env.kdf.params)?;
    XSalsa20Poly1305::new(Key::from_slice(key.as_slice()))
        .decrypt(Nonce::from_slice(&nonce), env.ciphertext.as_slice())
        .map(Zeroizing::new)
        .map_err(|_| Error::WrongPassphrase)
}

fn pem_decode(text: &[u8]) -> Result<(String, Zeroizing<Vec<u8>>), Error> {
    let (label, der) = pem_rfc7468::decode_vec(text).map_err(|e| Error::Pem(e.to_string()))?;
    Ok((label.to_string(), Zeroizing::new(der)))
}

fn pem_encode(label: &str, der: &[u8]) -> Result<String, Error> {
    pem_rfc7468::encode_string(label, pem_rfc7468::LineEnding::LF, der)
        .map_err(|e| Error::Pem(e.to_string()))
}

fn read_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, Error> {
    std::fs::read(path)
        .map(Zeroizing::new)
        .map_err(|e| Error::KeyFile {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
}

/// An ECDSA P-256 private key.
pub struct SigningKey {
    pair: EcdsaKeyPair,
    pkcs8: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("public", &self.public_key())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new random key.
    pub fn generate() -> Result<Self, Error> {
        let doc =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &SystemRandom::new())
                .map_err(|_| Error::Crypto("generating a P-256 key".into()))?;
        Self::from_pkcs8(doc.as_ref())
    }

    /// The key in PKCS#8 DER (with the public key inside, as Go and openssl write it).
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, Error> {
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, der, &SystemRandom::new())
                .map_err(|e| Error::NotP256(format!("PKCS#8 key rejected: {e}")))?;
        Ok(Self {
            pair,
            pkcs8: Zeroizing::new(der.to_vec()),
        })
    }

    /// Reads a PEM `ENCRYPTED SIGSTORE PRIVATE KEY` (needs `passphrase`) or `PRIVATE KEY`.
    pub fn from_pem(text: &[u8], passphrase: Option<&[u8]>) -> Result<Self, Error> {
        let (label, body) = pem_decode(text)?;
        match label.as_str() {
            ENCRYPTED_KEY_LABEL | LEGACY_ENCRYPTED_KEY_LABEL => {
                let env: Envelope = serde_json::from_slice(&body)
                    .map_err(|e| Error::Envelope(format!("not the JSON cosign writes: {e}")))?;
                let passphrase = passphrase.ok_or(Error::PassphraseRequired)?;
                Self::from_pkcs8(&open(&env, passphrase)?)
            }
            PKCS8_LABEL => Self::from_pkcs8(&body),
            PUBLIC_KEY_LABEL => Err(Error::NotP256(
                "this is a public key; signing needs the private key".into(),
            )),
            other => Err(Error::Label(other.to_string())),
        }
    }

    /// Reads a key file (see [`SigningKey::from_pem`]); errors name the file.
    pub fn read(path: &Path, passphrase: Option<&[u8]>) -> Result<Self, Error> {
        Self::from_pem(&read_file(path)?, passphrase).map_err(|e| match e {
            e @ (Error::WrongPassphrase | Error::PassphraseRequired) => e,
            other => Error::KeyFile {
                path: path.display().to_string(),
                reason: other.to_string(),
            },
        })
    }

    /// The PEM `ENCRYPTED SIGSTORE PRIVATE KEY` cosign writes.
    pub fn to_encrypted_pem(&self, passphrase: &[u8]) -> Result<Zeroizing<String>, Error> {
        self.to_encrypted_pem_with_cost(passphrase, SCRYPT_LOG_N)
    }

    fn to_encrypted_pem_with_cost(
        &self,
        passphrase: &[u8],
        log_n: u8,
    ) -> Result<Zeroizing<String>, Error> {
        let env = seal(&self.pkcs8, passphrase, log_n)?;
        let json = serde_json::to_vec(&env).map_err(|e| Error::Envelope(e.to_string()))?;
        pem_encode(ENCRYPTED_KEY_LABEL, &json).map(Zeroizing::new)
    }

    /// The unencrypted PKCS#8 PEM (`PRIVATE KEY`), as `openssl pkey` reads it.
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, Error> {
        pem_encode(PKCS8_LABEL, &self.pkcs8).map(Zeroizing::new)
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            point: self.pair.public_key().as_ref().to_vec(),
        }
    }

    /// An ECDSA P-256 SHA-256 signature of `message`, DER-encoded (as cosign stores it).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        self.pair
            .sign(&SystemRandom::new(), message)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| Error::Crypto("ECDSA signing failed".into()))
    }
}

/// An ECDSA P-256 public key.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// The uncompressed point (0x04 ‖ x ‖ y).
    point: Vec<u8>,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey(sha256:{})", self.fingerprint())
    }
}

impl PublicKey {
    /// A SubjectPublicKeyInfo in DER.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, Error> {
        match der.strip_prefix(&P256_SPKI_PREFIX[..]) {
            Some(point) if point.len() == POINT_LEN && point[0] == 0x04 => Ok(Self {
                point: point.to_vec(),
            }),
            _ => Err(Error::NotP256(format!(
                "the {}-byte SubjectPublicKeyInfo is not a P-256 key with an uncompressed point",
                der.len()
            ))),
        }
    }

    pub fn to_spki_der(&self) -> Vec<u8> {
        [&P256_SPKI_PREFIX[..], &self.point].concat()
    }

    /// Reads a PEM `PUBLIC KEY`.
    pub fn from_pem(text: &[u8]) -> Result<Self, Error> {
        let (label, der) = pem_decode(text)?;
        match label.as_str() {
            PUBLIC_KEY_LABEL => Self::from_spki_der(&der),
            other => Err(Error::Label(other.to_string())),
        }
    }

    /// Reads a public key file; errors name the file.
    pub fn read(path: &Path) -> Result<Self, Error> {
        Self::from_pem(&read_file(path)?).map_err(|e| Error::KeyFile {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    }

    pub fn to_pem(&self) -> Result<String, Error> {
        pem_encode(PUBLIC_KEY_LABEL, &self.to_spki_der())
    }

    /// Hex SHA-256 of the SubjectPublicKeyInfo: names the key in messages.
    pub fn fingerprint(&self) -> String {
        hex::encode(Sha256::digest(self.to_spki_der()))
    }

    /// Checks a DER ECDSA P-256 SHA-256 signature of `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), Error> {
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &self.point)
            .verify(message, signature)
            .map_err(|_| Error::BadSignature)
    }
}

/// Decodes the base64 of a signature annotation.
pub fn decode_signature(b64: &str) -> Result<Vec<u8>, Error> {
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| Error::Attachment(format!("signature is not base64: {e}")))
}

/// The two files of a key pair.
#[derive(Debug)]
pub struct KeyPairFiles {
    pub private: PathBuf,
    pub public: PathBuf,
}

/// Writes a new key pair as `<prefix>.key` (encrypted, mode 0600) and `<prefix>.pub`.
/// Existing files are kept unless `overwrite`.
pub fn generate_key_pair(
    prefix: &str,
    passphrase: &[u8],
    overwrite: bool,
) -> Result<KeyPairFiles, Error> {
    let files = KeyPairFiles {
        private: PathBuf::from(format!("{prefix}.key")),
        public: PathBuf::from(format!("{prefix}.pub")),
    };
    let io = |path: &Path, e: std::io::Error| Error::KeyFile {
        path: path.display().to_string(),
        reason: if e.kind() == std::io::ErrorKind::AlreadyExists {
            "exists already (--force overwrites it)".into()
        } else {
            e.to_string()
        },
    };
    if !overwrite {
        for p in [&files.private, &files.public] {
            if p.exists() {
                return Err(io(p, std::io::ErrorKind::AlreadyExists.into()));
            }
        }
    }
    let key = SigningKey::generate()?;
    let private = key.to_encrypted_pem(passphrase)?;
    let public = key.public_key().to_pem()?;
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .create_new(!overwrite)
        .truncate(true)
        .mode(0o600)
        .open(&files.private)
        .map_err(|e| io(&files.private, e))?;
    // `mode` applies only to a new file; an overwritten one may have been readable.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .and_then(|()| f.write_all(private.as_bytes()))
        .map_err(|e| io(&files.private, e))?;
    std::fs::write(&files.public, public).map_err(|e| io(&files.public, e))?;
    Ok(files)
}

#[cfg(test)]
mod tests;
