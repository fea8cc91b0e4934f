//! Debian packages against OSV records (<https://ossf.github.io/osv-schema/>): Debian's
//! `DSA-*`, `DLA-*` and `DEBIAN-CVE-*` records, in the ecosystem `Debian:<release>`.
//!
//! A record applies to a package when one of its `affected` entries names the package's
//! source package in the image's release (or in `Debian`, any release) and the source
//! version is in one of its `ECOSYSTEM` ranges (events evaluated in dpkg order, as the OSV
//! schema describes) or in its `versions` list. Withdrawn records are skipped.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use super::inventory::Deb;
use super::{Cvss, Error, Finding, Severity, Source};
use crate::debian::version;

/// One OSV record (the fields a scan reads).
#[derive(Debug, Clone, Deserialize)]
pub struct Record {
    pub id: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub upstream: Vec<String>,
    #[serde(default)]
    pub summary: Option<String>,
    #[serde(default)]
    pub withdrawn: Option<String>,
    #[serde(default)]
    pub affected: Vec<Affected>,
    #[serde(default)]
    pub severity: Vec<SeverityEntry>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Affected {
    pub package: Package,
    #[serde(default)]
    pub ranges: Vec<Range>,
    #[serde(default)]
    pub versions: Vec<String>,
    #[serde(default)]
    pub ecosystem_specific: Option<serde_json::Value>,
    #[serde(default)]
    pub database_specific: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Package {
    pub ecosystem: String,
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Range {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub events: Vec<Event>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Event {
    pub introduced: Option<String>,
    pub fixed: Option<String>,
    pub last_affected: Option<String>,
    pub limit: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SeverityEntry {
    #[serde(rename = "type")]
    pub kind: String,
    pub score: String,
}

impl Range {
    /// Whether `v` is affected, by the OSV schema's evaluation of sorted events.
    pub fn affects(&self, v: &str) -> bool {
        let key = |e: &Event| -> (String, u8) {
            match (&e.introduced, &e.fixed, &e.last_affected, &e.limit) {
                (Some(i), ..) => (i.clone(), 0),
                (_, Some(f), ..) => (f.clone(), 1),
                (_, _, Some(l), _) => (l.clone(), 2),
                (_, _, _, Some(l)) => (l.clone(), 3),
                _ => (String::new(), 4),
            }
        };
        let mut events: Vec<&Event> = self.events.iter().collect();
        events.sort_by(|a, b| {
            let (ka, kb) = (key(a), key(b));
            let order = |s: &str| if s == "0" { None } else { Some(s.to_string()) };
            match (order(&ka.0), order(&kb.0)) {
                (None, None) => ka.1.cmp(&kb.1),
                (None, Some(_)) => std::cmp::Ordering::Less,
                (Some(_), None) => std::cmp::Ordering::Greater,
                (Some(x), Some(y)) => version::compare(&x, &y).then(ka.1.cmp(&kb.1)),
            }
        });
        let mut affected = false;
        for e in events {
            if let Some(i) = &e.introduced {
                if i == "0" || version::compare(v, i).is_ge() {
                    affected = true;
                }
            } else if let Some(f) = &e.fixed {
                if version::compare(v, f).is_ge() {
                    affected = false;
                }
            } else if let Some(l) = &e.last_affected {
                if version::compare(v, l).is_gt() {
                    affected = false;
                }
            } else if let Some(l) = &e.limit {
                if version::compare(v, l).is_ge() {
                    affected = false;
                }
            }
        }
        affected
    }

    /// The lowest `fixed` event above `v`.
    fn fixed_after(&self, v: &str) -> Option<&str> {
        self.events
            .iter()
            .filter_map(|e| e.fixed.as_deref())
            .filter(|f| version::compare(f, v).is_gt())
            .min_by(|a, b| version::compare(a, b))
    }
}

/// OSV records for Debian, indexed by source package.
#[derive(Default)]
pub struct Records {
    by_package: HashMap<String, Vec<(usize, usize)>>,
    records: Vec<Record>,
}

impl Records {
    /// Loads every `*.json` file under `dir`, recursively; returns how many were read.
    pub fn load_dir(&mut self, dir: &Path) -> Result<usize, Error> {
        let mut n = 0;
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let mut entries: Vec<_> = std::fs::read_dir(&d)
                .map_err(Error::io(&d))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            entries.sort();
            for p in entries {
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|e| e == "json") {
                    let text = std::fs::read(&p).map_err(Error::io(&p))?;
                    let r = serde_json::from_slice(&text).map_err(|source| Error::Osv {
                        path: p.display().to_string(),
                        source,
                    })?;
                    self.add(r);
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// Adds one record.
    pub fn add(&mut self, r: Record) {
        let i = self.records.len();
        for (j, a) in r.affected.iter().enumerate() {
            if a.package.ecosystem == "Debian" || a.package.ecosystem.starts_with("Debian:") {
                self.by_package
                    .entry(a.package.name.clone())
                    .or_default()
                    .push((i, j));
            }
        }
        self.records.push(r);
    }

    /// Findings for `debs` in Debian release `version_id` (`12`).
    pub fn scan(&self, debs: &[Deb], version_id: &str) -> Vec<Finding> {
        let ecosystem = format!("Debian:{version_id}");
        let mut out = Vec::new();
        for d in debs {
            let Some(hits) = self.by_package.get(&d.component.package) else {
                continue;
            };
            for &(i, j) in hits {
                let (r, a) = (&self.records[i], &self.records[i].affected[j]);
                let eco = a.package.ecosystem.as_str();
                if r.withdrawn.is_some() || (eco != "Debian" && eco != ecosystem) {
                    continue;
                }
                let v = d.source_version.as_str();
                let ranges: Vec<&Range> = a
                    .ranges
                    .iter()
                    .filter(|r| r.kind == "ECOSYSTEM" && r.affects(v))
                    .collect();
                if ranges.is_empty() && !a.versions.iter().any(|x| x == v) {
                    continue;
                }
                let fixed = ranges
                    .iter()
                    .filter_map(|r| r.fixed_after(v))
                    .min_by(|a, b| version::compare(a, b));
                out.push(finding(r, a, d, fixed));
            }
        }
        out
    }
}

fn urgency(v: &Option<serde_json::Value>) -> Option<&str> {
    v.as_ref()?.get("urgency")?.as_str()
}

fn finding(r: &Record, a: &Affected, d: &Deb, fixed: Option<&str>) -> Finding {
    let cvss: Option<cvss::Cvss> = r
        .severity
        .iter()
        .filter(|s| s.kind.starts_with("CVSS_V"))
        .find_map(|s| s.score.parse().ok());
    let severity = match (
        &cvss,
        urgency(&a.ecosystem_specific).or(urgency(&a.database_specific)),
    ) {
        (Some(c), _) => Severity::from_cvss(c),
        (None, Some(u)) => Severity::from_urgency(u),
        (None, None) => Severity::Unknown,
    };
    let mut aliases = r.aliases.clone();
    aliases.extend(
        r.upstream
            .iter()
            .filter(|u| !r.aliases.contains(u))
            .cloned(),
    );
    Finding {
        id: r.id.clone(),
        aliases,
        source: Source::Osv,
        component: d.component.clone(),
        installed: d.source_version.clone(),
        fixed: fixed.map(str::to_string),
        severity,
        cvss: cvss.as_ref().map(Cvss::from),
        title: r.summary.clone(),
        url: Source::Osv.url(&r.id),
    }
}
