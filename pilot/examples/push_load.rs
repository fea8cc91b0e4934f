//! Push load test: many Envoy-like ADS clients against a real `pilot-discovery`.
//!
//! Writes a config folder with `--services` Kubernetes services (one endpoint each), starts
//! `pilot-discovery discovery --configDir DIR` on free 127.0.0.1 ports, opens `--clients`
//! state-of-the-world ADS streams over `--channels` HTTP/2 connections and, like Envoy,
//! asks for CDS (wildcard), then EDS for the clusters, LDS (wildcard), then RDS for the
//! routes the listeners reference, ACKing every response with its nonce. It measures the
//! time until every client has ACKed its initial config, then edits the folder (a
//! VirtualService) `--pushes` times and measures, for each full push, the time until every
//! client has received and ACKed a new version of every type. The peak RSS of the server is
//! sampled from `/proc/<pid>/status` throughout.
//!
//! ```text
//! cargo build --release -p pilot --bin pilot-discovery --example push_load
//! target/release/examples/push_load --binary target/release/pilot-discovery
//! ```

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use pilot::testing::{node, services_yaml};
use pilot::xds::generator::Resource;
use pilot::xds::{rds, types};

#[derive(Debug, Parser)]
#[command(about = "Push convergence and memory of pilot-discovery under many ADS clients")]
struct Args {
    /// The pilot-discovery binary to start.
    #[arg(long, default_value = "target/release/pilot-discovery")]
    binary: PathBuf,
    /// Concurrent ADS streams (one proxy each).
    #[arg(long, default_value_t = 500)]
    clients: usize,
    /// Services (one endpoint each) in the config folder.
    #[arg(long, default_value_t = 1000)]
    services: usize,
    /// Service shape of the fixture: `http` or `tcp`.
    #[arg(long, default_value = "http")]
    shape: String,
    /// HTTP/2 connections the streams are spread over.
    #[arg(long, default_value_t = 10)]
    channels: usize,
    /// Full pushes to trigger after the initial config.
    #[arg(long, default_value_t = 3)]
    pushes: usize,
    /// Give up after this many seconds overall.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
}

/// A client reached a converged state: round 0 is the initial config, round k the k-th push.
struct Converged {
    client: usize,
    round: usize,
    at: Instant,
    /// When the first response of a new version arrived (rounds > 0).
    first_new_at: Option<Instant>,
    /// Bytes received on the stream so far.
    bytes: u64,
}

enum Event {
    Converged(Converged),
    Failed(usize, anyhow::Error),
}

/// Only the `name` field (tag 1) of a Cluster: enough to subscribe to its endpoints
/// without decoding the whole message.
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
    bytes: u64,
}

fn static_type(url: &str) -> Option<&'static str> {
    [
        types::CLUSTER,
        types::ENDPOINT,
        types::LISTENER,
        types::ROUTE,
    ]
    .into_iter()
    .find(|t| *t == url)
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

    /// Handles one response: ACK it, follow up with dependent subscriptions, and report
    /// convergence. Returns an event when the client converged.
    async fn on_response(&mut self, resp: DiscoveryResponse) -> Result<Option<Converged>> {
        self.bytes += resp.encoded_len() as u64;
        let type_url = static_type(&resp.type_url)
            .ok_or_else(|| anyhow!("unexpected response type {:?}", resp.type_url))?;
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
        match type_url {
            types::CLUSTER => {
                let mut names = Vec::with_capacity(resp.resources.len());
                for any in &resp.resources {
                    let c = NameOnly::decode(any.value.as_slice())
                        .with_context(|| format!("client {}: decoding a Cluster", self.id))?;
                    names.push(c.name);
                }
                names.sort();
                let eds = self.state.entry(types::ENDPOINT).or_default();
                if !eds.requested || eds.names != names {
                    eds.names = names;
                    self.send(types::ENDPOINT).await?;
                }
            }
            types::ENDPOINT if !self.state.get(types::LISTENER).is_some_and(|s| s.requested) => {
                self.send(types::LISTENER).await?;
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
        Ok(self.check_converged())
    }

    fn check_converged(&mut self) -> Option<Converged> {
        // Every requested type must have an answer (RDS only if a listener needs routes).
        let mut versions = HashMap::new();
        for t in [
            types::CLUSTER,
            types::ENDPOINT,
            types::LISTENER,
            types::ROUTE,
        ] {
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
            bytes: self.bytes,
        };
        self.baseline = Some(versions);
        self.round += 1;
        Some(event)
    }
}

async fn run_client(
    id: usize,
    channel: Channel,
    events: mpsc::UnboundedSender<Event>,
) -> Result<()> {
    let (tx, rx) = mpsc::channel(16);
    let ip = format!("10.100.{}.{}", id / 250, id % 250 + 1);
    let first = DiscoveryRequest {
        node: Some(node(
            &format!("sidecar~{ip}~pod-{id}.default~default.svc.cluster.local"),
            &[("ISTIO_VERSION", "1.26.0")],
        )),
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
        bytes: 0,
    };
    client.state.entry(types::CLUSTER).or_default().requested = true;
    let mut grpc = AggregatedDiscoveryServiceClient::new(channel)
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(256 << 20);
    let mut inbound = grpc
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .with_context(|| format!("client {id}: opening the ADS stream"))?
        .into_inner();
    loop {
        let resp = inbound
            .message()
            .await
            .with_context(|| format!("client {id}: reading a response"))?
            .ok_or_else(|| anyhow!("client {id}: server closed the stream"))?;
        if let Some(ev) = client.on_response(resp).await? {
            if events.send(Event::Converged(ev)).is_err() {
                return Ok(());
            }
        }
    }
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding a free port")?;
    Ok(l.local_addr()?.port())
}

async fn ready(http: SocketAddr) -> bool {
    let Ok(mut s) = tokio::net::TcpStream::connect(http).await else {
        return false;
    };
    let req = "GET /ready HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        match s.read(&mut buf[n..]).await {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    buf[..n].starts_with(b"HTTP/1.1 200")
}

/// (VmRSS, VmHWM) of a process in kB.
fn memory_kb(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// User + system CPU time of a process in clock ticks (USER_HZ, 100 on Linux).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn cpu_secs(pid: u32) -> f64 {
    cpu_ticks(pid).unwrap_or(0) as f64 / 100.0
}

fn virtual_service(round: usize) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: svc-0, namespace: default}}
spec:
  hosts: [svc-0.default.svc.cluster.local]
  http:
  - timeout: {round}s
    route:
    - destination: {{host: svc-0.default.svc.cluster.local}}
"#
    )
}

/// Replaces `dir/name` atomically (write beside the folder, then rename into it).
fn write_atomic(root: &Path, dir: &Path, name: &str, text: &str) -> Result<()> {
    let tmp = root.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(name)).with_context(|| format!("renaming into {name}"))?;
    Ok(())
}

struct Round {
    /// Time until the last client converged.
    last: Duration,
    /// Time until the first client converged.
    first: Duration,
    /// Time until the first response of the new version (push rounds).
    first_response: Option<Duration>,
    /// Mean bytes received per client during the round.
    bytes_per_client: u64,
    /// Server CPU seconds during the round.
    server_cpu: f64,
}

/// Waits until every client has converged in `round`. `bytes` holds each client's
/// cumulative received bytes and is updated.
async fn wait_round(
    rx: &mut mpsc::UnboundedReceiver<Event>,
    round: usize,
    start: Instant,
    bytes: &mut [u64],
) -> Result<Round> {
    let clients = bytes.len();
    let mut last = start;
    let mut first: Option<Instant> = None;
    let mut first_resp: Option<Instant> = None;
    let mut seen = vec![false; clients];
    let mut done = 0;
    let mut received = 0u64;
    while done < clients {
        let ev = rx
            .recv()
            .await
            .ok_or_else(|| anyhow!("all clients stopped"))?;
        let c = match ev {
            Event::Failed(id, e) => return Err(e.context(format!("client {id} failed"))),
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
        received += c.bytes.saturating_sub(bytes[c.client]);
        bytes[c.client] = c.bytes;
    }
    Ok(Round {
        last: last.duration_since(start),
        first: first.unwrap_or(start).duration_since(start),
        first_response: first_resp.map(|f| f.duration_since(start)),
        bytes_per_client: received / clients as u64,
        server_cpu: 0.0,
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.clients == 0 || args.channels == 0 {
        bail!("--clients and --channels must be positive");
    }
    let deadline = Duration::from_secs(args.timeout_secs);
    let root = tempfile::tempdir().context("creating a temp dir")?;
    let dir = root.path().join("config");
    std::fs::create_dir(&dir).context("creating the config dir")?;
    std::fs::write(
        dir.join("services.yaml"),
        services_yaml(args.services, &args.shape),
    )
    .context("writing services.yaml")?;

    let (grpc_port, http_port, mon_port) = (free_port()?, free_port()?, free_port()?);
    let log_path = root.path().join("pilot-discovery.log");
    let log = std::fs::File::create(&log_path).context("creating the server log")?;
    let mut child: Child = Command::new(&args.binary)
        .args([
            "discovery",
            "--configDir",
            &dir.display().to_string(),
            "--registries=",
            "--grpcAddr",
            &format!("127.0.0.1:{grpc_port}"),
            "--httpAddr",
            &format!("127.0.0.1:{http_port}"),
            "--monitoringAddr",
            &format!("127.0.0.1:{mon_port}"),
            "--secureGRPCAddr=",
            "--httpsAddr=",
        ])
        .env("PILOT_MAX_REQUESTS_PER_SECOND", "10000")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", args.binary.display()))?;
    let pid = child
        .id()
        .ok_or_else(|| anyhow!("the server exited at once"))?;

    let work = tokio::time::timeout(deadline, run(&args, pid, grpc_port, http_port, &root, &dir));
    let mut exited = None;
    let result = tokio::select! {
        r = work => r.unwrap_or_else(|_| Err(anyhow!("timed out after {}s", args.timeout_secs))),
        status = child.wait() => {
            exited = status.ok();
            Err(anyhow!("pilot-discovery exited during the run"))
        }
    };
    let _ = child.kill().await;
    if result.is_err() || exited.is_some() {
        if let Some(status) = exited {
            eprintln!("pilot-discovery exited early: {status}");
        }
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        eprintln!("--- last lines of the server log ---");
        for l in tail.into_iter().rev() {
            eprintln!("{l}");
        }
    }
    result
}

async fn run(
    args: &Args,
    pid: u32,
    grpc_port: u16,
    http_port: u16,
    root: &tempfile::TempDir,
    dir: &Path,
) -> Result<()> {
    let started = Instant::now();
    let http: SocketAddr = ([127, 0, 0, 1], http_port).into();
    while !ready(http).await {
        if std::fs::metadata(format!("/proc/{pid}")).is_err() {
            bail!("pilot-discovery exited before it was ready");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ready_after = started.elapsed();
    let (rss_ready, _) = memory_kb(pid).unwrap_or_default();

    // Peak RSS sampler.
    let peak = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Some((rss, _)) = memory_kb(pid) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let mut channels = Vec::new();
    for _ in 0..args.channels {
        // One HTTP/2 connection per channel; streams are multiplexed on it.
        let endpoint = Endpoint::from_shared(format!("http://127.0.0.1:{grpc_port}"))?
            .connect_timeout(Duration::from_secs(5))
            .initial_stream_window_size(Some(4 << 20))
            .initial_connection_window_size(Some(64 << 20));
        let mut attempt = 0;
        let ch = loop {
            match endpoint.connect().await {
                Ok(ch) => break ch,
                Err(e) if attempt < 20 => {
                    attempt += 1;
                    connect_backoff(e).await;
                }
                Err(e) => return Err(e).context("connecting to the xDS port"),
            }
        };
        channels.push(ch);
    }

    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    let cpu0 = cpu_secs(pid);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for id in 0..args.clients {
        let ch = channels[id % channels.len()].clone();
        let ev = ev_tx.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = run_client(id, ch, ev.clone()).await {
                let _ = ev.send(Event::Failed(id, e));
            }
        }));
    }
    drop(ev_tx);

    let mut rounds = Vec::new();
    let mut bytes = vec![0u64; args.clients];
    let mut r = wait_round(&mut ev_rx, 0, t0, &mut bytes).await?;
    r.server_cpu = cpu_secs(pid) - cpu0;
    rounds.push(r);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss_connected, _) = memory_kb(pid).unwrap_or_default();

    for round in 1..=args.pushes {
        let cpu0 = cpu_secs(pid);
        let t = Instant::now();
        write_atomic(root.path(), dir, "vs.yaml", &virtual_service(round))?;
        let mut r = wait_round(&mut ev_rx, round, t, &mut bytes).await?;
        r.server_cpu = cpu_secs(pid) - cpu0;
        rounds.push(r);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    stop.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    let (rss_end, hwm) = memory_kb(pid).unwrap_or_default();
    for t in &tasks {
        t.abort();
    }

    let mb = |kb: u64| kb as f64 / 1024.0;
    println!("push_load report");
    println!("  binary:               {}", args.binary.display());
    println!(
        "  clients:              {} over {} HTTP/2 connections",
        args.clients, args.channels
    );
    println!(
        "  services:             {} ({}, one endpoint each)",
        args.services, args.shape
    );
    println!("  server ready after:   {:.0} ms", ms(ready_after));
    let r0 = &rounds[0];
    println!(
        "  initial convergence:  {:.0} ms (first client {:.0} ms), server CPU {:.2} s",
        ms(r0.last),
        ms(r0.first),
        r0.server_cpu
    );
    println!(
        "  initial bytes/client: {} ({:.1} KiB)",
        r0.bytes_per_client,
        r0.bytes_per_client as f64 / 1024.0
    );
    for (i, r) in rounds.iter().enumerate().skip(1) {
        println!(
            "  push {i} convergence:   {:.0} ms (first new response {:.0} ms, first client done {:.0} ms), server CPU {:.2} s, {} bytes/client",
            ms(r.last),
            r.first_response.map_or(f64::NAN, ms),
            ms(r.first),
            r.server_cpu,
            r.bytes_per_client
        );
    }
    println!(
        "  RSS:                  ready {:.1} MB, connected {:.1} MB, end {:.1} MB",
        mb(rss_ready),
        mb(rss_connected),
        mb(rss_end)
    );
    println!(
        "  peak RSS:             {:.1} MB (VmHWM), {:.1} MB (sampled VmRSS)",
        mb(hwm),
        mb(peak.load(Ordering::Relaxed))
    );
    Ok(())
}

/// Backs off briefly after a failed connection attempt.
async fn connect_backoff(_error: tonic::transport::Error) {
    tokio::time::sleep(Duration::from_millis(100)).await;
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
