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
//! With `--delta` the clients use the incremental protocol (`DeltaAggregatedResources`,
//! [`bench::ads`]). A delta server sends only the types that changed, so a push is
//! converged for a client once it has ACKed an RDS response with a version it had not seen
//! before the push (the VirtualService edit changes routes only).
//!
//! ```text
//! cargo build --release -p pilot --bin pilot-discovery
//! cargo build --release -p bench
//! target/release/push_load --binary target/release/pilot-discovery
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;

use kube_fake::objects::{manifests, mesh_security, services};

use bench::ads::{self, wait_round, Protocol};
use bench::config_dir::{virtual_service, write_atomic};
use bench::process::{cpu_secs, mb, memory_kb, ms, wait_ready, PeakRss, Ports, Server};
use pilot::xds::types;

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
    /// Use incremental xDS (`DeltaAggregatedResources`) instead of state of the world.
    #[arg(long)]
    delta: bool,
    /// Add mesh-wide STRICT mTLS and this many namespace-wide AuthorizationPolicies
    /// (`kube_fake::objects::mesh_security`).
    #[arg(long, default_value_t = 0)]
    authz_policies: usize,
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
        manifests(&services(args.services, &args.shape)),
    )
    .context("writing services.yaml")?;
    if args.authz_policies > 0 {
        std::fs::write(
            dir.join("security.yaml"),
            manifests(&mesh_security(args.authz_policies)),
        )
        .context("writing security.yaml")?;
    }

    let ports = Ports::free()?;
    let config_dir = dir.display().to_string();
    let server = Server::spawn(
        &args.binary,
        &ports.discovery_args(&["--configDir", &config_dir, "--registries="]),
        &[("PILOT_MAX_REQUESTS_PER_SECOND", "10000")],
        root.path().join("pilot-discovery.log"),
    )?;
    let (pid, started) = (server.pid, server.started);
    server
        .supervise(
            deadline,
            run(&args, pid, started, ports.grpc, ports.http, &root, &dir),
        )
        .await
}

/// Mean responses per client of each type in a round: `CDS 1.0, EDS 1.0, ...`.
fn per_type(r: &ads::Round) -> String {
    ["CDS", "EDS", "LDS", "RDS"]
        .iter()
        .zip(r.responses_per_client)
        .map(|(t, n)| format!("{t} {n:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn run(
    args: &Args,
    pid: u32,
    started: Instant,
    grpc_port: u16,
    http_port: u16,
    root: &tempfile::TempDir,
    dir: &Path,
) -> Result<()> {
    let ready_after = wait_ready(pid, started, http_port).await?;
    let (rss_ready, _) = memory_kb(pid).unwrap_or_default();
    let peak = PeakRss::start(pid);

    let channels = ads::connect(grpc_port, args.channels).await?;
    let cpu0 = cpu_secs(pid);
    let t0 = Instant::now();
    // The VirtualService edit changes routes only, and a delta server sends only that.
    let protocol = Protocol::new(args.delta, types::ROUTE);
    let mut clients =
        ads::spawn_clients(args.clients, ads::sidecar_node, &channels, None, protocol);
    let ev_rx = &mut clients.events;

    let mut rounds = Vec::new();
    let mut received = vec![ads::Received::default(); args.clients];
    let mut r = wait_round(ev_rx, 0, t0, &mut received).await?;
    r.server_cpu = cpu_secs(pid) - cpu0;
    rounds.push(r);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss_connected, _) = memory_kb(pid).unwrap_or_default();

    for round in 1..=args.pushes {
        let cpu0 = cpu_secs(pid);
        let t = Instant::now();
        write_atomic(root.path(), dir, "vs.yaml", &virtual_service(round))?;
        let mut r = wait_round(ev_rx, round, t, &mut received).await?;
        r.server_cpu = cpu_secs(pid) - cpu0;
        rounds.push(r);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    let peak = peak.stop().await;
    let (rss_end, hwm) = memory_kb(pid).unwrap_or_default();
    drop(clients);

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
    if args.delta {
        println!("  protocol:             {protocol}; a push is converged at a client when it has ACKed an RDS response of a version new to it");
    }
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
    if args.delta {
        println!("                        responses/client: {}", per_type(r0));
    }
    for (i, r) in rounds.iter().enumerate().skip(1) {
        println!(
            "  push {i} convergence:   {:.0} ms (first new response {:.0} ms, first client done {:.0} ms), server CPU {:.2} s, {} bytes/client",
            ms(r.last),
            r.first_response.map_or(f64::NAN, ms),
            ms(r.first),
            r.server_cpu,
            r.bytes_per_client
        );
        if args.delta {
            println!("                        responses/client: {}", per_type(r));
        }
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
        mb(peak)
    );
    Ok(())
}
