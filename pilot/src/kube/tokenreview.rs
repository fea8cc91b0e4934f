//! Kubernetes service-account tokens checked with a TokenReview (`authentication.k8s.io/v1`)
//! against the audiences istiod accepts (`TOKEN_AUDIENCES`, default `istio-ca`), as
//! upstream's KubeJWT authenticator. The caller is the token's service account.
//!
//! Any client of the secure port can make istiod ask, so the asking is guarded: a token
//! that is not even a JWT (every service-account token is one) is refused without asking;
//! answers are remembered per token hash ([`cache`]); concurrent requests with one token
//! share one review; at most [`MAX_PENDING_REVIEWS`] reviews wait or run at once, beyond
//! that a request is refused at once; and reviews go out on a client of their own with a
//! rate budget of their own ([`RATE_LIMIT`]), so that a flood of junk tokens cannot delay
//! leader election, the CA Secret or the watches, whose requests share the main budget.

pub mod cache;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use tokio::sync::{OnceCell, Semaphore};
use tokio::time::Instant;
use tracing::debug;

use self::cache::{Outcome, ReviewCache, TokenHash};
use crate::ca::authn::{AuthError, Authenticator, Credentials};
use crate::kube::RateLimit;
use crate::security::Identity;

const SA_PREFIX: &str = "system:serviceaccount:";
const SA_GROUP: &str = "system:serviceaccounts";
const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";
const POD_UID_EXTRA: &str = "authentication.kubernetes.io/pod-uid";

/// The request budget of the TokenReview client, apart from `--kubernetesApiQPS`.
pub const RATE_LIMIT: RateLimit = RateLimit {
    qps: 50.0,
    burst: 100,
};
/// Reviews waiting for the budget or for the API server at once.
pub const MAX_PENDING_REVIEWS: usize = 256;
/// How long one review may take, waiting for the budget included.
pub const REVIEW_TIMEOUT: Duration = Duration::from_secs(15);
/// The longest bearer token looked at; service-account tokens are around 1 KiB.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Who a reviewed token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewedToken {
    pub namespace: String,
    pub service_account: String,
    /// Set for pod-bound tokens.
    pub pod_name: Option<String>,
    pub pod_uid: Option<String>,
}

/// Why a token was not accepted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenReviewError {
    #[error("the token is not a JWT ({0}); service-account tokens are")]
    NotAJwt(&'static str),
    #[error(
        "too many token reviews in progress ({MAX_PENDING_REVIEWS}); not asking the API server"
    )]
    Busy,
    #[error("the TokenReview took longer than {REVIEW_TIMEOUT:?}")]
    Timeout,
    #[error("creating the TokenReview failed (istiod needs `create` on tokenreviews.authentication.k8s.io): {0}")]
    Api(#[source] Arc<kube::Error>),
    #[error("the API server rejected the token: {0}")]
    Rejected(String),
    #[error("the API server did not authenticate the token")]
    NotAuthenticated,
    #[error("the token is not a service-account token (user {0:?}); only pod service accounts can get certificates")]
    NotServiceAccount(String),
    #[error("the token is not valid for audiences {wanted:?} (the API server accepted it for {got:?}); request a token with audience istio-ca")]
    Audience {
        wanted: Vec<String>,
        got: Vec<String>,
    },
}

impl TokenReviewError {
    /// Whether this is the API server's answer about the token (worth remembering), rather
    /// than a failure to get one.
    pub fn is_answer(&self) -> bool {
        matches!(
            self,
            TokenReviewError::Rejected(_)
                | TokenReviewError::NotAuthenticated
                | TokenReviewError::NotServiceAccount(_)
                | TokenReviewError::Audience { .. }
        )
    }
}

/// Reviews bearer tokens with the API server; cheap to clone, clones share the cache and
/// the limits.
#[derive(Clone)]
pub struct TokenReviewer {
    inner: Arc<Inner>,
}

struct Inner {
    client: kube::Client,
    audiences: Vec<String>,
    cache: Mutex<ReviewCache>,
    /// Reviews under way, for requests with the same token to wait for.
    pending: Mutex<HashMap<TokenHash, Arc<OnceCell<Outcome>>>>,
    slots: Semaphore,
}

impl TokenReviewer {
    /// Reviews with `client`, which should be used for nothing else (its rate budget is
    /// the reviews' own).
    pub fn new(client: kube::Client, audiences: Vec<String>) -> Self {
        TokenReviewer {
            inner: Arc::new(Inner {
                client,
                audiences,
                cache: Mutex::new(ReviewCache::default()),
                pending: Mutex::new(HashMap::new()),
                slots: Semaphore::new(MAX_PENDING_REVIEWS),
            }),
        }
    }

    /// The service account `token` belongs to.
    pub async fn review(&self, token: &str) -> Result<ReviewedToken, TokenReviewError> {
        let exp = jwt_expiry(token)?;
        let key = TokenHash::of(token);
        if let Some(known) = self.inner.lock_cache().get(&key, Instant::now()) {
            debug!(token = ?key, accepted = known.is_ok(), "token review answered from the cache");
            return known;
        }
        let cell = self.inner.lock_pending().entry(key).or_default().clone();
        let _done = PendingGuard {
            inner: &self.inner,
            key,
            cell: &cell,
        };
        cell.get_or_init(|| self.review_now(token, key, exp))
            .await
            .clone()
    }

    async fn review_now(&self, token: &str, key: TokenHash, exp: Option<SystemTime>) -> Outcome {
        let Ok(_slot) = self.inner.slots.try_acquire() else {
            return Err(TokenReviewError::Busy);
        };
        let outcome = tokio::time::timeout(REVIEW_TIMEOUT, self.ask(token))
            .await
            .unwrap_or(Err(TokenReviewError::Timeout));
        let now = Instant::now();
        // The token's `exp` as an instant of the monotonic clock.
        let exp = exp.map(|exp| match exp.duration_since(SystemTime::now()) {
            Ok(left) => now + left,
            Err(_) => now,
        });
        self.inner.lock_cache().insert(key, &outcome, exp, now);
        outcome
    }

    async fn ask(&self, token: &str) -> Outcome {
        let audiences = &self.inner.audiences;
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: (!audiences.is_empty()).then(|| audiences.clone()),
            },
            ..Default::default()
        };
        let api: Api<TokenReview> = Api::all(self.inner.client.clone());
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| TokenReviewError::Api(Arc::new(e)))?;
        interpret(&answer, audiences)
    }

    /// Accepted and refused tokens remembered now (expired ones until swept).
    pub fn cached(&self) -> (usize, usize) {
        self.inner.lock_cache().len()
    }
}

impl Inner {
    fn lock_cache(&self) -> std::sync::MutexGuard<'_, ReviewCache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_pending(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<TokenHash, Arc<OnceCell<Outcome>>>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Forgets a pending review once a request for it is done, or gone (a client that hangs
/// up): by then its answer is in the cache, or it is to be asked again.
struct PendingGuard<'a> {
    inner: &'a Inner,
    key: TokenHash,
    cell: &'a Arc<OnceCell<Outcome>>,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        let mut pending = self.inner.lock_pending();
        if pending
            .get(&self.key)
            .is_some_and(|c| Arc::ptr_eq(c, self.cell))
        {
            pending.remove(&self.key);
        }
    }
}

/// Checks that `token` has the shape of a JWT (three base64url parts, a JSON header and
/// claims) and returns its `exp`, unverified: only the API server vouches for a token, but
/// one that is not a JWT cannot be a service-account token, and the `exp` bounds how long
/// an acceptance is remembered.
pub fn jwt_expiry(token: &str) -> Result<Option<SystemTime>, TokenReviewError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenReviewError::NotAJwt(
            "longer than any service-account token",
        ));
    }
    let parts: Vec<&str> = token.split('.').collect();
    let [header, claims, signature] = parts.as_slice() else {
        return Err(TokenReviewError::NotAJwt("not three dot-separated parts"));
    };
    if signature.is_empty() {
        return Err(TokenReviewError::NotAJwt("unsigned"));
    }
    let decode = |part: &str| -> Option<serde_json::Map<String, serde_json::Value>> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .ok()?;
        serde_json::from_slice(&bytes).ok()
    };
    let header = decode(header).ok_or(TokenReviewError::NotAJwt("header is not base64url JSON"))?;
    if !header.get("alg").is_some_and(|a| a.is_string()) {
        return Err(TokenReviewError::NotAJwt("header has no alg"));
    }
    if base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(signature)
        .is_err()
    {
        return Err(TokenReviewError::NotAJwt("signature is not base64url"));
    }
    let claims =
        decode(claims).ok_or(TokenReviewError::NotAJwt("claims are not base64url JSON"))?;
    Ok(claims
        .get("exp")
        .and_then(serde_json::Value::as_u64)
        .map(|secs| UNIX_EPOCH + Duration::from_secs(secs)))
}

/// Turns a TokenReview answer into the caller, or why not.
pub fn interpret(
    answer: &TokenReview,
    audiences: &[String],
) -> Result<ReviewedToken, TokenReviewError> {
    let status = answer.status.clone().unwrap_or_default();
    if let Some(e) = status.error.filter(|e| !e.is_empty()) {
        return Err(TokenReviewError::Rejected(e));
    }
    if status.authenticated != Some(true) {
        return Err(TokenReviewError::NotAuthenticated);
    }
    if !audiences.is_empty() {
        let got = status.audiences.clone().unwrap_or_default();
        if !got.iter().any(|a| audiences.contains(a)) {
            return Err(TokenReviewError::Audience {
                wanted: audiences.to_vec(),
                got,
            });
        }
    }
    let user = status.user.unwrap_or_default();
    let username = user.username.unwrap_or_default();
    let in_group = user
        .groups
        .unwrap_or_default()
        .iter()
        .any(|g| g == SA_GROUP);
    let parts: Vec<&str> = username
        .strip_prefix(SA_PREFIX)
        .map(|rest| rest.split(':').collect())
        .unwrap_or_default();
    let (namespace, service_account) = match parts.as_slice() {
        [ns, sa] if in_group && !ns.is_empty() && !sa.is_empty() => (*ns, *sa),
        _ => return Err(TokenReviewError::NotServiceAccount(username)),
    };
    let extra = user.extra.unwrap_or_default();
    let first = |k: &str| extra.get(k).and_then(|v| v.first()).cloned();
    Ok(ReviewedToken {
        namespace: namespace.to_owned(),
        service_account: service_account.to_owned(),
        pod_name: first(POD_NAME_EXTRA),
        pod_uid: first(POD_UID_EXTRA),
    })
}

/// The CA/xDS authenticator for bearer tokens from this cluster.
pub struct TokenReviewAuthenticator {
    reviewer: TokenReviewer,
    trust_domain: String,
    cluster_id: String,
}

impl TokenReviewAuthenticator {
    /// Accepts tokens of `cluster_id` (requests without a `clusterid` are taken as local).
    pub fn new(reviewer: TokenReviewer, trust_domain: &str, cluster_id: &str) -> Self {
        TokenReviewAuthenticator {
            reviewer,
            trust_domain: trust_domain.to_owned(),
            cluster_id: cluster_id.to_owned(),
        }
    }
}

impl Authenticator for TokenReviewAuthenticator {
    fn kind(&self) -> &'static str {
        "Kubernetes token"
    }

    fn authenticate<'a>(
        &'a self,
        creds: &'a Credentials,
    ) -> BoxFuture<'a, Result<Identity, AuthError>> {
        Box::pin(async move {
            let token = creds
                .bearer
                .as_deref()
                .ok_or(AuthError::NotPresented(self.kind()))?;
            if let Some(cluster) = creds.cluster_id.as_deref() {
                if !cluster.is_empty() && cluster != self.cluster_id {
                    return Err(AuthError::Invalid {
                        kind: self.kind(),
                        reason: format!(
                            "client claims to be in cluster {cluster:?}, but this istiod only knows cluster {:?}",
                            self.cluster_id
                        ),
                    });
                }
            }
            let reviewed = self
                .reviewer
                .review(token)
                .await
                .map_err(|e| AuthError::Invalid {
                    kind: self.kind(),
                    reason: e.to_string(),
                })?;
            debug!(namespace = %reviewed.namespace, service_account = %reviewed.service_account, "token reviewed");
            Ok(Identity::new(
                &self.trust_domain,
                &reviewed.namespace,
                &reviewed.service_account,
            ))
        })
    }
}

#[cfg(test)]
mod tests;
