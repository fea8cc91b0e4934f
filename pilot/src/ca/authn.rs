//! Caller authentication for the CA and for ADS on the secure port. Authenticators are
//! tried in order and the first success wins, as upstream: client certificate, then bearer
//! tokens (JWT against a configured issuer; the Kubernetes TokenReview authenticator plugs
//! into the same trait).

use std::sync::Arc;

use futures::future::BoxFuture;
use tracing::debug;

use crate::security::Identity;

/// What a request offers to prove who it is.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// SPIFFE identities from the URI SANs of a client certificate that the TLS layer
    /// verified against the mesh roots.
    pub peer_identities: Vec<Identity>,
    /// The token from `authorization: Bearer <token>`.
    pub bearer: Option<String>,
    /// The `clusterid` metadata sent by istio-agent.
    pub cluster_id: Option<String>,
}

impl Credentials {
    /// Reads the bearer token and cluster id from gRPC metadata (HTTP/2 headers).
    pub fn from_headers(headers: &http::HeaderMap, peer_identities: Vec<Identity>) -> Self {
        let bearer = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then(|| token.trim().to_owned())
            })
            .filter(|t| !t.is_empty());
        let cluster_id = headers
            .get("clusterid")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Credentials {
            peer_identities,
            bearer,
            cluster_id,
        }
    }
}

/// All a caller is told when it is not authenticated: why is logged, never sent, so that
/// neither the API server's words nor which check failed reach a possibly hostile client.
pub const FAILED: &str = "authentication failed";

/// Why an authenticator did not accept a request.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// The request carries no credential of this authenticator's kind.
    #[error("no {0} presented")]
    NotPresented(&'static str),
    /// A credential was presented and is not valid.
    #[error("{kind}: {reason}")]
    Invalid { kind: &'static str, reason: String },
}

/// One way of authenticating a caller.
pub trait Authenticator: Send + Sync + 'static {
    /// A short name for logs and errors.
    fn kind(&self) -> &'static str;

    /// The caller's identity, or why it cannot be established.
    fn authenticate<'a>(
        &'a self,
        creds: &'a Credentials,
    ) -> BoxFuture<'a, Result<Identity, AuthError>>;
}

/// Trusts the identity in a client certificate verified by the TLS layer.
#[derive(Debug, Default)]
pub struct ClientCertAuthenticator;

impl Authenticator for ClientCertAuthenticator {
    fn kind(&self) -> &'static str {
        "client certificate"
    }

    fn authenticate<'a>(
        &'a self,
        creds: &'a Credentials,
    ) -> BoxFuture<'a, Result<Identity, AuthError>> {
        let result = creds
            .peer_identities
            .first()
            .cloned()
            .ok_or(AuthError::NotPresented(self.kind()));
        Box::pin(std::future::ready(result))
    }
}

/// Authenticators in order; the first success wins.
#[derive(Clone, Default)]
pub struct Chain(Vec<Arc<dyn Authenticator>>);

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|a| a.kind()))
            .finish()
    }
}

impl Chain {
    pub fn new(authenticators: Vec<Arc<dyn Authenticator>>) -> Self {
        Chain(authenticators)
    }

    /// Adds an authenticator at the end of the chain.
    pub fn push(&mut self, authenticator: Arc<dyn Authenticator>) {
        self.0.push(authenticator);
    }

    /// The first identity any authenticator establishes; otherwise a message listing why
    /// each one refused, for istiod's log (callers get [`FAILED`]).
    pub async fn authenticate(&self, creds: &Credentials) -> Result<Identity, String> {
        let mut reasons = Vec::new();
        for a in &self.0 {
            match a.authenticate(creds).await {
                Ok(id) => {
                    debug!(kind = a.kind(), identity = %id, "authenticated");
                    return Ok(id);
                }
                Err(e) => reasons.push(e.to_string()),
            }
        }
        if reasons.is_empty() {
            reasons.push("no authenticator configured".to_owned());
        }
        Err(reasons.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn client_cert_wins_and_failures_are_listed() {
        let chain = Chain::new(vec![Arc::new(ClientCertAuthenticator)]);
        let id = Identity::new("cluster.local", "ns", "sa");
        let ok = Credentials {
            peer_identities: vec![id.clone()],
            ..Default::default()
        };
        assert_eq!(chain.authenticate(&ok).await.unwrap(), id);
        let err = chain
            .authenticate(&Credentials::default())
            .await
            .unwrap_err();
        assert!(err.contains("no client certificate presented"), "{err}");
        assert!(Chain::default()
            .authenticate(&ok)
            .await
            .unwrap_err()
            .contains("no authenticator"));
    }

    #[test]
    fn reads_bearer_and_cluster() {
        let mut h = http::HeaderMap::new();
        h.insert("authorization", "Bearer abc.def.ghi".parse().unwrap());
        h.insert("clusterid", "Kubernetes".parse().unwrap());
        let c = Credentials::from_headers(&h, vec![]);
        assert_eq!(c.bearer.as_deref(), Some("abc.def.ghi"));
        assert_eq!(c.cluster_id.as_deref(), Some("Kubernetes"));
        let mut h = http::HeaderMap::new();
        h.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(Credentials::from_headers(&h, vec![]).bearer, None);
    }
}
