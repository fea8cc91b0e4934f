//! The Docker engine path: a toolbox container in the target's PID and network namespaces,
//! attached to the terminal or running one command, removed when the session ends.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    AttachContainerOptions, CreateContainerOptions, RemoveContainerOptions,
    ResizeContainerTTYOptions, WaitContainerOptions,
};
use bollard::Docker;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tracing::{debug, warn};

use super::{entrypoint, terminal, toolbox_env, DebugError, Session};

/// Label on every toolbox, naming the container it debugs (finds leftovers).
pub const TARGET_LABEL: &str = "io.hardened-mesh.debug.target";
const LOCAL_HOST: &str = "unix:///var/run/docker.sock";
/// Requests other than the session itself (ping, inspect, create) finish well within this.
const PING_TIMEOUT: Duration = Duration::from_secs(10);

/// The engine address: `DOCKER_HOST`, else the endpoint of the Docker context
/// (`DOCKER_CONTEXT`, else `currentContext` of the CLI config), else the local socket.
pub fn engine_host(
    docker_host: Option<String>,
    docker_context: Option<String>,
    config_dir: &Path,
) -> Result<String, DebugError> {
    if let Some(h) = docker_host.filter(|h| !h.is_empty()) {
        return Ok(h);
    }
    let context = match docker_context.filter(|c| !c.is_empty()) {
        Some(c) => Some(c),
        None => std::fs::read(config_dir.join("config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v.get("currentContext")?.as_str().map(str::to_string))
            .filter(|c| !c.is_empty()),
    };
    let Some(name) = context.filter(|c| c != "default") else {
        return Ok(LOCAL_HOST.to_string());
    };
    // The CLI stores a context's metadata under the SHA-256 of its name.
    let meta = config_dir
        .join("contexts/meta")
        .join(hex::encode(Sha256::digest(name.as_bytes())))
        .join("meta.json");
    let bytes = std::fs::read(&meta).map_err(|_| DebugError::NoSuchContext(name.clone()))?;
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| DebugError::BadContext {
            name: name.clone(),
            reason: format!("{}: {e}", meta.display()),
        })?;
    v.pointer("/Endpoints/docker/Host")
        .and_then(|h| h.as_str())
        .map(str::to_string)
        .ok_or(DebugError::BadContext {
            name,
            reason: "no docker endpoint".into(),
        })
}

fn config_dir() -> PathBuf {
    match std::env::var_os("DOCKER_CONFIG") {
        Some(d) => PathBuf::from(d),
        None => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default()
            .join(".docker"),
    }
}

/// Connects to the engine and checks it answers.
async fn connect() -> Result<Docker, DebugError> {
    let host = engine_host(
        std::env::var("DOCKER_HOST").ok(),
        std::env::var("DOCKER_CONTEXT").ok(),
        &config_dir(),
    )?;
    let unreachable = |reason: String| DebugError::DaemonUnreachable {
        host: host.clone(),
        reason,
    };
    if host.starts_with("ssh://") {
        return Err(unreachable(
            "ssh:// endpoints are not supported; forward the socket (ssh -L) and use unix:// or tcp://".into(),
        ));
    }
    let docker = Docker::connect_with_host(&host).map_err(|e| unreachable(e.to_string()))?;
    match tokio::time::timeout(PING_TIMEOUT, docker.ping()).await {
        Ok(Ok(_)) => Ok(docker),
        Ok(Err(e)) => Err(unreachable(e.to_string())),
        Err(_) => Err(unreachable(format!("no answer within {PING_TIMEOUT:?}"))),
    }
}

fn status_code(e: &BollardError) -> Option<u16> {
    match e {
        BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// The toolbox: the image's shell in the target's PID and network namespaces, root with
/// `SYS_PTRACE` (to read `/proc/1/root` of a process of another user, and to trace it).
pub fn toolbox_config(
    target_id: &str,
    target_name: &str,
    image: &str,
    session: &Session,
) -> ContainerCreateBody {
    let tty = session.tty();
    let env = toolbox_env(target_name, session)
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    ContainerCreateBody {
        image: Some(image.to_string()),
        entrypoint: Some(entrypoint()),
        cmd: Some(session.argv()),
        env: Some(env),
        user: Some("0:0".into()),
        working_dir: Some("/root".into()),
        tty: Some(tty),
        open_stdin: Some(tty),
        stdin_once: Some(tty),
        attach_stdin: Some(tty),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        labels: Some(HashMap::from([(
            TARGET_LABEL.to_string(),
            target_id.to_string(),
        )])),
        host_config: Some(HostConfig {
            pid_mode: Some(format!("container:{target_id}")),
            network_mode: Some(format!("container:{target_id}")),
            cap_add: Some(vec!["SYS_PTRACE".into()]),
            auto_remove: Some(false),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Debugs the container `name` with a toolbox from `image`; returns the session's exit code.
pub async fn debug(name: &str, image: &str, session: &Session) -> Result<i32, DebugError> {
    let docker = connect().await?;
    let target = docker
        .inspect_container(name, None)
        .await
        .map_err(|e| match status_code(&e) {
            Some(404) => DebugError::NoSuchContainer(name.to_string()),
            _ => e.into(),
        })?;
    let state = target.state.unwrap_or_default();
    if state.running != Some(true) || state.paused == Some(true) {
        let status = state.status.map(|s| s.to_string());
        return Err(DebugError::NotRunning {
            name: name.to_string(),
            status: status.unwrap_or_else(|| "unknown".into()),
        });
    }
    let id = target.id.unwrap_or_else(|| name.to_string());
    let target_name = target
        .name
        .map(|n| n.trim_start_matches('/').to_string())
        .unwrap_or_else(|| name.to_string());
    docker
        .inspect_image(image)
        .await
        .map_err(|e| match status_code(&e) {
            Some(404) => DebugError::ImageMissing(image.to_string()),
            _ => e.into(),
        })?;

    let toolbox = docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(format!("{target_name}-debug-{}", std::process::id())),
                ..Default::default()
            }),
            toolbox_config(&id, &target_name, image, session),
        )
        .await?
        .id;
    debug!(toolbox = %toolbox, target = %id, "toolbox created");
    let result = tokio::select! {
        r = attach_and_run(&docker, &toolbox, session) => r,
        code = terminal::interrupted() => Ok(code),
    };
    let removed = docker
        .remove_container(
            &toolbox,
            Some(RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await;
    if let Err(e) = removed {
        warn!(error = %e, "could not remove the toolbox; remove it with `docker rm -f {toolbox}`");
    }
    result
}

async fn attach_and_run(
    docker: &Docker,
    toolbox: &str,
    session: &Session,
) -> Result<i32, DebugError> {
    let tty = session.tty();
    // Attach before starting, so that no output is missed.
    let attached = docker
        .attach_container(
            toolbox,
            Some(AttachContainerOptions {
                stdin: tty,
                stdout: true,
                stderr: true,
                stream: true,
                ..Default::default()
            }),
        )
        .await?;
    let mut output = attached.output;
    let input = attached.input;
    let raw = if tty {
        Some(terminal::RawMode::enable()?)
    } else {
        None
    };
    docker.start_container(toolbox, None).await?;

    let mut tasks = Vec::new();
    if tty {
        tasks.push(tokio::spawn(terminal::pump_stdin(input)));
        let mut resizes = terminal::Resizes::new()?;
        let (docker, toolbox) = (docker.clone(), toolbox.to_string());
        tasks.push(tokio::spawn(async move {
            let mut size = terminal::size();
            while let Some((w, h)) = size {
                let resize = ResizeContainerTTYOptions {
                    w: w.into(),
                    h: h.into(),
                };
                if let Err(e) = docker.resize_container_tty(&toolbox, resize).await {
                    debug!(error = %e, "resize");
                }
                size = resizes.next().await;
            }
        }));
    } else {
        drop(input);
    }

    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    while let Some(chunk) = output.next().await {
        use bollard::container::LogOutput;
        match chunk? {
            LogOutput::StdErr { message } => {
                stderr.write_all(&message).await?;
                stderr.flush().await?;
            }
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                stdout.write_all(&message).await?;
                stdout.flush().await?;
            }
            LogOutput::StdIn { .. } => {}
        }
    }
    for t in tasks {
        t.abort();
    }
    drop(raw);
    exit_code(docker, toolbox).await
}

/// The toolbox's exit code, once it has stopped.
async fn exit_code(docker: &Docker, toolbox: &str) -> Result<i32, DebugError> {
    let mut wait = docker.wait_container(
        toolbox,
        Some(WaitContainerOptions {
            condition: "not-running".into(),
        }),
    );
    let code = match wait.next().await {
        Some(Ok(r)) => r.status_code,
        Some(Err(BollardError::DockerContainerWaitError { code, .. })) => code,
        Some(Err(e)) => return Err(e.into()),
        None => 0,
    };
    Ok(i32::try_from(code).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toolbox_shares_the_targets_namespaces() {
        let c = toolbox_config(
            "abc123",
            "istiod",
            "img:dev",
            &Session::Command(vec!["ps".into()]),
        );
        let h = c.host_config.as_ref().expect("host config");
        assert_eq!(h.pid_mode.as_deref(), Some("container:abc123"));
        assert_eq!(h.network_mode.as_deref(), Some("container:abc123"));
        assert_eq!(h.cap_add.as_deref(), Some(&["SYS_PTRACE".to_string()][..]));
        assert_eq!(c.cmd.as_deref(), Some(&["ps".to_string()][..]));
        assert_eq!(c.tty, Some(false));
        assert_eq!(c.attach_stdin, Some(false));
        assert_eq!(c.user.as_deref(), Some("0:0"));
        let labels = c.labels.expect("labels");
        assert_eq!(labels.get(TARGET_LABEL).map(String::as_str), Some("abc123"));

        let i = toolbox_config("abc123", "istiod", "img:dev", &Session::Interactive);
        assert_eq!(
            (i.tty, i.open_stdin, i.stdin_once),
            (Some(true), Some(true), Some(true))
        );
        assert!(i.env.expect("env").contains(&"DEBUG_BANNER=1".to_string()));
    }

    #[test]
    fn engine_host_from_env_context_and_config() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path();
        // No config at all: the local socket.
        assert_eq!(
            engine_host(None, None, cfg).ok().as_deref(),
            Some(LOCAL_HOST)
        );
        // DOCKER_HOST wins over everything.
        assert_eq!(
            engine_host(Some("tcp://127.0.0.1:2375".into()), Some("x".into()), cfg)
                .ok()
                .as_deref(),
            Some("tcp://127.0.0.1:2375")
        );
        // A named context from config.json, resolved through its metadata.
        let meta = cfg
            .join("contexts/meta")
            .join(hex::encode(Sha256::digest(b"remote")));
        std::fs::create_dir_all(&meta).expect("mkdir");
        std::fs::write(
            meta.join("meta.json"),
            r#"{"Name":"remote","Endpoints":{"docker":{"Host":"unix:///run/remote.sock"}}}"#,
        )
        .expect("write");
        std::fs::write(cfg.join("config.json"), r#"{"currentContext":"remote"}"#).expect("write");
        assert_eq!(
            engine_host(None, None, cfg).ok().as_deref(),
            Some("unix:///run/remote.sock")
        );
        // DOCKER_CONTEXT overrides config.json; `default` is the local socket.
        assert_eq!(
            engine_host(None, Some("default".into()), cfg)
                .ok()
                .as_deref(),
            Some(LOCAL_HOST)
        );
        assert!(matches!(
            engine_host(None, Some("missing".into()), cfg),
            Err(DebugError::NoSuchContext(n)) if n == "missing"
        ));
    }
}
