//! OpenVEX documents (spec v0.2.0, <https://github.com/openvex/spec>): statements about
//! whether a product is affected by a vulnerability, written by `imagebuilder vex` and read
//! by `scan --vex` to suppress findings that do not apply.
//!
//! A statement applies to a finding when its vulnerability (name or aliases) is one of the
//! finding's names, and one of its products is the component itself, or is the scanned
//! image with no subcomponents or with the component among them. Package URLs match when
//! type, namespace and name are equal, the version too if the statement gives one, and each
//! qualifier the statement gives. Of several statements, the latest (by timestamp, then by
//! order of reading) wins, as the spec says.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::scan::inventory::split_purl;
use crate::scan::{Error, Finding};

/// The JSON-LD context of OpenVEX v0.2.0.
pub const CONTEXT: &str = "https://openvex.dev/ns/v0.2.0";

/// An OpenVEX document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
    #[serde(rename = "@context")]
    pub context: String,
    #[serde(rename = "@id")]
    pub id: String,
    pub author: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    pub timestamp: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<String>,
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tooling: Option<String>,
    #[serde(default)]
    pub statements: Vec<Statement>,
}

/// The status of a product with respect to a vulnerability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[clap(rename_all = "snake_case")]
pub enum Status {
    NotAffected,
    Affected,
    Fixed,
    UnderInvestigation,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::NotAffected => "not_affected",
            Status::Affected => "affected",
            Status::Fixed => "fixed",
            Status::UnderInvestigation => "under_investigation",
        }
    }

    /// Whether a finding with this status is left out of a scan's findings.
    pub fn suppresses(self) -> bool {
        matches!(self, Status::NotAffected | Status::Fixed)
    }

    /// The CycloneDX analysis state.
    pub fn cyclonedx_state(self) -> &'static str {
        match self {
            Status::NotAffected => "not_affected",
            Status::Affected => "exploitable",
            Status::Fixed => "resolved",
            Status::UnderInvestigation => "in_triage",
        }
    }
}

/// Why a product is `not_affected`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[clap(rename_all = "snake_case")]
pub enum Justification {
    ComponentNotPresent,
    VulnerableCodeNotPresent,
    VulnerableCodeNotInExecutePath,
    VulnerableCodeCannotBeControlledByAdversary,
    InlineMitigationsAlreadyExist,
}

impl Justification {
    pub fn as_str(self) -> &'static str {
        match self {
            Justification::ComponentNotPresent => "component_not_present",
            Justification::VulnerableCodeNotPresent => "vulnerable_code_not_present",
            Justification::VulnerableCodeNotInExecutePath => "vulnerable_code_not_in_execute_path",
            Justification::VulnerableCodeCannotBeControlledByAdversary => {
                "vulnerable_code_cannot_be_controlled_by_adversary"
            }
            Justification::InlineMitigationsAlreadyExist => "inline_mitigations_already_exist",
        }
    }

    /// The closest CycloneDX analysis justification.
    pub fn cyclonedx(self) -> &'static str {
        match self {
            Justification::ComponentNotPresent | Justification::VulnerableCodeNotPresent => {
                "code_not_present"
            }
            Justification::VulnerableCodeNotInExecutePath => "code_not_reachable",
            Justification::VulnerableCodeCannotBeControlledByAdversary
            | Justification::InlineMitigationsAlreadyExist => "protected_by_mitigating_control",
        }
    }
}

/// The vulnerability a statement is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vulnerability {
    #[serde(rename = "@id", default, skip_serializing_if = "Option::is_none")]
    pub iri: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

/// A product (or subcomponent), named by package URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    #[serde(rename = "@id")]
    pub id: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subcomponents: Vec<Subcomponent>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subcomponent {
    #[serde(rename = "@id")]
    pub id: String,
}

/// One statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    pub vulnerability: Vulnerability,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    pub products: Vec<Product>,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_notes: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub justification: Option<Justification>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impact_statement: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_statement: Option<String>,
}

impl Statement {
    /// The spec's requirements on a statement: `not_affected` needs a justification or an
    /// impact statement, `affected` an action statement, and there is at least one product.
    pub fn check(&self) -> Result<(), String> {
        let v = &self.vulnerability.name;
        if v.is_empty() {
            return Err("a statement names no vulnerability".into());
        }
        if self.products.is_empty() {
            return Err(format!("the statement about {v} names no product"));
        }
        match self.status {
            Status::NotAffected if self.justification.is_none() && self.impact_statement.is_none() => {
                Err(format!("the not_affected statement about {v} has neither a justification nor an impact_statement"))
            }
            Status::Affected if self.action_statement.is_none() => Err(format!(
                "the affected statement about {v} has no action_statement"
            )),
            _ => Ok(()),
        }
    }
}

impl Document {
    /// A new document holding `statements`; its `@id` is derived from its content.
    pub fn new(author: &str, timestamp: &str, statements: Vec<Statement>) -> Self {
        let mut d = Document {
            context: CONTEXT.into(),
            id: String::new(),
            author: author.into(),
            role: None,
            timestamp: timestamp.into(),
            last_updated: None,
            version: 1,
            tooling: Some(format!("imagebuilder {}", env!("CARGO_PKG_VERSION"))),
            statements,
        };
        d.id = d.content_id();
        d
    }

    /// Adds a statement as a new version of the document.
    pub fn push(&mut self, statement: Statement, timestamp: &str) {
        self.statements.push(statement);
        self.version += 1;
        self.last_updated = Some(timestamp.to_string());
    }

    /// `urn:uuid:` of the hash of author and statements: equal content, equal `@id`.
    fn content_id(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.author.as_bytes());
        h.update(self.timestamp.as_bytes());
        for s in &self.statements {
            h.update(serde_json::to_vec(s).unwrap_or_default());
        }
        let x = hex::encode(&h.finalize()[..16]);
        format!(
            "urn:uuid:{}-{}-5{}-8{}-{}",
            &x[..8],
            &x[8..12],
            &x[13..16],
            &x[17..20],
            &x[20..32]
        )
    }

    /// Reads and checks a document.
    pub fn read(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read(path).map_err(Error::io(path))?;
        Self::parse(&text).map_err(|reason| Error::Vex {
            path: path.display().to_string(),
            reason,
        })
    }

    /// Parses and checks a document.
    pub fn parse(text: &[u8]) -> Result<Self, String> {
        let d: Document = serde_json::from_slice(text).map_err(|e| e.to_string())?;
        if !d.context.starts_with("https://openvex.dev/ns") {
            return Err(format!("@context {:?} is not OpenVEX", d.context));
        }
        for s in &d.statements {
            s.check()?;
        }
        Ok(d)
    }

    /// Pretty JSON with a trailing newline.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }
}

/// Whether `candidate` is what the package URL `pattern` names.
pub fn purl_matches(pattern: &str, candidate: &str) -> bool {
    let (p_name, p_version, p_qualifiers) = split_purl(pattern);
    let (c_name, c_version, c_qualifiers) = split_purl(candidate);
    p_name == c_name
        && (p_version.is_empty() || p_version == c_version)
        && p_qualifiers
            .iter()
            .all(|q| c_qualifiers.iter().any(|c| c == q))
}

/// What a VEX statement said about a finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Applied {
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub justification: Option<Justification>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub impact_statement: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action_statement: Option<String>,
    /// The document the statement came from.
    pub document: String,
}

impl Applied {
    /// One line for the table: `not_affected (vulnerable_code_not_in_execute_path)`.
    pub fn summary(&self) -> String {
        let why = self
            .justification
            .map(|j| j.as_str().to_string())
            .or_else(|| self.impact_statement.clone())
            .or_else(|| self.action_statement.clone());
        match why {
            Some(w) => format!("{} ({w})", self.status.as_str()),
            None => self.status.as_str().to_string(),
        }
    }
}

/// Every statement read from `--vex` files, in order.
#[derive(Debug, Default)]
pub struct Statements {
    all: Vec<(String, String, Statement)>,
}

impl Statements {
    /// Reads the documents at `paths`.
    pub fn read(paths: &[std::path::PathBuf]) -> Result<Self, Error> {
        let mut s = Statements::default();
        for p in paths {
            s.add(&p.display().to_string(), Document::read(p)?);
        }
        Ok(s)
    }

    /// Adds a document's statements, under the name `source`.
    pub fn add(&mut self, source: &str, doc: Document) {
        for st in doc.statements {
            let ts = st.timestamp.clone().unwrap_or_else(|| {
                doc.last_updated
                    .clone()
                    .unwrap_or_else(|| doc.timestamp.clone())
            });
            self.all.push((ts, source.to_string(), st));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// The statement that applies to `f` in the image named `image_purl`, if any.
    pub fn apply(&self, f: &Finding, image_purl: &str) -> Option<Applied> {
        let component = &f.component.purl;
        let names_it = |v: &Vulnerability| {
            f.is_known_as(&v.name) || v.aliases.iter().any(|a| f.is_known_as(a))
        };
        let covers = |p: &Product| {
            purl_matches(&p.id, component)
                || (purl_matches(&p.id, image_purl)
                    && (p.subcomponents.is_empty()
                        || p.subcomponents
                            .iter()
                            .any(|s| purl_matches(&s.id, component))))
        };
        self.all
            .iter()
            .enumerate()
            .filter(|(_, (_, _, s))| names_it(&s.vulnerability) && s.products.iter().any(covers))
            // RFC 3339 timestamps in UTC sort as strings; later reading wins a tie.
            .max_by(|(i, (a, ..)), (j, (b, ..))| a.cmp(b).then(i.cmp(j)))
            .map(|(_, (_, source, s))| Applied {
                status: s.status,
                justification: s.justification,
                impact_statement: s.impact_statement.clone(),
                action_statement: s.action_statement.clone(),
                document: source.clone(),
            })
    }
}

#[cfg(test)]
mod tests;
