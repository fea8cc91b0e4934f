//! An Envoy-like state-of-the-world ADS client: CDS (wildcard), then EDS for the clusters,
//! LDS (wildcard), then RDS for the routes the listeners reference, ACKing every response
//! with its nonce. Each client reports when it holds a complete new version of its config
//! and, when asked to watch a cluster, when that cluster and its first endpoint arrive.
//! The incremental variant is in [`delta`]; both report through [`Event`].

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::protobuf::{value::Kind as ValueKind, Struct, Value};
use prost::Message;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use pilot::testing::node;
use pilot::xds::gen::rds;
use pilot::xds::gen::Resource;
use pilot::xds::types;

mod delta;

/// Which ADS method the simulated sidecars use.
#[derive(Debug, Clone, Copy)]
pub enum Protocol {
    /// `StreamAggregatedResources`.
    StateOfTheWorld,
    /// `DeltaAggregatedResources`; a push round is converged for a client when it has
    /// ACKed a response of `round_type` carrying a version it had not seen before.
    Delta { round_type: &'static str },
}

impl Protocol {
    /// Delta (with `round_type` marking a push round) if `delta`, else state of the world.
    pub fn new(delta: bool, round_type: &'static str) -> Protocol {
        if delta {
            Protocol::Delta { round_type }
        } else {
            Protocol::StateOfTheWorld
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Protocol::StateOfTheWorld => {
                f.write_str("state of the world (StreamAggregatedResources)")
            }
            Protocol::Delta { .. } => f.write_str("delta (DeltaAggregatedResources)"),
        }
    }
}

/// A client reached a converged state: round 0 is the initial config, round k the k-th push.
pub struct Converged {
    pub client: usize,
    pub round: usize,
    pub at: Instant,
    /// When the first response of a new version arrived (rounds > 0).
    pub first_new_at: Option<Instant>,
    /// What the stream received so far.
    pub received: Received,
}

/// What one stream received: bytes, and responses per type.
#[derive(Debug, Default, Clone, Copy)]
pub struct Received {
    pub bytes: u64,
    /// Responses of CDS, EDS, LDS and RDS, in this order ([`TYPES`]).
    pub responses: [u64; 4],
}

/// The types the clients follow, in the order of [`Received::responses`].
pub const TYPES: [&str; 4] = [
    types::CLUSTER,
    types::ENDPOINT,
    types::LISTENER,
    types::ROUTE,
];

impl Received {
    /// Counts one response of `type_url` of `bytes` bytes; returns the type, one of
    /// [`TYPES`], or an error for a type the clients do not follow.
    fn add(&mut self, type_url: &str, bytes: usize) -> Result<&'static str> {
        let i = TYPES
            .iter()
            .position(|t| *t == type_url)
            .ok_or_else(|| anyhow!("unexpected response type {type_url:?}"))?;
        self.bytes += bytes as u64;
        self.responses[i] += 1;
        Ok(TYPES[i])
    }
}

/// What a client saw of the watched cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Milestone {
    /// A CDS response holding the cluster arrived (and was ACKed).
    Cluster,
    /// An EDS response gave the cluster at least one endpoint (and was ACKed).
    Endpoints,
    /// After that, an EDS response gave the cluster a second endpoint (and was ACKed).
    SecondEndpoint,
}

pub enum Event {
    Converged(Converged),
    Seen {
        client: usize,
        milestone: Milestone,
        at: Instant,
    },
    Failed(usize, anyhow::Error),
}

impl Event {
    /// Client `client` reached `milestone` just now.
    pub fn seen(client: usize, milestone: Milestone) -> Event {
        Event::Seen {
            client,
            milestone,
            at: Instant::now(),
        }
    }
}

/// The `name` field (tag 1) of a Cluster, or the `cluster_name` of a
/// ClusterLoadAssignment: enough to follow subscriptions without decoding the whole message.
#[derive(Clone, PartialEq, Message)]
struct NameOnly {
    #[prost(string, tag = "1")]
    name: String,
}

#[derive(Default)]
struct TypeState {
    names: Vec<String>,
    version: String,
    nonce: String,
    requested: bool,
}

/// One Envoy-like ADS client.
struct Client {
    id: usize,
    tx: mpsc::Sender<DiscoveryRequest>,
    state: HashMap<&'static str, TypeState>,
    baseline: Option<HashMap<&'static str, String>>,
    round: usize,
    first_new_at: Option<Instant>,
    received: Received,
    watch: Watch,
}

/// The cluster a client reports milestones for, and which it reported.
struct Watch {
    cluster: Option<Arc<str>>,
    seen_cluster: bool,
    seen_endpoints: bool,
    seen_second: bool,
}

impl Watch {
    fn new(cluster: Option<Arc<str>>) -> Watch {
        Watch {
            cluster,
            seen_cluster: false,
            seen_endpoints: false,
            seen_second: false,
        }
    }

    /// The [`Milestone::Cluster`] event of client `id`, the first time the clusters named
    /// in a CDS response include the watched one.
    fn clusters<'a>(
        &mut self,
        id: usize,
        mut names: impl Iterator<Item = &'a str>,
    ) -> Option<Event> {
        let cluster = self.cluster.as_deref()?;
        if self.seen_cluster || !names.any(|n| n == cluster) {
            return None;
        }
        self.seen_cluster = true;
        Some(Event::seen(id, Milestone::Cluster))
    }

    /// The [`Milestone::Endpoints`] event of client `id`, the first time (after the
    /// cluster) an EDS response, given as encoded ClusterLoadAssignments, gives the
    /// watched cluster an endpoint; then [`Milestone::SecondEndpoint`] the first time one
    /// gives it two.
    fn endpoints<'a>(
        &mut self,
        id: usize,
        assignments: impl Iterator<Item = &'a [u8]>,
    ) -> Result<Option<Event>> {
        let Some(cluster) = self.cluster.as_deref() else {
            return Ok(None);
        };
        if !self.seen_cluster || self.seen_second {
            return Ok(None);
        }
        for body in assignments {
            let n = endpoint_count(cluster, body)
                .with_context(|| format!("client {id}: decoding endpoints"))?;
            if n >= 1 && !self.seen_endpoints {
                self.seen_endpoints = true;
                return Ok(Some(Event::seen(id, Milestone::Endpoints)));
            }
            if n >= 2 && self.seen_endpoints {
                self.seen_second = true;
                return Ok(Some(Event::seen(id, Milestone::SecondEndpoint)));
            }
        }
        Ok(None)
    }
}

/// A simulated sidecar of either protocol, as [`drive`] runs it.
trait Sidecar {
    type Response;

    fn id(&self) -> usize;

    /// Handles one response: ACK it, follow up with dependent subscriptions, and return
    /// what to report.
    async fn on_response(&mut self, resp: Self::Response) -> Result<Vec<Event>>;
}

/// An ADS client on `channel`, with message limits for thousands of resources.
fn ads_client(channel: Channel) -> AggregatedDiscoveryServiceClient<Channel> {
    AggregatedDiscoveryServiceClient::new(channel)
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(256 << 20)
}

/// Hands every response of `inbound` to `sidecar` and reports its events, until the
/// stream fails (an error) or `events` is closed.
async fn drive<S: Sidecar>(
    mut sidecar: S,
    mut inbound: tonic::Streaming<S::Response>,
    events: &mpsc::UnboundedSender<Event>,
) -> Result<()> {
    let id = sidecar.id();
    loop {
        let resp = inbound
            .message()
            .await
            .with_context(|| format!("client {id}: reading a response"))?
            .ok_or_else(|| anyhow!("client {id}: server closed the stream"))?;
        for ev in sidecar.on_response(resp).await? {
            if events.send(ev).is_err() {
                return Ok(());
            }
        }
    }
}

impl Client {
    async fn send(&mut self, type_url: &'static str) -> Result<()> {
        let st = self.state.entry(type_url).or_default();
        st.requested = true;
        let req = DiscoveryRequest {
            version_info: st.version.clone(),
            response_nonce: st.nonce.clone(),
            resource_names: st.names.clone(),
            type_url: type_url.to_owned(),
            ..Default::default()
        };
        self.tx
            .send(req)
            .await
            .map_err(|_| anyhow!("client {}: request stream closed", self.id))
    }
}

impl Sidecar for Client {
    type Response = DiscoveryResponse;

    fn id(&self) -> usize {
        self.id
    }

    /// Handles one response: ACK it, follow up with dependent subscriptions, and report
    /// convergence and milestones of the watched cluster.
    async fn on_response(&mut self, resp: DiscoveryResponse) -> Result<Vec<Event>> {
        let type_url = self.received.add(&resp.type_url, resp.encoded_len())?;
        {
            let st = self.state.entry(type_url).or_default();
            st.version = resp.version_info.clone();
            st.nonce = resp.nonce.clone();
        }
        if self.first_new_at.is_none() {
            if let Some(base) = &self.baseline {
                if base.get(type_url) != Some(&resp.version_info) {
                    self.first_new_at = Some(Instant::now());
                }
            }
        }
        // ACK with the current subscription of the type.
        self.send(type_url).await?;
        let mut events = Vec::new();
        match type_url {
            types::CLUSTER => {
                let mut names = Vec::with_capacity(resp.resources.len());
                for any in &resp.resources {
                    let c = NameOnly::decode(any.value.as_slice())
                        .with_context(|| format!("client {}: decoding a Cluster", self.id))?;
                    names.push(c.name);
                }
                names.sort();
                events.extend(self.watch.clusters(self.id, names.iter().map(|n| &**n)));
                let eds = self.state.entry(types::ENDPOINT).or_default();
                if !eds.requested || eds.names != names {
                    eds.names = names;
                    self.send(types::ENDPOINT).await?;
                }
            }
            types::ENDPOINT => {
                let bodies = resp.resources.iter().map(|any| any.value.as_slice());
                events.extend(self.watch.endpoints(self.id, bodies)?);
                if !self.state.get(types::LISTENER).is_some_and(|s| s.requested) {
                    self.send(types::LISTENER).await?;
                }
            }
            types::LISTENER => {
                let listeners: Vec<Resource> = resp
                    .resources
                    .into_iter()
                    .map(|body| Resource {
                        name: String::new(),
                        body,
                    })
                    .collect();
                let routes: Vec<String> = rds::referenced_route_names(&listeners)
                    .into_iter()
                    .collect();
                let rds = self.state.entry(types::ROUTE).or_default();
                if !routes.is_empty() && (!rds.requested || rds.names != routes) {
                    rds.names = routes;
                    self.send(types::ROUTE).await?;
                }
            }
            _ => {}
        }
        events.extend(self.check_converged().map(Event::Converged));
        Ok(events)
    }
}

impl Client {
    fn check_converged(&mut self) -> Option<Converged> {
        // Every requested type must have an answer (RDS only if a listener needs routes).
        let mut versions = HashMap::new();
        for t in TYPES {
            match self.state.get(t) {
                Some(st) if st.requested => {
                    if st.version.is_empty() {
                        return None;
                    }
                    versions.insert(t, st.version.clone());
                }
                _ if t == types::ROUTE => {}
                _ => return None,
            }
        }
        if let Some(base) = &self.baseline {
            if base.iter().any(|(t, v)| versions.get(t) == Some(v)) {
                return None;
            }
        }
        let event = Converged {
            client: self.id,
            round: self.round,
            at: Instant::now(),
            first_new_at: self.first_new_at.take(),
            received: self.received,
        };
        self.baseline = Some(versions);
        self.round += 1;
        Some(event)
    }
}

/// How many endpoints `body`, an encoded ClusterLoadAssignment, gives cluster `watched`
/// (0 for another cluster).
fn endpoint_count(watched: &str, body: &[u8]) -> Result<usize> {
    if NameOnly::decode(body)?.name != watched {
        return Ok(0);
    }
    let cla = ClusterLoadAssignment::decode(body)?;
    Ok(cla.endpoints.iter().map(|l| l.lb_endpoints.len()).sum())
}

/// The node of sidecar `id` that is no workload (no labels, its IP backs no endpoint):
/// `sidecar~10.100.x.y~pod-<id>.default~default.svc.cluster.local`.
pub fn sidecar_node(id: usize) -> Node {
    let ip = format!("10.100.{}.{}", id / 250, id % 250 + 1);
    node(
        &format!("sidecar~{ip}~pod-{id}.default~default.svc.cluster.local"),
        &[("ISTIO_VERSION", "1.26.0")],
    )
}

/// The node of a sidecar of pod `pod` in `namespace` at `ip`, with the pod's `labels`, as
/// the injected proxy sends it (`LABELS`, `INSTANCE_IPS`, `NAMESPACE`, `SERVICE_ACCOUNT`
/// (`default`), `ISTIO_VERSION`).
pub fn workload_node(pod: &str, namespace: &str, ip: &str, labels: &[(&str, &str)]) -> Node {
    let string = |s: &str| Value {
        kind: Some(ValueKind::StringValue(s.to_owned())),
    };
    let labels = Struct {
        fields: labels
            .iter()
            .map(|(k, v)| (k.to_string(), string(v)))
            .collect(),
    };
    let metadata = [
        ("NAMESPACE", string(namespace)),
        ("INSTANCE_IPS", string(ip)),
        ("SERVICE_ACCOUNT", string("default")),
        ("ISTIO_VERSION", string("1.26.0")),
        (
            "LABELS",
            Value {
                kind: Some(ValueKind::StructValue(labels)),
            },
        ),
    ];
    Node {
        id: format!("sidecar~{ip}~{pod}.{namespace}~{namespace}.svc.cluster.local"),
        metadata: Some(Struct {
            fields: metadata
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
        }),
        ..Default::default()
    }
}

/// Runs one state-of-the-world sidecar until its stream fails or `events` is closed.
async fn run_client(
    id: usize,
    node: Node,
    channel: Channel,
    watched: Option<Arc<str>>,
    events: mpsc::UnboundedSender<Event>,
) -> Result<()> {
    let (tx, rx) = mpsc::channel(16);
    let first = DiscoveryRequest {
        node: Some(node),
        type_url: types::CLUSTER.to_owned(),
        ..Default::default()
    };
    tx.send(first)
        .await
        .map_err(|_| anyhow!("request channel closed"))?;
    let mut client = Client {
        id,
        tx,
        state: HashMap::new(),
        baseline: None,
        round: 0,
        first_new_at: None,
        received: Received::default(),
        watch: Watch::new(watched),
    };
    client.state.entry(types::CLUSTER).or_default().requested = true;
    let inbound = ads_client(channel)
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .with_context(|| format!("client {id}: opening the ADS stream"))?
        .into_inner();
    drive(client, inbound, &events).await
}

/// Opens `n` HTTP/2 connections to the plaintext xDS port (streams are multiplexed on
/// them), retrying while the port comes up.
pub async fn connect(grpc_port: u16, n: usize) -> Result<Vec<Channel>> {
    let mut channels = Vec::new();
    for _ in 0..n {
        channels.push(connect_one(grpc_port).await?);
    }
    Ok(channels)
}

/// Opens one HTTP/2 connection to the plaintext xDS port, retrying for about 2 s.
async fn connect_one(grpc_port: u16) -> Result<Channel> {
    let endpoint = Endpoint::from_shared(format!("http://127.0.0.1:{grpc_port}"))?
        .connect_timeout(Duration::from_secs(5))
        .initial_stream_window_size(Some(4 << 20))
        .initial_connection_window_size(Some(64 << 20));
    let mut attempt = 0;
    loop {
        match endpoint.connect().await {
            Ok(ch) => return Ok(ch),
            Err(_) if attempt < 20 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e).context("connecting to the xDS port"),
        }
    }
}

/// The runtime of the sidecars' HTTP/2 connections, apart from the runtime where the
/// sidecars decode what they receive. An Envoy reads frames and answers PINGs however busy
/// its workers are; here thousands of sidecars share two cores, and connections polled
/// behind all their decoding would answer the server's keepalive PINGs late, and be closed
/// for it.
fn transport() -> Result<&'static tokio::runtime::Handle> {
    static TRANSPORT: OnceLock<std::io::Result<tokio::runtime::Runtime>> = OnceLock::new();
    TRANSPORT
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("transport")
                .enable_all()
                .build()
        })
        .as_ref()
        .map(|rt| rt.handle())
        .map_err(|e| anyhow!("starting the transport runtime: {e}"))
}

/// Runs one sidecar (`node`, reported as client `id`) on a connection of its own until
/// its stream fails (reported as [`Event::Failed`]), `events` is closed or the task is
/// aborted, which closes the stream and the connection. The connection runs on a runtime
/// of its own ([`transport`]).
pub fn spawn_sidecar(
    id: usize,
    node: Node,
    grpc_port: u16,
    watched: Option<Arc<str>>,
    protocol: Protocol,
    events: mpsc::UnboundedSender<Event>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let run = async {
            // Connected there, the connection's tasks are spawned there.
            let ch = transport()?
                .spawn(connect_one(grpc_port))
                .await
                .context("connecting")??;
            run_protocol(id, node, ch, watched, protocol, events.clone()).await
        };
        if let Err(e) = run.await {
            let _ = events.send(Event::Failed(id, e));
        }
    })
}

/// Runs client `id` with `protocol` on `channel`.
async fn run_protocol(
    id: usize,
    node: Node,
    channel: Channel,
    watched: Option<Arc<str>>,
    protocol: Protocol,
    events: mpsc::UnboundedSender<Event>,
) -> Result<()> {
    match protocol {
        Protocol::StateOfTheWorld => run_client(id, node, channel, watched, events).await,
        Protocol::Delta { round_type } => {
            delta::run_client(id, node, channel, watched, round_type, events).await
        }
    }
}

/// The running clients and their events; dropping it stops them.
pub struct Clients {
    pub events: mpsc::UnboundedReceiver<Event>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Clients {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts one sidecar per node, each on an HTTP/2 connection of its own as real sidecars
/// connect; each reports milestones of `watched`.
pub fn spawn_sidecars(
    nodes: Vec<Node>,
    grpc_port: u16,
    watched: Option<Arc<str>>,
    protocol: Protocol,
) -> Clients {
    let (ev_tx, events) = mpsc::unbounded_channel();
    let tasks = nodes
        .into_iter()
        .enumerate()
        .map(|(id, node)| {
            spawn_sidecar(
                id,
                node,
                grpc_port,
                watched.clone(),
                protocol,
                ev_tx.clone(),
            )
        })
        .collect();
    Clients { events, tasks }
}

/// Starts `n` clients spread over `channels`; each reports milestones of `watched`.
pub fn spawn_clients(
    n: usize,
    nodes: impl Fn(usize) -> Node,
    channels: &[Channel],
    watched: Option<Arc<str>>,
    protocol: Protocol,
) -> Clients {
    let (ev_tx, events) = mpsc::unbounded_channel();
    let tasks = (0..n)
        .map(|id| {
            let ch = channels[id % channels.len()].clone();
            let (ev, watched) = (ev_tx.clone(), watched.clone());
            let node = nodes(id);
            tokio::spawn(async move {
                if let Err(e) = run_protocol(id, node, ch, watched, protocol, ev.clone()).await {
                    let _ = ev.send(Event::Failed(id, e));
                }
            })
        })
        .collect();
    Clients { events, tasks }
}

/// How one round (initial config or a push) went for all clients.
pub struct Round {
    /// Time until the last client converged.
    pub last: Duration,
    /// Time until the first client converged.
    pub first: Duration,
    /// Time until the first response of the new version (push rounds).
    pub first_response: Option<Duration>,
    /// Mean bytes received per client during the round.
    pub bytes_per_client: u64,
    /// Mean responses per client during the round, per type ([`TYPES`]).
    pub responses_per_client: [f64; 4],
    /// Server CPU seconds during the round.
    pub server_cpu: f64,
}

/// Waits until every client has converged in `round`. `received` holds what each client
/// received up to its previous convergence and is updated.
pub async fn wait_round(
    rx: &mut mpsc::UnboundedReceiver<Event>,
    round: usize,
    start: Instant,
    received: &mut [Received],
) -> Result<Round> {
    let clients = received.len();
    let mut last = start;
    let mut first: Option<Instant> = None;
    let mut first_resp: Option<Instant> = None;
    let mut seen = vec![false; clients];
    let mut done = 0;
    let mut bytes = 0u64;
    let mut responses = [0u64; 4];
    while done < clients {
        let ev = rx
            .recv()
            .await
            .ok_or_else(|| anyhow!("all clients stopped"))?;
        let c = match ev {
            Event::Failed(id, e) => return Err(e.context(format!("client {id} failed"))),
            Event::Seen { .. } => continue,
            Event::Converged(c) => c,
        };
        if c.round != round || seen[c.client] {
            bail!(
                "client {} converged in round {} during round {round}",
                c.client,
                c.round
            );
        }
        seen[c.client] = true;
        done += 1;
        last = last.max(c.at);
        first = Some(first.map_or(c.at, |f| f.min(c.at)));
        if let Some(f) = c.first_new_at {
            first_resp = Some(first_resp.map_or(f, |x| x.min(f)));
        }
        let before = &mut received[c.client];
        bytes += c.received.bytes.saturating_sub(before.bytes);
        for (sum, (now, then)) in responses
            .iter_mut()
            .zip(c.received.responses.iter().zip(before.responses))
        {
            *sum += now.saturating_sub(then);
        }
        *before = c.received;
    }
    Ok(Round {
        last: last.duration_since(start),
        first: first.unwrap_or(start).duration_since(start),
        first_response: first_resp.map(|f| f.duration_since(start)),
        bytes_per_client: bytes / clients as u64,
        responses_per_client: responses.map(|n| n as f64 / clients as f64),
        server_cpu: 0.0,
    })
}
