//! A JWT issuer for the CA's tests and load driver: an ECDSA P-256 key, its JWKS (as
//! `JWT_RULE` names it inline or by file), and tokens signed with it.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

/// An issuer with one signing key.
pub struct Issuer {
    key: EncodingKey,
    kid: String,
    jwks: String,
}

impl Issuer {
    /// A new key with key id `kid`.
    pub fn new(kid: &str) -> Self {
        let pair =
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("a P-256 key pair");
        // The uncompressed point: 0x04, then x and y.
        let point = pair.public_key_raw();
        let jwks = json!({"keys": [{
            "kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
            "x": b64url(&point[1..33]), "y": b64url(&point[33..65]),
        }]})
        .to_string();
        Issuer {
            key: EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes())
                .expect("rcgen's PEM is a valid EC key"),
            kid: kid.to_owned(),
            jwks,
        }
    }

    /// The JSON Web Key Set with the public key.
    pub fn jwks(&self) -> &str {
        &self.jwks
    }

    /// `claims` signed, naming this issuer's key id.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_as(&self.kid, claims)
    }

    /// `claims` signed with this key but naming key id `kid`.
    pub fn sign_as(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, &self.key).expect("claims encode")
    }
}

/// The claims of a Kubernetes service-account token from `issuer` for `audience`,
/// valid for `ttl_secs` from now (negative: expired).
pub fn service_account_claims(
    issuer: &str,
    audience: &str,
    namespace: &str,
    service_account: &str,
    ttl_secs: i64,
) -> Value {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    json!({
        "iss": issuer, "aud": [audience], "exp": now + ttl_secs, "iat": now,
        "sub": format!("system:serviceaccount:{namespace}:{service_account}"),
        "kubernetes.io": {"namespace": namespace,
                          "serviceaccount": {"name": service_account, "uid": "u"}},
    })
}

/// Base64url without padding, as JOSE encodes key coordinates.
fn b64url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let mut n = 0u32;
        for (i, b) in chunk.iter().enumerate() {
            n |= u32::from(*b) << (16 - 8 * i);
        }
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}
