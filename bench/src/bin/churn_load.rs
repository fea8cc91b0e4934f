//! Stream churn: whether `pilot-discovery` gives back what streams that come and go took,
//! and still pushes to every sidecar after a long run of them.
//!
//! Starts the server with `--services` Kubernetes services (one endpoint each): in a
//! `--configDir` folder (ours only), or, with `--kubeconfig`, in a real API server
//! ([`bench::kube::real_api`]) — there `--upstream` runs upstream's Go istiod the same way,
//! as `kube_load` does. Then `--sidecars` simulated sidecars connect, each a workload of
//! its own (node id, IP and labels) on one HTTP/2 connection with one ADS stream: CDS
//! (wildcard), then EDS for the clusters received, LDS, then RDS for the routes the
//! listeners reference, ACKing every response ([`bench::ads`]).
//!
//! Once all hold their initial config, the churn runs for `--duration` seconds: at random
//! times (`--churn` a second on average) a random stream is dropped — connection closed,
//! whether it holds its config yet or not — and a new sidecar, with an identity never seen
//! before, connects in its place; every `--change-every` seconds the config changes,
//! alternately a VirtualService edit (routes) and a Service added or removed (clusters and
//! endpoints). Streams the server closes are counted and replaced.
//!
//! Then the churn stops and the run waits until all `--sidecars` hold their config and for
//! `--settle` seconds more. The report compares the server's RSS and its tasks alive
//! (`pilot_tokio_alive_tasks`; upstream: `go_goroutines`) at the start (all connected), the
//! peak and the end with the count before any stream connected; then one more Service is
//! added and the time until every sidecar has its cluster and endpoint is measured; finally
//! every stream is dropped and the tasks are counted again.
//!
//! ```text
//! cargo build --release -p pilot --bin pilot-discovery
//! cargo build --release -p bench
//! target/release/churn_load --binary target/release/pilot-discovery --duration 60
//! python3 tests/kube_up.py up /tmp/kube    # prints /tmp/kube/kubeconfig
//! target/release/churn_load --binary target/release/pilot-discovery --kubeconfig /tmp/kube/kubeconfig
//! target/release/churn_load --binary target/istiod-go-1.14 --upstream --kubeconfig /tmp/kube/kubeconfig
//! ```

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use bench::ads::{self, Event, Milestone, Protocol};
use bench::config_dir::{self, write_atomic};
use bench::kube::istiod;
use bench::kube::objects;
use bench::kube::real_api::RealApi;
use bench::process::{
    cpu_secs, http_get, mb, memory_kb, metric_sum, rss_split_kb, wait_ready, PeakRss, Ports, Server,
};
use kube_fake::objects::{self as builders, manifests, services};
use pilot::xds::types;

#[derive(Debug, Parser)]
#[command(about = "Memory, tasks and push convergence of pilot-discovery under stream churn")]
struct Args {
    /// The pilot-discovery binary to start.
    #[arg(long, default_value = "target/release/pilot-discovery")]
    binary: PathBuf,
    /// Sidecars connected at once, each on its own connection.
    #[arg(long, default_value_t = 2000)]
    sidecars: usize,
    /// Services (one endpoint each).
    #[arg(long, default_value_t = 1000)]
    services: usize,
    /// Namespaces the services are spread over in the API server (`bench-0`…).
    #[arg(long, default_value_t = 4)]
    namespaces: usize,
    /// Seconds of churn.
    #[arg(long, default_value_t = 600)]
    duration: u64,
    /// Streams replaced per second, on average (at random times).
    #[arg(long, default_value_t = 5.0)]
    churn: f64,
    /// Seconds between config changes during the churn.
    #[arg(long, default_value_t = 5)]
    change_every: u64,
    /// Seconds to wait after the churn, with every sidecar connected, before measuring.
    #[arg(long, default_value_t = 15)]
    settle: u64,
    /// Distinct label sets (workloads) the sidecars are spread over; by default every
    /// sidecar has labels of its own.
    #[arg(long)]
    workloads: Option<usize>,
    /// Seed of the random choices (which stream goes, and when).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Give up a phase (all connected, the last push) after this many seconds.
    #[arg(long, default_value_t = 600)]
    phase_timeout: u64,
    /// Seconds between progress lines on stderr.
    #[arg(long, default_value_t = 30)]
    report_every: u64,
    /// Use incremental xDS (`DeltaAggregatedResources`) instead of state of the world.
    #[arg(long)]
    delta: bool,
    /// Keep the server's log in this file (else it goes to a temporary folder).
    #[arg(long)]
    server_log: Option<PathBuf>,
    /// Put the services in the API server of this admin kubeconfig (the Istio CRDs must be
    /// installed) instead of a config folder.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The binary is upstream's Go istiod (API server only).
    #[arg(long, requires = "kubeconfig")]
    upstream: bool,
}

/// Where the config lives and how it changes.
enum Source {
    /// A `--configDir` folder (`root/config`).
    Dir { root: PathBuf, dir: PathBuf },
    /// A real API server.
    Api(RealApi),
}

/// Service `svc-<i>` in `default` with one endpoint, as the `--services` ones are written.
fn service_yaml(i: usize) -> String {
    let (a, b) = (i / 250, i % 250);
    let name = format!("svc-{i}");
    manifests(&[
        builders::service("default", &name)
            .cluster_ip(&format!("10.{a}.{b}.1"))
            .port(80, "http")
            .target_port(8080)
            .build(),
        builders::endpoint_slice("default", &format!("{name}-1"), &name)
            .port(8080, "http")
            .endpoint(&format!("10.200.{a}.{b}"))
            .build(),
    ])
}

/// The service toggled during the churn, and the one added at the end, after the
/// `--services` ones.
fn toggled(args: &Args) -> usize {
    args.services + 1
}

fn final_service(args: &Args) -> usize {
    args.services
}

impl Source {
    /// Config change `k` (from 1): odd ones edit the VirtualService, even ones add or remove
    /// the toggled service. Returns what changed.
    async fn change(&self, args: &Args, k: usize) -> Result<&'static str> {
        let add = k % 4 == 2;
        match (self, k % 2 == 1) {
            (Source::Dir { root, dir }, true) => {
                write_atomic(root, dir, "vs.yaml", &config_dir::virtual_service(k))?;
            }
            (Source::Dir { root, dir }, false) if add => {
                write_atomic(root, dir, "toggled.yaml", &service_yaml(toggled(args)))?;
            }
            (Source::Dir { dir, .. }, false) => {
                std::fs::remove_file(dir.join("toggled.yaml")).context("removing toggled.yaml")?;
            }
            (Source::Api(api), true) => {
                api.apply(objects::virtual_service(args.namespaces, k))
                    .await?;
            }
            (Source::Api(api), false) if add => {
                api.create_service(toggled(args), args.namespaces).await?;
            }
            (Source::Api(api), false) => {
                api.delete_service(toggled(args), args.namespaces).await?;
            }
        }
        Ok(match (k % 2 == 1, add) {
            (true, _) => "VirtualService edited",
            (false, true) => "Service added",
            (false, false) => "Service removed",
        })
    }

    /// Adds the final service.
    async fn add_final(&self, args: &Args) -> Result<()> {
        match self {
            Source::Dir { root, dir } => {
                write_atomic(root, dir, "final.yaml", &service_yaml(final_service(args)))
            }
            Source::Api(api) => {
                api.create_service(final_service(args), args.namespaces)
                    .await
            }
        }
    }

    /// The CDS name of the final service's cluster.
    fn final_cluster(&self, args: &Args) -> String {
        match self {
            Source::Dir { .. } => format!(
                "outbound|80||svc-{}.default.svc.cluster.local",
                final_service(args)
            ),
            Source::Api(_) => objects::cluster_name(final_service(args), args.namespaces),
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.sidecars == 0 || args.namespaces == 0 || args.change_every == 0 {
        bail!("--sidecars, --namespaces and --change-every must be positive");
    }
    if !(args.churn >= 0.0 && args.churn.is_finite()) {
        bail!("--churn must be a number of streams per second, 0 or more");
    }
    let root = tempfile::tempdir().context("creating a temp dir")?;
    let ports = Ports::free()?;
    let (source, server_args, env) = match &args.kubeconfig {
        None => {
            let dir = root.path().join("config");
            std::fs::create_dir(&dir).context("creating the config dir")?;
            std::fs::write(
                dir.join("services.yaml"),
                manifests(&services(args.services, "http")),
            )
            .context("writing services.yaml")?;
            let config_dir = dir.display().to_string();
            let server_args = ports.discovery_args(&["--configDir", &config_dir, "--registries="]);
            let env = vec![("PILOT_MAX_REQUESTS_PER_SECOND", "10000")];
            let source = Source::Dir {
                root: root.path().to_owned(),
                dir,
            };
            (source, server_args, env)
        }
        Some(admin) => {
            let account = if args.upstream {
                "istiod-go-churn-load"
            } else {
                "istiod-churn-load"
            };
            let api = RealApi::connect(admin, account, None).await?;
            let t = Instant::now();
            api.load(args.namespaces, args.services, final_service(&args))
                .await
                .context("loading the API server")?;
            api.delete_service(toggled(&args), args.namespaces).await?;
            api.delete(&objects::virtual_service(args.namespaces, 0))
                .await?;
            eprintln!(
                "churn_load: {} services applied to {} in {:.1} s",
                args.services,
                api.server,
                t.elapsed().as_secs_f64()
            );
            let kubeconfig = root.path().join("kubeconfig");
            api.istiod_kubeconfig(account, &kubeconfig).await?;
            let (server_args, env) = istiod::discovery_command(
                &ports,
                &kubeconfig.display().to_string(),
                "istiod-churn-load",
                args.upstream,
            );
            (Source::Api(api), server_args, env)
        }
    };
    // Upstream's binary writes files below its working directory: give it an empty one.
    let binary = std::fs::canonicalize(&args.binary)
        .with_context(|| format!("finding {}", args.binary.display()))?;
    let workdir = root.path().join("work");
    std::fs::create_dir(&workdir).context("creating the server's working directory")?;
    let server = Server::spawn_in(
        &binary,
        &server_args,
        &env,
        args.server_log
            .clone()
            .unwrap_or_else(|| root.path().join("pilot-discovery.log")),
        Some(&workdir),
    )?;
    let (pid, started) = (server.pid, server.started);
    let timeout = Duration::from_secs(args.duration + 3 * args.phase_timeout + 300);
    let report = server
        .supervise(timeout, run(&args, &source, pid, started, ports))
        .await?;
    report.print(&args, &source);
    Ok(())
}

/// A small, seeded random source (SplitMix64): the run's choices repeat with its seed.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, n).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Exponentially distributed with mean `1 / rate` seconds: the gaps of a Poisson process.
    fn gap(&mut self, rate: f64) -> Duration {
        let u = ((self.next() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        Duration::from_secs_f64((-u.ln() / rate).min(3600.0))
    }
}

/// One connected (or connecting) sidecar.
struct Live {
    id: usize,
    task: JoinHandle<()>,
    spawned: Instant,
    /// Started during the churn (its time to config is reported).
    churned: bool,
    connected: bool,
}

/// The sidecars: who is connected, and what happened to the streams.
struct Fleet {
    grpc_port: u16,
    protocol: Protocol,
    workloads: Option<usize>,
    watched: Arc<str>,
    events_tx: mpsc::UnboundedSender<Event>,
    events: mpsc::UnboundedReceiver<Event>,
    live: Vec<Live>,
    /// Position in `live` by id.
    index: HashMap<usize, usize>,
    next_id: usize,
    /// Streams dropped by the load generator, and how many of them before they held
    /// their config.
    dropped: usize,
    dropped_early: usize,
    /// Streams the server ended or refused, and how often for each reason.
    failed: usize,
    reasons: HashMap<String, usize>,
    /// Time from a new stream's start to its complete initial config, for streams
    /// started during the churn.
    connect_times: Vec<Duration>,
    churning: bool,
    /// Who saw the final service's cluster and endpoint, and when.
    seen_cluster: HashMap<usize, Instant>,
    seen_endpoints: HashMap<usize, Instant>,
}

impl Fleet {
    fn new(grpc_port: u16, protocol: Protocol, workloads: Option<usize>, watched: &str) -> Fleet {
        let (events_tx, events) = mpsc::unbounded_channel();
        Fleet {
            grpc_port,
            protocol,
            workloads,
            watched: watched.into(),
            events_tx,
            events,
            live: Vec::new(),
            index: HashMap::new(),
            next_id: 0,
            dropped: 0,
            dropped_early: 0,
            failed: 0,
            reasons: HashMap::new(),
            connect_times: Vec::new(),
            churning: false,
            seen_cluster: HashMap::new(),
            seen_endpoints: HashMap::new(),
        }
    }

    /// Starts a sidecar never seen before: pod `churn-<id>` in `default` at an IP of its
    /// own, labelled as its workload.
    fn spawn(&mut self) {
        let id = self.next_id;
        self.next_id += 1;
        let ip = format!(
            "10.{}.{}.{}",
            100 + id / 62_500,
            id / 250 % 250,
            id % 250 + 1
        );
        let workload = format!("workload-{}", self.workloads.map_or(id, |w| id % w.max(1)));
        let node = ads::workload_node(
            &format!("churn-{id}"),
            "default",
            &ip,
            &[("app", &workload), ("version", "v1")],
        );
        let task = ads::spawn_sidecar(
            id,
            node,
            self.grpc_port,
            Some(self.watched.clone()),
            self.protocol,
            self.events_tx.clone(),
        );
        self.index.insert(id, self.live.len());
        self.live.push(Live {
            id,
            task,
            spawned: Instant::now(),
            churned: self.churning,
            connected: false,
        });
    }

    fn remove(&mut self, id: usize) -> Option<Live> {
        let pos = self.index.remove(&id)?;
        let live = self.live.swap_remove(pos);
        if let Some(moved) = self.live.get(pos) {
            self.index.insert(moved.id, pos);
        }
        self.seen_cluster.remove(&id);
        self.seen_endpoints.remove(&id);
        Some(live)
    }

    /// Drops a random stream (closing its connection) and starts a new sidecar.
    fn replace_random(&mut self, random: &mut Random) {
        if !self.live.is_empty() {
            let id = self.live[random.below(self.live.len())].id;
            if let Some(gone) = self.remove(id) {
                gone.task.abort();
                self.dropped += 1;
                if !gone.connected {
                    self.dropped_early += 1;
                }
            }
        }
        self.spawn();
    }

    /// Drops every stream.
    fn drop_all(&mut self) {
        for live in self.live.drain(..) {
            live.task.abort();
        }
        self.index.clear();
    }

    fn connected(&self) -> usize {
        self.live.iter().filter(|l| l.connected).count()
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Converged(c) => {
                let Some(&pos) = self.index.get(&c.client) else {
                    return;
                };
                let live = &mut self.live[pos];
                if c.round == 0 {
                    live.connected = true;
                    if live.churned {
                        self.connect_times.push(c.at.duration_since(live.spawned));
                    }
                }
            }
            Event::Seen {
                client,
                milestone,
                at,
            } => {
                if self.index.contains_key(&client) {
                    match milestone {
                        Milestone::Cluster => self.seen_cluster.insert(client, at),
                        Milestone::Endpoints => self.seen_endpoints.insert(client, at),
                        Milestone::SecondEndpoint => None,
                    };
                }
            }
            Event::Failed(id, e) => {
                if self.remove(id).is_some() {
                    self.failed += 1;
                    *self.reasons.entry(reason(&e)).or_default() += 1;
                    // A sidecar whose stream ends reconnects, as Envoy does.
                    self.spawn();
                }
            }
        }
    }

    /// Handles events for `d`.
    async fn pump(&mut self, d: Duration) -> Result<()> {
        let until = tokio::time::Instant::now() + d;
        loop {
            tokio::select! {
                ev = self.events.recv() => {
                    self.handle(ev.ok_or_else(|| anyhow!("event channel closed"))?);
                }
                _ = tokio::time::sleep_until(until) => return Ok(()),
            }
        }
    }

    /// Handles events until `done` holds; false if `timeout` passed first.
    async fn until(&mut self, timeout: Duration, done: impl Fn(&Fleet) -> bool) -> Result<bool> {
        let deadline = tokio::time::Instant::now() + timeout;
        while !done(self) {
            tokio::select! {
                ev = self.events.recv() => {
                    self.handle(ev.ok_or_else(|| anyhow!("event channel closed"))?);
                }
                _ = tokio::time::sleep_until(deadline) => return Ok(false),
            }
        }
        Ok(true)
    }
}

/// Why a stream ended, without the client's number, shortened: streams that ended alike
/// count together.
fn reason(e: &anyhow::Error) -> String {
    let text = format!("{e:#}");
    let text = match text.split_once(": ") {
        Some((client, rest)) if client.starts_with("client ") => rest,
        _ => &text,
    };
    text.chars().take(240).collect()
}

/// What the server says of itself: tasks (or goroutines) alive and xDS streams connected.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    rss_kb: u64,
    /// (anonymous, file-backed) parts of `rss_kb`.
    rss_split_kb: Option<(u64, u64)>,
    tasks: Option<f64>,
    streams: Option<f64>,
    /// The allocator's live bytes and the bytes it holds resident, where the server
    /// exposes them (ours: `pilot_memory_heap_*`; upstream: Go's `go_memstats_heap_*`).
    heap: Option<(f64, f64)>,
}

impl Sample {
    async fn take(pid: u32, monitoring_port: u16, tasks_metric: &str) -> Sample {
        let text = http_get(monitoring_port, "/metrics")
            .await
            .unwrap_or_default();
        Sample {
            rss_kb: memory_kb(pid).map_or(0, |(rss, _)| rss),
            rss_split_kb: rss_split_kb(pid),
            tasks: metric_sum(&text, tasks_metric),
            // No sample while no proxy is connected.
            streams: Some(metric_sum(&text, "pilot_xds").unwrap_or(0.0)),
            heap: heap_metrics(&text),
        }
    }
}

/// Live and resident heap bytes: ours, else Go's (`heap_inuse` counts the spans in use,
/// the closest to what jemalloc holds resident for live data).
fn heap_metrics(text: &str) -> Option<(f64, f64)> {
    use pilot::server::runtime_metrics::{HEAP_ALLOCATED, HEAP_RESIDENT};
    let pair = |a, r| Some((metric_sum(text, a)?, metric_sum(text, r)?));
    pair(HEAP_ALLOCATED, HEAP_RESIDENT).or_else(|| {
        pair(
            "go_memstats_heap_alloc_bytes",
            "go_memstats_heap_inuse_bytes",
        )
    })
}

/// The final push: who had the new service's cluster and endpoint, and when.
struct FinalPush {
    converged: bool,
    clients: usize,
    cluster: (usize, Option<Duration>, Option<Duration>),
    endpoints: (usize, Option<Duration>, Option<Duration>),
}

struct Report {
    tasks_metric: &'static str,
    ready_after: Duration,
    initial: Duration,
    ready: Sample,
    start: Sample,
    end: Sample,
    after_disconnect: Sample,
    peak_kb: u64,
    hwm_kb: u64,
    changes: HashMap<&'static str, usize>,
    change_errors: Vec<String>,
    dropped: usize,
    dropped_early: usize,
    failed: usize,
    reasons: HashMap<String, usize>,
    connect_times: Vec<Duration>,
    reconnect_wait: Duration,
    final_push: FinalPush,
    server_cpu: f64,
    load_cpu: f64,
    /// Server and load generator CPU seconds during the churn.
    churn_cpu: (f64, f64),
    load_peak_kb: u64,
}

async fn run(
    args: &Args,
    source: &Source,
    pid: u32,
    started: Instant,
    ports: Ports,
) -> Result<Report> {
    let tasks_metric = if args.upstream {
        "go_goroutines"
    } else {
        pilot::server::runtime_metrics::ALIVE_TASKS
    };
    let phase_timeout = Duration::from_secs(args.phase_timeout);
    let ready_after = wait_ready(pid, started, ports.http).await?;
    // What the server runs with no stream at all.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ready = Sample::take(pid, ports.monitoring, tasks_metric).await;
    let peak = PeakRss::start(pid);
    let load_peak = PeakRss::start(std::process::id());

    let protocol = Protocol::new(args.delta, types::CLUSTER);
    let mut fleet = Fleet::new(
        ports.grpc,
        protocol,
        args.workloads,
        &source.final_cluster(args),
    );
    let t0 = Instant::now();
    for _ in 0..args.sidecars {
        fleet.spawn();
    }
    let n = args.sidecars;
    if !fleet
        .until(phase_timeout, |f| f.live.len() == n && f.connected() == n)
        .await?
    {
        bail!(
            "only {} of {n} sidecars had their initial config after {} s",
            fleet.connected(),
            args.phase_timeout
        );
    }
    let initial = t0.elapsed();
    fleet.pump(Duration::from_secs(1)).await?;
    let start = Sample::take(pid, ports.monitoring, tasks_metric).await;
    eprintln!(
        "churn_load: {n} sidecars connected in {:.1} s; RSS {:.1} MB, {tasks_metric} {}",
        initial.as_secs_f64(),
        mb(start.rss_kb),
        start.tasks.map_or("?".to_owned(), |t| t.to_string())
    );

    // The churn.
    let mut random = Random(args.seed);
    let mut changes: HashMap<&'static str, usize> = HashMap::new();
    let mut change_errors = Vec::new();
    let churn_start = tokio::time::Instant::now();
    let churn_end = churn_start + Duration::from_secs(args.duration);
    let change_every = Duration::from_secs(args.change_every);
    let report_every = Duration::from_secs(args.report_every.max(1));
    let mut next_drop = (args.churn > 0.0).then(|| churn_start + random.gap(args.churn));
    let mut next_change = churn_start + change_every;
    let mut next_report = churn_start + report_every;
    let mut k = 0;
    let cpu0 = (cpu_secs(pid), cpu_secs(std::process::id()));
    fleet.churning = true;
    loop {
        let now = tokio::time::Instant::now();
        if now >= churn_end {
            break;
        }
        if next_drop.is_some_and(|t| now >= t) {
            fleet.replace_random(&mut random);
            next_drop = next_drop.map(|t| t + random.gap(args.churn));
            continue;
        }
        if now >= next_change {
            k += 1;
            match source.change(args, k).await {
                Ok(what) => *changes.entry(what).or_default() += 1,
                Err(e) => change_errors.push(format!("{e:#}")),
            }
            next_change += change_every;
            continue;
        }
        if now >= next_report {
            let s = Sample::take(pid, ports.monitoring, tasks_metric).await;
            eprintln!(
                "churn_load: {:>4} s  RSS {:>7.1} MB (heap live {})  {tasks_metric} {:>6}  pilot_xds {:>5}  sidecars {} ({} with config)  dropped {}  closed by server {}  changes {k}",
                (now - churn_start).as_secs(),
                mb(s.rss_kb),
                s.heap.map_or("?".to_owned(), |(live, _)| format!("{:.1} MB", live / 1e6)),
                s.tasks.map_or("?".to_owned(), |t| t.to_string()),
                s.streams.map_or("?".to_owned(), |t| t.to_string()),
                fleet.live.len(),
                fleet.connected(),
                fleet.dropped,
                fleet.failed,
            );
            next_report += report_every;
            continue;
        }
        let wake = [
            Some(churn_end),
            next_drop,
            Some(next_change),
            Some(next_report),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(churn_end);
        tokio::select! {
            ev = fleet.events.recv() => {
                fleet.handle(ev.ok_or_else(|| anyhow!("event channel closed"))?);
            }
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
    fleet.churning = false;
    let churn_cpu = (
        cpu_secs(pid) - cpu0.0,
        cpu_secs(std::process::id()) - cpu0.1,
    );

    // Every sidecar holds its config again, then the server settles.
    let t = Instant::now();
    if !fleet
        .until(phase_timeout, |f| f.live.len() == n && f.connected() == n)
        .await?
    {
        bail!(
            "after the churn, only {} of {n} sidecars had their config after {} s",
            fleet.connected(),
            args.phase_timeout
        );
    }
    let reconnect_wait = t.elapsed();
    fleet.pump(Duration::from_secs(args.settle)).await?;
    let end = Sample::take(pid, ports.monitoring, tasks_metric).await;

    // One more Service: does every sidecar get it?
    let t = Instant::now();
    source.add_final(args).await?;
    let converged = fleet
        .until(phase_timeout, |f| {
            f.seen_cluster.len() >= f.live.len() && f.seen_endpoints.len() >= f.live.len()
        })
        .await?;
    let spread = |seen: &HashMap<usize, Instant>| {
        let times = || seen.values().map(|at| at.saturating_duration_since(t));
        (seen.len(), times().min(), times().max())
    };
    let final_push = FinalPush {
        converged,
        clients: fleet.live.len(),
        cluster: spread(&fleet.seen_cluster),
        endpoints: spread(&fleet.seen_endpoints),
    };
    let peak_kb = peak.stop().await;
    let hwm_kb = memory_kb(pid).map_or(0, |(_, hwm)| hwm);

    // Every stream gone: what is left?
    fleet.drop_all();
    fleet.pump(Duration::from_secs(args.settle)).await?;
    let after_disconnect = Sample::take(pid, ports.monitoring, tasks_metric).await;

    Ok(Report {
        tasks_metric,
        ready_after,
        initial,
        ready,
        start,
        end,
        after_disconnect,
        peak_kb,
        hwm_kb,
        changes,
        change_errors,
        dropped: fleet.dropped,
        dropped_early: fleet.dropped_early,
        failed: fleet.failed,
        reasons: fleet.reasons,
        connect_times: fleet.connect_times,
        reconnect_wait,
        final_push,
        server_cpu: cpu_secs(pid),
        churn_cpu,
        load_cpu: cpu_secs(std::process::id()),
        load_peak_kb: load_peak.stop().await,
    })
}

/// `x` formatted, or `?` when the server did not say.
fn show(x: Option<f64>) -> String {
    x.map_or("?".to_owned(), |v| format!("{v:.0}"))
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("-".to_owned(), |d| format!("{:.2} s", d.as_secs_f64()))
}

/// The `q` quantile of `times` (sorted in place).
fn quantile(times: &mut [Duration], q: f64) -> Option<Duration> {
    if times.is_empty() {
        return None;
    }
    times.sort();
    let i = ((times.len() - 1) as f64 * q).round() as usize;
    times.get(i).copied()
}

impl Report {
    fn print(mut self, args: &Args, source: &Source) {
        let m = self.tasks_metric;
        let n = args.sidecars;
        println!("churn_load report");
        println!("  binary:                {}", args.binary.display());
        match source {
            Source::Dir { .. } => println!(
                "  config:                {} services in --configDir (one endpoint each)",
                args.services
            ),
            Source::Api(api) => println!(
                "  config:                {} services (+ EndpointSlices + Pods) in {} namespaces in the API server at {}",
                args.services, args.namespaces, api.server
            ),
        }
        let labels = args.workloads.map_or("labels of its own".to_owned(), |w| {
            format!("labels of one of {w} workloads")
        });
        println!(
            "  sidecars:              {n}, each on its own connection with one {} stream, {labels}",
            if args.delta {
                "delta"
            } else {
                "state-of-the-world"
            }
        );
        println!(
            "  churn:                 {} s, {:.1} streams replaced per second on average, a config change every {} s (seed {})",
            args.duration, args.churn, args.change_every, args.seed
        );
        println!(
            "  start to ready:        {:.2} s",
            self.ready_after.as_secs_f64()
        );
        println!(
            "  initial config at all: {:.1} s",
            self.initial.as_secs_f64()
        );
        let mut changes: Vec<String> = self
            .changes
            .iter()
            .map(|(what, count)| format!("{what} {count}"))
            .collect();
        changes.sort();
        println!(
            "  config changes:        {} ({} failed{})",
            changes.join(", "),
            self.change_errors.len(),
            self.change_errors
                .first()
                .map_or(String::new(), |e| format!(", first: {e}"))
        );
        println!(
            "  streams:               {} dropped by the sidecars ({} of them before they held their config), {} ended by the server or refused; {} started during the churn had their config by the end",
            self.dropped,
            self.dropped_early,
            self.failed,
            self.connect_times.len()
        );
        let mut reasons: Vec<(&String, &usize)> = self.reasons.iter().collect();
        reasons.sort_by(|a, b| b.1.cmp(a.1));
        for (reason, count) in reasons.into_iter().take(4) {
            println!("                         {count} ended: {reason}");
        }
        let p50 = quantile(&mut self.connect_times, 0.5);
        let p99 = quantile(&mut self.connect_times, 0.99);
        let max = self.connect_times.last().copied();
        println!(
            "  new sidecar to config: median {}, p99 {}, max {}",
            secs(p50),
            secs(p99),
            secs(max)
        );
        println!(
            "  after the churn:       all {n} held their config again after {:.1} s, then {} s to settle",
            self.reconnect_wait.as_secs_f64(),
            args.settle
        );
        let change = (self.end.rss_kb as f64 / self.start.rss_kb.max(1) as f64 - 1.0) * 100.0;
        let verdict = if change.abs() <= 10.0 {
            "within 10% of start"
        } else if change > 0.0 {
            "NOT within 10% of start: higher"
        } else {
            "more than 10% below start"
        };
        println!(
            "  RSS:                   ready {:.1} MB, start ({n} connected) {:.1} MB, peak {:.1} MB (VmHWM {:.1} MB), end {:.1} MB: {change:+.1}%, {verdict}",
            mb(self.ready.rss_kb),
            mb(self.start.rss_kb),
            mb(self.peak_kb),
            mb(self.hwm_kb),
            mb(self.end.rss_kb),
        );
        let split = |s: &Sample| {
            s.rss_split_kb.map_or("-".to_owned(), |(anon, file)| {
                format!("{:.1} / {:.1} MB", mb(anon), mb(file))
            })
        };
        println!(
            "  RSS anon / file:       ready {}, start {}, end {}, after every stream closed {}",
            split(&self.ready),
            split(&self.start),
            split(&self.end),
            split(&self.after_disconnect),
        );
        let per_stream = |s: &Sample| match (s.tasks, self.ready.tasks, s.streams) {
            (Some(t), Some(b), Some(c)) if c > 0.0 => format!("{:.2} per stream", (t - b) / c),
            _ => "-".to_owned(),
        };
        let above = |s: &Sample| match (s.tasks, self.ready.tasks) {
            (Some(t), Some(b)) => format!("{:+.0}", t - b),
            _ => "?".to_owned(),
        };
        println!(
            "  {m}: with no stream {}; start {} ({} for {} streams, {}); end {} ({} for {} streams, {}); after every stream closed {} ({} than with no stream)",
            show(self.ready.tasks),
            show(self.start.tasks),
            above(&self.start),
            show(self.start.streams),
            per_stream(&self.start),
            show(self.end.tasks),
            above(&self.end),
            show(self.end.streams),
            per_stream(&self.end),
            show(self.after_disconnect.tasks),
            above(&self.after_disconnect),
        );
        let heap = |s: &Sample| {
            s.heap.map_or("-".to_owned(), |(live, resident)| {
                format!("{:.1} / {:.1} MB", live / 1e6, resident / 1e6)
            })
        };
        println!(
            "  heap live / resident:  ready {}, start {}, end {}, after every stream closed {}",
            heap(&self.ready),
            heap(&self.start),
            heap(&self.end),
            heap(&self.after_disconnect),
        );
        println!(
            "  pilot_xds:             start {}, end {}, after every stream closed {}; RSS then {:.1} MB",
            show(self.start.streams),
            show(self.end.streams),
            show(self.after_disconnect.streams),
            mb(self.after_disconnect.rss_kb)
        );
        let f = &self.final_push;
        println!(
            "  last push (a new Service): {} — cluster at {}/{} sidecars (first {}, last {}), endpoint at {}/{} (first {}, last {})",
            if f.converged {
                "converged".to_owned()
            } else {
                format!("NOT converged within {} s", args.phase_timeout)
            },
            f.cluster.0,
            f.clients,
            secs(f.cluster.1),
            secs(f.cluster.2),
            f.endpoints.0,
            f.clients,
            secs(f.endpoints.1),
            secs(f.endpoints.2),
        );
        println!(
            "  CPU:                   server {:.1} s during the churn, {:.1} s in all; load generator {:.1} s, {:.1} s (peak RSS {:.1} MB)",
            self.churn_cpu.0,
            self.server_cpu,
            self.churn_cpu.1,
            self.load_cpu,
            mb(self.load_peak_kb)
        );
    }
}
