//! Building the API client as upstream istiod does: `--kubeconfig`, then `KUBECONFIG`,
//! then the in-cluster service account; requests rate-limited per `--kubernetesApiQPS` and
//! `--kubernetesApiBurst`.

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

/// Builds a client from `kubeconfig` (the flag, else `KUBECONFIG`), or the in-cluster
/// config, sending at most `limit` requests.
pub async fn client(kubeconfig: &str, limit: RateLimit) -> Result<kube::Client, ClientError> {
    let path = kubeconfig.to_owned();
    // The chart sets KUBECONFIG to an optional remote-cluster file that usually does not
    // exist; as upstream, fall back to the in-cluster config then.
    let config = if !path.is_empty() && std::path::Path::new(&path).exists() {
        let kc = Kubeconfig::read_from(&path).map_err(|source| ClientError::Kubeconfig {
            path: path.clone(),
            source,
        })?;
        kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .map_err(|source| ClientError::Kubeconfig { path, source })?
    } else {
        kube::Config::incluster().map_err(ClientError::InCluster)?
    };
    let builder = ClientBuilder::try_from(config).map_err(ClientError::Client)?;
    Ok(builder.with_layer(&RateLimitLayer::new(limit)).build())
}
