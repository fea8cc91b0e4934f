//! Building the API clients as upstream istiod does: `--kubeconfig`, then `KUBECONFIG`,
//! then the in-cluster service account; requests rate-limited per `--kubernetesApiQPS` and
//! `--kubernetesApiBurst`, except TokenReviews, which callers of the secure port can cause
//! at will: they go through a client of their own with its own budget.

use kube::client::ClientBuilder;
use kube::config::{KubeConfigOptions, Kubeconfig};

use super::rate_limit::{RateLimit, RateLimitLayer};

/// Why no API client could be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("reading kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("no kubeconfig given (--kubeconfig or KUBECONFIG) and not running in a cluster: {0}")]
    InCluster(#[source] kube::config::InClusterError),
    #[error("creating the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
}

/// istiod's API clients, from one configuration.
#[derive(Clone)]
pub struct Clients {
    /// Watches, leader election, the CA Secret and every other writer.
    pub main: kube::Client,
    /// TokenReviews only, with [`tokenreview::RATE_LIMIT`](super::tokenreview::RATE_LIMIT).
    pub token_review: kube::Client,
}

/// Builds the clients from `kubeconfig` (the flag, else `KUBECONFIG`), or the in-cluster
/// config; the main one sends at most `limit` requests.
pub async fn clients(kubeconfig: &str, limit: RateLimit) -> Result<Clients, ClientError> {
    let config = config(kubeconfig).await?;
    Ok(Clients {
        main: build(config.clone(), limit)?,
        token_review: build(config, super::tokenreview::RATE_LIMIT)?,
    })
}

async fn config(kubeconfig: &str) -> Result<kube::Config, ClientError> {
    let path = kubeconfig.to_owned();
    // The chart sets KUBECONFIG to an optional remote-cluster file that usually does not
    // exist; as upstream, fall back to the in-cluster config then.
    if !path.is_empty() && std::path::Path::new(&path).exists() {
        let kc = Kubeconfig::read_from(&path).map_err(|source| ClientError::Kubeconfig {
            path: path.clone(),
            source,
        })?;
        kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .map_err(|source| ClientError::Kubeconfig { path, source })
    } else {
        kube::Config::incluster().map_err(ClientError::InCluster)
    }
}

/// A client on `config` whose requests share one bucket of `limit`.
fn build(config: kube::Config, limit: RateLimit) -> Result<kube::Client, ClientError> {
    let builder = ClientBuilder::try_from(config).map_err(ClientError::Client)?;
    Ok(builder.with_layer(&RateLimitLayer::new(limit)).build())
}
