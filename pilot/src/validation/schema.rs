//! Structural checks from the CRDs' OpenAPI v3 schemas: unknown fields, types, enums,
//! required fields, bounds, patterns and the one-of groups.
//!
//! `crd-schemas.json` is derived from the `spec` schemas of istio/istio
//! `manifests/charts/base/files/crd-all.gen.yaml` (commit 86c9f01f, Apache-2.0) with the
//! descriptions and the CEL rules dropped; the schema is identical across the served
//! versions of a kind, so it is stored once with the list of versions. The CEL rules are
//! checked by the semantic rules instead (durations here, the rest per kind).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde_json::{Map, Value};

use super::common::parse_duration;
use super::report::{field, index, key, Report};

const SCHEMAS: &str = include_str!("crd-schemas.json");

/// Properties the CRDs constrain with `duration(self) >= duration('1ms')`.
const DURATION_FIELDS: &[&str] = &[
    "backoff",
    "baseEjectionTime",
    "connectTimeout",
    "duration",
    "exponentialDelay",
    "fixedDelay",
    "idleTimeout",
    "interval",
    "maxAge",
    "maxConnectionDuration",
    "perTryTimeout",
    "reportingInterval",
    "time",
    "timeout",
    "warmupDurationSecs",
];

/// The served versions and spec schema of one kind.
#[derive(Debug)]
pub struct KindSchema {
    pub versions: Vec<String>,
    pub spec: Value,
}

/// `group/Kind` → schema, parsed once.
pub fn schemas() -> &'static BTreeMap<String, KindSchema> {
    static PARSED: OnceLock<BTreeMap<String, KindSchema>> = OnceLock::new();
    PARSED.get_or_init(|| {
        let mut out = BTreeMap::new();
        // The file is compiled in and covered by tests; a parse failure yields no schemas
        // (every kind then reads as unknown) rather than a panic.
        let root: Map<String, Value> = serde_json::from_str(SCHEMAS).unwrap_or_default();
        for (name, entry) in root {
            let versions = entry
                .get("versions")
                .and_then(Value::as_array)
                .map(|vs| {
                    vs.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            let spec = entry.get("schema").cloned().unwrap_or(Value::Null);
            out.insert(name, KindSchema { versions, spec });
        }
        out
    })
}

/// Checks `value` at `path` against `schema`, recording every violation.
pub fn check(value: &Value, schema: &Value, path: &str, report: &mut Report) {
    check_named(value, schema, path, "", report);
}

fn check_named(value: &Value, schema: &Value, path: &str, name: &str, report: &mut Report) {
    if value.is_null() {
        // An explicit null is the same as an absent field to the API server.
        return;
    }
    let Some(schema) = schema.as_object() else {
        return;
    };
    let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields");
    if flag(schema, "x-kubernetes-int-or-string") {
        if !(value.is_string() || value.is_i64() || value.is_u64()) {
            report.error(
                path,
                format!("must be an integer or a string, got {}", type_name(value)),
            );
        }
        return;
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => check_object(value, schema, path, preserve, report),
        Some("array") => check_array(value, schema, path, report),
        Some("string") => check_string(value, schema, path, name, report),
        Some("integer") => check_integer(value, schema, path, report),
        Some("number") => {
            if !value.is_number() {
                report.error(path, format!("must be a number, got {}", type_name(value)));
            } else {
                check_bounds(value.as_f64().unwrap_or(0.0), schema, path, report);
            }
        }
        Some("boolean") if !value.is_boolean() => {
            report.error(path, format!("must be a boolean, got {}", type_name(value)));
        }
        _ => {}
    }
    check_combinators(value, schema, path, report);
}

fn check_object(
    value: &Value,
    schema: &Map<String, Value>,
    path: &str,
    preserve: bool,
    report: &mut Report,
) {
    let Some(obj) = value.as_object() else {
        report.error(path, format!("must be an object, got {}", type_name(value)));
        return;
    };
    let props = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties");
    if let Some(props) = props {
        for (k, v) in obj {
            match props.get(k) {
                Some(s) => check_named(v, s, &field(path, k), k, report),
                None if preserve => {}
                None => report.error(field(path, k), "unknown field"),
            }
        }
    } else if let Some(s) = additional.filter(|s| s.is_object()) {
        for (k, v) in obj {
            check_named(v, s, &key(path, k), "", report);
        }
    }
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for r in required.iter().filter_map(Value::as_str) {
            if obj.get(r).is_none_or(Value::is_null) {
                report.error(field(path, r), "required field is missing");
            }
        }
    }
    let count = obj.len() as u64;
    if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64) {
        if count > max {
            report.error(
                path,
                format!("must have at most {max} entries, has {count}"),
            );
        }
    }
    if let Some(min) = schema.get("minProperties").and_then(Value::as_u64) {
        if count < min {
            report.error(
                path,
                format!("must have at least {min} entries, has {count}"),
            );
        }
    }
}

fn check_array(value: &Value, schema: &Map<String, Value>, path: &str, report: &mut Report) {
    let Some(items) = value.as_array() else {
        report.error(path, format!("must be a list, got {}", type_name(value)));
        return;
    };
    if let Some(item) = schema.get("items") {
        for (i, v) in items.iter().enumerate() {
            check_named(v, item, &index(path, i), "", report);
        }
    }
    let n = items.len() as u64;
    if let Some(max) = schema.get("maxItems").and_then(Value::as_u64) {
        if n > max {
            report.error(path, format!("must have at most {max} items, has {n}"));
        }
    }
    if let Some(min) = schema.get("minItems").and_then(Value::as_u64) {
        if n < min {
            report.error(path, format!("must have at least {min} items, has {n}"));
        }
    }
}

fn check_string(
    value: &Value,
    schema: &Map<String, Value>,
    path: &str,
    name: &str,
    report: &mut Report,
) {
    let Some(s) = value.as_str() else {
        report.error(path, format!("must be a string, got {}", type_name(value)));
        return;
    };
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.iter().any(|a| a.as_str() == Some(s)) {
            let names: Vec<&str> = allowed.iter().filter_map(Value::as_str).collect();
            report.error(
                path,
                format!(
                    "unsupported value {s:?}, must be one of [{}]",
                    names.join(", ")
                ),
            );
            return;
        }
    }
    let len = s.chars().count() as u64;
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
        if len > max {
            report.error(path, format!("must be at most {max} characters, has {len}"));
        }
    }
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64) {
        if len < min {
            report.error(path, format!("must be at least {min} characters"));
        }
    }
    if let Some(p) = schema.get("pattern").and_then(Value::as_str) {
        if let Some(re) = pattern(p) {
            if !re.is_match(s) {
                report.error(path, format!("{s:?} does not match the pattern {p}"));
            }
        }
    }
    if DURATION_FIELDS.contains(&name) {
        match parse_duration(s) {
            Some(d) if d >= std::time::Duration::from_millis(1) => {}
            Some(_) => report.error(path, format!("duration {s:?} must be at least 1ms")),
            None => report.error(path, format!("{s:?} is not a valid duration")),
        }
    }
}

fn check_integer(value: &Value, schema: &Map<String, Value>, path: &str, report: &mut Report) {
    let Some(n) = value.as_i64().or_else(|| value.as_u64().map(|_| i64::MAX)) else {
        report.error(
            path,
            format!("must be an integer, got {}", type_name(value)),
        );
        return;
    };
    match schema.get("format").and_then(Value::as_str) {
        Some("int32") if i32::try_from(n).is_err() => {
            report.error(path, format!("{n} is out of range for a 32-bit integer"));
        }
        Some("uint32") if u32::try_from(n).is_err() => {
            report.error(
                path,
                format!("{n} is out of range for an unsigned 32-bit integer"),
            );
        }
        _ => {}
    }
    check_bounds(n as f64, schema, path, report);
}

fn check_bounds(n: f64, schema: &Map<String, Value>, path: &str, report: &mut Report) {
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
        let exclusive = flag(schema, "exclusiveMinimum");
        if n < min || (exclusive && n == min) {
            report.error(
                path,
                format!("{n} must be {} {min}", if exclusive { ">" } else { ">=" }),
            );
        }
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
        let exclusive = flag(schema, "exclusiveMaximum");
        if n > max || (exclusive && n == max) {
            report.error(
                path,
                format!("{n} must be {} {max}", if exclusive { "<" } else { "<=" }),
            );
        }
    }
}

/// `oneOf`/`anyOf`/`allOf`/`not` in these CRDs only say which fields may be set
/// together; they are evaluated as predicates and reported by the fields they name.
fn check_combinators(value: &Value, schema: &Map<String, Value>, path: &str, report: &mut Report) {
    if let Some(one_of) = schema.get("oneOf").and_then(Value::as_array) {
        let n = one_of.iter().filter(|s| matches(value, s)).count();
        if n != 1 {
            let names = named_fields(one_of);
            report.error(
                path,
                format!("only one of [{}] may be set", names.join(", ")),
            );
        }
    }
    if let Some(any_of) = schema.get("anyOf").and_then(Value::as_array) {
        if !any_of.iter().any(|s| matches(value, s)) {
            let names = named_fields(any_of);
            report.error(path, format!("one of [{}] must be set", names.join(", ")));
        }
    }
    if let Some(all_of) = schema.get("allOf").and_then(Value::as_array) {
        for s in all_of {
            if let Some(o) = s.as_object() {
                check_combinators(value, o, path, report);
            }
        }
    }
}

fn matches(value: &Value, schema: &Value) -> bool {
    let Some(s) = schema.as_object() else {
        return true;
    };
    if let Some(required) = s.get("required").and_then(Value::as_array) {
        let Some(obj) = value.as_object() else {
            return false;
        };
        if !required
            .iter()
            .filter_map(Value::as_str)
            .all(|r| obj.get(r).is_some_and(|v| !v.is_null()))
        {
            return false;
        }
    }
    if let Some(not) = s.get("not") {
        if matches(value, not) {
            return false;
        }
    }
    if let Some(any) = s.get("anyOf").and_then(Value::as_array) {
        if !any.iter().any(|x| matches(value, x)) {
            return false;
        }
    }
    if let Some(one) = s.get("oneOf").and_then(Value::as_array) {
        if one.iter().filter(|x| matches(value, x)).count() != 1 {
            return false;
        }
    }
    if let Some(all) = s.get("allOf").and_then(Value::as_array) {
        if !all.iter().all(|x| matches(value, x)) {
            return false;
        }
    }
    true
}

fn named_fields(schemas: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                if let Some(r) = o.get("required").and_then(Value::as_array) {
                    for name in r.iter().filter_map(Value::as_str) {
                        if !out.iter().any(|x| x == name) {
                            out.push(name.to_owned());
                        }
                    }
                }
                for k in ["not", "anyOf", "oneOf", "allOf"] {
                    if let Some(x) = o.get(k) {
                        walk(x, out);
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    schemas.iter().for_each(|s| walk(s, &mut out));
    out
}

fn pattern(p: &str) -> Option<&'static regex::Regex> {
    static CACHE: OnceLock<std::sync::Mutex<BTreeMap<String, &'static regex::Regex>>> =
        OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut guard = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(re) = guard.get(p) {
        return Some(re);
    }
    // The handful of schema patterns are leaked once each, for the life of the process.
    let re: &'static regex::Regex = Box::leak(Box::new(regex::Regex::new(p).ok()?));
    guard.insert(p.to_owned(), re);
    Some(re)
}

fn flag(schema: &Map<String, Value>, name: &str) -> bool {
    schema.get(name).and_then(Value::as_bool).unwrap_or(false)
}

/// JSON type names for messages.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    }
}
