//! An Envoy-like incremental (delta) ADS client on `DeltaAggregatedResources`: CDS and LDS
//! as wildcards, EDS for the EDS clusters received, RDS for the routes the listeners
//! reference. Every response is ACKed with its nonce; the client holds each type's
//! resources as name → version, applies `removed_resources`, and follows cluster and route
//! changes by subscribing new names and unsubscribing dropped ones.
//!
//! A delta server sends only the types that changed, so "a new version of every type" (the
//! state-of-the-world definition) does not apply. Here a push round is converged for a
//! client once it has ACKed a response of the round's marker type (RDS for a
//! VirtualService edit) whose `system_version_info` it had not seen before the round, with
//! no subscription left unanswered. The initial round needs a response of CDS, EDS, LDS
//! and (when listeners reference routes) RDS, each answering its latest subscription.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use pilot::xds::gen::rds;
use pilot::xds::gen::Resource;
use pilot::xds::types;

use super::{ads_client, drive, Converged, Event, Received, Sidecar, Watch, TYPES};

/// `Cluster.type` of a cluster whose endpoints come from EDS.
const DISCOVERY_TYPE_EDS: i32 = 3;

/// What the client needs of a Cluster: its name, discovery type and EDS service name.
#[derive(Clone, PartialEq, Message)]
struct ClusterHead {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(int32, tag = "2")]
    discovery_type: i32,
    #[prost(message, optional, tag = "3")]
    eds_cluster_config: Option<EdsClusterConfig>,
}

#[derive(Clone, PartialEq, Message)]
struct EdsClusterConfig {
    #[prost(string, tag = "2")]
    service_name: String,
}

impl ClusterHead {
    /// The name EDS knows the cluster by, if its endpoints come from EDS.
    fn eds_name(self) -> Option<String> {
        if self.discovery_type != DISCOVERY_TYPE_EDS {
            return None;
        }
        match self.eds_cluster_config {
            Some(c) if !c.service_name.is_empty() => Some(c.service_name),
            _ => Some(self.name),
        }
    }
}

/// One type on the stream.
#[derive(Default)]
struct TypeState {
    /// Its first request went out.
    requested: bool,
    /// A response arrived since the last request that subscribed new names.
    answered: bool,
    /// Explicit subscription (EDS, RDS); empty for the wildcard types.
    subscribed: BTreeSet<String>,
    /// Resources held: name → version.
    held: HashMap<String, String>,
}

struct Client {
    id: usize,
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    node: Node,
    state: HashMap<&'static str, TypeState>,
    /// EDS name of every EDS cluster held.
    eds_names: HashMap<String, String>,
    /// Route names referenced by every listener held.
    listener_routes: HashMap<String, BTreeSet<String>>,
    /// Every `system_version_info` received, and those received before the current round.
    versions: HashSet<String>,
    baseline: HashSet<String>,
    /// The type whose new version completes a push round, and whether it arrived.
    round_type: &'static str,
    round_marker: bool,
    round: usize,
    first_new_at: Option<Instant>,
    received: Received,
    watch: Watch,
}

impl Client {
    async fn send(&self, req: DeltaDiscoveryRequest) -> Result<()> {
        self.tx
            .send(req)
            .await
            .map_err(|_| anyhow!("client {}: request stream closed", self.id))
    }

    /// Moves the subscription of `type_url` to `wanted`: the first request of the type,
    /// or one naming what to add and what to drop. Nothing is sent if nothing changed.
    async fn subscribe(&mut self, type_url: &'static str, wanted: BTreeSet<String>) -> Result<()> {
        let st = self.state.entry(type_url).or_default();
        let first = !st.requested;
        let add: Vec<String> = wanted.difference(&st.subscribed).cloned().collect();
        let drop: Vec<String> = st.subscribed.difference(&wanted).cloned().collect();
        if !first && add.is_empty() && drop.is_empty() {
            return Ok(());
        }
        for name in &drop {
            st.held.remove(name);
        }
        st.requested = true;
        // The server answers a first request and one adding names, not a pure removal.
        if first || !add.is_empty() {
            st.answered = false;
        }
        st.subscribed = wanted;
        let req = DeltaDiscoveryRequest {
            node: first.then(|| self.node.clone()),
            type_url: type_url.to_owned(),
            resource_names_subscribe: add,
            resource_names_unsubscribe: drop,
            ..Default::default()
        };
        self.send(req).await
    }
}

impl Sidecar for Client {
    type Response = DeltaDiscoveryResponse;

    fn id(&self) -> usize {
        self.id
    }

    /// Handles one response: apply it, ACK it, follow up with dependent subscriptions, and
    /// report convergence and milestones of the watched cluster.
    async fn on_response(&mut self, resp: DeltaDiscoveryResponse) -> Result<Vec<Event>> {
        let type_url = self.received.add(&resp.type_url, resp.encoded_len())?;
        let new_version = !self.baseline.contains(&resp.system_version_info);
        if new_version && self.round > 0 {
            self.first_new_at.get_or_insert_with(Instant::now);
            if type_url == self.round_type {
                self.round_marker = true;
            }
        }
        self.versions.insert(resp.system_version_info.clone());
        {
            let st = self.state.entry(type_url).or_default();
            st.answered = true;
            for name in &resp.removed_resources {
                st.held.remove(name);
            }
            for r in &resp.resources {
                st.held.insert(r.name.clone(), r.version.clone());
            }
        }
        self.send(DeltaDiscoveryRequest {
            type_url: type_url.to_owned(),
            response_nonce: resp.nonce.clone(),
            ..Default::default()
        })
        .await?;

        let mut events = Vec::new();
        match type_url {
            types::CLUSTER => {
                for name in &resp.removed_resources {
                    self.eds_names.remove(name);
                }
                for r in &resp.resources {
                    let body = r.resource.as_ref().map_or(&[][..], |a| a.value.as_slice());
                    let head = ClusterHead::decode(body)
                        .with_context(|| format!("client {}: decoding a Cluster", self.id))?;
                    match head.eds_name() {
                        Some(eds) => self.eds_names.insert(r.name.clone(), eds),
                        None => self.eds_names.remove(&r.name),
                    };
                }
                let names = resp.resources.iter().map(|r| r.name.as_str());
                events.extend(self.watch.clusters(self.id, names));
                let wanted = self.eds_names.values().cloned().collect();
                self.subscribe(types::ENDPOINT, wanted).await?;
            }
            types::ENDPOINT => {
                let bodies = resp
                    .resources
                    .iter()
                    .map(|r| r.resource.as_ref().map_or(&[][..], |a| a.value.as_slice()));
                events.extend(self.watch.endpoints(self.id, bodies)?);
                if !self.state.get(types::LISTENER).is_some_and(|s| s.requested) {
                    self.subscribe(types::LISTENER, BTreeSet::new()).await?;
                }
            }
            types::LISTENER => {
                for name in &resp.removed_resources {
                    self.listener_routes.remove(name);
                }
                for r in resp.resources {
                    let Some(body) = r.resource else { continue };
                    let routes = rds::referenced_route_names(&[Resource {
                        name: String::new(),
                        body,
                    }]);
                    self.listener_routes.insert(r.name, routes);
                }
                let wanted: BTreeSet<String> =
                    self.listener_routes.values().flatten().cloned().collect();
                let rds_requested = self.state.get(types::ROUTE).is_some_and(|s| s.requested);
                if rds_requested || !wanted.is_empty() {
                    self.subscribe(types::ROUTE, wanted).await?;
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
        for t in TYPES {
            match self.state.get(t) {
                Some(st) if st.requested => {
                    if !st.answered {
                        return None;
                    }
                }
                _ if t == types::ROUTE => {}
                _ => return None,
            }
        }
        if self.round > 0 && !self.round_marker {
            return None;
        }
        let event = Converged {
            client: self.id,
            round: self.round,
            at: Instant::now(),
            first_new_at: self.first_new_at.take(),
            received: self.received,
        };
        self.baseline.clone_from(&self.versions);
        self.round_marker = false;
        self.round += 1;
        Some(event)
    }
}

/// Runs one delta sidecar until its stream fails or `events` is closed; `round_type` is
/// the type whose new version completes a push round.
pub(super) async fn run_client(
    id: usize,
    node: Node,
    channel: Channel,
    watched: Option<Arc<str>>,
    round_type: &'static str,
    events: mpsc::UnboundedSender<Event>,
) -> Result<()> {
    let (tx, rx) = mpsc::channel(16);
    let mut client = Client {
        id,
        tx,
        node,
        state: HashMap::new(),
        eds_names: HashMap::new(),
        listener_routes: HashMap::new(),
        versions: HashSet::new(),
        baseline: HashSet::new(),
        round_type,
        round_marker: false,
        round: 0,
        first_new_at: None,
        received: Received::default(),
        watch: Watch::new(watched),
    };
    client.subscribe(types::CLUSTER, BTreeSet::new()).await?;
    let inbound = ads_client(channel)
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
        .with_context(|| format!("client {id}: opening the delta ADS stream"))?
        .into_inner();
    drive(client, inbound, &events).await
}
