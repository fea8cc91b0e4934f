//! Gateway credentials: what an SDS resource name refers to, which keys of a Secret hold
//! the certificate, key and CA bundle, and whether a proxy may read it — as upstream's
//! `pilot/pkg/model/credentials` and `pilot/pkg/credentials/kube`.

use std::collections::BTreeMap;

use x509_parser::prelude::{FromDer, X509Certificate};

use crate::ca::{keys, root};
use crate::config::secrets::{SecretData, SecretKey, Secrets};

/// Prefix of a Secret reference: `kubernetes://<name>` or `kubernetes://<ns>/<name>`.
pub const KUBERNETES_PREFIX: &str = "kubernetes://";
/// Gateway API references (`kubernetes-gateway://<ns>/<name>`), allowed upstream only when
/// a Gateway or ReferenceGrant vouches for them; not served here.
pub const KUBERNETES_GATEWAY_PREFIX: &str = "kubernetes-gateway://";
/// ConfigMap CA bundles (`configmap://<ns>/<name>`); not served here.
pub const CONFIGMAP_PREFIX: &str = "configmap://";
/// A reference upstream generates for a credential it rejected: never resolves.
pub const INVALID_PREFIX: &str = "invalid://";
/// Suffix of the resource that carries only a Secret's CA bundle.
pub const CA_SUFFIX: &str = "-cacert";

/// Keys of a generic Secret (upstream's first choice).
pub const GENERIC_CERT: &str = "cert";
pub const GENERIC_KEY: &str = "key";
pub const GENERIC_CA: &str = "cacert";
pub const GENERIC_CRL: &str = "crl";
/// Keys of a `kubernetes.io/tls` Secret.
pub const TLS_CERT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";
pub const TLS_CA: &str = "ca.crt";
pub const TLS_CRL: &str = "ca.crl";
pub const TLS_OCSP_STAPLE: &str = "tls.ocsp-staple";

/// A parsed `kubernetes://` resource name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    /// The name as the proxy asked for it (the SDS resource name).
    pub resource_name: String,
    pub namespace: String,
    /// The Secret's name, with `-cacert` if the proxy asked for the CA bundle.
    pub name: String,
}

impl SecretRef {
    /// Whether only the CA bundle is asked for (`<name>-cacert`).
    pub fn ca_only(&self) -> bool {
        self.name.ends_with(CA_SUFFIX)
    }

    /// The Secrets whose change changes this resource: the Secret itself and its
    /// `-cacert` sibling (or the Secret a `-cacert` name falls back to).
    pub fn related(&self) -> [SecretKey; 2] {
        let other = match self.name.strip_suffix(CA_SUFFIX) {
            Some(base) => base.to_owned(),
            None => format!("{}{CA_SUFFIX}", self.name),
        };
        [
            SecretKey::new(&self.namespace, &self.name),
            SecretKey::new(&self.namespace, &other),
        ]
    }
}

/// Why a credential cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error(
        "unknown resource type {0:?}: want kubernetes://<name> or kubernetes://<namespace>/<name>"
    )]
    UnknownType(String),
    #[error("invalid resource name {0:?}: empty namespace or name")]
    BadName(String),
    #[error("{0:?}: {1} references are not supported")]
    Unsupported(String, &'static str),
    #[error("secret {0} not found")]
    NotFound(SecretKey),
    #[error("found keys {0:?} and {1:?}, but they were empty")]
    Empty(&'static str, &'static str),
    #[error("found key {0:?}, but it was empty")]
    EmptyCa(&'static str),
    #[error("found secret, but didn't have expected keys ({GENERIC_CERT} and {GENERIC_KEY}) or ({TLS_CERT} and {TLS_KEY}); found: {0}")]
    MissingKeys(String),
    #[error("found secret, but didn't have expected keys {GENERIC_CA} or {TLS_CA}; found: {0}")]
    MissingCa(String),
    #[error("invalid certificate in {key:?}: {reason}")]
    BadCertificate { key: &'static str, reason: String },
    #[error("invalid private key in {key:?}: {reason}")]
    BadKey { key: &'static str, reason: String },
    #[error("private key in {key:?} does not match the certificate in {cert:?}")]
    KeyMismatch {
        cert: &'static str,
        key: &'static str,
    },
}

/// Parses an SDS resource name for a proxy in `proxy_namespace`. `Ok(None)` for
/// `invalid://` names, which upstream sends for rejected credentials and serves nothing for.
pub fn parse_resource_name(
    resource_name: &str,
    proxy_namespace: &str,
) -> Result<Option<SecretRef>, CredentialError> {
    if let Some(rest) = resource_name.strip_prefix(KUBERNETES_PREFIX) {
        // Upstream splits on every `/` and reads the first two parts.
        let mut parts = rest.split('/');
        let first = parts.next().unwrap_or_default();
        let (namespace, name) = match parts.next() {
            Some(name) => (first, name),
            None => (proxy_namespace, first),
        };
        if namespace.is_empty() || name.is_empty() {
            return Err(CredentialError::BadName(resource_name.to_owned()));
        }
        return Ok(Some(SecretRef {
            resource_name: resource_name.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }));
    }
    if resource_name.starts_with(KUBERNETES_GATEWAY_PREFIX) {
        return Err(CredentialError::Unsupported(
            resource_name.to_owned(),
            "Gateway API (ReferenceGrant)",
        ));
    }
    if resource_name.starts_with(CONFIGMAP_PREFIX) {
        return Err(CredentialError::Unsupported(
            resource_name.to_owned(),
            "ConfigMap",
        ));
    }
    if resource_name.starts_with(INVALID_PREFIX) {
        return Ok(None);
    }
    Err(CredentialError::UnknownType(resource_name.to_owned()))
}

/// A certificate chain and its key, as upstream's `CertInfo`.
#[derive(Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
    pub staple: Option<Vec<u8>>,
    pub crl: Option<Vec<u8>>,
}

impl std::fmt::Debug for CertInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertInfo")
            .field("cert_bytes", &self.cert.len())
            .finish_non_exhaustive()
    }
}

/// A CA bundle and its CRL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaInfo {
    pub cert: Vec<u8>,
    pub crl: Option<Vec<u8>>,
}

fn has_value(data: &BTreeMap<String, Vec<u8>>, keys: &[&str]) -> bool {
    keys.iter()
        .all(|k| data.get(*k).is_some_and(|v| !v.is_empty()))
}

fn has_keys(data: &BTreeMap<String, Vec<u8>>, keys: &[&str]) -> bool {
    keys.iter().all(|k| data.contains_key(*k))
}

fn non_empty(data: &BTreeMap<String, Vec<u8>>, key: &str) -> Option<Vec<u8>> {
    data.get(key).filter(|v| !v.is_empty()).cloned()
}

/// The first three keys, then how many more: what the error names of a Secret's contents.
fn found_keys(data: &BTreeMap<String, Vec<u8>>) -> String {
    let keys: Vec<&str> = data.keys().map(String::as_str).collect();
    if keys.len() < 3 {
        keys.join(", ")
    } else {
        format!("{}, and {} more...", keys[..3].join(", "), keys.len() - 3)
    }
}

/// The certificate and key of a Secret: `cert`/`key` first, then `tls.crt`/`tls.key`, as
/// upstream; both checked to be PEM, the key to belong to the certificate.
pub fn cert_info(secret: &SecretData) -> Result<CertInfo, CredentialError> {
    let d = &secret.data;
    let (cert_key, key_key, info) = if has_value(d, &[GENERIC_CERT, GENERIC_KEY]) {
        (
            GENERIC_CERT,
            GENERIC_KEY,
            CertInfo {
                cert: d[GENERIC_CERT].clone(),
                key: d[GENERIC_KEY].clone(),
                staple: None,
                crl: non_empty(d, GENERIC_CRL),
            },
        )
    } else if has_value(d, &[TLS_CERT, TLS_KEY]) {
        (
            TLS_CERT,
            TLS_KEY,
            CertInfo {
                cert: d[TLS_CERT].clone(),
                key: d[TLS_KEY].clone(),
                staple: non_empty(d, TLS_OCSP_STAPLE),
                crl: non_empty(d, TLS_CRL),
            },
        )
    } else if has_keys(d, &[GENERIC_CERT, GENERIC_KEY]) {
        return Err(CredentialError::Empty(GENERIC_CERT, GENERIC_KEY));
    } else if has_keys(d, &[TLS_CERT, TLS_KEY]) {
        return Err(CredentialError::Empty(TLS_CERT, TLS_KEY));
    } else {
        return Err(CredentialError::MissingKeys(found_keys(d)));
    };
    let leaf = check_certificates(&info.cert, cert_key)?;
    let key_pem = std::str::from_utf8(&info.key).map_err(|_| CredentialError::BadKey {
        key: key_key,
        reason: "not PEM text".to_owned(),
    })?;
    let key = keys::parse_pem(key_pem, key_key).map_err(|e| CredentialError::BadKey {
        key: key_key,
        reason: e.to_string(),
    })?;
    let (_, x509) =
        X509Certificate::from_der(&leaf).map_err(|e| CredentialError::BadCertificate {
            key: cert_key,
            reason: e.to_string(),
        })?;
    if x509.public_key().subject_public_key.data.as_ref() != key.pair.public_key_raw() {
        return Err(CredentialError::KeyMismatch {
            cert: cert_key,
            key: key_key,
        });
    }
    Ok(info)
}

/// The CA bundle of a Secret: `cacert` first, then `ca.crt`, as upstream.
pub fn ca_info(secret: &SecretData) -> Result<CaInfo, CredentialError> {
    let d = &secret.data;
    let (key, info) = if has_value(d, &[GENERIC_CA]) {
        (
            GENERIC_CA,
            CaInfo {
                cert: d[GENERIC_CA].clone(),
                crl: non_empty(d, GENERIC_CRL),
            },
        )
    } else if has_value(d, &[TLS_CA]) {
        (
            TLS_CA,
            CaInfo {
                cert: d[TLS_CA].clone(),
                crl: non_empty(d, TLS_CRL),
            },
        )
    } else if has_keys(d, &[GENERIC_CA]) {
        return Err(CredentialError::EmptyCa(GENERIC_CA));
    } else if has_keys(d, &[TLS_CA]) {
        return Err(CredentialError::EmptyCa(TLS_CA));
    } else {
        return Err(CredentialError::MissingCa(found_keys(d)));
    };
    check_certificates(&info.cert, key)?;
    Ok(info)
}

/// Checks that `pem` is one or more PEM certificates; returns the first one's DER.
fn check_certificates(pem: &[u8], key: &'static str) -> Result<Vec<u8>, CredentialError> {
    let bad = |reason: String| CredentialError::BadCertificate { key, reason };
    let text = std::str::from_utf8(pem).map_err(|_| bad("not PEM text".to_owned()))?;
    let certs = root::split_pem(text, key).map_err(|e| bad(e.to_string()))?;
    let first = certs
        .first()
        .ok_or_else(|| bad("no PEM CERTIFICATE block".to_owned()))?;
    root::der_of(first, key).map_err(|e| bad(e.to_string()))
}

/// Why the first certificate of `pem` is not valid at `now` (expired or not yet valid), as
/// upstream's `ValidateCertificate`: such a certificate is still served, with a warning.
pub fn validity_problem(pem: &[u8], now: time::OffsetDateTime) -> Option<String> {
    let text = std::str::from_utf8(pem).ok()?;
    let (not_before, not_after) = root::validity(text).ok()?;
    (now < not_before || now > not_after).then(|| {
        format!("certificate is expired or not yet valid (valid from {not_before} to {not_after})")
    })
}

/// What an SDS resource resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A certificate chain and key (`tls_certificate`).
    Certificate(CertInfo),
    /// A CA bundle (`validation_context`).
    Ca(CaInfo),
}

/// Resolves a reference against the Secrets, as upstream's `GetCertInfo` and `GetCaCert`:
/// `<name>-cacert` reads the CA bundle of Secret `<name>-cacert` if it exists, else of
/// Secret `<name>`.
pub fn resolve(secrets: &Secrets, r: &SecretRef) -> Result<Credential, CredentialError> {
    if let Some(base) = r.name.strip_suffix(CA_SUFFIX) {
        let secret = secrets
            .get(&r.namespace, &r.name)
            .or_else(|| secrets.get(&r.namespace, base))
            .ok_or_else(|| CredentialError::NotFound(SecretKey::new(&r.namespace, base)))?;
        return ca_info(secret).map(Credential::Ca);
    }
    let secret = secrets
        .get(&r.namespace, &r.name)
        .ok_or_else(|| CredentialError::NotFound(SecretKey::new(&r.namespace, &r.name)))?;
    cert_info(secret).map(Credential::Certificate)
}

/// Whether a proxy may read a credential, by upstream's rules: only a proxy with an
/// authenticated identity, only Secrets of that identity's namespace, and for a key (not a
/// CA bundle, which is public) only if the identity may read Secrets there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// No authenticated identity (plaintext 15010, or the identity check is off).
    Unauthenticated,
    /// An authenticated proxy of `namespace`; `Err` carries why the identity may not read
    /// that namespace's Secrets.
    Namespace {
        namespace: String,
        may_read_secrets: Result<(), String>,
    },
}

/// Why a proxy may not read a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("proxy is not authenticated; connect over TLS (15012) with a workload identity")]
    Unauthenticated,
    #[error("secret is in namespace {secret:?}, the proxy's identity in {proxy:?}; cross namespace secret reference requires ReferenceGrant")]
    OtherNamespace { secret: String, proxy: String },
    #[error("{0}")]
    NotAuthorized(String),
}

impl Access {
    /// Checks a parsed reference.
    pub fn check(&self, r: &SecretRef) -> Result<(), Denied> {
        match self {
            Access::Unauthenticated => Err(Denied::Unauthenticated),
            Access::Namespace {
                namespace,
                may_read_secrets,
            } => {
                if &r.namespace != namespace {
                    return Err(Denied::OtherNamespace {
                        secret: r.namespace.clone(),
                        proxy: namespace.clone(),
                    });
                }
                if r.ca_only() {
                    return Ok(());
                }
                may_read_secrets.clone().map_err(Denied::NotAuthorized)
            }
        }
    }

    /// The namespace `kubernetes://<name>` resolves in.
    pub fn namespace(&self) -> &str {
        match self {
            Access::Unauthenticated => "",
            Access::Namespace { namespace, .. } => namespace,
        }
    }
}

#[cfg(test)]
mod tests;
