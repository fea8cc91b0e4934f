//! `scan`: matches every component of an image's SBOM against advisory data read offline.
//!
//! [`inventory`] reads the components out of a CycloneDX SBOM; [`crates`] matches Rust
//! crates against a RustSec advisory database; [`debian`] and [`osv`] match Debian packages,
//! by source package and release, against the security tracker's JSON export and OSV
//! records; [`crate::vex`] statements then suppress findings; [`report`] writes the result.

pub mod crates;
pub mod debian;
pub mod inventory;
pub mod osv;
pub mod report;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use tracing::info;

pub use inventory::Inventory;

/// Errors of `scan`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a CycloneDX JSON SBOM: {reason}")]
    Sbom { path: String, reason: String },
    #[error("reading the RustSec advisory database in {path}: {source}")]
    RustSec {
        path: String,
        #[source]
        source: rustsec::Error,
    },
    #[error("{path}: not a Debian security tracker JSON export: {source}")]
    Tracker {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: not an OSV record: {source}")]
    Osv {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{0} holds no advisory data (expected crates/, debian/tracker.json or osv/)")]
    EmptyDatabase(String),
    #[error("{path}: not an OpenVEX document: {reason}")]
    Vex { path: String, reason: String },
    #[error("writing the report: {0}")]
    Report(String),
}

impl Error {
    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| Error::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// How bad a finding is, from CVSS or the Debian tracker's urgency, in increasing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Judged not to need a fix (the tracker's `unimportant`).
    Negligible,
    /// Not rated.
    Unknown,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    /// From a CVSS base score (the v3/v4 rating bands).
    pub fn from_cvss(c: &cvss::Cvss) -> Self {
        match c.severity() {
            cvss::Severity::None => Severity::Negligible,
            cvss::Severity::Low => Severity::Low,
            cvss::Severity::Medium => Severity::Medium,
            cvss::Severity::High => Severity::High,
            cvss::Severity::Critical => Severity::Critical,
        }
    }

    /// From the Debian tracker's urgency (`low`, `medium**`, `unimportant`, ...).
    pub fn from_urgency(urgency: &str) -> Self {
        match urgency.trim_end_matches('*') {
            "unimportant" => Severity::Negligible,
            "low" => Severity::Low,
            "medium" => Severity::Medium,
            "high" => Severity::High,
            _ => Severity::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Negligible => "negligible",
            Severity::Unknown => "unknown",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an advisory came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    RustSec,
    DebianTracker,
    Osv,
}

impl Source {
    /// Name and URL of the source, as CycloneDX and SARIF name it.
    pub fn name(self) -> &'static str {
        match self {
            Source::RustSec => "RustSec",
            Source::DebianTracker => "Debian Security Tracker",
            Source::Osv => "OSV",
        }
    }

    /// The advisory's public page.
    pub fn url(self, id: &str) -> String {
        match self {
            Source::RustSec => format!("https://rustsec.org/advisories/{id}.html"),
            Source::DebianTracker => format!("https://security-tracker.debian.org/tracker/{id}"),
            Source::Osv => format!("https://osv.dev/vulnerability/{id}"),
        }
    }
}

/// The component a finding is about, as the SBOM lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Affected {
    /// The component's `bom-ref` in the SBOM.
    pub bom_ref: String,
    pub purl: String,
    pub name: String,
    /// The name advisories use: the crate, or the Debian source package.
    pub package: String,
}

/// One advisory that applies to one component.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// The advisory's id (`RUSTSEC-2020-0071`, `CVE-2023-4911`, `DSA-5514-1`).
    pub id: String,
    /// Other ids of the same vulnerability (CVE, GHSA, ...).
    pub aliases: Vec<String>,
    pub source: Source,
    pub component: Affected,
    /// The version compared: the crate's, or the Debian source package's.
    pub installed: String,
    /// The first version that is not affected, when there is one.
    pub fixed: Option<String>,
    pub severity: Severity,
    /// CVSS vector and base score, when the advisory has one.
    pub cvss: Option<Cvss>,
    pub title: Option<String>,
    pub url: String,
}

impl Finding {
    /// Whether `name` is this finding's id or one of its aliases.
    pub fn is_known_as(&self, name: &str) -> bool {
        self.id == name || self.aliases.iter().any(|a| a == name)
    }
}

/// A CVSS vector and its base score.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cvss {
    pub vector: String,
    pub score: f64,
}

impl From<&cvss::Cvss> for Cvss {
    fn from(c: &cvss::Cvss) -> Self {
        Cvss {
            vector: c.to_string(),
            score: c.score(),
        }
    }
}

/// Advisory data, loaded once from one or more `--db` directories.
#[derive(Default)]
pub struct Database {
    pub rustsec: Vec<crates::RustSec>,
    pub tracker: Vec<debian::Tracker>,
    pub osv: osv::Records,
    /// What was loaded, for the report.
    pub loaded: Vec<String>,
}

impl Database {
    /// Loads every kind of advisory data found in `dirs`: `crates/` (a RustSec advisory-db
    /// checkout), `debian/tracker.json` (the Debian security tracker's JSON export) and
    /// `osv/` (OSV records, searched recursively).
    pub fn open(dirs: &[PathBuf]) -> Result<Self, Error> {
        let mut db = Database::default();
        for dir in dirs {
            let before = db.loaded.len();
            if dir.join("crates").is_dir() {
                let r = crates::RustSec::open(dir)?;
                db.loaded
                    .push(format!("{}: {} RustSec advisories", dir.display(), r.len()));
                db.rustsec.push(r);
            }
            let tracker = dir.join("debian/tracker.json");
            if tracker.is_file() {
                let t = debian::Tracker::open(&tracker)?;
                db.loaded.push(format!(
                    "{}: Debian tracker, {} source packages",
                    tracker.display(),
                    t.len()
                ));
                db.tracker.push(t);
            }
            let osv = dir.join("osv");
            if osv.is_dir() {
                let n = db.osv.load_dir(&osv)?;
                db.loaded
                    .push(format!("{}: {n} OSV records", osv.display()));
            }
            if db.loaded.len() == before {
                return Err(Error::EmptyDatabase(dir.display().to_string()));
            }
        }
        for l in &db.loaded {
            info!(database = %l, "advisory data loaded");
        }
        Ok(db)
    }

    /// Every finding for the inventory's components, sorted by severity (worst first), then
    /// id and component.
    pub fn scan(&self, inv: &Inventory) -> Vec<Finding> {
        let mut out = Vec::new();
        for r in &self.rustsec {
            out.extend(r.scan(&inv.crates));
        }
        for t in &self.tracker {
            out.extend(t.scan(&inv.debs, &inv.codename));
        }
        // An OSV record about a vulnerability the tracker already reported for the same
        // component (DEBIAN-CVE-X for CVE-X, a DSA naming CVE-X) adds its id as an alias.
        for o in self.osv.scan(&inv.debs, &inv.version_id) {
            let same = out.iter_mut().find(|f| {
                f.component.bom_ref == o.component.bom_ref
                    && (o.is_known_as(&f.id) || f.aliases.iter().any(|a| o.is_known_as(a)))
            });
            match same {
                Some(f) if f.source == Source::DebianTracker => {
                    if !f.aliases.contains(&o.id) {
                        f.aliases.push(o.id);
                    }
                }
                _ => out.push(o),
            }
        }
        sort_findings(&mut out);
        out
    }
}

/// The package URL of an image: `pkg:oci/NAME[@DIGEST]?repository_url=REPO&tag=TAG`.
pub fn image_purl(repository: &str, tag: &str, digest: Option<&str>) -> String {
    let name = repository.rsplit('/').next().unwrap_or(repository);
    let version = digest
        .map(|d| format!("@{}", d.replace(':', "%3A")))
        .unwrap_or_default();
    format!("pkg:oci/{name}{version}?repository_url={repository}&tag={tag}")
}

/// What to scan and how.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// The CycloneDX SBOM.
    pub sbom: PathBuf,
    /// The image's manifest digest, when known (from `refs.json`).
    pub digest: Option<String>,
    /// Advisory data directories.
    pub db: Vec<PathBuf>,
    /// OpenVEX documents.
    pub vex: Vec<PathBuf>,
}

/// Scans an SBOM: loads the inventory, the advisory data and the VEX statements, matches.
pub fn run(o: &ScanOptions) -> Result<(report::Report, Vec<u8>), Error> {
    let text = std::fs::read(&o.sbom).map_err(Error::io(&o.sbom))?;
    let inv = Inventory::parse(&text).map_err(|reason| Error::Sbom {
        path: o.sbom.display().to_string(),
        reason,
    })?;
    let db = Database::open(&o.db)?;
    let statements = crate::vex::Statements::read(&o.vex)?;
    let image = image_purl(&inv.image.0, &inv.image.1, o.digest.as_deref());
    let results: Vec<report::Scanned> = db
        .scan(&inv)
        .into_iter()
        .map(|finding| {
            let vex = statements.apply(&finding, &image);
            report::Scanned { finding, vex }
        })
        .collect();
    let r = report::Report {
        sbom: o.sbom.display().to_string(),
        image,
        codename: inv.codename.clone(),
        components: report::Counts {
            crates: inv.crates.len(),
            debs: inv.debs.len(),
            other: inv.other,
        },
        databases: db.loaded.clone(),
        results,
    };
    info!(
        sbom = %o.sbom.display(),
        findings = r.findings().count(),
        suppressed = r.suppressed().count(),
        "scan complete"
    );
    Ok((r, text))
}

/// Worst first, then by id and component.
pub fn sort_findings(f: &mut [Finding]) {
    f.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| a.id.cmp(&b.id))
            .then_with(|| a.component.bom_ref.cmp(&b.component.bom_ref))
            .then_with(|| a.source.cmp(&b.source))
    });
}

#[cfg(test)]
mod tests;
