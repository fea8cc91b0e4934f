//! The Kubernetes path: an ephemeral container (the `pods/ephemeralcontainers` subresource)
//! targeting one container of a pod, as `kubectl debug --target` adds, then attached over
//! the API server's websocket, or followed through its log for a single command.

use std::path::Path;
use std::time::Duration;

use futures::{AsyncBufReadExt, SinkExt, TryStreamExt};
use k8s_openapi::api::core::v1::{
    Capabilities, ContainerState, EnvVar, EphemeralContainer, Pod, SecurityContext,
};
use kube::api::{AttachParams, LogParams, Patch, PatchParams, TerminalSize};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::json;
use sha2::{Digest, Sha256};
use tracing::warn;

use super::{entrypoint, terminal, toolbox_env, DebugError, Session};

/// Waiting reasons after which the toolbox will not start by itself.
const FATAL_WAITING: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// A debug session on a pod.
#[derive(Debug, Clone)]
pub struct PodDebug {
    pub pod: String,
    pub container: Option<String>,
    pub image: String,
    pub pull_secret: Option<String>,
    pub session: Session,
    pub timeout: Duration,
}

/// The ephemeral container: the dev image's shell in `target`'s PID namespace (the pod's
/// network is shared by every container), root with `SYS_PTRACE`.
pub fn ephemeral_container(
    name: &str,
    target: &str,
    image: &str,
    session: &Session,
) -> EphemeralContainer {
    let tty = session.tty();
    EphemeralContainer {
        name: name.to_string(),
        image: Some(image.to_string()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(entrypoint()),
        args: Some(session.argv()),
        env: Some(
            toolbox_env(target, session)
                .into_iter()
                .map(|(name, value)| EnvVar {
                    name,
                    value: Some(value),
                    ..Default::default()
                })
                .collect(),
        ),
        working_dir: Some("/root".into()),
        stdin: Some(tty),
        stdin_once: Some(tty),
        tty: Some(tty),
        target_container_name: Some(target.to_string()),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        security_context: Some(SecurityContext {
            run_as_user: Some(0),
            run_as_group: Some(0),
            run_as_non_root: Some(false),
            capabilities: Some(Capabilities {
                add: Some(vec!["SYS_PTRACE".into()]),
                drop: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A fresh container name, `debugger-` and five hex digits, like kubectl's.
pub fn fresh_name() -> String {
    let seed = format!(
        "{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
    );
    let digest = hex::encode(Sha256::digest(seed.as_bytes()));
    format!("debugger-{}", &digest[..5])
}

fn api_code(e: &kube::Error) -> Option<(u16, String)> {
    match e {
        kube::Error::Api(s) => Some((s.code, s.message.clone())),
        _ => None,
    }
}

/// Adds the toolbox to `pod` as an ephemeral container named `name`; returns the name of
/// the container it targets.
pub async fn add_ephemeral_container(
    pods: &Api<Pod>,
    namespace: &str,
    name: &str,
    opts: &PodDebug,
) -> Result<String, DebugError> {
    let pod = pods.get(&opts.pod).await.map_err(|e| match api_code(&e) {
        Some((404, _)) => DebugError::PodNotFound {
            pod: opts.pod.clone(),
            namespace: namespace.to_string(),
        },
        Some((403, message)) => DebugError::Forbidden {
            verb: "get",
            resource: "pods",
            namespace: namespace.to_string(),
            message,
        },
        _ => e.into(),
    })?;
    let spec = pod.spec.unwrap_or_default();
    let names: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    let target = match &opts.container {
        Some(c) if names.contains(&c.as_str()) => c.clone(),
        Some(c) => {
            return Err(DebugError::NoSuchPodContainer {
                pod: opts.pod.clone(),
                container: c.clone(),
                available: names.join(", "),
            })
        }
        None => match names.first() {
            Some(n) => n.to_string(),
            None => {
                return Err(DebugError::NoSuchPodContainer {
                    pod: opts.pod.clone(),
                    container: "(any)".into(),
                    available: String::new(),
                })
            }
        },
    };
    if let Some(secret) = &opts.pull_secret {
        // The subresource changes ephemeral containers only: they pull with the pod's secrets.
        let listed = spec
            .image_pull_secrets
            .iter()
            .flatten()
            .any(|s| &s.name == secret);
        if !listed {
            warn!(
                secret = %secret,
                "the pod does not list this pull secret and ephemeral containers pull with the pod's; \
                 add it to the service account (`kubectl patch serviceaccount`) for new pods, or preload the image on the node"
            );
        }
    }
    let patch = json!({"spec": {"ephemeralContainers": [
        ephemeral_container(name, &target, &opts.image, &opts.session)
    ]}});
    pods.patch_subresource(
        "ephemeralcontainers",
        &opts.pod,
        &PatchParams::default(),
        &Patch::Strategic(patch),
    )
    .await
    .map_err(|e| match api_code(&e) {
        Some((404, message)) | Some((405, message)) => DebugError::NoEphemeralContainers(message),
        Some((403, message)) => DebugError::Forbidden {
            verb: "patch",
            resource: "pods/ephemeralcontainers",
            namespace: namespace.to_string(),
            message,
        },
        Some((422, message)) => DebugError::Refused(message),
        _ => e.into(),
    })?;
    Ok(target)
}

/// The state of ephemeral container `name` in `pod`.
fn state_of(pod: &Pod, name: &str) -> Option<ContainerState> {
    pod.status
        .as_ref()?
        .ephemeral_container_statuses
        .as_ref()?
        .iter()
        .find(|s| s.name == name)?
        .state
        .clone()
}

/// Waits until the toolbox runs (or has already finished); fails fast on pull errors.
async fn wait_started(
    pods: &Api<Pod>,
    pod: &str,
    name: &str,
    timeout: Duration,
) -> Result<(), DebugError> {
    let cond = |p: Option<&Pod>| {
        p.and_then(|p| state_of(p, name)).is_some_and(|s| {
            s.running.is_some()
                || s.terminated.is_some()
                || s.waiting
                    .and_then(|w| w.reason)
                    .is_some_and(|r| FATAL_WAITING.contains(&r.as_str()))
        })
    };
    let timed_out = || DebugError::StartTimeout {
        container: name.to_string(),
        pod: pod.to_string(),
        timeout,
    };
    let found = tokio::time::timeout(
        timeout,
        kube::runtime::wait::await_condition(pods.clone(), pod, cond),
    )
    .await
    .map_err(|_| timed_out())?
    .map_err(|e| DebugError::Kubeconfig(e.to_string()))?;
    let state = found.as_ref().and_then(|p| state_of(p, name));
    if let Some(w) = state.and_then(|s| s.waiting) {
        return Err(DebugError::NotStarted {
            container: name.to_string(),
            reason: w.reason.unwrap_or_default(),
            message: w.message.unwrap_or_default(),
        });
    }
    Ok(())
}

async fn client(kubeconfig: Option<&Path>) -> Result<Client, DebugError> {
    let config = match kubeconfig {
        Some(path) => {
            let kc =
                Kubeconfig::read_from(path).map_err(|e| DebugError::Kubeconfig(e.to_string()))?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| DebugError::Kubeconfig(e.to_string()))?
        }
        None => Config::infer()
            .await
            .map_err(|e| DebugError::Kubeconfig(e.to_string()))?,
    };
    Ok(Client::try_from(config)?)
}

/// Debugs a pod; returns the session's exit code.
pub async fn debug(
    kubeconfig: Option<&Path>,
    namespace: Option<&str>,
    opts: &PodDebug,
) -> Result<i32, DebugError> {
    let client = client(kubeconfig).await?;
    let namespace = namespace
        .map(str::to_string)
        .unwrap_or_else(|| client.default_namespace().to_string());
    let pods: Api<Pod> = Api::namespaced(client, &namespace);
    let name = fresh_name();
    let target = add_ephemeral_container(&pods, &namespace, &name, opts).await?;
    eprintln!(
        "Toolbox {name} added to pod {}/{} (target {target}); waiting for it to start",
        namespace, opts.pod
    );
    wait_started(&pods, &opts.pod, &name, opts.timeout).await?;
    let code = tokio::select! {
        r = session(&pods, &opts.pod, &name, &opts.session) => r?,
        code = terminal::interrupted() => code,
    };
    // The API has no way to remove an ephemeral container: it ends with its process.
    eprintln!(
        "Toolbox {name} has ended; it stays listed in the pod's spec until the pod is replaced"
    );
    Ok(code)
}

async fn session(
    pods: &Api<Pod>,
    pod: &str,
    name: &str,
    session: &Session,
) -> Result<i32, DebugError> {
    match session {
        Session::Interactive => {
            let params = AttachParams::interactive_tty().container(name);
            let mut attached = pods.attach(pod, &params).await?;
            let (Some(stdin), Some(stdout)) = (attached.stdin(), attached.stdout()) else {
                return Err(DebugError::Kubeconfig("attach gave no stdio".into()));
            };
            let _raw = terminal::RawMode::enable()?;
            let mut tasks = vec![tokio::spawn(terminal::pump_stdin(stdin))];
            if let Some(mut sizes) = attached.terminal_size() {
                let mut resizes = terminal::Resizes::new()?;
                tasks.push(tokio::spawn(async move {
                    let mut size = terminal::size();
                    while let Some((width, height)) = size {
                        if sizes.send(TerminalSize { width, height }).await.is_err() {
                            break;
                        }
                        size = resizes.next().await;
                    }
                }));
            }
            terminal::pump_stdout(stdout).await?;
            for t in tasks {
                t.abort();
            }
            let _ = attached.join().await;
        }
        Session::Command(_) => {
            // The command may finish before an attach: its log holds all of its output.
            let params = LogParams {
                container: Some(name.to_string()),
                follow: true,
                ..Default::default()
            };
            let mut lines = pods.log_stream(pod, &params).await?.lines();
            while let Some(line) = lines.try_next().await? {
                println!("{line}");
            }
        }
    }
    exit_code(pods, pod, name).await
}

/// The toolbox's exit code once it has terminated (waits briefly for the status to land).
async fn exit_code(pods: &Api<Pod>, pod: &str, name: &str) -> Result<i32, DebugError> {
    let cond = |p: Option<&Pod>| {
        p.and_then(|p| state_of(p, name))
            .is_some_and(|s| s.terminated.is_some())
    };
    let done = tokio::time::timeout(
        Duration::from_secs(30),
        kube::runtime::wait::await_condition(pods.clone(), pod, cond),
    )
    .await;
    let code = match done {
        Ok(Ok(p)) => p
            .as_ref()
            .and_then(|p| state_of(p, name))
            .and_then(|s| s.terminated)
            .map(|t| t.exit_code),
        _ => None,
    };
    Ok(code.unwrap_or(0))
}

#[cfg(test)]
mod tests;
