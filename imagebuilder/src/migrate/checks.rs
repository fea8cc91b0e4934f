//! What breaks on a nonroot, shell-less, read-only image: each finding names the
//! path in the document, the problem and the fix.

use std::fmt;

use serde_yaml::Value;

/// How bad a finding is: blockers fail `--check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Warning,
    Blocker,
}

/// One problem found in a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub path: String,
    pub problem: String,
    pub fix: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Blocker => "blocker",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{sev}: {}: {}; fix: {}",
            self.path, self.problem, self.fix
        )
    }
}

const SHELLS: &[&str] = &["sh", "bash", "ash", "dash", "zsh", "ksh", "busybox"];
const SHELL_TOOLS: &[&str] = &[
    "curl", "wget", "cat", "ls", "grep", "test", "nc", "pgrep", "ps", "stat", "echo", "true",
];
const DEBUG_IMAGES: &[&str] = &["busybox", "alpine", "netshoot", "ubuntu", "debian", "curl"];
/// Where istiod's debug/legacy DNS certificates are written.
const DNS_CERT_DIR: &str = "/var/run/secrets/istio-dns";
const TOKEN_DIR: &str = "/var/run/secrets/tokens";

#[derive(Default)]
pub struct Findings(pub Vec<Finding>);

impl Findings {
    fn add(&mut self, severity: Severity, path: &str, problem: String, fix: &str) {
        self.0.push(Finding {
            severity,
            path: path.to_string(),
            problem,
            fix: fix.to_string(),
        });
    }
}

fn base(cmd: &str) -> &str {
    cmd.rsplit('/').next().unwrap_or(cmd)
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Sequence(s)) => s
            .iter()
            .map(|x| match x {
                Value::String(s) => s.clone(),
                other => serde_yaml::to_string(other)
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            })
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// A command (or args) that needs a shell or shell tools in the image.
pub fn check_command(out: &mut Findings, path: &str, argv: &[String]) {
    let Some(first) = argv.first() else { return };
    if SHELLS.contains(&base(first)) {
        out.add(
            Severity::Blocker,
            path,
            format!("runs `{}`, but the image has no shell", argv.join(" ")),
            "run the binary directly (omit `command` to use the entry point /usr/local/bin/pilot-discovery) and pass flags as separate `args`",
        );
    } else if SHELL_TOOLS.contains(&base(first)) {
        out.add(
            Severity::Blocker,
            path,
            format!("runs `{first}`, which the image does not contain"),
            "use an httpGet probe or `imagebuilder debug` with a debug image instead",
        );
    }
}

fn check_exec(out: &mut Findings, path: &str, handler: Option<&Value>) {
    if let Some(cmd) = handler
        .and_then(|h| h.get("exec"))
        .map(|e| e.get("command"))
    {
        let argv = strings(cmd);
        let before = out.0.len();
        check_command(out, &format!("{path}.exec.command"), &argv);
        if out.0.len() == before {
            out.add(
                Severity::Warning,
                &format!("{path}.exec.command"),
                format!(
                    "an exec handler runs `{}` inside the container",
                    argv.join(" ")
                ),
                "prefer httpGet on :8080 /ready",
            );
        }
    }
}

/// Security context rules (pod or container level).
pub fn check_security_context(out: &mut Findings, path: &str, sc: &Value) {
    if sc.get("runAsUser").and_then(Value::as_i64) == Some(0) {
        out.add(
            Severity::Blocker,
            &format!("{path}.runAsUser"),
            "runs as root (UID 0); the image is built to run as 1337".into(),
            "remove runAsUser (the image sets USER 1337:1337) or set a non-zero UID",
        );
    }
    if sc.get("runAsNonRoot").and_then(Value::as_bool) == Some(false) {
        out.add(
            Severity::Blocker,
            &format!("{path}.runAsNonRoot"),
            "runAsNonRoot is false".into(),
            "set runAsNonRoot: true",
        );
    }
    if sc.get("privileged").and_then(Value::as_bool) == Some(true) {
        out.add(
            Severity::Blocker,
            &format!("{path}.privileged"),
            "the container is privileged".into(),
            "remove privileged; istiod needs no capabilities",
        );
    }
    if sc.get("allowPrivilegeEscalation").and_then(Value::as_bool) == Some(true) {
        out.add(
            Severity::Warning,
            &format!("{path}.allowPrivilegeEscalation"),
            "privilege escalation is allowed".into(),
            "set allowPrivilegeEscalation: false",
        );
    }
    if sc.get("readOnlyRootFilesystem").and_then(Value::as_bool) == Some(false) {
        out.add(
            Severity::Warning,
            &format!("{path}.readOnlyRootFilesystem"),
            "the root filesystem is writable".into(),
            "set readOnlyRootFilesystem: true; istiod writes only to its emptyDir mounts",
        );
    }
}

/// Ports below 1025 in `--xxxAddr` flags.
pub fn check_args(out: &mut Findings, path: &str, args: &[String], mounts: Option<&[String]>) {
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        let (flag, value) = match arg.split_once('=') {
            Some((f, v)) => (f.to_string(), Some(v.to_string())),
            None => (arg.clone(), args.get(i + 1).cloned()),
        };
        if flag.starts_with("--") && flag.ends_with("Addr") {
            if let Some(port) = value
                .as_deref()
                .and_then(|v| v.rsplit(':').next())
                .and_then(|p| p.parse::<u32>().ok())
            {
                if port > 0 && port < 1025 {
                    out.add(
                        Severity::Blocker,
                        &format!("{path}[{i}]"),
                        format!("{flag} listens on port {port}; a nonroot process without NET_BIND_SERVICE cannot bind below 1025"),
                        "listen on the default port (≥ 1025) and map the low port in the Service's port/targetPort",
                    );
                }
            }
        }
        if flag == "--log_target" || flag == "--log_output_path" {
            if let Some(target) = value.as_deref().filter(|t| t.starts_with('/')) {
                let writable = mounts
                    .map(|m| m.iter().any(|d| target.starts_with(d.as_str())))
                    .unwrap_or(false);
                if !writable {
                    out.add(
                        Severity::Blocker,
                        &format!("{path}[{i}]"),
                        format!("{flag} writes to {target}, which the read-only root filesystem forbids"),
                        "log to stdout (the default) or mount an emptyDir at that directory",
                    );
                }
            }
        }
        i += 1;
    }
}

fn check_ports(out: &mut Findings, path: &str, ports: Option<&Value>) {
    let Some(Value::Sequence(ports)) = ports else {
        return;
    };
    for (i, p) in ports.iter().enumerate() {
        for key in ["containerPort", "hostPort"] {
            if let Some(n) = p.get(key).and_then(Value::as_u64) {
                if n < 1025 {
                    out.add(
                        Severity::Blocker,
                        &format!("{path}[{i}].{key}"),
                        format!("port {n} is privileged; a nonroot process cannot bind it"),
                        "use a port ≥ 1025 and map the low port in the Service",
                    );
                }
            }
        }
    }
}

/// A container of the istiod pod. `main` is the discovery container.
pub fn check_container(out: &mut Findings, path: &str, c: &Value, main: bool, writable: &[String]) {
    let command = strings(c.get("command"));
    let args = strings(c.get("args"));
    if !command.is_empty() {
        check_command(out, &format!("{path}.command"), &command);
    } else if !args.is_empty() && SHELLS.contains(&base(&args[0])) {
        check_command(out, &format!("{path}.args"), &args);
    }
    if main
        && !command.is_empty()
        && base(&command[0]) != "pilot-discovery"
        && out
            .0
            .last()
            .map(|f| !f.path.ends_with(".command"))
            .unwrap_or(true)
    {
        out.add(
            Severity::Warning,
            &format!("{path}.command"),
            format!("overrides the entry point with `{}`", command[0]),
            "omit command; the image's entry point is /usr/local/bin/pilot-discovery",
        );
    }
    if let Some(sc) = c.get("securityContext") {
        check_security_context(out, &format!("{path}.securityContext"), sc);
    }
    check_ports(out, &format!("{path}.ports"), c.get("ports"));
    check_args(out, &format!("{path}.args"), &args, Some(writable));
    for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
        check_exec(out, &format!("{path}.{probe}"), c.get(probe));
    }
    if let Some(lc) = c.get("lifecycle") {
        for hook in ["postStart", "preStop"] {
            check_exec(out, &format!("{path}.lifecycle.{hook}"), lc.get(hook));
        }
    }
    if !main {
        let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
        let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
        let repo = image.rsplit('/').next().unwrap_or(image);
        let repo = repo.split([':', '@']).next().unwrap_or(repo);
        if name.contains("debug") || DEBUG_IMAGES.contains(&repo) || repo.contains("debug") {
            out.add(
                Severity::Warning,
                path,
                format!("debug sidecar `{name}` ({image}) ships a shell next to istiod"),
                "remove it; attach a debug container on demand with `imagebuilder debug` or `kubectl debug`",
            );
        }
    }
}

/// The whole pod spec of an istiod Deployment.
pub fn check_pod(out: &mut Findings, path: &str, pod: &Value, main_name: &str) {
    if let Some(sc) = pod.get("securityContext") {
        check_security_context(out, &format!("{path}.securityContext"), sc);
    }
    let volumes: Vec<&Value> = match pod.get("volumes") {
        Some(Value::Sequence(v)) => v.iter().collect(),
        _ => Vec::new(),
    };
    for list in ["initContainers", "containers"] {
        let Some(Value::Sequence(cs)) = pod.get(list) else {
            continue;
        };
        for c in cs {
            let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
            let main = list == "containers" && name == main_name;
            let cpath = format!("{path}.{list}[name={name}]");
            let mounts: Vec<(String, String, bool)> = match c.get("volumeMounts") {
                Some(Value::Sequence(m)) => m
                    .iter()
                    .map(|m| {
                        (
                            m.get("name")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_string(),
                            m.get("mountPath")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_string(),
                            m.get("readOnly").and_then(Value::as_bool).unwrap_or(false),
                        )
                    })
                    .collect(),
                _ => Vec::new(),
            };
            let writable: Vec<String> = mounts
                .iter()
                .filter(|(_, _, ro)| !ro)
                .map(|(_, p, _)| p.clone())
                .collect();
            check_container(out, &cpath, c, main, &writable);
            if main {
                check_mounts(out, &cpath, &mounts, &volumes);
            }
        }
    }
}

fn check_mounts(
    out: &mut Findings,
    path: &str,
    mounts: &[(String, String, bool)],
    volumes: &[&Value],
) {
    let volume = |name: &str| {
        volumes
            .iter()
            .find(|v| v.get("name").and_then(Value::as_str) == Some(name))
    };
    let token = mounts.iter().find(|(_, p, _)| p == TOKEN_DIR);
    let audience_ok = token
        .and_then(|(n, _, _)| volume(n))
        .and_then(|v| v.get("projected")?.get("sources"))
        .and_then(Value::as_sequence)
        .map(|s| {
            s.iter().any(|src| {
                src.get("serviceAccountToken")
                    .and_then(|t| t.get("audience"))
                    .and_then(Value::as_str)
                    == Some("istio-ca")
            })
        })
        .unwrap_or(false);
    if !audience_ok {
        out.add(
            Severity::Warning,
            &format!("{path}.volumeMounts"),
            format!("no projected service-account token with audience istio-ca at {TOKEN_DIR}"),
            "mount a projected serviceAccountToken (audience istio-ca, path istio-token) at /var/run/secrets/tokens, as the chart does",
        );
    }
    let dns = mounts.iter().find(|(_, p, _)| p == DNS_CERT_DIR);
    match dns {
        None => out.add(
            Severity::Blocker,
            &format!("{path}.volumeMounts"),
            format!("nothing writable is mounted at {DNS_CERT_DIR}, where istiod writes its DNS certificates; the root filesystem is read-only"),
            "mount an emptyDir (medium: Memory) named local-certs at /var/run/secrets/istio-dns",
        ),
        Some((_, _, true)) => out.add(
            Severity::Blocker,
            &format!("{path}.volumeMounts"),
            format!("{DNS_CERT_DIR} is mounted read-only, but istiod writes its DNS certificates there"),
            "drop readOnly from the local-certs mount",
        ),
        Some(_) => {}
    }
}
