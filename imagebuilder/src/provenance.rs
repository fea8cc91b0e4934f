//! SLSA v1 provenance for a build: an in-toto Statement v1 whose subjects are the images'
//! manifests, saying what was built from what.
//!
//! Everything in it is a function of the build's inputs — no clock, host name or random id:
//! times are `SOURCE_DATE_EPOCH`, so two builds of the same inputs write the same bytes.

use serde_json::{json, Value};

use crate::debian::lock::LockFile;

/// The in-toto Statement type.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// The SLSA provenance predicate type.
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// What a build of this kind does, and how its parameters are to be read (docs/image.md).
pub const BUILD_TYPE: &str =
    "https://github.com/hardened-mesh/istio-pilot/blob/main/docs/image.md#provenance";

/// One image the build wrote.
#[derive(Debug, Clone)]
pub struct Subject {
    /// `repository:tag`.
    pub name: String,
    /// `sha256:<hex>` of the manifest.
    pub manifest: String,
}

/// A crate compiled into the binary.
#[derive(Debug, Clone)]
pub struct CrateDependency {
    pub name: String,
    pub version: String,
    /// SHA-256 from `Cargo.lock` (registry crates).
    pub checksum: Option<String>,
}

/// The inputs and options of one build.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    pub subjects: Vec<Subject>,
    pub source_url: &'a str,
    pub revision: &'a str,
    /// Path of the lock file as given, and the SHA-256 of its bytes.
    pub lock_path: &'a str,
    pub lock_sha256: &'a str,
    pub lock: &'a LockFile,
    /// The options that shape the images.
    pub repository: &'a str,
    pub version: &'a str,
    pub user: &'a str,
    pub cargo_package: &'a str,
    pub max_compressed_bytes: u64,
    pub source_date_epoch: u64,
    /// The shipped binary: its path in the image and SHA-256.
    pub binary_path: &'a str,
    pub binary_sha256: &'a str,
    pub crates: &'a [CrateDependency],
    /// The compiler that built the binary, from its ELF `.comment` (`rustc version 1.95.0 (...)`).
    pub rustc: Option<String>,
    pub tool_version: &'a str,
}

/// A full SHA-1 or SHA-256 git commit id.
fn is_commit(rev: &str) -> bool {
    matches!(rev.len(), 40 | 64) && rev.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn sha256(hex: &str) -> Value {
    json!({ "sha256": hex.trim_start_matches("sha256:") })
}

/// The provenance statement, as pretty JSON with sorted keys and a trailing newline.
pub fn render(i: &Inputs<'_>) -> Vec<u8> {
    let time = crate::assemble::rfc3339(i.source_date_epoch);
    let subject: Vec<Value> = i
        .subjects
        .iter()
        .map(|s| json!({"name": s.name, "digest": sha256(&s.manifest)}))
        .collect();

    let mut source = json!({"uri": format!("git+{}", i.source_url)});
    if is_commit(i.revision) {
        source["digest"] = json!({"gitCommit": i.revision});
    } else {
        // `--revision` is free text when the build is not run from a git checkout.
        source["annotations"] = json!({"revision": i.revision});
    }
    let mut deps = vec![source.clone()];
    deps.push(json!({
        "name": "pilot-discovery",
        "uri": format!("file://{}", i.binary_path),
        "digest": sha256(i.binary_sha256),
    }));
    if let Some(rustc) = &i.rustc {
        let version = rustc
            .strip_prefix("rustc version ")
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or("unknown");
        deps.push(json!({
            "name": "rustc",
            "uri": format!("pkg:generic/rustc@{version}"),
            "annotations": {"version": rustc},
        }));
    }
    // Every package of every variant, once: the dev variant repeats the runtime's.
    let mut debs = std::collections::BTreeMap::new();
    for (variant, v) in &i.lock.variants {
        for p in &v.packages {
            let e = debs
                .entry((p.name.clone(), p.version.clone()))
                .or_insert_with(|| (p, Vec::<String>::new()));
            e.1.push(variant.clone());
        }
    }
    for ((name, version), (p, variants)) in debs {
        deps.push(json!({
            "name": name,
            "uri": format!("{}/{}", p.mirror.trim_end_matches('/'), p.filename),
            "digest": sha256(&p.sha256.to_string()),
            "annotations": {"version": version, "arch": p.arch, "variants": variants},
        }));
    }
    for c in i.crates {
        let mut d = json!({
            "name": c.name,
            "uri": format!("pkg:cargo/{}@{}", c.name, c.version),
        });
        match &c.checksum {
            Some(sum) => d["digest"] = sha256(sum),
            // Path and git crates have no checksum in Cargo.lock: the source commit covers them.
            None => d["annotations"] = json!({"checksum": "none (not a registry crate)"}),
        }
        deps.push(d);
    }

    let statement = json!({
        "_type": STATEMENT_TYPE,
        "subject": subject,
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "source": source,
                    "packagesLock": {"path": i.lock_path, "digest": sha256(i.lock_sha256)},
                    "repository": i.repository,
                    "version": i.version,
                    "user": i.user,
                    "cargoPackage": i.cargo_package,
                    "sizeBudgetBytes": i.max_compressed_bytes,
                    "sourceDateEpoch": i.source_date_epoch,
                },
                "internalParameters": {
                    "distro": i.lock.distro,
                    "arch": i.lock.arch,
                },
                "resolvedDependencies": deps,
            },
            "runDetails": {
                "builder": {
                    "id": "https://github.com/hardened-mesh/istio-pilot/imagebuilder",
                    "version": {"imagebuilder": i.tool_version},
                },
                "metadata": {
                    "startedOn": time,
                    "finishedOn": time,
                },
            },
        },
    });
    let mut out = serde_json::to_vec_pretty(&sort(statement)).unwrap_or_default();
    out.push(b'\n');
    out
}

/// Keys sorted at every level, whatever map serde_json was built with.
fn sort(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let sorted: std::collections::BTreeMap<String, Value> =
                m.into_iter().map(|(k, v)| (k, sort(v))).collect();
            Value::Object(sorted.into_iter().collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(sort).collect()),
        v => v,
    }
}

/// The `rustc version ...` line of an ELF binary's `.comment` section, if it has one.
pub fn rustc_of(binary: &[u8]) -> Option<String> {
    use object::{Object, ObjectSection};
    let file = object::File::parse(binary).ok()?;
    let data = file.section_by_name(".comment")?.data().ok()?;
    data.split(|b| *b == 0)
        .filter_map(|s| std::str::from_utf8(s).ok())
        .find(|s| s.starts_with("rustc version "))
        .map(str::to_string)
}

#[cfg(test)]
mod tests;
