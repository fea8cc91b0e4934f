//! Bearer JWT authentication against a configured issuer and JWKS (upstream's `JWT_RULE`
//! OIDC authenticator). The token must be for one of the audiences (default `istio-ca`) and
//! carry the Kubernetes service-account claims, from which the SPIFFE identity is built.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use futures::future::BoxFuture;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::Mutex;
use tracing::{debug, warn};

use super::authn::{AuthError, Authenticator, Credentials};
use crate::security::Identity;

const KIND: &str = "JWT";
/// Clock skew allowed on `exp` and, the same, on `nbf`.
const CLOCK_SKEW_LEEWAY_SECS: u64 = 0;
/// How often an unknown key id may trigger a JWKS reload.
const RELOAD_MIN_INTERVAL: Duration = Duration::from_secs(5);

/// Upstream's `JWTRule` as JSON (`JWT_RULE`): `issuer`, `audiences`, and either `jwks`
/// (inline JSON) or `jwksUri` (`file://` or a path).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct JwtRule {
    pub issuer: String,
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(default, alias = "jwks_uri")]
    pub jwks_uri: Option<String>,
    #[serde(default)]
    pub jwks: Option<String>,
}

/// Why a JWT authenticator could not be built.
#[derive(Debug, thiserror::Error)]
pub enum JwtConfigError {
    #[error("JWT_RULE is not valid JSON for a JWT rule: {0}")]
    Rule(#[from] serde_json::Error),
    #[error("JWT rule for issuer {0:?} has neither jwks nor jwksUri")]
    NoKeys(String),
    #[error("JWT rule jwksUri {0:?} is not supported: use file://PATH or an absolute path")]
    UnsupportedUri(String),
    #[error("reading JWKS {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("JWKS is not a valid JSON Web Key Set: {0}")]
    Jwks(serde_json::Error),
}

#[derive(Debug, Clone)]
enum KeySource {
    Inline,
    File(PathBuf),
}

/// The Kubernetes claims of a projected service-account token.
#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(rename = "kubernetes.io")]
    kubernetes: Option<KubernetesClaims>,
}

#[derive(Debug, Deserialize)]
struct KubernetesClaims {
    #[serde(default)]
    namespace: String,
    serviceaccount: Option<Named>,
}

#[derive(Debug, Deserialize)]
struct Named {
    #[serde(default)]
    name: String,
}

/// Verifies bearer JWTs from one issuer.
pub struct JwtAuthenticator {
    rule: JwtRule,
    trust_domain: String,
    source: KeySource,
    keys: ArcSwap<JwkSet>,
    last_reload: Mutex<Instant>,
}

impl std::fmt::Debug for JwtAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuthenticator")
            .field("issuer", &self.rule.issuer)
            .field("audiences", &self.rule.audiences)
            .finish_non_exhaustive()
    }
}

impl JwtAuthenticator {
    /// Builds the authenticator from a `JWT_RULE` value; `default_audiences` (from
    /// `TOKEN_AUDIENCES`) apply when the rule lists none.
    pub fn from_rule_json(
        json: &str,
        trust_domain: &str,
        default_audiences: &[String],
    ) -> Result<Self, JwtConfigError> {
        let mut rule: JwtRule = serde_json::from_str(json)?;
        if rule.audiences.is_empty() {
            rule.audiences = default_audiences.to_vec();
        }
        Self::new(rule, trust_domain)
    }

    pub fn new(rule: JwtRule, trust_domain: &str) -> Result<Self, JwtConfigError> {
        let source = match (&rule.jwks, &rule.jwks_uri) {
            (Some(_), _) => KeySource::Inline,
            (None, Some(uri)) => {
                let path = uri.strip_prefix("file://").unwrap_or(uri);
                if !path.starts_with('/') {
                    return Err(JwtConfigError::UnsupportedUri(uri.clone()));
                }
                KeySource::File(PathBuf::from(path))
            }
            (None, None) => return Err(JwtConfigError::NoKeys(rule.issuer.clone())),
        };
        let keys = load(&source, &rule)?;
        Ok(JwtAuthenticator {
            rule,
            trust_domain: trust_domain.to_owned(),
            source,
            keys: ArcSwap::from_pointee(keys),
            last_reload: Mutex::new(Instant::now()),
        })
    }

    /// Re-reads the JWKS (key rotation at the issuer), at most every few seconds.
    async fn maybe_reload(&self) -> bool {
        let mut last = self.last_reload.lock().await;
        if last.elapsed() < RELOAD_MIN_INTERVAL {
            return false;
        }
        *last = Instant::now();
        match load(&self.source, &self.rule) {
            Ok(keys) => {
                self.keys.store(Arc::new(keys));
                true
            }
            Err(error) => {
                warn!(%error, issuer = %self.rule.issuer, "reloading JWKS failed");
                false
            }
        }
    }

    fn verify(&self, token: &str) -> Result<Identity, VerifyError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| VerifyError::Invalid(format!("malformed token: {e}")))?;
        let keys = self.keys.load();
        let candidates: Vec<_> = keys
            .keys
            .iter()
            .filter(|k| match (&header.kid, &k.common.key_id) {
                (Some(want), Some(have)) => want == have,
                _ => true,
            })
            .collect();
        if candidates.is_empty() {
            return Err(VerifyError::UnknownKey(
                header.kid.unwrap_or_else(|| "<none>".to_owned()),
            ));
        }
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.rule.issuer]);
        validation.set_audience(&self.rule.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        // A token used before its `nbf` is refused, with the skew allowance of `exp`.
        validation.validate_nbf = true;
        validation.leeway = CLOCK_SKEW_LEEWAY_SECS;
        let mut last = String::new();
        for jwk in candidates {
            let key = match DecodingKey::from_jwk(jwk) {
                Ok(k) => k,
                Err(e) => {
                    last = format!("unusable key in JWKS: {e}");
                    continue;
                }
            };
            match jsonwebtoken::decode::<Claims>(token, &key, &validation) {
                Ok(data) => return self.identity(data.claims),
                Err(e) => last = describe(&e),
            }
        }
        Err(VerifyError::Invalid(last))
    }

    fn identity(&self, claims: Claims) -> Result<Identity, VerifyError> {
        let k = claims
            .kubernetes
            .ok_or_else(|| VerifyError::Invalid("token has no kubernetes.io claims".to_owned()))?;
        let sa = k.serviceaccount.map(|s| s.name).unwrap_or_default();
        if k.namespace.is_empty() || sa.is_empty() {
            return Err(VerifyError::Invalid(
                "token lacks the kubernetes.io namespace or serviceaccount name".to_owned(),
            ));
        }
        Ok(Identity::new(&self.trust_domain, &k.namespace, &sa))
    }
}

enum VerifyError {
    UnknownKey(String),
    Invalid(String),
}

fn describe(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match e.kind() {
        ErrorKind::ExpiredSignature => "token has expired".to_owned(),
        ErrorKind::InvalidAudience => "token audience is not accepted".to_owned(),
        ErrorKind::InvalidIssuer => "token issuer is not trusted".to_owned(),
        ErrorKind::InvalidSignature => "token signature is invalid".to_owned(),
        ErrorKind::ImmatureSignature => "token is not yet valid".to_owned(),
        ErrorKind::MissingRequiredClaim(c) => format!("token lacks the {c:?} claim"),
        other => format!("token rejected: {other:?}"),
    }
}

fn load(source: &KeySource, rule: &JwtRule) -> Result<JwkSet, JwtConfigError> {
    let text = match source {
        KeySource::Inline => rule.jwks.clone().unwrap_or_default(),
        KeySource::File(path) => {
            std::fs::read_to_string(path).map_err(|source| JwtConfigError::Read {
                path: path.clone(),
                source,
            })?
        }
    };
    serde_json::from_str(&text).map_err(JwtConfigError::Jwks)
}

impl Authenticator for JwtAuthenticator {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn authenticate<'a>(
        &'a self,
        creds: &'a Credentials,
    ) -> BoxFuture<'a, Result<Identity, AuthError>> {
        Box::pin(async move {
            let token = creds
                .bearer
                .as_deref()
                .ok_or(AuthError::NotPresented("bearer token"))?;
            let invalid = |reason| AuthError::Invalid { kind: KIND, reason };
            match self.verify(token) {
                Ok(id) => Ok(id),
                Err(VerifyError::UnknownKey(kid)) => {
                    if self.maybe_reload().await {
                        debug!(kid = %kid, "JWKS reloaded for an unknown key id");
                        if let Ok(id) = self.verify(token) {
                            return Ok(id);
                        }
                    }
                    Err(invalid(format!(
                        "token key id {kid:?} is not in the JWKS of issuer {:?}",
                        self.rule.issuer
                    )))
                }
                Err(VerifyError::Invalid(reason)) => Err(invalid(reason)),
            }
        })
    }
}

#[cfg(test)]
mod tests;
