//! The `pilot-discovery` process under test: free ports, readiness, memory and CPU.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding a free port")?;
    Ok(l.local_addr()?.port())
}

/// The plaintext ports of a `pilot-discovery` under test, free a moment ago on 127.0.0.1.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub grpc: u16,
    pub http: u16,
    pub monitoring: u16,
}

impl Ports {
    pub fn free() -> Result<Ports> {
        Ok(Ports {
            grpc: free_port()?,
            http: free_port()?,
            monitoring: free_port()?,
        })
    }

    /// `discovery` with the config-source flags in `source`, serving xDS, HTTP and
    /// metrics on these ports; no TLS ports (no CA, no webhook).
    pub fn discovery_args(&self, source: &[&str]) -> Vec<String> {
        let mut args = vec!["discovery".to_owned()];
        args.extend(source.iter().map(|s| s.to_string()));
        for (flag, port) in [
            ("--grpcAddr", self.grpc),
            ("--httpAddr", self.http),
            ("--monitoringAddr", self.monitoring),
        ] {
            args.push(flag.to_owned());
            args.push(format!("127.0.0.1:{port}"));
        }
        args.extend(["--secureGRPCAddr=".to_owned(), "--httpsAddr=".to_owned()]);
        args
    }
}

/// Whether `GET /ready` answers 200.
pub async fn ready(http: SocketAddr) -> bool {
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

/// The body of `GET path` on 127.0.0.1:`port` (HTTP/1.1, one request per connection).
pub async fn http_get(port: u16, path: &str) -> Result<String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("GET {path}: no HTTP response"))?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or(""));
    }
    if head
        .lines()
        .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"))
    {
        return Ok(dechunk(body));
    }
    Ok(body.to_owned())
}

/// The payload of a chunked HTTP/1.1 body.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The sum of every sample of metric `name` in Prometheus text, if there is one.
pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let mut total = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        // `name value` or `name{labels} value`, not a longer name that starts alike; a
        // timestamp may follow the value.
        let after = match rest.chars().next() {
            Some(' ') => rest,
            Some('{') => rest.rsplit_once('}').map_or("", |(_, v)| v),
            _ => continue,
        };
        if let Some(Ok(v)) = after.split_whitespace().next().map(str::parse::<f64>) {
            *total.get_or_insert(0.0) += v;
        }
    }
    total
}

/// (VmRSS, VmHWM) of a process in kB.
pub fn memory_kb(pid: u32) -> Option<(u64, u64)> {
    Some((status_kb(pid, "VmRSS:")?, status_kb(pid, "VmHWM:")?))
}

/// Resident memory split by what backs it, in kB: (RssAnon, RssFile). Growth of the
/// anonymous part is the heap and stacks; the file part is the binary's pages the run
/// has touched so far.
pub fn rss_split_kb(pid: u32) -> Option<(u64, u64)> {
    Some((status_kb(pid, "RssAnon:")?, status_kb(pid, "RssFile:")?))
}

/// One `kB` field of `/proc/PID/status`.
fn status_kb(pid: u32, name: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
}

/// User + system CPU time of a process in clock ticks (USER_HZ, 100 on Linux).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// User + system CPU seconds of a process so far.
pub fn cpu_secs(pid: u32) -> f64 {
    cpu_ticks(pid).unwrap_or(0) as f64 / 100.0
}

/// Milliseconds, for reports.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// kB to MB, for reports.
pub fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// Polls `/ready` every 20 ms until it answers 200; returns the time since `started`.
pub async fn wait_ready(pid: u32, started: Instant, http_port: u16) -> Result<Duration> {
    let http: SocketAddr = ([127, 0, 0, 1], http_port).into();
    while !ready(http).await {
        if std::fs::metadata(format!("/proc/{pid}")).is_err() {
            bail!("pilot-discovery exited before it was ready");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(started.elapsed())
}

/// A started `pilot-discovery`, its output going to a log file.
pub struct Server {
    child: Child,
    pub pid: u32,
    /// When the process was spawned.
    pub started: Instant,
    log_path: PathBuf,
}

impl Server {
    /// Starts `binary args...` with extra environment, logging to `log_path`.
    pub fn spawn(
        binary: &Path,
        args: &[String],
        env: &[(&str, &str)],
        log_path: PathBuf,
    ) -> Result<Server> {
        Server::spawn_in(binary, args, env, log_path, None)
    }

    /// As `spawn`, in working directory `dir` (else this process's).
    pub fn spawn_in(
        binary: &Path,
        args: &[String],
        env: &[(&str, &str)],
        log_path: PathBuf,
        dir: Option<&Path>,
    ) -> Result<Server> {
        let log = std::fs::File::create(&log_path).context("creating the server log")?;
        let started = Instant::now();
        let mut command = Command::new(binary);
        if let Some(dir) = dir {
            command.current_dir(dir);
        }
        let child = command
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("the server exited at once"))?;
        Ok(Server {
            child,
            pid,
            started,
            log_path,
        })
    }

    /// Runs `work` for at most `timeout`, stopping early if the server exits; on failure
    /// prints the tail of the server log. The server is killed afterwards.
    pub async fn supervise<T>(
        mut self,
        timeout: Duration,
        work: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let work = tokio::time::timeout(timeout, work);
        let mut exited = None;
        let result = tokio::select! {
            r = work => r.unwrap_or_else(|_| Err(anyhow!("timed out after {}s", timeout.as_secs()))),
            status = self.child.wait() => {
                exited = status.ok();
                Err(anyhow!("pilot-discovery exited during the run"))
            }
        };
        let _ = self.child.kill().await;
        if result.is_err() || exited.is_some() {
            if let Some(status) = exited {
                eprintln!("pilot-discovery exited early: {status}");
            }
            let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!("--- last lines of the server log ---");
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
        }
        result
    }
}

/// Samples a process's VmRSS every 20 ms and keeps the largest value.
pub struct PeakRss {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl PeakRss {
    pub fn start(pid: u32) -> Self {
        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let task = {
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
        PeakRss { peak, stop, task }
    }

    /// Stops sampling; returns the peak in kB.
    pub async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.peak.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests;
