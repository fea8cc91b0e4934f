//! A scan's result and its four renderings: a table for people, JSON, CycloneDX (the SBOM
//! with a `vulnerabilities` section) and SARIF 2.1.0 for code-scanning dashboards.

use serde::Serialize;
use serde_json::json;

use super::{Error, Finding, Severity};
use crate::vex::Applied;

/// Output formats of `scan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Cyclonedx,
    Sarif,
}

/// One finding, with what a VEX statement said about it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scanned {
    #[serde(flatten)]
    pub finding: Finding,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vex: Option<Applied>,
}

impl Scanned {
    /// Whether a VEX statement (`not_affected`, `fixed`) takes it out of the findings.
    pub fn suppressed(&self) -> bool {
        self.vex.as_ref().is_some_and(|v| v.status.suppresses())
    }
}

/// How many components of each kind were scanned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub crates: usize,
    pub debs: usize,
    pub other: usize,
}

/// What a scan found in one SBOM.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The SBOM scanned.
    pub sbom: String,
    /// Package URL of the image (`pkg:oci/...`), what VEX statements name as product.
    pub image: String,
    pub codename: String,
    pub components: Counts,
    pub databases: Vec<String>,
    /// Every finding, suppressed ones included, worst first.
    pub results: Vec<Scanned>,
}

const TOOL: &str = env!("CARGO_PKG_NAME");
const TOOL_VERSION: &str = env!("CARGO_PKG_VERSION");
const TOOL_URI: &str = env!("CARGO_PKG_REPOSITORY");

impl Report {
    /// Findings that no VEX statement suppresses.
    pub fn findings(&self) -> impl Iterator<Item = &Scanned> {
        self.results.iter().filter(|s| !s.suppressed())
    }

    /// Findings a VEX statement suppresses.
    pub fn suppressed(&self) -> impl Iterator<Item = &Scanned> {
        self.results.iter().filter(|s| s.suppressed())
    }

    /// Whether an unsuppressed finding is at least `threshold`.
    pub fn fails(&self, threshold: Severity) -> bool {
        self.findings().any(|s| s.finding.severity >= threshold)
    }

    /// Renders in `format`; `sbom` is the scanned SBOM's bytes (for CycloneDX).
    pub fn render(&self, format: Format, sbom: &[u8]) -> Result<Vec<u8>, Error> {
        match format {
            Format::Table => Ok(self.table().into_bytes()),
            Format::Json => {
                let mut v =
                    serde_json::to_vec_pretty(self).map_err(|e| Error::Report(e.to_string()))?;
                v.push(b'\n');
                Ok(v)
            }
            Format::Sarif => {
                let mut v = serde_json::to_vec_pretty(&self.sarif())
                    .map_err(|e| Error::Report(e.to_string()))?;
                v.push(b'\n');
                Ok(v)
            }
            Format::Cyclonedx => sbom::vulnerabilities::with_vulnerabilities(
                sbom,
                &self.results.iter().map(cyclonedx).collect::<Vec<_>>(),
            )
            .map_err(|e| Error::Report(e.to_string())),
        }
    }

    /// A table of the findings, then a summary and the suppressed findings.
    pub fn table(&self) -> String {
        let header = ["SEVERITY", "ID", "PACKAGE", "INSTALLED", "FIXED", "VEX"];
        let rows: Vec<[String; 6]> = self
            .findings()
            .map(|s| {
                let f = &s.finding;
                let package = if f.component.package == f.component.name {
                    f.component.name.clone()
                } else {
                    format!("{} ({})", f.component.name, f.component.package)
                };
                [
                    f.severity.to_string(),
                    f.id.clone(),
                    package,
                    f.installed.clone(),
                    f.fixed.clone().unwrap_or_else(|| "-".into()),
                    s.vex.as_ref().map(Applied::summary).unwrap_or_default(),
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for r in &rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.len());
            }
        }
        let line = |cells: &[String]| {
            let mut l = cells
                .iter()
                .zip(widths)
                .map(|(c, w)| format!("{c:w$}"))
                .collect::<Vec<_>>()
                .join("  ");
            l.truncate(l.trim_end().len());
            l.push('\n');
            l
        };
        let release = if self.codename.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.codename)
        };
        let mut out = format!(
            "{}: {} crates, {} Debian packages{release}\n",
            self.image, self.components.crates, self.components.debs
        );
        let n = rows.len();
        if n > 0 {
            out.push('\n');
            out.push_str(&line(&header.map(String::from)));
            for r in &rows {
                out.push_str(&line(r));
            }
        }
        let mut by = std::collections::BTreeMap::new();
        for s in self.findings() {
            *by.entry(std::cmp::Reverse(s.finding.severity)).or_insert(0) += 1;
        }
        let counts: Vec<String> = by.iter().map(|(s, n)| format!("{n} {}", s.0)).collect();
        out.push_str(&format!(
            "\n{n} finding{}{}\n",
            if n == 1 { "" } else { "s" },
            if counts.is_empty() {
                String::new()
            } else {
                format!(" ({})", counts.join(", "))
            }
        ));
        let suppressed: Vec<&Scanned> = self.suppressed().collect();
        if !suppressed.is_empty() {
            out.push_str(&format!("{} suppressed by VEX:\n", suppressed.len()));
            for s in suppressed {
                if let Some(v) = &s.vex {
                    out.push_str(&format!(
                        "  {} {}: {} ({})\n",
                        s.finding.id,
                        s.finding.component.purl,
                        v.summary(),
                        v.document
                    ));
                }
            }
        }
        out
    }

    /// SARIF 2.1.0: one rule per advisory, one result per finding; suppressed findings carry
    /// an accepted external suppression with the statement's justification.
    pub fn sarif(&self) -> serde_json::Value {
        let mut rules: Vec<&Finding> = Vec::new();
        for s in &self.results {
            if !rules.iter().any(|r| r.id == s.finding.id) {
                rules.push(&s.finding);
            }
        }
        let rule = |f: &Finding| {
            json!({
                "id": f.id,
                "shortDescription": {"text": f.title.clone().unwrap_or_else(|| f.id.clone())},
                "helpUri": f.url,
                "help": {"text": format!("{} ({})", f.id, f.url)},
                "properties": {
                    "security-severity": format!("{:.1}", security_severity(f)),
                    "tags": ["security", "vulnerability"],
                },
            })
        };
        let results: Vec<serde_json::Value> = self
            .results
            .iter()
            .map(|s| {
                let f = &s.finding;
                let index = rules.iter().position(|r| r.id == f.id).unwrap_or(0);
                let level = match f.severity {
                    Severity::Critical | Severity::High => "error",
                    Severity::Medium | Severity::Low | Severity::Unknown => "warning",
                    Severity::Negligible => "note",
                };
                let fixed = f
                    .fixed
                    .as_ref()
                    .map(|v| format!("; fixed in {v}"))
                    .unwrap_or_else(|| "; no fixed version".into());
                let mut r = json!({
                    "ruleId": f.id,
                    "ruleIndex": index,
                    "level": level,
                    "message": {"text": format!(
                        "{} {} in {} ({} severity){fixed}",
                        f.component.name, f.installed, self.image, f.severity
                    )},
                    "locations": [{
                        "physicalLocation": {"artifactLocation": {"uri": self.sbom}},
                        "logicalLocations": [{"fullyQualifiedName": f.component.purl, "kind": "package"}],
                    }],
                    "partialFingerprints": {"component/advisory": format!("{}/{}", f.component.purl, f.id)},
                });
                if let (true, Some(v)) = (s.suppressed(), &s.vex) {
                    r["suppressions"] = json!([{
                        "kind": "external",
                        "status": "accepted",
                        "justification": format!("VEX {} in {}", v.summary(), v.document),
                    }]);
                }
                r
            })
            .collect();
        json!({
            "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
            "version": "2.1.0",
            "runs": [{
                "tool": {"driver": {
                    "name": TOOL,
                    "version": TOOL_VERSION,
                    "informationUri": TOOL_URI,
                    "rules": rules.iter().map(|f| rule(f)).collect::<Vec<_>>(),
                }},
                "results": results,
            }],
        })
    }
}

/// The score code-scanning dashboards rank by: CVSS, else the middle of the band.
fn security_severity(f: &Finding) -> f64 {
    match (&f.cvss, f.severity) {
        (Some(c), _) => c.score,
        (None, Severity::Critical) => 9.5,
        (None, Severity::High) => 8.0,
        (None, Severity::Medium) => 5.5,
        (None, Severity::Low) => 2.0,
        (None, Severity::Unknown | Severity::Negligible) => 0.0,
    }
}

fn cyclonedx(s: &Scanned) -> sbom::vulnerabilities::Vulnerability {
    let f = &s.finding;
    sbom::vulnerabilities::Vulnerability {
        id: f.id.clone(),
        source: (f.source.name().to_string(), f.url.clone()),
        aliases: f.aliases.clone(),
        affects: f.component.bom_ref.clone(),
        installed: f.installed.clone(),
        fixed: f.fixed.clone(),
        severity: match f.severity {
            Severity::Negligible => "info".into(),
            s => s.to_string(),
        },
        cvss: f.cvss.as_ref().map(|c| (c.vector.clone(), c.score)),
        description: f.title.clone(),
        analysis: s.vex.as_ref().map(|v| sbom::vulnerabilities::Analysis {
            state: v.status.cyclonedx_state().to_string(),
            justification: v.justification.map(|j| j.cyclonedx().to_string()),
            detail: v
                .impact_statement
                .clone()
                .or_else(|| v.action_statement.clone()),
        }),
    }
}
