//! `migrate`: points an IstioOperator, a Helm values file or an istiod Deployment at
//! the hardened image with a minimal diff (keys, order and comments kept), and
//! reports what would break on a nonroot, shell-less, read-only image.

mod checks;
mod live;
mod yaml_edit;

use std::path::PathBuf;

use serde_yaml::Value;

use checks::Findings;
pub use checks::{Finding, Severity};
use yaml_edit::{keys, Document, Seg};

/// Errors of the migrate command; each names the document and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("{0}")]
    Read(String),
    #[error("{name}: not YAML: {err}")]
    Parse {
        name: String,
        err: serde_yaml::Error,
    },
    #[error("{name}: {err}")]
    Edit {
        name: String,
        err: yaml_edit::EditError,
    },
    #[error("{name}: no image tag found (looked at {looked}); pass --tag")]
    NoTag { name: String, looked: String },
    #[error("{name}: no istiod Deployment, IstioOperator or Helm values found")]
    Unrecognised { name: String },
    #[error("{0}")]
    Kube(String),
}

/// Where the migrated image lives.
#[derive(Debug, Clone)]
pub struct Target {
    /// Registry host (default dhi.io).
    pub registry: String,
    /// Mirror namespace: `<registry>/<namespace>/dhi-istio-pilot`.
    pub namespace: Option<String>,
    /// Tag; default: the document's current tag without a variant suffix.
    pub tag: Option<String>,
    /// A full reference used verbatim.
    pub image: Option<String>,
    /// Pull secrets to add.
    pub pull_secrets: Vec<String>,
}

impl Target {
    fn reference(&self, tag: &str) -> String {
        if let Some(image) = &self.image {
            return image.clone();
        }
        let registry = self.registry.trim_end_matches('/');
        match &self.namespace {
            Some(ns) => format!("{registry}/{}/dhi-istio-pilot:{tag}", ns.trim_matches('/')),
            None => format!("{registry}/istio-pilot:{tag}"),
        }
    }
}

/// The result for one input.
pub struct Migrated {
    pub name: String,
    pub before: String,
    pub after: String,
    pub findings: Vec<Finding>,
}

impl Migrated {
    pub fn blockers(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Blocker)
            .count()
    }

    /// A unified diff of the change.
    pub fn diff(&self) -> String {
        similar::TextDiff::from_lines(&self.before, &self.after)
            .unified_diff()
            .context_radius(3)
            .header(&format!("a/{}", self.name), &format!("b/{}", self.name))
            .to_string()
    }
}

/// What kind of document this is.
enum Kind {
    Operator,
    Deployment { container: String },
    Values,
}

/// Migrates one multi-document YAML text.
pub fn migrate_text(name: &str, text: &str, target: &Target) -> Result<Migrated, MigrateError> {
    let mut out = String::new();
    let mut findings = Findings::default();
    let mut recognised = 0;
    for (n, chunk) in split_documents(text).into_iter().enumerate() {
        let doc_name = if n == 0 {
            name.to_string()
        } else {
            format!("{name} (document {})", n + 1)
        };
        let value: Value = if chunk.body.trim().is_empty() {
            Value::Null
        } else {
            serde_yaml::from_str(&chunk.body).map_err(|err| MigrateError::Parse {
                name: doc_name.clone(),
                err,
            })?
        };
        out.push_str(&chunk.separator);
        match kind(&value) {
            Some(k) => {
                recognised += 1;
                let edited = migrate_document(&doc_name, &chunk.body, &value, &k, target)?;
                check_document(&mut findings, &value, &k);
                out.push_str(&edited);
            }
            None => out.push_str(&chunk.body),
        }
    }
    if recognised == 0 {
        return Err(MigrateError::Unrecognised { name: name.into() });
    }
    Ok(Migrated {
        name: name.into(),
        before: text.into(),
        after: out,
        findings: findings.0,
    })
}

struct Chunk {
    separator: String,
    body: String,
}

/// Splits at `---` lines, keeping each separator line verbatim.
fn split_documents(text: &str) -> Vec<Chunk> {
    let mut chunks = vec![Chunk {
        separator: String::new(),
        body: String::new(),
    }];
    for line in text.split_inclusive('\n') {
        let t = line.trim_end();
        if t == "---" || t.starts_with("--- ") {
            chunks.push(Chunk {
                separator: line.to_string(),
                body: String::new(),
            });
        } else if let Some(c) = chunks.last_mut() {
            c.body.push_str(line);
        }
    }
    chunks
}

fn kind(v: &Value) -> Option<Kind> {
    let map = v.as_mapping()?;
    match v.get("kind").and_then(Value::as_str) {
        Some("IstioOperator") => Some(Kind::Operator),
        Some("Deployment") => {
            let containers = v
                .get("spec")?
                .get("template")?
                .get("spec")?
                .get("containers")?
                .as_sequence()?;
            let names: Vec<&str> = containers
                .iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str))
                .collect();
            let container = names
                .iter()
                .find(|n| **n == "discovery")
                .or(names.first())?;
            Some(Kind::Deployment {
                container: container.to_string(),
            })
        }
        Some(_) => None,
        None if map.contains_key("pilot")
            || map.contains_key("global")
            || map.contains_key("image")
            || map.contains_key("meshConfig")
            || map.contains_key("revision") =>
        {
            Some(Kind::Values)
        }
        None => None,
    }
}

fn scalar_at(v: &Value, path: &[&str]) -> Option<String> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    match cur {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The tag in an image reference, if it has one.
fn tag_of(image: &str) -> Option<String> {
    let last = image.rsplit('/').next()?;
    let last = last.split('@').next()?;
    last.split_once(':').map(|(_, t)| t.to_string())
}

/// `1.24.2-distroless` → `1.24.2`: our image has no upstream variants.
fn strip_variant(tag: &str) -> String {
    for suffix in ["-distroless", "-debug"] {
        if let Some(t) = tag.strip_suffix(suffix) {
            return t.to_string();
        }
    }
    tag.to_string()
}

fn migrate_document(
    name: &str,
    body: &str,
    value: &Value,
    kind: &Kind,
    target: &Target,
) -> Result<String, MigrateError> {
    let mut doc = Document::parse(body);
    let edit = |err| MigrateError::Edit {
        name: name.to_string(),
        err,
    };
    // Candidate places the current tag is read from, most specific first.
    let (image_path, secrets_path, as_objects, tag_paths): (
        Vec<Seg>,
        Vec<Seg>,
        bool,
        Vec<Vec<&str>>,
    ) = match kind {
        Kind::Operator => (
            keys(&["spec", "values", "pilot", "image"]),
            keys(&["spec", "values", "global", "imagePullSecrets"]),
            false,
            vec![
                vec!["spec", "values", "pilot", "tag"],
                vec!["spec", "components", "pilot", "tag"],
                vec!["spec", "tag"],
                vec!["spec", "values", "global", "tag"],
            ],
        ),
        Kind::Values => {
            let top = value.get("image").is_some()
                && value.get("pilot").and_then(|p| p.get("image")).is_none();
            (
                if top {
                    keys(&["image"])
                } else {
                    keys(&["pilot", "image"])
                },
                keys(&["global", "imagePullSecrets"]),
                false,
                vec![vec!["pilot", "tag"], vec!["tag"], vec!["global", "tag"]],
            )
        }
        Kind::Deployment { container } => {
            let mut image = keys(&["spec", "template", "spec", "containers"]);
            image.push(Seg::Item {
                key: "name".into(),
                value: container.clone(),
            });
            image.push(Seg::Key("image".into()));
            (
                image,
                keys(&["spec", "template", "spec", "imagePullSecrets"]),
                true,
                vec![],
            )
        }
    };
    let current_image = doc.get(&image_path);
    let tag = match &target.tag {
        Some(t) => t.clone(),
        None => current_image
            .as_deref()
            .filter(|i| i.contains('/') || i.contains(':'))
            .and_then(tag_of)
            .or_else(|| tag_paths.iter().find_map(|p| scalar_at(value, p)))
            .map(|t| strip_variant(&t))
            .ok_or_else(|| MigrateError::NoTag {
                name: name.to_string(),
                looked: std::iter::once(yaml_edit::path_string(&image_path))
                    .chain(tag_paths.iter().map(|p| p.join(".")))
                    .collect::<Vec<_>>()
                    .join(", "),
            })?,
    };
    let reference = target.reference(&tag);
    if current_image.as_deref() != Some(reference.as_str()) {
        doc.set_scalar(&image_path, &reference).map_err(edit)?;
    }
    if !target.pull_secrets.is_empty() {
        doc.append_list(&secrets_path, &target.pull_secrets, as_objects)
            .map_err(edit)?;
    }
    Ok(doc.text())
}

fn check_document(out: &mut Findings, v: &Value, kind: &Kind) {
    match kind {
        Kind::Deployment { container } => {
            if let Some(pod) = v
                .get("spec")
                .and_then(|s| s.get("template"))
                .and_then(|t| t.get("spec"))
            {
                checks::check_pod(out, "spec.template.spec", pod, container);
            }
        }
        Kind::Operator => {
            if let Some(values) = v.get("spec").and_then(|s| s.get("values")) {
                check_values(out, "spec.values.", values);
            }
            let Some(k8s) = v
                .get("spec")
                .and_then(|s| s.get("components"))
                .and_then(|c| c.get("pilot"))
                .and_then(|p| p.get("k8s"))
            else {
                return;
            };
            let base = "spec.components.pilot.k8s";
            if let Some(sc) = k8s.get("securityContext") {
                checks::check_security_context(out, &format!("{base}.securityContext"), sc);
            }
            if let Some(probe) = k8s.get("readinessProbe") {
                let fake = Value::Mapping(
                    [(Value::from("readinessProbe"), probe.clone())]
                        .into_iter()
                        .collect(),
                );
                checks::check_container(out, base, &fake, true, &[]);
            }
            if let Some(Value::Sequence(ports)) = k8s.get("service").and_then(|s| s.get("ports")) {
                for (i, p) in ports.iter().enumerate() {
                    if let Some(n) = p
                        .get("targetPort")
                        .and_then(Value::as_u64)
                        .filter(|n| *n < 1025)
                    {
                        out.0.push(Finding {
                            severity: Severity::Blocker,
                            path: format!("{base}.service.ports[{i}].targetPort"),
                            problem: format!(
                                "targets port {n}, which a nonroot istiod cannot listen on"
                            ),
                            fix: "target istiod's own port (15010, 15012, 15014, 15017)".into(),
                        });
                    }
                }
            }
            if let Some(Value::Sequence(overlays)) = k8s.get("overlays") {
                for (i, o) in overlays.iter().enumerate() {
                    let Some(Value::Sequence(patches)) = o.get("patches") else {
                        continue;
                    };
                    for (j, p) in patches.iter().enumerate() {
                        check_patch(out, &format!("{base}.overlays[{i}].patches[{j}].value"), p);
                    }
                }
            }
        }
        Kind::Values => check_values(out, "", v),
    }
}

/// Helm values (or an IstioOperator's `spec.values`).
fn check_values(out: &mut Findings, prefix: &str, values: &Value) {
    for scope in ["pilot.", ""] {
        let node = if scope.is_empty() {
            Some(values)
        } else {
            values.get("pilot")
        };
        let Some(node) = node else { continue };
        if let Some(Value::Sequence(args)) = node.get("extraContainerArgs") {
            let args: Vec<String> = args
                .iter()
                .filter_map(|a| a.as_str().map(String::from))
                .collect();
            checks::check_args(
                out,
                &format!("{prefix}{scope}extraContainerArgs"),
                &args,
                None,
            );
        }
        if let Some(Value::Sequence(cs)) = node.get("initContainers") {
            for c in cs {
                let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
                checks::check_container(
                    out,
                    &format!("{prefix}{scope}initContainers[name={name}]"),
                    c,
                    false,
                    &[],
                );
            }
        }
    }
}

/// An overlay patch on the rendered Deployment: judged by what it sets.
fn check_patch(out: &mut Findings, path: &str, patch: &Value) {
    let target = patch
        .get("path")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let Some(value) = patch.get("value") else {
        return;
    };
    let last = target
        .rsplit('.')
        .next()
        .unwrap_or_default()
        .split('[')
        .next()
        .unwrap_or_default();
    match last {
        "command" | "args" => {
            let argv: Vec<String> = match value {
                Value::Sequence(s) => s
                    .iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect(),
                Value::String(s) => vec![s.clone()],
                _ => Vec::new(),
            };
            checks::check_command(out, path, &argv);
            checks::check_args(out, path, &argv, None);
        }
        "securityContext" => checks::check_security_context(out, path, value),
        "runAsUser" | "runAsNonRoot" | "privileged" | "readOnlyRootFilesystem" => {
            let wrapped =
                Value::Mapping([(Value::from(last), value.clone())].into_iter().collect());
            let parent = path.strip_suffix(".value").unwrap_or(path);
            checks::check_security_context(out, parent, &wrapped);
        }
        "containers" => match value {
            Value::Sequence(cs) => {
                for c in cs {
                    let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
                    checks::check_container(
                        out,
                        &format!("{path}[name={name}]"),
                        c,
                        name == "discovery",
                        &[],
                    );
                }
            }
            c @ Value::Mapping(_) => {
                let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
                checks::check_container(out, path, c, name == "discovery", &[]);
            }
            _ => {}
        },
        _ if target.contains("containers") && value.is_mapping() => {
            let name = value
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            checks::check_container(out, path, value, name == "discovery", &[]);
        }
        _ => {}
    }
}

/// Where the document comes from.
pub enum Input {
    File(PathBuf),
    Live {
        kubeconfig: PathBuf,
        context: Option<String>,
        namespace: String,
        deployment: String,
    },
}

/// Reads the input and migrates it.
pub fn run(input: &Input, target: &Target) -> Result<Migrated, MigrateError> {
    match input {
        Input::File(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| MigrateError::Read(format!("{}: {e}", path.display())))?;
            migrate_text(&path.display().to_string(), &text, target)
        }
        Input::Live {
            kubeconfig,
            context,
            namespace,
            deployment,
        } => {
            let text =
                live::read_deployment(kubeconfig, context.as_deref(), namespace, deployment)?;
            migrate_text(
                &format!("deployment/{namespace}/{deployment}"),
                &text,
                target,
            )
        }
    }
}

#[cfg(test)]
mod tests;

/// How the migrated document is printed.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum OutputFormat {
    /// The whole migrated document.
    Yaml,
    /// A unified diff against the input.
    Diff,
}

/// Arguments of `imagebuilder migrate`.
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// An IstioOperator manifest, a Helm values file or a Deployment manifest.
    #[arg(required_unless_present = "kubeconfig", conflicts_with = "kubeconfig")]
    file: Option<PathBuf>,
    /// Read the live istiod Deployment from this cluster instead of a file.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Context in the kubeconfig (default: its current context).
    #[arg(long, requires = "kubeconfig")]
    context: Option<String>,
    /// Namespace of the live Deployment.
    #[arg(long, default_value = "istio-system")]
    istio_namespace: String,
    /// Name of the live Deployment (istiod-<revision> for a revision).
    #[arg(long, default_value = "istiod")]
    deployment: String,
    /// Registry host of the hardened image.
    #[arg(long, default_value = "dhi.io")]
    registry: String,
    /// Mirror namespace: the image becomes <registry>/<NAMESPACE>/dhi-istio-pilot:<tag>.
    #[arg(long)]
    namespace: Option<String>,
    /// Image tag (default: the document's current tag, without -distroless/-debug).
    #[arg(long)]
    tag: Option<String>,
    /// A full image reference, used verbatim.
    #[arg(long, conflicts_with_all = ["namespace", "tag"])]
    image: Option<String>,
    /// Add an image pull secret (repeatable).
    #[arg(long = "pull-secret")]
    pull_secrets: Vec<String>,
    /// What to print on stdout.
    #[arg(long, value_enum, default_value = "yaml")]
    output: OutputFormat,
    /// Write the migrated document to this file instead of stdout (with --output yaml).
    #[arg(long = "out", short = 'o')]
    out: Option<PathBuf>,
    /// Rewrite the input file.
    #[arg(long, conflicts_with = "out", requires = "file")]
    in_place: bool,
    /// Exit 2 when a finding blocks the hardened image (for CI).
    #[arg(long)]
    check: bool,
}

/// Runs the command; returns the process exit code (0 ok, 1 error, 2 blockers with --check).
pub fn main(args: MigrateArgs) -> i32 {
    let target = Target {
        registry: args.registry.clone(),
        namespace: args.namespace.clone(),
        tag: args.tag.clone(),
        image: args.image.clone(),
        pull_secrets: args.pull_secrets.clone(),
    };
    let input = match (&args.file, &args.kubeconfig) {
        (Some(f), _) => Input::File(f.clone()),
        (None, Some(k)) => Input::Live {
            kubeconfig: k.clone(),
            context: args.context.clone(),
            namespace: args.istio_namespace.clone(),
            deployment: args.deployment.clone(),
        },
        (None, None) => {
            eprintln!("error: give a file or --kubeconfig");
            return 1;
        }
    };
    let migrated = match run(&input, &target) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    for f in &migrated.findings {
        eprintln!("{}: {f}", migrated.name);
    }
    let write = |path: &PathBuf| {
        std::fs::write(path, &migrated.after)
            .map_err(|e| eprintln!("error: {}: {e}", path.display()))
            .is_ok()
    };
    let written = match (args.output, &args.out, args.in_place, &args.file) {
        (OutputFormat::Diff, _, false, _) if args.out.is_none() => {
            print!("{}", migrated.diff());
            true
        }
        (OutputFormat::Diff, out, in_place, file) => {
            print!("{}", migrated.diff());
            match (out, in_place, file) {
                (Some(o), _, _) => write(o),
                (None, true, Some(f)) => write(f),
                _ => true,
            }
        }
        (OutputFormat::Yaml, Some(o), _, _) => write(o),
        (OutputFormat::Yaml, None, true, Some(f)) => write(f),
        (OutputFormat::Yaml, _, _, _) => {
            print!("{}", migrated.after);
            true
        }
    };
    if !written {
        return 1;
    }
    let blockers = migrated.blockers();
    if blockers > 0 {
        eprintln!(
            "{}: {blockers} blocker(s) for the hardened image",
            migrated.name
        );
    }
    if args.check && blockers > 0 {
        2
    } else {
        0
    }
}
