//! Validating manifest files and folders (`pilot-discovery validate -f FILE|DIR`).

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{is_validated_group, split_api_version, validate, Report};

/// One line of output: where, which resource, what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileFinding {
    pub file: String,
    /// `Kind/name`, empty when the document could not be read as a resource.
    pub resource: String,
    pub field: String,
    pub message: String,
    pub warning: bool,
}

impl fmt::Display for FileFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file)?;
        if !self.resource.is_empty() {
            write!(f, "{}: ", self.resource)?;
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)?;
        if self.warning {
            f.write_str(" (warning)")?;
        }
        Ok(())
    }
}

/// What a run over files found.
#[derive(Debug, Default)]
pub struct Summary {
    pub findings: Vec<FileFinding>,
    /// Istio resources checked.
    pub resources: usize,
    /// Resources (or documents) rejected.
    pub invalid: usize,
    /// Documents of other API groups, not validated.
    pub skipped: usize,
}

impl Summary {
    pub fn is_valid(&self) -> bool {
        self.invalid == 0
    }
}

/// Validates every `.yaml`, `.yml` and `.json` file under the given files and folders.
pub fn validate_paths(paths: &[PathBuf]) -> Summary {
    let mut summary = Summary::default();
    for path in paths {
        let files = if path.is_dir() {
            match crate::config::file::config_files(path) {
                Ok(found) => found,
                Err(e) => {
                    summary.invalid += 1;
                    summary
                        .findings
                        .push(failure(path, format!("cannot read folder: {e}")));
                    continue;
                }
            }
        } else {
            vec![path.clone()]
        };
        for file in files {
            match std::fs::read_to_string(&file) {
                Ok(text) => validate_text(&file.display().to_string(), &text, &mut summary),
                Err(e) => {
                    summary.invalid += 1;
                    summary
                        .findings
                        .push(failure(&file, format!("cannot read: {e}")));
                }
            }
        }
    }
    summary
}

/// Validates a multi-document YAML or JSON text; `List` documents are flattened.
pub fn validate_text(file: &str, text: &str, summary: &mut Summary) {
    for (i, doc) in crate::config::yaml::documents(text).enumerate() {
        match doc {
            Ok(Value::Null) => {}
            Ok(doc) => validate_document(file, &doc, summary),
            Err(e) => {
                summary.invalid += 1;
                summary.findings.push(FileFinding {
                    file: file.to_owned(),
                    resource: String::new(),
                    field: String::new(),
                    message: format!("document {i}: invalid YAML: {e}"),
                    warning: false,
                });
                // The YAML stream cannot be resumed after a syntax error.
                return;
            }
        }
    }
}

fn validate_document(file: &str, doc: &Value, summary: &mut Summary) {
    if doc.get("kind").and_then(Value::as_str) == Some("List") {
        for item in doc
            .get("items")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[])
        {
            validate_document(file, item, summary);
        }
        return;
    }
    let api_version = doc.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let (group, _) = split_api_version(api_version);
    if !api_version.is_empty() && !group.is_empty() && !is_validated_group(group) {
        summary.skipped += 1;
        return;
    }
    if !api_version.is_empty() && group.is_empty() {
        summary.skipped += 1; // core Kubernetes kinds
        return;
    }
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("");
    let name = doc
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("");
    summary.resources += 1;
    match validate(doc) {
        Ok(outcome) => {
            let resource = outcome.id();
            push_report(file, &resource, &outcome.report, summary);
        }
        Err(e) => {
            summary.invalid += 1;
            summary.findings.push(FileFinding {
                file: file.to_owned(),
                resource: format!("{kind}/{name}"),
                field: String::new(),
                message: e.to_string(),
                warning: false,
            });
        }
    }
}

fn push_report(file: &str, resource: &str, report: &Report, summary: &mut Summary) {
    if !report.is_valid() {
        summary.invalid += 1;
    }
    for (list, warning) in [(&report.errors, false), (&report.warnings, true)] {
        for f in list {
            summary.findings.push(FileFinding {
                file: file.to_owned(),
                resource: resource.to_owned(),
                field: f.field.clone(),
                message: f.message.clone(),
                warning,
            });
        }
    }
}

fn failure(path: &Path, message: String) -> FileFinding {
    FileFinding {
        file: path.display().to_string(),
        resource: String::new(),
        field: String::new(),
        message,
        warning: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_name_file_resource_field_and_reason() {
        let text = "\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: good}
spec: {host: a}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: bad}
spec: {host: a, subsets: [{name: v1}, {name: v1}]}
---
apiVersion: v1
kind: Service
metadata: {name: svc}
---
apiVersion: v1
kind: List
items:
- apiVersion: security.istio.io/v1
  kind: PeerAuthentication
  metadata: {name: pa}
  spec: {mtls: {mode: SOMETIMES}}
";
        let mut s = Summary::default();
        validate_text("mesh.yaml", text, &mut s);
        let lines: Vec<String> = s.findings.iter().map(|f| f.to_string()).collect();
        assert_eq!(
            lines,
            vec![
                "mesh.yaml: DestinationRule/bad: spec.subsets[1].name: duplicate subset names: v1",
                "mesh.yaml: PeerAuthentication/pa: spec.mtls.mode: unsupported value \"SOMETIMES\", must be one of [UNSET, DISABLE, PERMISSIVE, STRICT]",
            ]
        );
        assert_eq!((s.resources, s.invalid, s.skipped), (3, 2, 1));

        let mut s = Summary::default();
        validate_text("broken.yaml", "kind: [", &mut s);
        assert!(!s.is_valid());
        assert!(s.findings[0]
            .to_string()
            .starts_with("broken.yaml: document 0: invalid YAML"));
    }
}
