//! The Rust crates compiled into a binary, from `cargo metadata` and `Cargo.lock`.
//!
//! Walks the resolved graph from the binary's package along normal (not dev, not build)
//! edges for the target platform. Proc-macro crates run in the compiler and are not linked
//! into the binary, so the walk stops at them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;

use cargo_metadata::{DependencyKind, MetadataCommand, PackageId};

use crate::model::RustCrate;
use crate::Error;

/// The crates linked into `package`'s binaries for `target`, and the keys of its direct deps.
pub fn crates_of(
    manifest_path: &Path,
    package: &str,
    target: &str,
) -> Result<(Vec<RustCrate>, Vec<String>), Error> {
    let meta = MetadataCommand::new()
        .manifest_path(manifest_path)
        .other_options(vec!["--filter-platform".to_string(), target.to_string()])
        .exec()?;
    let lock_path = meta.workspace_root.join("Cargo.lock");
    let lock = std::fs::read_to_string(&lock_path).map_err(|source| Error::Io {
        path: lock_path.to_string(),
        source,
    })?;
    let checksums = lock_checksums(&lock);

    let packages: BTreeMap<&PackageId, &cargo_metadata::Package> =
        meta.packages.iter().map(|p| (&p.id, p)).collect();
    let root = meta
        .packages
        .iter()
        .find(|p| p.name.as_str() == package && meta.workspace_members.contains(&p.id))
        .ok_or_else(|| Error::MissingPackage(package.to_string()))?;
    let resolve = meta
        .resolve
        .as_ref()
        .ok_or_else(|| Error::MissingPackage(package.to_string()))?;
    let nodes: BTreeMap<&PackageId, &cargo_metadata::Node> =
        resolve.nodes.iter().map(|n| (&n.id, n)).collect();

    let key = |id: &PackageId| {
        packages
            .get(id)
            .map(|p| format!("{}@{}", p.name, p.version))
    };
    let is_proc_macro = |id: &PackageId| {
        packages
            .get(id)
            .is_some_and(|p| p.targets.iter().any(|t| t.is_proc_macro()))
    };
    let normal_deps = |id: &PackageId| -> Vec<PackageId> {
        nodes
            .get(id)
            .map(|n| {
                n.deps
                    .iter()
                    .filter(|d| d.dep_kinds.iter().any(|k| k.kind == DependencyKind::Normal))
                    .filter(|d| !is_proc_macro(&d.pkg))
                    .map(|d| d.pkg.clone())
                    .collect()
            })
            .unwrap_or_default()
    };

    let direct: Vec<String> = normal_deps(&root.id).iter().filter_map(key).collect();
    let mut seen = BTreeSet::new();
    let mut queue: VecDeque<PackageId> = normal_deps(&root.id).into();
    let mut out = Vec::new();
    while let Some(id) = queue.pop_front() {
        if !seen.insert(id.clone()) {
            continue;
        }
        let Some(p) = packages.get(&id) else { continue };
        let deps = normal_deps(&id);
        let registry = p
            .source
            .as_ref()
            .is_some_and(|s| s.repr.starts_with("registry+"));
        out.push(RustCrate {
            name: p.name.to_string(),
            version: p.version.to_string(),
            license: p.license.clone(),
            checksum: checksums
                .get(&(p.name.to_string(), p.version.to_string()))
                .cloned(),
            registry,
            depends: deps.iter().filter_map(key).collect(),
        });
        queue.extend(deps);
    }
    out.sort_by_key(|c| c.key());
    out.dedup_by_key(|c| c.key());
    Ok((out, direct))
}

/// `(name, version) -> checksum` from a `Cargo.lock` (version 3 or 4).
pub fn lock_checksums(lock: &str) -> BTreeMap<(String, String), String> {
    let mut out = BTreeMap::new();
    let (mut name, mut version) = (None::<String>, None::<String>);
    let value = |line: &str| {
        line.split_once('=')
            .map(|(_, v)| v.trim().trim_matches('"').to_string())
    };
    for line in lock.lines() {
        let line = line.trim();
        if line == "[[package]]" {
            name = None;
            version = None;
        } else if line.starts_with("name =") {
            name = value(line);
        } else if line.starts_with("version =") {
            version = value(line);
        } else if line.starts_with("checksum =") {
            if let (Some(n), Some(v), Some(c)) = (&name, &version, value(line)) {
                out.insert((n.clone(), v.clone()), c);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_lock_checksums() {
        let lock = r#"
version = 4

[[package]]
name = "anyhow"
version = "1.0.0"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "abc"

[[package]]
name = "pilot"
version = "0.1.0"
"#;
        let sums = lock_checksums(lock);
        assert_eq!(sums.len(), 1);
        assert_eq!(sums[&("anyhow".into(), "1.0.0".into())], "abc");
    }

    #[test]
    fn walks_this_workspace() {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let (crates, direct) =
            crates_of(&manifest, "sbom", "x86_64-unknown-linux-gnu").expect("metadata");
        assert!(direct.iter().any(|k| k.starts_with("cyclonedx-bom@")));
        assert!(crates
            .iter()
            .any(|c| c.name == "serde_json" && c.checksum.is_some()));
        // Proc-macro crates are not linked into the binary.
        assert!(!crates.iter().any(|c| c.name == "serde_derive"));
    }
}
