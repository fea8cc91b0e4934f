//! Rust crates against a RustSec advisory database (a checkout of `rustsec/advisory-db`:
//! `crates/<name>/RUSTSEC-*.md`), read with the `rustsec` crate.
//!
//! As `cargo audit` does by default: withdrawn advisories are skipped, and so are
//! informational ones (unmaintained, unsound, notices), which describe no vulnerability.
//! Advisories limited to other operating systems or architectures than the image's
//! (Linux on x86-64) do not apply.

use std::path::Path;

use rustsec::advisory::Advisory;
use rustsec::database::Query;
use rustsec::{Collection, Version, VersionReq};

use super::inventory::Crate;
use super::{Cvss, Error, Finding, Severity, Source};

const TARGET_OS: &str = "linux";
const TARGET_ARCH: &str = "x86_64";

/// A loaded RustSec advisory database.
pub struct RustSec {
    db: rustsec::Database,
}

impl RustSec {
    /// Opens the database at `dir` (the directory holding `crates/`).
    pub fn open(dir: &Path) -> Result<Self, Error> {
        let db = rustsec::Database::open(dir).map_err(|source| Error::RustSec {
            path: dir.display().to_string(),
            source,
        })?;
        Ok(RustSec { db })
    }

    /// Number of advisories loaded (all collections, withdrawn ones included).
    pub fn len(&self) -> usize {
        self.db.iter().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Findings for `crates`. A crate whose version is not semver is skipped with a warning.
    pub fn scan(&self, crates: &[Crate]) -> Vec<Finding> {
        let mut out = Vec::new();
        for c in crates {
            let (Ok(name), Ok(version)) = (
                c.component.package.parse::<rustsec::package::Name>(),
                c.version.parse::<Version>(),
            ) else {
                tracing::warn!(purl = %c.component.purl, "not a crate name and semver version; skipped");
                continue;
            };
            let query = Query::new()
                .collection(Collection::Crates)
                .withdrawn(false)
                .informational(false)
                .package_name(name)
                .package_version(version.clone())
                .target_os(vec![TARGET_OS.into()])
                .target_arch(vec![TARGET_ARCH.into()]);
            for a in self.db.query(&query) {
                out.push(finding(a, c, &version));
            }
        }
        out
    }
}

fn finding(a: &Advisory, c: &Crate, installed: &Version) -> Finding {
    let m = &a.metadata;
    let id = m.id.as_str().to_string();
    Finding {
        url: super::Source::RustSec.url(&id),
        id,
        aliases: m.aliases.iter().map(|a| a.as_str().to_string()).collect(),
        source: Source::RustSec,
        component: c.component.clone(),
        installed: c.version.clone(),
        fixed: fixed_version(a.versions.patched(), installed),
        severity: m
            .cvss
            .as_ref()
            .map(Severity::from_cvss)
            .unwrap_or(Severity::Unknown),
        cvss: m.cvss.as_ref().map(Cvss::from),
        title: Some(m.title.clone()),
    }
}

/// The lowest patched version above `installed`, from the lower bounds of the `patched`
/// requirements (`>= 1.2.3`, `^0.4.1`, `~1.1`); `None` when nothing is patched.
pub fn fixed_version(patched: &[VersionReq], installed: &Version) -> Option<String> {
    use rustsec::semver::Op;
    let lower_bounds = patched
        .iter()
        .flat_map(|r| r.comparators.iter())
        .filter(|c| {
            matches!(
                c.op,
                Op::GreaterEq | Op::Caret | Op::Tilde | Op::Exact | Op::Wildcard
            )
        })
        .map(|c| Version {
            major: c.major,
            minor: c.minor.unwrap_or(0),
            patch: c.patch.unwrap_or(0),
            pre: c.pre.clone(),
            build: Default::default(),
        });
    lower_bounds
        .filter(|v| v > installed)
        .min()
        .map(|v| v.to_string())
        .or_else(|| {
            // Only exotic bounds (`> 1.2`): name the requirements themselves.
            (!patched.is_empty()).then(|| {
                patched
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" || ")
            })
        })
}
