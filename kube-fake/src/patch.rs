//! Patches: JSON merge patch (RFC 7386), and strategic merge patch as far as the fake's
//! users need it.

use serde_json::{json, Value};

/// How a PATCH request's body applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchKind {
    /// `application/merge-patch+json`.
    Merge,
    /// `application/strategic-merge-patch+json`: a merge patch in which lists of objects
    /// that all have a `name` (containers, ephemeral containers, ports) merge by name.
    Strategic,
}

impl PatchKind {
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        match content_type.split(';').next().unwrap_or("").trim() {
            "application/merge-patch+json" => Some(PatchKind::Merge),
            "application/strategic-merge-patch+json" => Some(PatchKind::Strategic),
            _ => None,
        }
    }

    pub fn apply(self, target: &mut Value, patch: &Value) {
        merge(target, patch, self == PatchKind::Strategic);
    }
}

fn merge(target: &mut Value, patch: &Value, by_name: bool) {
    if by_name {
        if let (Some(current), Some(items)) = (named(target), named(patch)) {
            let mut merged = current;
            for item in items {
                match merged.iter_mut().find(|m| m["name"] == item["name"]) {
                    Some(existing) => merge(existing, &item, by_name),
                    None => merged.push(item),
                }
            }
            *target = Value::Array(merged);
            return;
        }
    }
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let Value::Object(map) = target else {
        return;
    };
    for (k, v) in patch {
        if v.is_null() {
            map.remove(k);
        } else {
            merge(map.entry(k.clone()).or_insert(Value::Null), v, by_name);
        }
    }
}

/// The items of a list of objects that all have a name.
fn named(value: &Value) -> Option<Vec<Value>> {
    let items = value.as_array()?;
    items
        .iter()
        .all(|i| i["name"].is_string())
        .then(|| items.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc7386() {
        let cases = [
            (
                json!({"a": 1, "b": {"c": 2}}),
                json!({"b": {"c": null, "d": 3}}),
                json!({"a": 1, "b": {"d": 3}}),
            ),
            (json!({"a": [1, 2]}), json!({"a": [3]}), json!({"a": [3]})),
            (
                json!({"a": [{"name": "x"}]}),
                json!({"a": [{"name": "y"}]}),
                json!({"a": [{"name": "y"}]}),
            ),
            (json!("x"), json!({"a": 1}), json!({"a": 1})),
        ];
        for (mut target, patch, want) in cases {
            PatchKind::Merge.apply(&mut target, &patch);
            assert_eq!(target, want);
        }
    }

    #[test]
    fn strategic_merge_patch_merges_named_lists_by_name() {
        let mut pod = json!({"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b"}]}});
        PatchKind::Strategic.apply(
            &mut pod,
            &json!({"spec": {"containers": [{"name": "a", "image": "2"}, {"name": "c"}]}}),
        );
        assert_eq!(
            pod["spec"]["containers"],
            json!([{"name": "a", "image": "2"}, {"name": "b"}, {"name": "c"}])
        );
        let mut obj = json!({"args": ["x"]});
        PatchKind::Strategic.apply(&mut obj, &json!({"args": ["y"]}));
        assert_eq!(obj["args"], json!(["y"]), "other lists are replaced");
        assert_eq!(
            PatchKind::from_content_type("application/strategic-merge-patch+json"),
            Some(PatchKind::Strategic)
        );
        assert_eq!(
            PatchKind::from_content_type("application/json-patch+json"),
            None
        );
    }
}
