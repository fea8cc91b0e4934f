//! Kubernetes source load test: a real `pilot-discovery --registries Kubernetes` against a
//! fake API server, with many Envoy-like ADS clients.
//!
//! Serves `--services` Services (HTTP port 80), each with one EndpointSlice (one ready
//! endpoint) and its Pod, over real HTTP on 127.0.0.1 (the `kube-fake` crate's server),
//! writes a kubeconfig for it and starts `pilot-discovery discovery --kubeconfig FILE
//! --registries Kubernetes` on free ports. It measures the time from process start to
//! `/ready`, then connects `--clients` sidecars as a real mesh has them: sidecar `i` is the
//! workload behind service `i` (its pod's IP, namespace and `app` label, as the Istio agent
//! sends them), each on an HTTP/2 connection of its own (`--channels N` multiplexes them
//! instead; `--anonymous` makes them identical non-workloads, as early versions of this
//! benchmark did). It waits until all hold their initial config, then creates one more
//! Service with its EndpointSlice and Pod (delivered to istiod's watches) and measures the
//! time until every client has received and ACKed a CDS response with the new cluster, and
//! an EDS response giving it an endpoint (both decoded). The server's RSS is sampled from
//! `/proc/<pid>/status` throughout.
//!
//! With `--kubeconfig` the API server is a real one ([`bench::kube::real_api`]): the same objects are
//! applied there through the API, pilot-discovery runs as a ServiceAccount of its own bound to
//! `cluster-admin`, and its requests are counted from the server's audit log
//! (`--audit-log`). `--upstream` runs upstream's Go istiod (`--binary`) the same way, with
//! the flags and environment it needs.
//!
//! With `--delta` the clients use the incremental protocol (`DeltaAggregatedResources`,
//! [`bench::ads`]); the two milestones are the same: a CDS response adding the new
//! cluster, and an EDS response (after subscribing to it) giving it an endpoint.
//!
//! ```text
//! cargo build --release -p pilot --bin pilot-discovery
//! cargo build --release -p bench
//! target/release/kube_load --binary target/release/pilot-discovery
//! python3 tests/kube_up.py up /tmp/kube    # prints /tmp/kube/kubeconfig
//! target/release/kube_load --binary target/release/pilot-discovery \
//!     --kubeconfig /tmp/kube/kubeconfig --audit-log /tmp/kube/audit.log
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;

use bench::ads::{self, Event, Milestone, Protocol};
use bench::kube::istiod;
use bench::kube::objects;
use bench::kube::real_api::RealApi;
use bench::kube::resources::istiod_resources;
use bench::process::{cpu_secs, mb, memory_kb, ms, wait_ready, PeakRss, Ports, Server};
use kube_fake::FakeApi;
use pilot::xds::types;

#[derive(Debug, Parser)]
#[command(about = "Start-up, push latency and memory of pilot-discovery's Kubernetes source")]
struct Args {
    /// The pilot-discovery binary to start.
    #[arg(long, default_value = "target/release/pilot-discovery")]
    binary: PathBuf,
    /// Services (each with one EndpointSlice and one Pod) in the API server at start.
    #[arg(long, default_value_t = 1000)]
    services: usize,
    /// Namespaces the services are spread over (`bench-0`…).
    #[arg(long, default_value_t = 4)]
    namespaces: usize,
    /// Concurrent ADS streams (one sidecar each). Sidecar `i` is the workload behind
    /// service `i`: at its endpoint's IP, in its namespace, with its `app` label.
    #[arg(long, default_value_t = 500)]
    clients: usize,
    /// Multiplex the streams over this many HTTP/2 connections (by default each sidecar
    /// has a connection of its own, as real sidecars do).
    #[arg(long)]
    channels: Option<usize>,
    /// Sidecars that are no workloads (no labels, no endpoint of their own; all share one
    /// config), as the first versions of this benchmark modelled them.
    #[arg(long)]
    anonymous: bool,
    /// Serve no Istio or Gateway API resources (404, as when their CRDs are not installed).
    #[arg(long)]
    without_crds: bool,
    /// Keep pilot-discovery's log in this file (else it goes to a temporary folder).
    #[arg(long)]
    server_log: Option<PathBuf>,
    /// Give up after this many seconds overall.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
    /// Use incremental xDS (`DeltaAggregatedResources`) instead of state of the world.
    #[arg(long)]
    delta: bool,
    /// Use the API server of this admin kubeconfig instead of the fake (its objects are
    /// applied there; the Istio CRDs must be installed).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The real API server's audit log (JSON, `Metadata` level or more), to count
    /// pilot-discovery's requests; without it they are not counted.
    #[arg(long, requires = "kubeconfig")]
    audit_log: Option<PathBuf>,
    /// The binary is upstream's Go istiod: give it the flags and environment it needs
    /// (real API server only).
    #[arg(long, requires = "kubeconfig")]
    upstream: bool,
    /// The secured mesh: mesh-wide STRICT mTLS and this many AuthorizationPolicies, spread
    /// over the service namespaces, in the API server before istiod starts.
    #[arg(long, default_value_t = 0)]
    authz_policies: usize,
}

/// Where the objects live, and who counts pilot-discovery's requests.
enum Cluster {
    Fake(FakeApi),
    Real(RealApi),
}

impl Cluster {
    /// Creates `objects` (before the server starts).
    async fn create_all(&self, objects: Vec<serde_json::Value>) -> Result<()> {
        for object in objects {
            match self {
                Cluster::Fake(api) => {
                    api.create(object).context("loading the fake API server")?;
                }
                Cluster::Real(api) => api.apply(object).await?,
            }
        }
        Ok(())
    }

    /// Adds service `i` (Service, EndpointSlice, Pod).
    async fn add_service(&self, i: usize, namespaces: usize) -> Result<()> {
        match self {
            Cluster::Fake(api) => {
                for object in objects::service(i, namespaces) {
                    api.create(object).context("creating the new service")?;
                }
                Ok(())
            }
            Cluster::Real(api) => api.create_service(i, namespaces).await,
        }
    }

    /// Scales service `i` to two pods: the new Pod, then its EndpointSlice with both
    /// endpoints, as the EndpointSlice controller writes it. Returns when the slice is
    /// written.
    async fn scale_to_two(&self, i: usize, namespaces: usize) -> Result<()> {
        let (pod, slice) = (
            objects::pod(i, namespaces, 1),
            objects::endpoint_slice(i, namespaces, 2),
        );
        match self {
            Cluster::Fake(api) => {
                api.create(pod).context("creating the second pod")?;
                let ns = objects::service_namespace(i, namespaces);
                api.put(
                    &format!("/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices"),
                    slice,
                );
                Ok(())
            }
            Cluster::Real(api) => {
                api.apply(pod).await?;
                api.apply(slice).await
            }
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.clients == 0 || args.channels == Some(0) || args.namespaces == 0 {
        bail!("--clients, --channels and --namespaces must be positive");
    }
    if !args.anonymous && args.clients > args.services {
        bail!("each sidecar is the workload of one service: --clients must not exceed --services (or use --anonymous)");
    }
    if args.without_crds && args.kubeconfig.is_some() {
        bail!(
            "--without-crds is for the fake API server; a real one serves the CRDs installed there"
        );
    }
    let root = tempfile::tempdir().context("creating a temp dir")?;
    let kubeconfig = root.path().join("kubeconfig");
    let mut cluster = match &args.kubeconfig {
        None => {
            let api = FakeApi::serving(istiod_resources(!args.without_crds));
            let fixtures = objects::cluster(args.namespaces)
                .into_iter()
                .chain(objects::istiod_config())
                .chain((0..args.services).flat_map(|i| objects::service(i, args.namespaces)));
            for object in fixtures {
                api.create(object).context("loading the fake API server")?;
            }
            let api_addr = api.serve().await?;
            write_kubeconfig(&kubeconfig, &format!("http://{api_addr}"))?;
            Cluster::Fake(api)
        }
        Some(admin) => {
            let account = if args.upstream {
                "istiod-go-kube-load"
            } else {
                "istiod-kube-load"
            };
            let api = RealApi::connect(admin, account, args.audit_log.clone()).await?;
            let t = Instant::now();
            api.load(args.namespaces, args.services, args.services)
                .await
                .context("loading the API server")?;
            eprintln!(
                "kube_load: {} services applied to {} in {:.1} s",
                args.services,
                api.server,
                t.elapsed().as_secs_f64()
            );
            api.istiod_kubeconfig(account, &kubeconfig).await?;
            Cluster::Real(api)
        }
    };

    if args.authz_policies > 0 {
        cluster
            .create_all(objects::mesh_security(args.authz_policies, args.namespaces))
            .await
            .context("creating the security policies")?;
    }

    let ports = Ports::free()?;
    let kubeconfig = kubeconfig.display().to_string();
    let (server_args, env) =
        istiod::discovery_command(&ports, &kubeconfig, "istiod-kube-load", args.upstream);
    if let Cluster::Real(api) = &mut cluster {
        api.start_counting()?;
    }
    // Upstream's binary writes files below its working directory: give it an empty one.
    let binary = std::fs::canonicalize(&args.binary)
        .with_context(|| format!("finding {}", args.binary.display()))?;
    let server = Server::spawn_in(
        &binary,
        &server_args,
        &env,
        args.server_log
            .clone()
            .unwrap_or_else(|| root.path().join("pilot-discovery.log")),
        Some(root.path()),
    )?;
    let (pid, started) = (server.pid, server.started);
    server
        .supervise(
            Duration::from_secs(args.timeout_secs),
            run(&args, &cluster, pid, started, ports.grpc, ports.http),
        )
        .await
}

/// A kubeconfig with one cluster at `server` and no credentials.
fn write_kubeconfig(path: &Path, server: &str) -> Result<()> {
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster: {{server: \"{server}\"}}
users:
- name: fake
  user: {{}}
contexts:
- name: fake
  context: {{cluster: fake, user: fake, namespace: default}}
current-context: fake
"
    );
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// When the clients reached a milestone: first and last of all.
#[derive(Default)]
struct Spread {
    first: Option<Duration>,
    last: Duration,
    count: usize,
}

impl Spread {
    fn add(&mut self, d: Duration) {
        self.first = Some(self.first.map_or(d, |f| f.min(d)));
        self.last = self.last.max(d);
        self.count += 1;
    }
}

async fn run(
    args: &Args,
    api: &Cluster,
    pid: u32,
    started: Instant,
    grpc_port: u16,
    http_port: u16,
) -> Result<()> {
    let ready_after = wait_ready(pid, started, http_port).await?;
    let (rss_ready, _) = memory_kb(pid).unwrap_or_default();
    let cpu_ready = cpu_secs(pid);
    let peak = PeakRss::start(pid);

    // Initial config for every client.
    let new = args.services;
    let watched: Arc<str> = objects::cluster_name(new, args.namespaces).into();
    let namespaces = args.namespaces;
    let node = |i: usize| {
        if args.anonymous {
            ads::sidecar_node(i)
        } else {
            objects::workload_node(i, namespaces)
        }
    };
    // Push rounds are not measured here (the milestones are); with delta, a new Service
    // adds a cluster, so CDS marks one.
    let protocol = Protocol::new(args.delta, types::CLUSTER);
    let (cpu0, t0, mut clients) = match args.channels {
        Some(n) => {
            let channels = ads::connect(grpc_port, n).await?;
            let (cpu0, t0) = (cpu_secs(pid), Instant::now());
            let clients = ads::spawn_clients(
                args.clients,
                node,
                &channels,
                Some(watched.clone()),
                protocol,
            );
            (cpu0, t0, clients)
        }
        None => {
            let (cpu0, t0) = (cpu_secs(pid), Instant::now());
            let nodes = (0..args.clients).map(node).collect();
            let clients = ads::spawn_sidecars(nodes, grpc_port, Some(watched.clone()), protocol);
            (cpu0, t0, clients)
        }
    };
    let mut received = vec![ads::Received::default(); args.clients];
    let mut initial = ads::wait_round(&mut clients.events, 0, t0, &mut received).await?;
    initial.server_cpu = cpu_secs(pid) - cpu0;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss_connected, _) = memory_kb(pid).unwrap_or_default();

    // One more Service, as `kubectl apply` and the EndpointSlice controller would write it.
    let (cpu0, cpu0_here) = (cpu_secs(pid), cpu_secs(std::process::id()));
    let t = Instant::now();
    api.add_service(new, args.namespaces).await?;
    let [cluster, endpoints] = wait_for_milestones(
        &mut clients.events,
        t,
        args.clients,
        [Milestone::Cluster, Milestone::Endpoints],
    )
    .await?;
    let push_cpu = cpu_secs(pid) - cpu0;
    let push_cpu_here = cpu_secs(std::process::id()) - cpu0_here;

    // The new service scales to two pods: an EndpointSlice change, endpoints only.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu0 = cpu_secs(pid);
    let t = Instant::now();
    api.scale_to_two(new, args.namespaces).await?;
    let [scaled] = wait_for_milestones(
        &mut clients.events,
        t,
        args.clients,
        [Milestone::SecondEndpoint],
    )
    .await?;
    let scale_cpu = cpu_secs(pid) - cpu0;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let peak = peak.stop().await;
    let (rss_end, hwm) = memory_kb(pid).unwrap_or_default();
    let cpu_total = cpu_secs(pid);
    drop(clients);

    let crds = match api {
        Cluster::Real(api) => format!(
            "in the real API server at {} (as its CRDs are installed), running as {}",
            api.server, api.user
        ),
        Cluster::Fake(_) if args.without_crds => {
            "Istio and Gateway API kinds not served (404)".to_owned()
        }
        Cluster::Fake(_) => "Istio and Gateway API kinds served, empty".to_owned(),
    };
    println!("kube_load report");
    println!("  binary:                {}", args.binary.display());
    println!(
        "  API server objects:    {} Services + {} EndpointSlices + {} Pods in {} namespaces; {crds}",
        args.services, args.services, args.services, args.namespaces
    );
    let connections = args
        .channels
        .map_or("one HTTP/2 connection each".to_owned(), |n| {
            format!("over {n} HTTP/2 connections")
        });
    let who = if args.anonymous {
        "no workloads (shared identity)"
    } else {
        "each the workload of one service (own IP, namespace, labels)"
    };
    println!(
        "  clients:               {} sidecars, {who}, {connections}",
        args.clients
    );
    if args.delta {
        println!("  protocol:              {protocol}");
    }
    if args.authz_policies > 0 {
        println!(
            "  security:              mesh-wide STRICT mTLS, {} AuthorizationPolicies over {} namespaces",
            args.authz_policies, args.namespaces
        );
    }
    println!(
        "  start to ready:        {:.0} ms (server CPU {:.2} s)   target < 2000 ms",
        ms(ready_after),
        cpu_ready
    );
    println!(
        "  initial convergence:   {:.0} ms (first client {:.0} ms), server CPU {:.2} s, {:.1} KiB/client",
        ms(initial.last),
        ms(initial.first),
        initial.server_cpu,
        initial.bytes_per_client as f64 / 1024.0
    );
    println!(
        "  new Service, cluster:  {:.0} ms at every client (first {:.0} ms)   target < 1000 ms",
        ms(cluster.last),
        cluster.first.map_or(f64::NAN, ms)
    );
    println!(
        "  new Service, endpoint: {:.0} ms at every client (first {:.0} ms)",
        ms(endpoints.last),
        endpoints.first.map_or(f64::NAN, ms),
    );
    println!(
        "  CPU during that push:  server {push_cpu:.2} s, this load generator and fake API {push_cpu_here:.2} s"
    );
    println!(
        "  EndpointSlice change:  {:.0} ms until every client has the second endpoint (first {:.0} ms), server CPU {scale_cpu:.2} s",
        ms(scaled.last),
        scaled.first.map_or(f64::NAN, ms),
    );
    println!(
        "  RSS:                   ready {:.1} MB, connected {:.1} MB, end {:.1} MB",
        mb(rss_ready),
        mb(rss_connected),
        mb(rss_end)
    );
    println!(
        "  peak RSS:              {:.1} MB (VmHWM), {:.1} MB (sampled VmRSS)   target < 150 MB",
        mb(hwm),
        mb(peak)
    );
    println!("  server CPU, total:     {cpu_total:.2} s");
    let requests = match api {
        Cluster::Fake(api) => Some(
            api.requests()
                .into_iter()
                .map(|((verb, resource), n)| ((verb.to_owned(), resource), n))
                .collect(),
        ),
        Cluster::Real(api) => api.requests()?,
    };
    match requests {
        Some(requests) => print_requests(&requests),
        None => println!("  API requests:          not counted (no --audit-log)"),
    }
    Ok(())
}

/// Waits until each of `clients` has reached every milestone of `wanted`; returns when
/// they did, counted from `t`, per milestone.
async fn wait_for_milestones<const N: usize>(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<Event>,
    t: Instant,
    clients: usize,
    wanted: [Milestone; N],
) -> Result<[Spread; N]> {
    let mut spreads: [Spread; N] = std::array::from_fn(|_| Spread::default());
    while spreads.iter().any(|s| s.count < clients) {
        let ev = events
            .recv()
            .await
            .ok_or_else(|| anyhow!("all clients stopped"))?;
        match ev {
            Event::Failed(id, e) => return Err(e.context(format!("client {id} failed"))),
            Event::Seen { milestone, at, .. } => {
                if let Some(i) = wanted.iter().position(|m| *m == milestone) {
                    spreads[i].add(at.duration_since(t));
                }
            }
            Event::Converged(_) => {}
        }
    }
    Ok(spreads)
}

/// What pilot-discovery asked of the API server, per verb.
fn print_requests(requests: &BTreeMap<(String, String), u64>) {
    let mut by_verb: Vec<(&str, Vec<String>)> = Vec::new();
    for ((verb, resource), n) in requests {
        let entry = format!("{resource} {n}");
        match by_verb.iter_mut().find(|(v, _)| *v == verb.as_str()) {
            Some((_, list)) => list.push(entry),
            None => by_verb.push((verb.as_str(), vec![entry])),
        }
    }
    println!("  API requests:");
    for (verb, list) in by_verb {
        println!("    {verb:<7} {}", list.join(", "));
    }
}
