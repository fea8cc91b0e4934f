//! The `AggregatedDiscoveryService` gRPC service: admission, then one task per stream
//! (state of the world in [`super::sotw`], incremental in [`super::delta`]).

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{BufferSettings, Streaming};
use tonic::codegen::{http, Body, BoxFuture, StdError};
use tonic::metadata::GRPC_CONTENT_TYPE;
use tonic::server::{Grpc, NamedService};
use tonic::{Request, Response, Status};
use tonic_prost::{ProstCodec, ProstDecoder};

use super::discovery::DiscoveryServer;
use super::wire::{SotwBody, SotwResponse};
use super::{delta, sotw};
use crate::model::proxy::NodeType;
use crate::model::Proxy;
use crate::security::Caller;

/// Responses queued per stream before the sender waits for the client.
const STREAM_BUFFER: usize = 4;

/// The request compression header; only `identity` is accepted on state-of-the-world
/// streams (Envoy and gRPC clients do not compress by default).
const GRPC_ENCODING: &str = "grpc-encoding";

const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// The ADS gRPC service, cheap to clone; one per gRPC server (15010 and 15012 share the
/// state). Served by hand rather than through the generated server so that
/// state-of-the-world responses go out through [`SotwBody`] with their resources
/// encoded once per push.
#[derive(Clone)]
pub struct AdsService {
    server: Arc<DiscoveryServer>,
    max_decoding_message_size: Option<usize>,
}

impl AdsService {
    pub fn new(server: Arc<DiscoveryServer>) -> Self {
        AdsService {
            server,
            max_decoding_message_size: None,
        }
    }

    /// Limits the size of one request from a proxy.
    pub fn max_decoding_message_size(mut self, limit: usize) -> Self {
        self.max_decoding_message_size = Some(limit);
        self
    }

    async fn stream_aggregated_resources(
        self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<mpsc::Receiver<Result<SotwResponse, Status>>>, Status> {
        self.server.admit().await;
        let caller = request.extensions().get::<Caller>().cloned();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(sotw::run(
            self.server.clone(),
            caller,
            request.into_inner(),
            tx,
        ));
        Ok(Response::new(rx))
    }

    async fn delta_aggregated_resources(
        self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<ReceiverStream<Result<DeltaDiscoveryResponse, Status>>>, Status> {
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

impl AdsService {
    /// Serves a state-of-the-world stream: requests decoded by tonic, responses written
    /// by [`SotwBody`] so that shared resource bytes reach HTTP/2 without a copy.
    async fn serve_sotw<B>(
        self,
        req: http::Request<B>,
        limit: Option<usize>,
    ) -> http::Response<tonic::body::Body>
    where
        B: Body + Send + 'static,
        B::Error: Into<StdError> + Send + 'static,
    {
        if let Some(encoding) = req.headers().get(GRPC_ENCODING) {
            if encoding != "identity" {
                return Status::unimplemented(format!(
                    "request compression {encoding:?} is not supported"
                ))
                .into_http();
            }
        }
        let (parts, body) = req.into_parts();
        let decoder = ProstDecoder::<DiscoveryRequest>::new(BufferSettings::default());
        let inbound = Streaming::new_request(decoder, body, None, limit);
        let request = Request::from_http(http::Request::from_parts(parts, inbound));
        match self.stream_aggregated_resources(request).await {
            Ok(response) => {
                let mut http = http::Response::new(tonic::body::Body::new(SotwBody::new(
                    response.into_inner(),
                )));
                http.headers_mut()
                    .insert(http::header::CONTENT_TYPE, GRPC_CONTENT_TYPE);
                http
            }
            Err(status) => status.into_http(),
        }
    }
}

impl NamedService for AdsService {
    const NAME: &'static str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
}

impl<B> tower::Service<http::Request<B>> for AdsService
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let this = self.clone();
        let limit = self.max_decoding_message_size;
        match req.uri().path() {
            SOTW_PATH => Box::pin(async move { Ok(this.serve_sotw(req, limit).await) }),
            DELTA_PATH => Box::pin(async move {
                let method = tower::service_fn(move |r| this.clone().delta_aggregated_resources(r));
                let codec = ProstCodec::<DeltaDiscoveryResponse, DeltaDiscoveryRequest>::default();
                let mut grpc = Grpc::new(codec).apply_max_message_size_config(limit, None);
                Ok(grpc.streaming(method, req).await)
            }),
            _ => Box::pin(async move { Ok(Status::unimplemented(req.uri().path()).into_http()) }),
        }
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
