//! Kubernetes' strategic merge patch, for pods: how a rendered template is laid over the
//! pod. Maps merge key by key and a `null` deletes; a list whose field Kubernetes marks
//! `patchStrategy: merge` merges element by element on its merge key (containers,
//! volumes and env vars by name, ports by container port, mounts by path), other lists
//! are replaced. An element with `$patch: delete` removes its match, a map with
//! `$patch: replace` replaces the original.

#[cfg(test)]
mod tests;

use serde_json::{Map, Value};

/// How a list field of a pod merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListMerge {
    /// Replaced whole.
    Replace,
    /// Elements matched on this key; the unmatched are appended.
    ByKey(&'static str),
    /// A set of scalars: the union, in order.
    Scalars,
}

/// The merge strategy of the list at `path` (field names from the pod, list levels
/// left out), from the `patchStrategy`/`patchMergeKey` tags of the Kubernetes API.
fn list_merge(path: &[String]) -> ListMerge {
    let path: Vec<&str> = path.iter().map(String::as_str).collect();
    let container = |field: &str| -> ListMerge {
        match field {
            "env" => ListMerge::ByKey("name"),
            "ports" => ListMerge::ByKey("containerPort"),
            "volumeMounts" => ListMerge::ByKey("mountPath"),
            "volumeDevices" => ListMerge::ByKey("devicePath"),
            _ => ListMerge::Replace,
        }
    };
    match path.as_slice() {
        ["metadata", "finalizers"] => ListMerge::Scalars,
        ["metadata", "ownerReferences"] => ListMerge::ByKey("uid"),
        ["spec", "containers" | "initContainers" | "ephemeralContainers"] => {
            ListMerge::ByKey("name")
        }
        ["spec", "containers" | "initContainers" | "ephemeralContainers", field] => {
            container(field)
        }
        ["spec", "volumes" | "imagePullSecrets" | "resourceClaims" | "schedulingGates"] => {
            ListMerge::ByKey("name")
        }
        ["spec", "hostAliases"] => ListMerge::ByKey("ip"),
        ["spec", "topologySpreadConstraints"] => ListMerge::ByKey("topologyKey"),
        _ => ListMerge::Replace,
    }
}

const PATCH: &str = "$patch";

/// Lays `patch` over `original`, both pods as JSON.
pub fn merge_pod(original: &Value, patch: &Value) -> Value {
    let mut path = Vec::new();
    merge_value(original, patch, &mut path)
}

fn merge_value(original: &Value, patch: &Value, path: &mut Vec<String>) -> Value {
    match (original, patch) {
        (Value::Object(o), Value::Object(p)) => merge_map(o, p, path),
        (Value::Array(o), Value::Array(p)) => merge_list(o, p, path),
        _ => strip_directives(patch),
    }
}

fn merge_map(
    original: &Map<String, Value>,
    patch: &Map<String, Value>,
    path: &mut Vec<String>,
) -> Value {
    if patch.get(PATCH).and_then(Value::as_str) == Some("replace") {
        return strip_directives(&Value::Object(patch.clone()));
    }
    let mut out = original.clone();
    for (key, value) in patch {
        if key == PATCH || key.starts_with("$setElementOrder/") || key == "$retainKeys" {
            continue;
        }
        if value.is_null() {
            out.remove(key);
            continue;
        }
        path.push(key.clone());
        let merged = match original.get(key) {
            Some(existing) => merge_value(existing, value, path),
            None => strip_directives(value),
        };
        path.pop();
        out.insert(key.clone(), merged);
    }
    Value::Object(out)
}

fn merge_list(original: &[Value], patch: &[Value], path: &mut Vec<String>) -> Value {
    match list_merge(path) {
        ListMerge::Replace => strip_directives(&Value::Array(patch.to_vec())),
        ListMerge::Scalars => {
            let mut out = original.to_vec();
            for v in patch {
                if !out.contains(v) {
                    out.push(v.clone());
                }
            }
            Value::Array(out)
        }
        ListMerge::ByKey(key) => {
            let mut out = original.to_vec();
            for item in patch {
                let Some(item_map) = item.as_object() else {
                    out.push(item.clone());
                    continue;
                };
                let wanted = item_map.get(key);
                let found = wanted.and_then(|w| {
                    out.iter()
                        .position(|o| o.get(key).is_some_and(|k| same_key(k, w)))
                });
                let delete = item_map.get(PATCH).and_then(Value::as_str) == Some("delete");
                match (found, delete) {
                    (Some(i), true) => {
                        out.remove(i);
                    }
                    (None, true) => {}
                    (Some(i), false) => out[i] = merge_value(&out[i], item, path),
                    (None, false) => out.push(strip_directives(item)),
                }
            }
            Value::Array(out)
        }
    }
}

/// Merge keys compare as values, with a number equal to its decimal string (a port
/// written `"8080"` in YAML matches `8080`).
fn same_key(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(n), Value::String(s)) | (Value::String(s), Value::Number(n)) => {
            n.to_string() == *s
        }
        _ => a == b,
    }
}

/// A patch value as it lands in the result: directives and `null` map entries dropped.
fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, v)| !k.starts_with('$') && !v.is_null())
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .filter(|i| i.get(PATCH).and_then(Value::as_str) != Some("delete"))
                .map(strip_directives)
                .collect(),
        ),
        other => other.clone(),
    }
}
