//! Debian packages against the Debian security tracker's JSON export
//! (<https://security-tracker.debian.org/tracker/data/json>): source package → CVE →
//! `releases` → codename → `status`, `fixed_version`, `urgency`.
//!
//! The tracker speaks of source packages and of source versions, so a package is matched by
//! the source package and source version the SBOM records, in the image's release:
//! - `resolved` with a `fixed_version`: affected while the installed version sorts before
//!   it (dpkg order); a `fixed_version` of `0` means the release was never affected;
//! - `open` and `undetermined`: affected, with no fixed version yet;
//! - a release the CVE does not list: no data, not reported.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Deserialize;

use super::inventory::Deb;
use super::{Error, Finding, Severity, Source};
use crate::debian::version;

#[derive(Debug, Deserialize)]
struct Entry {
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    releases: BTreeMap<String, Release>,
}

#[derive(Debug, Deserialize)]
struct Release {
    status: String,
    #[serde(default)]
    fixed_version: Option<String>,
    #[serde(default)]
    urgency: Option<String>,
}

/// A loaded tracker export.
pub struct Tracker {
    packages: HashMap<String, BTreeMap<String, Entry>>,
}

impl Tracker {
    /// Reads an export from a file.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let file = std::fs::File::open(path).map_err(Error::io(path))?;
        serde_json::from_reader(std::io::BufReader::new(file))
            .map(|packages| Tracker { packages })
            .map_err(|source| Error::Tracker {
                path: path.display().to_string(),
                source,
            })
    }

    /// Reads an export from memory.
    pub fn parse(text: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(text).map(|packages| Tracker { packages })
    }

    /// Number of source packages in the export.
    pub fn len(&self) -> usize {
        self.packages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.packages.is_empty()
    }

    /// Findings for `debs` in release `codename`.
    pub fn scan(&self, debs: &[Deb], codename: &str) -> Vec<Finding> {
        let mut out = Vec::new();
        for d in debs {
            let Some(cves) = self.packages.get(&d.component.package) else {
                continue;
            };
            for (id, entry) in cves {
                let Some(r) = entry.releases.get(codename) else {
                    continue;
                };
                let fixed = match r.status.as_str() {
                    "resolved" => match r.fixed_version.as_deref() {
                        Some("0") | None => continue,
                        Some(f) if version::compare(&d.source_version, f).is_ge() => continue,
                        Some(f) => Some(f.to_string()),
                    },
                    "open" | "undetermined" => None,
                    _ => continue,
                };
                out.push(Finding {
                    id: id.clone(),
                    aliases: Vec::new(),
                    source: Source::DebianTracker,
                    component: d.component.clone(),
                    installed: d.source_version.clone(),
                    fixed,
                    severity: r
                        .urgency
                        .as_deref()
                        .map(Severity::from_urgency)
                        .unwrap_or(Severity::Unknown),
                    cvss: None,
                    title: entry.description.clone(),
                    url: Source::DebianTracker.url(id),
                });
            }
        }
        out
    }
}
