//! The `AggregatedDiscoveryService` gRPC service: admission, then one task per stream
//! (state of the world in [`super::sotw`], incremental in [`super::delta`]).

use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{
    aggregated_discovery_service_server::AggregatedDiscoveryService, DeltaDiscoveryRequest,
    DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::discovery::DiscoveryServer;
use super::{delta, sotw};
use crate::model::proxy::NodeType;
use crate::model::Proxy;
use crate::security::Caller;

/// Responses queued per stream before the sender waits for the client.
const STREAM_BUFFER: usize = 4;

/// The ADS service, cheap to clone; one per gRPC server (15010 and 15012 share the state).
#[derive(Clone)]
pub struct AdsService {
    server: Arc<DiscoveryServer>,
}

impl AdsService {
    pub fn new(server: Arc<DiscoveryServer>) -> Self {
        AdsService { server }
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsService {
    type StreamAggregatedResourcesStream = ReceiverStream<Result<DiscoveryResponse, Status>>;
    type DeltaAggregatedResourcesStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        self.server.admit().await;
        let caller = request.extensions().get::<Caller>().cloned();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(sotw::run(
            self.server.clone(),
            caller,
            request.into_inner(),
            tx,
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        self.server.admit().await;
        let caller = request.extensions().get::<Caller>().cloned();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(delta::run(
            self.server.clone(),
            caller,
            request.into_inner(),
            tx,
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Turns the first request's node into a proxy, applying the checks upstream makes:
/// a well-formed id, ztunnel only with ambient, and (over TLS) the caller's namespace.
pub fn admit_proxy(
    server: &DiscoveryServer,
    node: Option<&envoy_types::pb::envoy::config::core::v3::Node>,
    caller: Option<&Caller>,
) -> Result<Proxy, Status> {
    let mut proxy = Proxy::from_node(node).map_err(|e| Status::invalid_argument(e.to_string()))?;
    if proxy.kind == NodeType::Ztunnel && !server.features.enable_ambient {
        return Err(Status::invalid_argument(
            "ztunnel connections require PILOT_ENABLE_AMBIENT=true",
        ));
    }
    if let (Some(Caller(id)), true) = (caller, server.features.xds_identity_check) {
        if id.namespace != proxy.config_namespace {
            return Err(Status::permission_denied(format!(
                "authenticated identity {id} may not act for a proxy in namespace {:?}",
                proxy.config_namespace
            )));
        }
        if !proxy.service_account.is_empty() && proxy.service_account != id.service_account {
            return Err(Status::permission_denied(format!(
                "authenticated identity {id} may not act for service account {:?}",
                proxy.service_account
            )));
        }
    }
    // Labels a proxy did not send come from its pod.
    let push = server.current();
    if proxy.labels.is_empty() {
        if let Some(pod) = proxy
            .ip_addresses
            .iter()
            .find_map(|ip| push.push.pods_by_ip.get(ip))
        {
            proxy.labels = pod.labels.clone();
            if proxy.service_account.is_empty() {
                proxy.service_account = pod.service_account.clone();
            }
        }
    }
    Ok(proxy)
}
