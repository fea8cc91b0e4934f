//! The `build` pipeline: lock → packages → trees → SBOMs → policy → images → `out/`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, UNIX_EPOCH};

use serde::Serialize;
use tracing::info;

use crate::debian::fetch::Fetcher;
use crate::debian::lock::{LockFile, Locked, VariantLock, LOCK_VERSION};
use crate::debian::resolve::{depends_within, resolve, Universe};
use crate::debian::sha256::Sha256;
use crate::debian::{deb, sources};
use crate::image::{self, ImageSpec};
use crate::layer::{self, Tree};
use crate::policy::{self, Policy, CA_BUNDLE};
use crate::provenance;
use crate::variant::{self, Installed, BINARY_PATH};

/// Errors of `build` and `verify-reproducible`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Debian(#[from] crate::debian::Error),
    #[error("{0} does not match the requested packages and --offline forbids resolving")]
    StaleLock(String),
    #[error("lock file has no {0} variant")]
    MissingVariant(String),
    #[error("reading the pilot binary {path}")]
    Binary {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("listing the crates compiled into the binary")]
    Crates(#[source] sbom::Error),
    #[error(transparent)]
    Sbom(#[from] sbom::Error),
    #[error(transparent)]
    Image(#[from] image::Error),
    #[error(transparent)]
    Policy(#[from] policy::Violations),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("serializing refs.json")]
    Refs(#[source] serde_json::Error),
    #[error("builds differ:\n  first:  {first:?}\n  second: {second:?}")]
    NotReproducible {
        first: Vec<String>,
        second: Vec<String>,
    },
    #[error("oci/index.json differs between builds")]
    IndexDiffers,
}

impl Error {
    fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.to_string();
        move |source| Error::Io { what, source }
    }
}

/// Everything `build` needs, as resolved from flags and environment.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub binary: PathBuf,
    pub out: PathBuf,
    pub cache: PathBuf,
    pub lock: PathBuf,
    pub mirror: Option<String>,
    pub security_mirror: Option<String>,
    pub keyring: PathBuf,
    pub offline: bool,
    pub update_lock: bool,
    pub repository: String,
    pub version: String,
    pub user: String,
    pub source_date_epoch: u64,
    pub revision: String,
    pub source_url: String,
    pub cargo_manifest: PathBuf,
    pub cargo_package: String,
    pub max_compressed_bytes: u64,
}

/// What a build wrote.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Refs {
    pub index: String,
    pub images: Vec<ImageRefs>,
    /// The SLSA provenance statement (`provenance.intoto.json`) and its digest.
    #[serde(default)]
    pub provenance: String,
    #[serde(default)]
    pub provenance_digest: String,
}

/// Digests and sizes of one written image.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ImageRefs {
    pub variant: String,
    pub reference: String,
    pub manifest: String,
    pub config: String,
    pub layers: Vec<String>,
    pub compressed_size: u64,
    pub uncompressed_size: u64,
    pub archive: String,
    pub sbom: String,
    pub sbom_digest: String,
}

const ARCH: &str = "amd64";
const RUST_TARGET: &str = "x86_64-unknown-linux-gnu";
const TOOL: &str = env!("CARGO_PKG_NAME");
const TOOL_VERSION: &str = env!("CARGO_PKG_VERSION");

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn to_locked(
    universe: &Universe,
    p: &crate::debian::index::Package,
    set: &BTreeSet<String>,
) -> Locked {
    Locked {
        name: p.name.clone(),
        version: p.version.clone(),
        arch: p.arch.clone(),
        sha256: p.sha256.clone(),
        size: p.size,
        mirror: p.mirror.clone(),
        filename: p.filename.clone(),
        depends: depends_within(universe, p, set),
    }
}

/// Reads the lock file, re-resolving from the signed indexes when it is missing, stale or
/// `--update-lock` is given.
fn locked_packages(o: &BuildOptions, fetcher: &Fetcher) -> Result<LockFile, Error> {
    let (rr, rx, dr, dx) = (
        strs(variant::RUNTIME_ROOTS),
        strs(variant::RUNTIME_EXCLUDE),
        strs(variant::DEV_ROOTS),
        strs(variant::DEV_EXCLUDE),
    );
    if let Some(lock) = LockFile::read(&o.lock)? {
        if !o.update_lock && lock.matches("runtime", &rr, &rx) && lock.matches("dev", &dr, &dx) {
            return Ok(lock);
        }
        if o.offline {
            return Err(Error::StaleLock(o.lock.display().to_string()));
        }
    }
    let srcs = match &o.mirror {
        Some(m) => sources::from_mirror(m, o.security_mirror.as_deref()),
        None => {
            let s = sources::from_apt(Path::new("/"));
            if s.is_empty() {
                sources::from_mirror(
                    "http://deb.debian.org/debian",
                    Some("http://deb.debian.org/debian-security"),
                )
            } else {
                s
            }
        }
    };
    info!(sources = ?srcs, "resolving packages");
    let universe = Universe::new(fetcher.indexes(&srcs, ARCH, &o.keyring)?);
    let runtime = resolve(
        &universe,
        &rr,
        &BTreeSet::new(),
        &rx.iter().cloned().collect(),
    )?;
    let runtime_names: BTreeSet<String> = runtime.iter().map(|p| p.name.clone()).collect();
    let dev = resolve(
        &universe,
        &dr,
        &runtime_names,
        &dx.iter().cloned().collect(),
    )?;
    let mut all_names = runtime_names.clone();
    all_names.extend(dev.iter().map(|p| p.name.clone()));
    let lock = LockFile {
        lock_version: LOCK_VERSION,
        distro: "debian-12".into(),
        arch: ARCH.into(),
        variants: BTreeMap::from([
            (
                "runtime".to_string(),
                VariantLock {
                    roots: rr,
                    exclude: rx,
                    packages: runtime
                        .iter()
                        .map(|p| to_locked(&universe, p, &runtime_names))
                        .collect(),
                },
            ),
            (
                "dev".to_string(),
                VariantLock {
                    roots: dr,
                    exclude: dx,
                    packages: dev
                        .iter()
                        .map(|p| to_locked(&universe, p, &all_names))
                        .collect(),
                },
            ),
        ]),
    };
    lock.write(&o.lock)?;
    info!(path = %o.lock.display(), "wrote lock file");
    Ok(lock)
}

fn install(fetcher: &Fetcher, pkgs: &[Locked]) -> Result<Vec<Installed>, Error> {
    pkgs.iter()
        .map(|p| {
            let path = fetcher.deb(p)?;
            let contents = deb::read(&path)?;
            Ok(Installed {
                locked: p.clone(),
                contents,
            })
        })
        .collect()
}

fn sbom_debs(pkgs: &[&Installed], tree: &Tree) -> Vec<sbom::DebPackage> {
    pkgs.iter()
        .map(|p| {
            let (source, source_version) = deb::source_package(&p.contents.control)
                .unwrap_or_else(|| (p.locked.name.clone(), p.locked.version.clone()));
            sbom::DebPackage {
                name: p.locked.name.clone(),
                version: p.locked.version.clone(),
                arch: p.locked.arch.clone(),
                sha256: p.locked.sha256.to_string(),
                licenses: variant::licenses(tree, &p.locked.name),
                depends: p.locked.depends.clone(),
                source,
                source_version,
            }
        })
        .collect()
}

/// RFC 3339 time of a Unix epoch second.
pub fn rfc3339(epoch: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(epoch)).to_string()
}

fn labels(
    o: &BuildOptions,
    tag: &str,
    created: &str,
    description: &str,
) -> BTreeMap<String, String> {
    let p = "org.opencontainers.image";
    BTreeMap::from([
        (format!("{p}.source"), o.source_url.clone()),
        (format!("{p}.revision"), o.revision.clone()),
        (format!("{p}.version"), tag.to_string()),
        (format!("{p}.created"), created.to_string()),
        (format!("{p}.title"), "pilot-discovery".to_string()),
        (format!("{p}.description"), description.to_string()),
        (format!("{p}.licenses"), "Apache-2.0".to_string()),
        (format!("{p}.base.name"), "scratch".to_string()),
    ])
}

/// Builds both variants and writes them under `o.out`.
pub fn build(o: &BuildOptions) -> Result<Refs, Error> {
    let started = Instant::now();
    let fetcher = Fetcher::new(&o.cache, o.offline)?;
    let lock = locked_packages(o, &fetcher)?;
    let pkgs = |v: &str| {
        lock.variants
            .get(v)
            .map(|v| v.packages.clone())
            .ok_or_else(|| Error::MissingVariant(v.to_string()))
    };
    let runtime_pkgs = install(&fetcher, &pkgs("runtime")?)?;
    let dev_pkgs = install(&fetcher, &pkgs("dev")?)?;
    let binary = std::fs::read(&o.binary).map_err(|source| Error::Binary {
        path: o.binary.display().to_string(),
        source,
    })?;
    let created = rfc3339(o.source_date_epoch);
    let mtime = o.source_date_epoch;

    let mut base = variant::packages_tree(&runtime_pkgs);
    variant::os_files(&mut base, "Istio pilot (hardened, Debian 12 packages)");

    let (crates, direct) = sbom::cargo::crates_of(&o.cargo_manifest, &o.cargo_package, RUST_TARGET)
        .map_err(Error::Crates)?;
    let binary_sha = Sha256::of(&binary).to_string();
    let sbom_for = |variant: &str, tag: &str, debs: Vec<sbom::DebPackage>| {
        sbom::render(&sbom::SbomInput {
            image: sbom::ImageInfo {
                name: o.repository.clone(),
                version: tag.to_string(),
                variant: variant.to_string(),
                created: created.clone(),
                tool: (TOOL.to_string(), TOOL_VERSION.to_string()),
                distro: sbom::Distro {
                    id: "debian".into(),
                    version_id: variant::DEBIAN_VERSION_ID.into(),
                    codename: variant::DEBIAN_CODENAME.into(),
                },
            },
            binary: sbom::BinaryFile {
                name: "pilot-discovery".into(),
                version: o.version.clone(),
                path: format!("/{BINARY_PATH}"),
                sha256: binary_sha.clone(),
                depends: direct.clone(),
            },
            debs,
            crates: crates.clone(),
        })
    };

    // Runtime variant.
    let runtime_tag = o.version.clone();
    let runtime_refs: Vec<&Installed> = runtime_pkgs.iter().collect();
    let runtime_sbom = sbom_for("runtime", &runtime_tag, sbom_debs(&runtime_refs, &base))?;
    let app = variant::app_tree(&binary, &runtime_sbom);
    let base_layer = layer::build(&base, mtime).map_err(Error::io("building the base layer"))?;
    let app_layer = layer::build(&app, mtime).map_err(Error::io("building the app layer"))?;
    let mut runtime_fs = base.clone();
    runtime_fs.merge(&app);
    let env = vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        format!("SSL_CERT_FILE=/{CA_BUNDLE}"),
    ];
    let runtime = image::assemble(
        ImageSpec {
            repository: o.repository.clone(),
            tag: runtime_tag.clone(),
            user: o.user.clone(),
            env: env.clone(),
            entrypoint: vec![format!("/{BINARY_PATH}")],
            exposed_ports: vec![15010, 15012, 15014, 15017, 8080],
            labels: labels(
                o,
                &runtime_tag,
                &created,
                "Istio control plane (pilot-discovery), hardened runtime image",
            ),
            created: created.clone(),
            history: vec![
                format!("debian packages: {}", variant::RUNTIME_ROOTS.join(" ")),
                "pilot-discovery and its SBOM".to_string(),
            ],
        },
        vec![base_layer, app_layer],
    )?;
    let policy = Policy {
        max_compressed_bytes: o.max_compressed_bytes,
    };
    policy::check_runtime(&policy, &runtime_fs, &o.user, runtime.compressed_size())?;

    // Dev variant: the same layers plus one.
    let dev_tag = format!("{}-dev", o.version);
    let mut all_refs: Vec<&Installed> = runtime_pkgs.iter().collect();
    all_refs.extend(dev_pkgs.iter());
    let mut dev_fs_for_licenses = runtime_fs.clone();
    dev_fs_for_licenses.merge(&variant::packages_tree(&dev_pkgs));
    let dev_sbom = sbom_for("dev", &dev_tag, sbom_debs(&all_refs, &dev_fs_for_licenses))?;
    let mirror = o
        .mirror
        .clone()
        .unwrap_or_else(|| "http://deb.debian.org/debian".to_string());
    let dev_tree = variant::dev_tree(&dev_pkgs, &all_refs, &mirror, &dev_sbom).minus(&runtime_fs);
    let dev_layer = layer::build(&dev_tree, mtime).map_err(Error::io("building the dev layer"))?;
    let mut dev_layers = runtime.layers.clone();
    dev_layers.push(dev_layer);
    let mut dev_history = runtime.spec.history.clone();
    dev_history.push(format!("dev tools: {}", variant::DEV_ROOTS.join(" ")));
    let dev = image::assemble(
        ImageSpec {
            tag: dev_tag.clone(),
            user: "0:0".into(),
            labels: labels(
                o,
                &dev_tag,
                &created,
                "Istio control plane (pilot-discovery), dev image with shell and debug tools",
            ),
            history: dev_history,
            ..runtime.spec.clone()
        },
        dev_layers,
    )?;

    // Outputs.
    std::fs::create_dir_all(&o.out)
        .map_err(Error::io(format_args!("creating {}", o.out.display())))?;
    let index = image::write_layout(&o.out.join("oci"), &[&runtime, &dev], &[])?;
    let sbom_dir = o.out.join("sbom");
    std::fs::create_dir_all(&sbom_dir)
        .map_err(Error::io(format_args!("creating {}", sbom_dir.display())))?;
    let name = o
        .repository
        .rsplit('/')
        .next()
        .unwrap_or("image")
        .to_string();
    let mut images = Vec::new();
    for (variant, img, sbom) in [
        ("runtime", &runtime, &runtime_sbom),
        ("dev", &dev, &dev_sbom),
    ] {
        let archive = o.out.join(format!("{name}-{}.docker.tar", img.spec.tag));
        image::write_docker_archive(&archive, img, mtime)?;
        let sbom_path = sbom_dir.join(format!("{variant}.cdx.json"));
        std::fs::write(&sbom_path, sbom)
            .map_err(Error::io(format_args!("writing {}", sbom_path.display())))?;
        images.push(ImageRefs {
            variant: variant.into(),
            reference: img.spec.reference(),
            manifest: img.manifest_digest.clone(),
            config: img.config_digest.clone(),
            layers: img.layers.iter().map(|l| l.digest.clone()).collect(),
            compressed_size: img.compressed_size(),
            uncompressed_size: img.uncompressed_size(),
            archive: archive.display().to_string(),
            sbom: sbom_path.display().to_string(),
            sbom_digest: layer::digest_of(sbom),
        });
        info!(
            variant,
            reference = %img.spec.reference(),
            manifest = %img.manifest_digest,
            compressed = img.compressed_size(),
            uncompressed = img.uncompressed_size(),
            "image written"
        );
    }
    let lock_bytes =
        std::fs::read(&o.lock).map_err(Error::io(format_args!("reading {}", o.lock.display())))?;
    let crate_deps: Vec<provenance::CrateDependency> = crates
        .iter()
        .map(|c| provenance::CrateDependency {
            name: c.name.clone(),
            version: c.version.clone(),
            checksum: c.checksum.clone(),
        })
        .collect();
    let statement = provenance::render(&provenance::Inputs {
        subjects: images
            .iter()
            .map(|i| provenance::Subject {
                name: i.reference.clone(),
                manifest: i.manifest.clone(),
            })
            .collect(),
        source_url: &o.source_url,
        revision: &o.revision,
        lock_path: &o.lock.display().to_string(),
        lock_sha256: &Sha256::of(&lock_bytes).to_string(),
        lock: &lock,
        repository: &o.repository,
        version: &o.version,
        user: &o.user,
        cargo_package: &o.cargo_package,
        max_compressed_bytes: o.max_compressed_bytes,
        source_date_epoch: o.source_date_epoch,
        binary_path: &format!("/{BINARY_PATH}"),
        binary_sha256: &binary_sha,
        crates: &crate_deps,
        rustc: provenance::rustc_of(&binary),
        tool_version: TOOL_VERSION,
    });
    let provenance_path = o.out.join("provenance.intoto.json");
    std::fs::write(&provenance_path, &statement).map_err(Error::io(format_args!(
        "writing {}",
        provenance_path.display()
    )))?;
    let refs = Refs {
        index,
        images,
        provenance: provenance_path.display().to_string(),
        provenance_digest: layer::digest_of(&statement),
    };
    let mut text = serde_json::to_vec_pretty(&refs).map_err(Error::Refs)?;
    text.push(b'\n');
    let refs_path = o.out.join("refs.json");
    std::fs::write(&refs_path, text)
        .map_err(Error::io(format_args!("writing {}", refs_path.display())))?;
    info!(elapsed_ms = started.elapsed().as_millis() as u64, out = %o.out.display(), "build complete");
    Ok(refs)
}

/// Builds twice into separate directories and fails if any digest differs.
pub fn verify_reproducible(o: &BuildOptions) -> Result<Refs, Error> {
    let first = build(o)?;
    let dir = tempfile::tempdir().map_err(Error::io("creating a temporary directory"))?;
    let second = build(&BuildOptions {
        out: dir.path().to_path_buf(),
        ..o.clone()
    })?;
    let digests = |r: &Refs| {
        let mut v = vec![r.index.clone(), r.provenance_digest.clone()];
        for i in &r.images {
            v.extend([i.manifest.clone(), i.config.clone(), i.sbom_digest.clone()]);
            v.extend(i.layers.iter().cloned());
        }
        v
    };
    let (a, b) = (digests(&first), digests(&second));
    if a != b {
        return Err(Error::NotReproducible {
            first: a,
            second: b,
        });
    }
    let (p, q) = (
        o.out.join("oci/index.json"),
        dir.path().join("oci/index.json"),
    );
    let read = |path: &Path| std::fs::read(path).map_err(Error::io(path.display()));
    if read(&p)? != read(&q)? {
        return Err(Error::IndexDiffers);
    }
    info!(index = %first.index, "reproducible: both builds gave identical digests");
    Ok(first)
}
