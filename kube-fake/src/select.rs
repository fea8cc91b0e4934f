//! Label and field selectors of lists and watches.

use std::collections::HashMap;

use serde_json::Value;

use crate::error::ApiError;

/// A label or field selector term.
enum Term {
    Eq(String, String),
    Ne(String, String),
    Exists(String),
    Absent(String),
}

impl Term {
    fn key(&self) -> &str {
        let (Term::Eq(k, _) | Term::Ne(k, _) | Term::Exists(k) | Term::Absent(k)) = self;
        k
    }

    /// Whether the term holds when `get` reads the label or field.
    fn holds<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        match self {
            Term::Eq(k, v) => get(k) == Some(v.as_str()),
            Term::Ne(k, v) => get(k) != Some(v.as_str()),
            Term::Exists(k) => get(k).is_some(),
            Term::Absent(k) => get(k).is_none(),
        }
    }
}

/// What a list or watch selects: a namespace, labels, `metadata.name` and
/// `metadata.namespace` fields.
#[derive(Default)]
pub(crate) struct Filter {
    namespace: Option<String>,
    labels: Vec<Term>,
    fields: Vec<Term>,
}

impl Filter {
    pub fn from_query(
        namespace: Option<String>,
        q: &HashMap<String, String>,
    ) -> Result<Self, ApiError> {
        let labels = parse_selector(q.get("labelSelector").map_or("", |s| s))?;
        let fields = parse_selector(q.get("fieldSelector").map_or("", |s| s))?;
        if let Some(t) = fields
            .iter()
            .find(|t| !matches!(t.key(), "metadata.name" | "metadata.namespace"))
        {
            return Err(ApiError::bad_request(format!(
                "field label not supported: {}",
                t.key()
            )));
        }
        Ok(Filter {
            namespace,
            labels,
            fields,
        })
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let meta = &obj["metadata"];
        let namespace = meta["namespace"].as_str().unwrap_or("");
        if self.namespace.as_deref().is_some_and(|ns| ns != namespace) {
            return false;
        }
        let name = meta["name"].as_str();
        self.labels
            .iter()
            .all(|t| t.holds(|k| meta["labels"][k].as_str()))
            && self.fields.iter().all(|t| {
                t.holds(|k| match k {
                    "metadata.name" => name,
                    _ => Some(namespace),
                })
            })
    }
}

/// `a=b,c!=d,e,!f` (set-based `in`/`notin` are not supported).
fn parse_selector(s: &str) -> Result<Vec<Term>, ApiError> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let term = if let Some((k, v)) = part.split_once("!=") {
            Term::Ne(k.trim().to_owned(), v.trim().to_owned())
        } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
            Term::Eq(k.trim().to_owned(), v.trim().to_owned())
        } else if let Some(k) = part.strip_prefix('!') {
            Term::Absent(k.trim().to_owned())
        } else if part.contains(' ') || part.contains('(') {
            return Err(ApiError::bad_request(format!(
                "unsupported selector {part:?}"
            )));
        } else {
            Term::Exists(part.to_owned())
        };
        out.push(term);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn selectors_match_labels_and_fields() {
        let obj = json!({"metadata": {"name": "n", "namespace": "ns", "labels": {"app": "a"}}});
        let q = |l: &str, f: &str| {
            HashMap::from([
                ("labelSelector".to_owned(), l.to_owned()),
                ("fieldSelector".to_owned(), f.to_owned()),
            ])
        };
        let matches = |l: &str, f: &str| Filter::from_query(None, &q(l, f)).unwrap().matches(&obj);
        assert!(matches("app=a,!other", "metadata.name=n"));
        assert!(matches("app", "metadata.namespace==ns"));
        assert!(!matches("app!=a", ""));
        assert!(!matches("", "metadata.name=m"));
        assert!(Filter::from_query(None, &q("", "spec.nodeName=x")).is_err());
        assert!(Filter::from_query(None, &q("app in (a)", "")).is_err());
        let other_ns = Filter::from_query(Some("other".into()), &HashMap::new()).unwrap();
        assert!(!other_ns.matches(&obj));
    }
}
