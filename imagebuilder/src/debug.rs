//! `imagebuilder debug`: attaches a toolbox (the dev variant) to a shell-less container on the
//! Docker engine, or to a pod as an ephemeral container, sharing the target's PID and network
//! namespaces — Docker Debug and `kubectl debug --target`, for our images.

mod docker;
mod kube;
mod terminal;

use std::io::IsTerminal;
use std::time::Duration;

use clap::Args;

/// The toolbox image: the dev variant of this version.
pub const DEFAULT_IMAGE: &str = concat!("dhi.io/istio-pilot:", env!("CARGO_PKG_VERSION"), "-dev");

/// Runs in the toolbox before the session's command: links the target's root, makes `ps`
/// without arguments list every process of the shared PID namespace (procps' default is only
/// the caller's own terminal, which hides the target), prints where things are, and execs.
const PRELUDE: &str = r#"real_ps=$(command -v ps)
if [ -n "$real_ps" ]; then
  mkdir -p /run/debug/bin
  printf '#!/bin/sh\n[ "$#" -eq 0 ] && exec %s -ef\nexec %s "$@"\n' "$real_ps" "$real_ps" >/run/debug/bin/ps
  chmod 755 /run/debug/bin/ps
  PATH=/run/debug/bin:$PATH
  export PATH
fi
ln -sfn /proc/1/root /root/target 2>/dev/null
if [ -n "$DEBUG_BANNER" ]; then
  cat >&2 <<EOF
Toolbox for $DEBUG_TARGET: its processes (ps), its network (curl localhost:8080/ready),
its filesystem at /proc/1/root, linked as /root/target (cd target).
Ctrl-D or exit ends the session and removes the toolbox.
EOF
fi
exec "$@"
"#;

/// Attach a toolbox (the dev image) to a shell-less container or pod.
#[derive(Debug, Args)]
pub struct DebugArgs {
    /// Container name or ID on the Docker engine, or `pod/NAME` on Kubernetes.
    target: String,
    /// Command to run instead of an interactive shell, after `--`; its exit code is returned.
    #[arg(last = true)]
    command: Vec<String>,
    /// Toolbox image (the dev variant; must be present locally on Docker).
    #[arg(long, default_value = DEFAULT_IMAGE)]
    image: String,
    /// Namespace of the pod (default: the kubeconfig context's).
    #[arg(short, long)]
    namespace: Option<String>,
    /// Container of the pod whose processes to share (default: the pod's first).
    #[arg(short, long)]
    container: Option<String>,
    /// Image pull secret the pod must already list for the toolbox image.
    #[arg(long)]
    pull_secret: Option<String>,
    /// Kubeconfig file (default: $KUBECONFIG or ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<std::path::PathBuf>,
    /// How long to wait for the ephemeral container to start.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// What can go wrong, each with the next step for the user.
#[derive(Debug, thiserror::Error)]
pub enum DebugError {
    #[error("cannot reach the Docker daemon at {host}: {reason}\n  next: start Docker, or point DOCKER_HOST or `docker context use` at a running engine")]
    DaemonUnreachable { host: String, reason: String },
    #[error("Docker context {0:?} not found\n  next: `docker context ls` lists contexts; `docker context use default` selects the local engine")]
    NoSuchContext(String),
    #[error("Docker context {name:?}: {reason}\n  next: set DOCKER_HOST to a unix:// or tcp:// address of the engine")]
    BadContext { name: String, reason: String },
    #[error("no such container: {0}\n  next: `docker ps` lists running containers by name and ID")]
    NoSuchContainer(String),
    #[error("container {name} is not running ({status})\n  next: start it with `docker start {name}`; a toolbox can only join a running container's namespaces")]
    NotRunning { name: String, status: String },
    #[error("image {0} is not present locally\n  next: load it with `docker load -i out/istio-pilot-<version>-dev.docker.tar` (written by `make image`), pull it with `docker pull {0}`, or pick another with --image")]
    ImageMissing(String),
    #[error("no terminal on standard input for an interactive session\n  next: run a command instead: `imagebuilder debug {0} -- ps`")]
    NoTerminal(String),
    #[error("Docker: {0}")]
    Docker(#[from] bollard::errors::Error),
    #[error("pod {pod} not found in namespace {namespace}\n  next: `kubectl get pods -n {namespace}` lists its pods; -n selects the namespace")]
    PodNotFound { pod: String, namespace: String },
    #[error(
        "pod {pod} has no container {container} (it has: {available})\n  next: pick one with -c"
    )]
    NoSuchPodContainer {
        pod: String,
        container: String,
        available: String,
    },
    #[error("the API server does not serve pods/ephemeralcontainers: {0}\n  next: ephemeral containers need Kubernetes 1.23 or later (1.25 GA); on older clusters add the dev image as a sidecar with shareProcessNamespace: true")]
    NoEphemeralContainers(String),
    #[error("forbidden to {verb} {resource} in namespace {namespace}: {message}\n  next: check with `kubectl auth can-i {verb} {resource} -n {namespace}` and ask for a Role granting it")]
    Forbidden {
        verb: &'static str,
        resource: &'static str,
        namespace: String,
        message: String,
    },
    #[error("the API server refused the ephemeral container: {0}\n  next: a PodSecurity level of `restricted` or `baseline` forbids the root, SYS_PTRACE toolbox; debug in a namespace that allows it")]
    Refused(String),
    #[error("the toolbox {container} could not start: {reason}: {message}\n  next: make the image pullable by the node (push it, or list its pull secret on the pod's service account) or pick another with --image")]
    NotStarted {
        container: String,
        reason: String,
        message: String,
    },
    #[error("the toolbox {container} did not start within {timeout:?}\n  next: `kubectl describe pod {pod}` shows why; --timeout waits longer")]
    StartTimeout {
        container: String,
        pod: String,
        timeout: Duration,
    },
    #[error("Kubernetes: {0}\n  next: check the kubeconfig (--kubeconfig, $KUBECONFIG) and that the API server is reachable")]
    Kube(#[from] ::kube::Error),
    #[error("kubeconfig: {0}\n  next: check the kubeconfig (--kubeconfig, $KUBECONFIG)")]
    Kubeconfig(String),
    #[error("terminal: {0}")]
    Io(#[from] std::io::Error),
}

/// How the toolbox runs: an interactive shell on a TTY, or one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Session {
    Interactive,
    Command(Vec<String>),
}

impl Session {
    /// The toolbox's argv after the prelude.
    fn argv(&self) -> Vec<String> {
        match self {
            Session::Interactive => vec!["bash".into()],
            Session::Command(c) => c.clone(),
        }
    }

    fn tty(&self) -> bool {
        matches!(self, Session::Interactive)
    }
}

/// The toolbox's entrypoint: the prelude, then `exec "$@"`.
fn entrypoint() -> Vec<String> {
    vec!["sh".into(), "-c".into(), PRELUDE.into(), "debug".into()]
}

/// Environment the prelude reads.
fn toolbox_env(target: &str, session: &Session) -> Vec<(String, String)> {
    let mut env = vec![("DEBUG_TARGET".to_string(), target.to_string())];
    if session.tty() {
        env.push(("DEBUG_BANNER".into(), "1".into()));
    }
    env
}

/// Where a target lives.
#[derive(Debug, PartialEq, Eq)]
enum Target<'a> {
    Container(&'a str),
    Pod(&'a str),
}

fn parse_target(s: &str) -> Target<'_> {
    match s.split_once('/') {
        Some(("pod" | "pods" | "po", name)) if !name.is_empty() => Target::Pod(name),
        _ => Target::Container(s),
    }
}

/// Runs a debug session; returns the exit code to leave with (1, after printing the error
/// and its next step, if the session could not run).
pub fn run(args: DebugArgs) -> i32 {
    match session(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

fn session(args: DebugArgs) -> Result<i32, DebugError> {
    let session = if args.command.is_empty() {
        if !std::io::stdin().is_terminal() {
            return Err(DebugError::NoTerminal(args.target));
        }
        Session::Interactive
    } else {
        Session::Command(args.command.clone())
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        match parse_target(&args.target) {
            Target::Container(name) => docker::debug(name, &args.image, &session).await,
            Target::Pod(pod) => {
                let opts = kube::PodDebug {
                    pod: pod.to_string(),
                    container: args.container.clone(),
                    image: args.image.clone(),
                    pull_secret: args.pull_secret.clone(),
                    session: session.clone(),
                    timeout: args.timeout,
                };
                kube::debug(args.kubeconfig.as_deref(), args.namespace.as_deref(), &opts).await
            }
        }
    });
    // A blocking read of standard input may still be pending: do not wait for it.
    rt.shutdown_background();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        for (input, want) in [
            ("istiod", Target::Container("istiod")),
            ("6ca6044e6abe", Target::Container("6ca6044e6abe")),
            ("pod/istiod-0", Target::Pod("istiod-0")),
            ("pods/istiod-0", Target::Pod("istiod-0")),
            ("pod/", Target::Container("pod/")),
            ("registry/thing", Target::Container("registry/thing")),
        ] {
            assert_eq!(parse_target(input), want, "{input}");
        }
    }

    #[test]
    fn session_argv_and_banner() {
        assert_eq!(Session::Interactive.argv(), ["bash"]);
        let cmd = Session::Command(vec!["ls".into(), "/proc/1/root".into()]);
        assert_eq!(cmd.argv(), ["ls", "/proc/1/root"]);
        assert!(toolbox_env("istiod", &Session::Interactive)
            .iter()
            .any(|(k, _)| k == "DEBUG_BANNER"));
        assert!(!toolbox_env("istiod", &cmd)
            .iter()
            .any(|(k, _)| k == "DEBUG_BANNER"));
    }

    #[test]
    fn prelude_links_the_printed_path() {
        assert!(PRELUDE.contains("ln -sfn /proc/1/root /root/target"));
        assert!(PRELUDE.ends_with("exec \"$@\"\n"));
    }
}
