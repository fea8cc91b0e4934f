//! Kubernetes service-account tokens checked with a TokenReview (`authentication.k8s.io/v1`)
//! against the audiences istiod accepts (`TOKEN_AUDIENCES`, default `istio-ca`), as
//! upstream's KubeJWT authenticator. The caller is the token's service account.

use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use tracing::debug;

use crate::ca::authn::{AuthError, Authenticator, Credentials};
use crate::security::Identity;

const SA_PREFIX: &str = "system:serviceaccount:";
const SA_GROUP: &str = "system:serviceaccounts";
const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";
const POD_UID_EXTRA: &str = "authentication.kubernetes.io/pod-uid";

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
#[derive(Debug, thiserror::Error)]
pub enum TokenReviewError {
    #[error("creating the TokenReview failed (istiod needs `create` on tokenreviews.authentication.k8s.io): {0}")]
    Api(#[source] kube::Error),
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

/// Reviews bearer tokens with the API server.
#[derive(Clone)]
pub struct TokenReviewer {
    client: kube::Client,
    audiences: Vec<String>,
}

impl TokenReviewer {
    pub fn new(client: kube::Client, audiences: Vec<String>) -> Self {
        TokenReviewer { client, audiences }
    }

    /// The service account `token` belongs to.
    pub async fn review(&self, token: &str) -> Result<ReviewedToken, TokenReviewError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: (!self.audiences.is_empty()).then(|| self.audiences.clone()),
            },
            ..Default::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(TokenReviewError::Api)?;
        interpret(&answer, &self.audiences)
    }
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
