//! The `AggregatedDiscoveryService` gRPC service: admission, then one task per stream
//! (state of the world in [`super::sotw`], incremental in [`super::delta`]).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};

use prost::Message;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tonic::codegen::{http, Body, BoxFuture, StdError};
use tonic::metadata::GRPC_CONTENT_TYPE;
use tonic::server::NamedService;
use tonic::{Request, Response, Status};
use tracing::warn;

use super::delta::Delta;
use super::discovery::DiscoveryServer;
use super::requests::Requests;
use super::sotw::Sotw;
use super::stream::{self, Protocol};
use super::wire::{ResponseBody, WireResponse};
use crate::model::proxy::NodeType;
use crate::model::Proxy;
use crate::security::Caller;

/// The responses of one stream, from its task to its HTTP/2 body, and the stream's place
/// under `PILOT_MAX_XDS_STREAMS`.
type Responses = (
    mpsc::Receiver<Result<WireResponse, Status>>,
    OwnedSemaphorePermit,
);

/// Responses queued per stream before the sender waits for the client: one, so a client
/// that falls behind holds one response beside the one HTTP/2 is writing, and catches up
/// with the latest push rather than every one it missed.
const STREAM_BUFFER: usize = 1;

/// The request compression header; only `identity` is accepted on state-of-the-world
/// streams (Envoy and gRPC clients do not compress by default).
const GRPC_ENCODING: &str = "grpc-encoding";

const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// The ADS gRPC service, cheap to clone; one per gRPC server (15010 and 15012 share the
/// state). Served by hand rather than through the generated server so that responses
/// go out through [`ResponseBody`] with their resources encoded once per push.
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

    /// Takes a place under the process's stream cap, then waits for admission.
    async fn admit(&self) -> Result<OwnedSemaphorePermit, Status> {
        let Some(place) = self.server.reserve_stream() else {
            self.server.metrics.rejected_streams.inc();
            warn!(
                limit = self.server.features.max_xds_streams,
                "refusing xDS stream: PILOT_MAX_XDS_STREAMS reached"
            );
            return Err(Status::resource_exhausted(
                "istiod serves as many xDS streams as PILOT_MAX_XDS_STREAMS allows; retry later or connect to another replica",
            ));
        };
        self.server.admit().await;
        Ok(place)
    }

    /// Admits a stream of either protocol and runs it in its own task.
    async fn open<P: Protocol + 'static>(
        self,
        request: Request<Requests<P::Request>>,
    ) -> Result<Response<Responses>, Status> {
        let place = self.admit().await?;
        let caller = request.extensions().get::<Caller>().cloned();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let server = self.server.clone();
        tokio::spawn(stream::run::<P>(server, caller, request.into_inner(), tx));
        Ok(Response::new((rx, place)))
    }
}

/// Serves one ADS stream: requests decoded by [`Requests`], responses written by
/// [`ResponseBody`] so that shared resource bytes reach HTTP/2 without a copy.
async fn serve_stream<B, Req, Fut>(
    req: http::Request<B>,
    limit: Option<usize>,
    start: impl FnOnce(Request<Requests<Req>>) -> Fut,
) -> http::Response<tonic::body::Body>
where
    B: Body<Data = prost::bytes::Bytes> + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
    Req: Message + Default + Send + 'static,
    Fut: Future<Output = Result<Response<Responses>, Status>>,
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
    let inbound = Requests::new(tonic::body::Body::new(body), limit);
    match start(Request::from_http(http::Request::from_parts(
        parts, inbound,
    )))
    .await
    {
        Ok(responses) => {
            let (rx, place) = responses.into_inner();
            // The place under PILOT_MAX_XDS_STREAMS goes with the HTTP/2 stream, not the
            // task: a stream whose client stopped reading still counts until it is gone.
            let body = ResponseBody::new(rx).holding(place);
            let mut http = http::Response::new(tonic::body::Body::new(body));
            http.headers_mut()
                .insert(http::header::CONTENT_TYPE, GRPC_CONTENT_TYPE);
            http
        }
        Err(status) => status.into_http(),
    }
}

impl NamedService for AdsService {
    const NAME: &'static str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
}

impl<B> tower::Service<http::Request<B>> for AdsService
where
    B: Body<Data = prost::bytes::Bytes> + Send + 'static,
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
            SOTW_PATH => {
                Box::pin(
                    async move { Ok(serve_stream(req, limit, |r| this.open::<Sotw>(r)).await) },
                )
            }
            DELTA_PATH => {
                Box::pin(
                    async move { Ok(serve_stream(req, limit, |r| this.open::<Delta>(r)).await) },
                )
            }
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
