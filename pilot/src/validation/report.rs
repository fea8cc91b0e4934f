//! What validation found: errors (the resource is rejected) and warnings (accepted, but
//! reported back), each with the field path it is about.

use std::fmt;

/// One finding: the field (`spec.http[0].route`) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub field: String,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// Errors and warnings for one resource.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub errors: Vec<Finding>,
    pub warnings: Vec<Finding>,
}

impl Report {
    /// Records an error on `field`.
    pub fn error(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(Finding {
            field: field.into(),
            message: message.into(),
        });
    }

    /// Records a warning on `field`.
    pub fn warn(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Finding {
            field: field.into(),
            message: message.into(),
        });
    }

    /// True when the resource is accepted (warnings do not reject).
    pub fn is_valid(&self) -> bool {
        self.errors.is_empty()
    }

    /// All errors joined into one line, as the webhook's denial message.
    pub fn error_message(&self) -> String {
        join(&self.errors)
    }

    /// Each warning as one string, for the AdmissionResponse `warnings` list.
    pub fn warning_messages(&self) -> Vec<String> {
        self.warnings.iter().map(|w| w.to_string()).collect()
    }

    /// Errors first, then warnings, as one line (for tests and logs).
    pub fn summary(&self) -> String {
        let mut out = join(&self.errors);
        if !self.warnings.is_empty() {
            if !out.is_empty() {
                out.push_str("; ");
            }
            out.push_str("warnings: ");
            out.push_str(&join(&self.warnings));
        }
        out
    }
}

fn join(findings: &[Finding]) -> String {
    findings
        .iter()
        .map(|f| f.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Field paths: `spec` + `.hosts` + `[0]`.
pub(crate) fn field(base: &str, name: &str) -> String {
    if base.is_empty() {
        name.to_owned()
    } else {
        format!("{base}.{name}")
    }
}

pub(crate) fn index(base: &str, i: usize) -> String {
    format!("{base}[{i}]")
}

/// A map entry: `spec.selector.matchLabels[app]`.
pub(crate) fn key(base: &str, k: &str) -> String {
    format!("{base}[{k}]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_field() {
        let mut r = Report::default();
        r.error("spec.hosts[0]", "invalid host *x");
        r.error("", "no spec");
        r.warn("spec", "selects all workloads");
        assert!(!r.is_valid());
        assert_eq!(r.error_message(), "spec.hosts[0]: invalid host *x; no spec");
        assert_eq!(r.warning_messages(), vec!["spec: selects all workloads"]);
        assert!(r
            .summary()
            .ends_with("warnings: spec: selects all workloads"));
        assert_eq!(field("", "spec"), "spec");
        assert_eq!(key(&index("spec.x", 1), "a"), "spec.x[1][a]");
    }
}
