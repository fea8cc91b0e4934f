//! Reading and editing a pod held as JSON. The injector works on the JSON the API
//! server sent rather than a typed `Pod`, so fields this version of the Kubernetes API
//! does not know survive injection untouched and the patch touches only what changed.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// The proxy container's name.
pub const PROXY: &str = "istio-proxy";
/// The iptables init container's name.
pub const INIT: &str = "istio-init";
/// The CNI validation init container's name.
pub const VALIDATION: &str = "istio-validation";
/// The init container that enables core dumps.
pub const CORE_DUMP: &str = "enable-core-dump";

/// A `map[string]string` under `metadata` (`labels`, `annotations`); non-strings skipped.
pub fn string_map(pod: &Value, field: &str) -> BTreeMap<String, String> {
    pod.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
        .collect()
}

/// The pod's labels.
pub fn labels(pod: &Value) -> BTreeMap<String, String> {
    string_map(pod, "labels")
}

/// The pod's annotations.
pub fn annotations(pod: &Value) -> BTreeMap<String, String> {
    string_map(pod, "annotations")
}

/// One annotation.
pub fn annotation<'a>(pod: &'a Value, key: &str) -> Option<&'a str> {
    pod.get("metadata")?.get("annotations")?.get(key)?.as_str()
}

/// The object at `map[field]`, made an empty object when missing or not one.
pub fn field_map<'a>(map: &'a mut Map<String, Value>, field: &str) -> &'a mut Map<String, Value> {
    let entry = map
        .entry(field.to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    match entry {
        Value::Object(m) => m,
        _ => unreachable!("made an object above"),
    }
}

/// A top-level map of the pod (`metadata`, `spec`), created when missing.
pub fn top_mut<'a>(pod: &'a mut Value, field: &str) -> &'a mut Map<String, Value> {
    if !pod.is_object() {
        *pod = Value::Object(Map::new());
    }
    let Value::Object(pod) = pod else {
        unreachable!("made an object above")
    };
    field_map(pod, field)
}

/// `metadata.<field>` as a mutable map (`labels`, `annotations`), created when missing.
pub fn meta_map_mut<'a>(pod: &'a mut Value, field: &str) -> &'a mut Map<String, Value> {
    field_map(top_mut(pod, "metadata"), field)
}

/// A container list (`containers`, `initContainers`), empty when missing.
pub fn containers<'a>(pod: &'a Value, list: &str) -> &'a [Value] {
    pod.get("spec")
        .and_then(|s| s.get(list))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// A container list for editing; `None` when the pod has none.
pub fn containers_mut<'a>(pod: &'a mut Value, list: &str) -> Option<&'a mut Vec<Value>> {
    pod.get_mut("spec")?.get_mut(list)?.as_array_mut()
}

/// A container's name.
pub fn name(container: &Value) -> &str {
    container.get("name").and_then(Value::as_str).unwrap_or("")
}

/// The named container among `list`.
pub fn find<'a>(list: &'a [Value], container: &str) -> Option<&'a Value> {
    list.iter().find(|c| name(c) == container)
}

/// The named container, among the containers then the init containers.
pub fn find_in_pod<'a>(pod: &'a Value, container: &str) -> Option<&'a Value> {
    find(containers(pod, "containers"), container)
        .or_else(|| find(containers(pod, "initContainers"), container))
}

/// The proxy container for editing, among the containers then the init containers.
pub fn proxy_mut(pod: &mut Value) -> Option<&mut Value> {
    let in_containers = containers(pod, "containers")
        .iter()
        .any(|c| name(c) == PROXY);
    let list = if in_containers {
        "containers"
    } else {
        "initContainers"
    };
    containers_mut(pod, list)?
        .iter_mut()
        .find(|c| name(c) == PROXY)
}

/// The names of a pod list's entries (`containers`, `volumes`, ...), `None` when absent
/// or empty — Go's nil slice, which the status annotation writes as `null`.
pub fn names(pod: &Value, list: &str) -> Option<Vec<String>> {
    let names: Vec<String> = containers(pod, list)
        .iter()
        .map(|c| name(c).to_owned())
        .collect();
    (!names.is_empty()).then_some(names)
}

/// Where [`reorder`] puts a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    First,
    Last,
}

/// Moves the named container of `list` first or last; nothing when absent.
pub fn reorder(list: &mut Vec<Value>, container: &str, place: Place) {
    let Some(i) = list.iter().position(|c| name(c) == container) else {
        return;
    };
    let c = list.remove(i);
    match place {
        Place::First => list.insert(0, c),
        Place::Last => list.push(c),
    }
}

/// Removes the named container of `list`.
pub fn remove(list: &mut Vec<Value>, container: &str) {
    list.retain(|c| name(c) != container);
}
