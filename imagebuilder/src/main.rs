//! `imagebuilder`: assembles `pilot-discovery` into hardened, reproducible OCI images from
//! Debian 12 packages, with CycloneDX SBOMs, and pushes them to registries.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::Command;

use std::io::Write;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
#[cfg(feature = "debug")]
use imagebuilder::debug;
#[cfg(feature = "migrate")]
use imagebuilder::migrate;
use imagebuilder::scan::{self, report::Format, Severity};
use imagebuilder::{assemble, debian, policy, registry, signature, vex};
use zeroize::Zeroizing;

/// Builds and pushes the hardened pilot images.
#[derive(Debug, Parser)]
#[command(name = "imagebuilder", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Build the runtime and dev images into the output directory.
    Build(BuildArgs),
    /// Build twice and fail unless every digest is identical.
    VerifyReproducible(BuildArgs),
    /// Push a build's images, with their SBOMs as referrers, to a registry.
    Push(PushArgs),
    /// Write an ECDSA P-256 key pair as cosign does: <prefix>.key (encrypted with
    /// $COSIGN_PASSWORD) and <prefix>.pub.
    GenerateKeyPair(GenerateKeyPairArgs),
    /// Sign an image on a registry, as cosign does (the `sha256-<hex>.sig` tag).
    Sign(SignArgs),
    /// Verify an image's cosign signatures with a public key.
    ///
    /// Exit status: 0 when a signature verifies, non-zero otherwise.
    Verify(VerifyArgs),
    /// Match an image's SBOM against advisory data read offline (RustSec, Debian, OSV).
    ///
    /// Exit status: 0 when no finding (after VEX) reaches --fail-on, 1 when one does, 2 when
    /// the scan could not run.
    Scan(ScanArgs),
    /// Write an OpenVEX statement about a vulnerability in a product (or add it to a document).
    Vex(VexArgs),
    #[cfg(feature = "debug")]
    /// Attach a toolbox (the dev image) to a shell-less container or pod.
    Debug(debug::DebugArgs),
    #[cfg(feature = "migrate")]
    /// Point an IstioOperator, Helm values or istiod Deployment at the hardened image and check it.
    Migrate(migrate::MigrateArgs),
}

#[derive(Debug, Args)]
struct PushArgs {
    /// Build output directory to push.
    #[arg(long, default_value = "out")]
    out: PathBuf,
    /// Registry host[:port].
    #[arg(long, default_value = "dhi.io")]
    registry: String,
    /// Mirror namespace: pushes to `<registry>/<NS>/dhi-istio-pilot` (repeatable; blobs of
    /// the first are mounted into the next).
    #[arg(long = "namespace")]
    namespaces: Vec<String>,
    /// Repository path when no namespace is given.
    #[arg(long, default_value = "istio-pilot")]
    repository: String,
    /// Additional tag of the runtime image (the dev image gets `<tag>-dev`); repeatable.
    #[arg(long = "tag")]
    tags: Vec<String>,
    #[command(flatten)]
    connection: ConnectionArgs,
    /// Size budget of the runtime image, compressed, in MiB.
    #[arg(long, default_value_t = 40)]
    size_budget_mib: u64,
    /// Sign every pushed image with this private key (cosign's format; passphrase from
    /// $COSIGN_PASSWORD).
    #[arg(long)]
    sign_key: Option<PathBuf>,
}

/// How to reach a registry: shared by push, sign and verify.
#[derive(Debug, Clone, Args)]
struct ConnectionArgs {
    /// Talk plain HTTP to the registry.
    #[arg(long)]
    plain_http: bool,
    /// Accept a self-signed or otherwise unverifiable TLS certificate.
    #[arg(long)]
    insecure: bool,
    /// Docker config file with credentials (default: $DOCKER_CONFIG/config.json or ~/.docker/config.json).
    #[arg(long)]
    docker_config: Option<PathBuf>,
}

impl From<ConnectionArgs> for registry::sign::Connection {
    fn from(a: ConnectionArgs) -> Self {
        Self {
            plain_http: a.plain_http,
            insecure: a.insecure,
            docker_config: a.docker_config,
        }
    }
}

#[derive(Debug, Args)]
struct GenerateKeyPairArgs {
    /// Path prefix of the two files: <prefix>.key and <prefix>.pub.
    #[arg(long, default_value = "cosign")]
    output_key_prefix: String,
    /// Overwrite existing files.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
struct SignArgs {
    /// Private key (ENCRYPTED SIGSTORE PRIVATE KEY, passphrase from $COSIGN_PASSWORD, or an
    /// unencrypted PKCS#8 PRIVATE KEY).
    #[arg(long)]
    key: PathBuf,
    /// Registry host[:port].
    #[arg(long, default_value = "dhi.io")]
    registry: String,
    /// Repository path on the registry.
    #[arg(long)]
    repository: String,
    /// Tag whose manifest (as the registry serves it now) to sign.
    #[arg(long, required_unless_present = "digest", conflicts_with = "digest")]
    tag: Option<String>,
    /// Manifest digest to sign (sha256:...).
    #[arg(long)]
    digest: Option<String>,
    #[command(flatten)]
    connection: ConnectionArgs,
}

#[derive(Debug, Args)]
struct VerifyArgs {
    /// Public key (PEM PUBLIC KEY, as cosign.pub).
    #[arg(long)]
    key: PathBuf,
    /// Image reference: host[:port]/repository:tag or ...@sha256:...
    reference: String,
    #[command(flatten)]
    connection: ConnectionArgs,
}

/// The private key's passphrase, if $COSIGN_PASSWORD is set.
fn passphrase() -> Result<Option<Zeroizing<String>>> {
    match std::env::var(signature::key::PASSWORD_ENV) {
        Ok(p) => Ok(Some(Zeroizing::new(p))),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(e) => Err(anyhow::anyhow!("{}: {e}", signature::key::PASSWORD_ENV)),
    }
}

fn read_signing_key(path: &std::path::Path) -> Result<signature::key::SigningKey> {
    let pass = passphrase()?;
    Ok(signature::key::SigningKey::read(
        path,
        pass.as_deref().map(String::as_bytes),
    )?)
}

fn parse_reference(r: &str) -> Result<oci_client::Reference> {
    r.parse()
        .with_context(|| format!("invalid image reference {r}"))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn run_generate_key_pair(a: GenerateKeyPairArgs) -> Result<()> {
    let pass = passphrase()?.with_context(|| {
        format!(
            "set {} to the passphrase of the new private key (empty for none)",
            signature::key::PASSWORD_ENV
        )
    })?;
    if pass.is_empty() {
        tracing::warn!("the private key is encrypted with an empty passphrase");
    }
    let files = signature::key::generate_key_pair(&a.output_key_prefix, pass.as_bytes(), a.force)?;
    eprintln!("Private key written to {}", files.private.display());
    eprintln!("Public key written to {}", files.public.display());
    Ok(())
}

fn run_sign(a: SignArgs) -> Result<()> {
    let key = read_signing_key(&a.key)?;
    let image = match (&a.tag, &a.digest) {
        (_, Some(d)) => oci_client::Reference::with_digest(a.registry, a.repository, d.clone()),
        (Some(t), None) => oci_client::Reference::with_tag(a.registry, a.repository, t.clone()),
        (None, None) => anyhow::bail!("--tag or --digest is required"),
    };
    let signed = runtime()?.block_on(registry::sign::sign(&a.connection.into(), &image, &key))?;
    println!("{}", serde_json::to_string_pretty(&signed)?);
    Ok(())
}

fn run_verify(a: VerifyArgs) -> Result<()> {
    let key = signature::key::PublicKey::read(&a.key)?;
    let image = parse_reference(&a.reference)?;
    let v = runtime()?.block_on(registry::sign::verify(&a.connection.into(), &image, &key))?;
    eprintln!("Verification for {} --", v.reference);
    eprintln!("The following checks were performed on each of these signatures:");
    eprintln!("  - The cosign claims were validated");
    eprintln!("  - The signatures were verified against the specified public key");
    for r in &v.rejected {
        eprintln!("Not counted: {r}");
    }
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

/// Pushes, then signs what was pushed when --sign-key is given (the key is read first, so
/// that a wrong passphrase stops before anything is pushed).
fn run_push(a: PushArgs) -> Result<()> {
    let key = a.sign_key.as_deref().map(read_signing_key).transpose()?;
    let connection: registry::sign::Connection = a.connection.clone().into();
    let options = a.options();
    let rt = runtime()?;
    let mut pushed = rt.block_on(registry::push::push(&options))?;
    if let Some(key) = key {
        for repo in &options.repositories {
            let mine: Vec<usize> = (0..pushed.len())
                .filter(|&i| {
                    parse_reference(&pushed[i].reference).is_ok_and(|r| r.repository() == repo)
                })
                .collect();
            let digests: Vec<String> = mine.iter().map(|&i| pushed[i].digest.clone()).collect();
            let signed = rt.block_on(registry::sign::sign_pushed(
                &connection,
                &options.registry,
                repo,
                &digests,
                &key,
            ))?;
            for (i, s) in mine.into_iter().zip(signed) {
                pushed[i].signatures = Some(s.signatures);
            }
        }
    }
    println!("{}", serde_json::to_string_pretty(&pushed)?);
    Ok(())
}

impl PushArgs {
    fn options(self) -> registry::push::PushOptions {
        let repositories = if self.namespaces.is_empty() {
            vec![self.repository]
        } else {
            self.namespaces
                .iter()
                .map(|ns| format!("{}/dhi-istio-pilot", ns.trim_matches('/')))
                .collect()
        };
        registry::push::PushOptions {
            out: self.out,
            registry: self.registry,
            repositories,
            extra_tags: self.tags,
            plain_http: self.connection.plain_http,
            insecure: self.connection.insecure,
            docker_config: self.connection.docker_config,
            policy: policy::Policy {
                max_compressed_bytes: self.size_budget_mib * 1024 * 1024,
            },
        }
    }
}

#[derive(Debug, Args)]
struct ScanArgs {
    /// Build output directory whose SBOM (and manifest digest, from refs.json) to scan.
    #[arg(long, default_value = "out", conflicts_with = "sbom")]
    out: PathBuf,
    /// Variant of the build output to scan.
    #[arg(long, default_value = "runtime", value_parser = ["runtime", "dev"])]
    variant: String,
    /// A CycloneDX JSON SBOM to scan instead of a build output's.
    #[arg(long)]
    sbom: Option<PathBuf>,
    /// Advisory data directory: a RustSec advisory-db checkout (crates/), and/or
    /// debian/tracker.json (the Debian security tracker's JSON export) and osv/ (OSV
    /// records). Repeatable.
    #[arg(
        long,
        required = true,
        env = "IMAGEBUILDER_SCAN_DB",
        value_delimiter = ':'
    )]
    db: Vec<PathBuf>,
    /// OpenVEX document whose not_affected and fixed statements suppress findings (repeatable).
    #[arg(long)]
    vex: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Write the report to this file instead of standard output.
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
    /// Exit with status 1 when a finding not suppressed by VEX is at least this severe.
    #[arg(long, value_enum)]
    fail_on: Option<Severity>,
}

impl ScanArgs {
    fn options(self) -> Result<scan::ScanOptions> {
        let (sbom, digest) = match self.sbom {
            Some(s) => (s, None),
            None => {
                let path = self.out.join("refs.json");
                let text = std::fs::read(&path).with_context(|| {
                    format!("reading {} (build first, or pass --sbom)", path.display())
                })?;
                let refs: assemble::Refs = serde_json::from_slice(&text)
                    .with_context(|| format!("reading {}", path.display()))?;
                let img = refs
                    .images
                    .into_iter()
                    .find(|i| i.variant == self.variant)
                    .with_context(|| format!("{} has no {} image", path.display(), self.variant))?;
                (PathBuf::from(img.sbom), Some(img.manifest))
            }
        };
        Ok(scan::ScanOptions {
            sbom,
            digest,
            db: self.db,
            vex: self.vex,
        })
    }
}

#[derive(Debug, Args)]
struct VexArgs {
    /// Package URL of the product the statement is about, e.g.
    /// pkg:oci/istio-pilot@sha256%3A...?repository_url=dhi.io/istio-pilot
    #[arg(long)]
    product: String,
    /// Package URL of a component of the product the statement is limited to (repeatable).
    #[arg(long = "subcomponent")]
    subcomponents: Vec<String>,
    /// The vulnerability: an advisory id such as CVE-2023-4911 or RUSTSEC-2020-0071.
    #[arg(long)]
    vulnerability: String,
    /// Other names of the vulnerability (repeatable).
    #[arg(long = "alias")]
    aliases: Vec<String>,
    #[arg(long, value_enum)]
    status: vex::Status,
    /// Why the product is not affected (not_affected needs this or --impact-statement).
    #[arg(long, value_enum)]
    justification: Option<vex::Justification>,
    /// Why the product is not affected, in words.
    #[arg(long)]
    impact_statement: Option<String>,
    /// What users should do (required with --status affected).
    #[arg(long)]
    action_statement: Option<String>,
    /// Free-form notes on the status.
    #[arg(long)]
    status_notes: Option<String>,
    /// Author of the document.
    #[arg(long, default_value = "imagebuilder")]
    author: String,
    /// Time of the statement, in seconds since the epoch (default: now).
    #[arg(long, env = "SOURCE_DATE_EPOCH")]
    source_date_epoch: Option<u64>,
    /// Add the statement to this document (a new version of it) instead of starting one.
    #[arg(long)]
    append: Option<PathBuf>,
    /// Write the document here (default: the --append file, else standard output).
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
}

fn run_vex(a: VexArgs) -> Result<()> {
    let epoch = match a.source_date_epoch {
        Some(e) => e,
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs(),
    };
    let timestamp = assemble::rfc3339(epoch);
    let statement = vex::Statement {
        vulnerability: vex::Vulnerability {
            iri: None,
            name: a.vulnerability,
            description: None,
            aliases: a.aliases,
        },
        timestamp: None,
        products: vec![vex::Product {
            id: a.product,
            subcomponents: a
                .subcomponents
                .into_iter()
                .map(|id| vex::Subcomponent { id })
                .collect(),
        }],
        status: a.status,
        status_notes: a.status_notes,
        justification: a.justification,
        impact_statement: a.impact_statement,
        action_statement: a.action_statement,
    };
    statement.check().map_err(anyhow::Error::msg)?;
    let doc = match &a.append {
        Some(path) => {
            let mut doc = vex::Document::read(path)?;
            let mut s = statement;
            s.timestamp = Some(timestamp.clone());
            doc.push(s, &timestamp);
            doc
        }
        None => vex::Document::new(&a.author, &timestamp, vec![statement]),
    };
    match a.output.or(a.append) {
        Some(path) => std::fs::write(&path, doc.to_vec())
            .with_context(|| format!("writing {}", path.display()))?,
        None => std::io::stdout().write_all(&doc.to_vec())?,
    }
    Ok(())
}

/// Runs a scan; the exit status says whether a finding reached `--fail-on`.
fn run_scan(a: ScanArgs) -> i32 {
    let (format, output, fail_on) = (a.format, a.output.clone(), a.fail_on);
    let run = || -> Result<bool> {
        let (report, sbom) = scan::run(&a.options()?)?;
        let bytes = report.render(format, &sbom)?;
        match &output {
            Some(path) => std::fs::write(path, &bytes)
                .with_context(|| format!("writing {}", path.display()))?,
            None => std::io::stdout().write_all(&bytes)?,
        }
        Ok(fail_on.is_some_and(|t| report.fails(t)))
    };
    match run() {
        Ok(false) => 0,
        Ok(true) => 1,
        Err(e) => {
            eprintln!("Error: {e:?}");
            2
        }
    }
}

#[derive(Debug, Args)]
struct BuildArgs {
    /// The pilot-discovery binary to ship.
    #[arg(long, default_value = "target/release/pilot-discovery")]
    binary: PathBuf,
    /// Output directory (OCI layout, docker archives, SBOMs, refs.json).
    #[arg(long, default_value = "out")]
    out: PathBuf,
    /// Cache of downloaded .deb files (default: $XDG_CACHE_HOME/imagebuilder or ~/.cache/imagebuilder).
    #[arg(long, env = "IMAGEBUILDER_CACHE")]
    cache: Option<PathBuf>,
    /// The package lock file.
    #[arg(long, default_value = "imagebuilder/packages.lock.json")]
    lock: PathBuf,
    /// Debian mirror root (default: the host's apt sources).
    #[arg(long, env = "IMAGEBUILDER_MIRROR")]
    mirror: Option<String>,
    /// Debian security mirror root, used with --mirror.
    #[arg(long)]
    security_mirror: Option<String>,
    /// Keyring that InRelease signatures are checked against.
    #[arg(long, default_value = debian::verify::DEBIAN_KEYRING)]
    keyring: PathBuf,
    /// Build from the lock file and cache only; never touch the network.
    #[arg(long)]
    offline: bool,
    /// Re-resolve packages from the indexes and rewrite the lock file.
    #[arg(long)]
    update_lock: bool,
    /// Image repository.
    #[arg(long, default_value = "dhi.io/istio-pilot")]
    repository: String,
    /// Version tag of the runtime image (the dev image gets `-dev`).
    #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
    version: String,
    /// User of the runtime image (uid:gid, not root).
    #[arg(long, default_value = "1337:1337")]
    user: String,
    /// Creation time and file mtimes (default: the last commit's time).
    #[arg(long, env = "SOURCE_DATE_EPOCH")]
    source_date_epoch: Option<u64>,
    /// Source revision label (default: git HEAD).
    #[arg(long)]
    revision: Option<String>,
    /// Source repository label.
    #[arg(long, default_value = "https://github.com/hardened-mesh/istio-pilot")]
    source_url: String,
    /// Workspace manifest used to list the crates in the binary.
    #[arg(long, default_value = "Cargo.toml")]
    cargo_manifest: PathBuf,
    /// Package that builds the binary.
    #[arg(long, default_value = "pilot")]
    cargo_package: String,
    /// Size budget of the runtime image, compressed, in MiB.
    #[arg(long, default_value_t = 40)]
    size_budget_mib: u64,
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn default_cache() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(x).join("imagebuilder");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".cache/imagebuilder"),
        None => PathBuf::from("target/imagebuilder-cache"),
    }
}

impl BuildArgs {
    fn options(self) -> Result<assemble::BuildOptions> {
        let source_date_epoch = match self.source_date_epoch {
            Some(e) => e,
            None => git(&["log", "-1", "--format=%ct"])
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
        };
        Ok(assemble::BuildOptions {
            binary: self.binary,
            out: self.out,
            cache: self.cache.unwrap_or_else(default_cache),
            lock: self.lock,
            mirror: self.mirror,
            security_mirror: self.security_mirror,
            keyring: self.keyring,
            offline: self.offline,
            update_lock: self.update_lock,
            repository: self.repository,
            version: self.version,
            user: self.user,
            source_date_epoch,
            revision: self
                .revision
                .or_else(|| git(&["rev-parse", "HEAD"]))
                .unwrap_or_else(|| "unknown".into()),
            source_url: self.source_url,
            cargo_manifest: self.cargo_manifest,
            cargo_package: self.cargo_package,
            max_compressed_bytes: self.size_budget_mib * 1024 * 1024,
        })
    }
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    imagebuilder::tls::install_crypto_provider();
    match Cli::parse().command {
        Cmd::Build(a) => {
            let refs = assemble::build(&a.options()?)?;
            println!("{}", serde_json::to_string_pretty(&refs)?);
        }
        Cmd::VerifyReproducible(a) => {
            let refs = assemble::verify_reproducible(&a.options()?)?;
            println!("reproducible: index {}", refs.index);
        }
        Cmd::Push(a) => run_push(a)?,
        Cmd::GenerateKeyPair(a) => run_generate_key_pair(a)?,
        Cmd::Sign(a) => run_sign(a)?,
        Cmd::Verify(a) => run_verify(a)?,
        Cmd::Scan(a) => std::process::exit(run_scan(a)),
        Cmd::Vex(a) => run_vex(a)?,
        #[cfg(feature = "debug")]
        Cmd::Debug(a) => std::process::exit(debug::run(a)),
        #[cfg(feature = "migrate")]
        Cmd::Migrate(a) => std::process::exit(migrate::main(a)),
    }
    Ok(())
}
