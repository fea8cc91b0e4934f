//! Istio's own template functions (upstream `pkg/kube/inject/template.go`), over the
//! JSON form of the values upstream passes as Go types: `ObjectMeta`, container lists,
//! `map[string]string`, protos.

use serde_json::{Map, Value};

use super::super::value::{self, json_name};
use super::super::Context;
use super::sprig::{go_json, strval};
use super::{arity, at_least, int, string, Func};

pub const FUNCS: &[(&str, Func)] = &[
    ("formatDuration", format_duration),
    ("isset", isset),
    ("excludeInboundPort", exclude_inbound_port),
    ("includeInboundPorts", include_inbound_ports),
    ("kubevirtInterfaces", identity),
    ("excludeInterfaces", identity),
    ("applicationPorts", application_ports),
    ("annotation", annotation),
    ("valueOrDefault", value_or_default),
    ("toJSON", to_json),
    ("fromJSON", from_json),
    ("structToJSON", struct_to_json),
    ("protoToJSON", struct_to_json),
    ("toYaml", to_yaml),
    ("indent", indent),
    ("directory", directory),
    ("toLower", to_lower),
    ("appendMultusNetwork", append_multus_network),
    ("env", env),
    ("omit", omit),
    ("strdict", strdict),
    ("toJsonMap", to_json_map),
    ("mergeMaps", merge_maps),
    ("omitNil", omit_nil),
    ("otelResourceAttributes", otel_resource_attributes),
];

/// The proxy's container name: not an application's.
const PROXY_CONTAINER: &str = "istio-proxy";

fn s(v: String) -> Result<Value, String> {
    Ok(Value::String(v))
}

/// A field of a Go struct in its JSON form: by Go name or JSON name.
fn member<'v>(v: &'v Value, go: &str) -> Option<&'v Value> {
    let map = v.as_object()?;
    map.get(go).or_else(|| map.get(&json_name(go)))
}

/// A `map[string]string` argument: nil and missing are empty.
fn string_map<'v>(name: &str, v: &'v Value) -> Result<Option<&'v Map<String, Value>>, String> {
    match v {
        Value::Null => Ok(None),
        Value::Object(m) => Ok(Some(m)),
        other => Err(format!(
            "{name}: expected map[string]string; found {}",
            value::type_name(other)
        )),
    }
}

fn identity(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    arity("identity", &args, 1)?;
    Ok(args.into_iter().next().unwrap_or_default())
}

fn isset(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    arity("isset", &args, 2)?;
    let key = string("isset", &args[1])?;
    Ok(Value::Bool(
        string_map("isset", &args[0])?.is_some_and(|m| m.contains_key(key)),
    ))
}

/// Adds `port` to the comma-separated `excluded` list unless it is there (or 0).
fn exclude_inbound_port(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    arity("excludeInboundPort", &args, 2)?;
    let port = value::to_string(&args[0]).trim().to_owned();
    let excluded = string("excludeInboundPort", &args[1])?;
    if port.is_empty() || port == "0" {
        return s(excluded.to_owned());
    }
    let mut out = Vec::new();
    for existing in excluded.split(',') {
        if existing == port {
            return s(excluded.to_owned());
        }
        let existing = existing.trim();
        if !existing.is_empty() {
            out.push(existing.to_owned());
        }
    }
    out.push(port);
    s(out.join(","))
}

/// The TCP ports of the containers `keep` selects, comma-separated.
fn container_ports(containers: &Value, keep: impl Fn(&Value) -> bool) -> String {
    let mut ports = Vec::new();
    for container in containers
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| keep(c))
    {
        for port in member(container, "Ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let protocol = member(port, "Protocol").and_then(Value::as_str);
            if matches!(protocol, Some("UDP" | "SCTP")) {
                continue;
            }
            if let Some(n) = member(port, "ContainerPort") {
                ports.push(value::to_string(n));
            }
        }
    }
    ports.join(",")
}

fn include_inbound_ports(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    arity("includeInboundPorts", &args, 1)?;
    s(container_ports(&args[0], |_| true))
}

fn application_ports(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    arity("applicationPorts", &args, 1)?;
    s(container_ports(&args[0], |c| {
        member(c, "Name").and_then(Value::as_str) != Some(PROXY_CONTAINER)
    }))
}

/// `annotation META NAME DEFAULT`: the annotation, else the default as `%v` prints it.
fn annotation(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    arity("annotation", &args, 3)?;
    let name = string("annotation", &args[1])?;
    let found = member(&args[0], "Annotations")
        .and_then(|a| a.get(name))
        .map(strval);
    s(found.unwrap_or_else(|| value::to_string(&args[2])))
}

fn value_or_default(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    arity("valueOrDefault", &args, 2)?;
    let mut args = args.into_iter();
    let v = args.next().unwrap_or_default();
    let fallback = args.next().unwrap_or_default();
    Ok(match &v {
        Value::Null => fallback,
        Value::String(s) if s.is_empty() => fallback,
        _ => v,
    })
}

fn to_json(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    arity("toJSON", &args, 1)?;
    s(match string_map("toJSON", &args[0])? {
        None => "{}".to_owned(),
        Some(m) => go_json(&Value::Object(m.clone()), false),
    })
}

/// Parses JSON; on failure, as upstream, the string `{}`.
fn from_json(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    arity("fromJSON", &args, 1)?;
    let text = string("fromJSON", &args[0])?;
    Ok(serde_json::from_str(text).unwrap_or_else(|_| Value::String("{}".to_owned())))
}

/// `structToJSON` and `protoToJSON`: compact JSON, `{}` for nil. The data already holds
/// protos in their JSON form, so both are one; upstream's `protoToJSON` also drops
/// ProxyConfig fields equal to the defaults, which the data's builder does.
fn struct_to_json(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    arity("structToJSON", &args, 1)?;
    s(match &args[0] {
        Value::Null => "{}".to_owned(),
        v => go_json(v, false),
    })
}

/// YAML of a value, keys sorted, `""` when it cannot be written (as upstream).
pub fn yaml(v: &Value) -> String {
    serde_yaml::to_string(v).unwrap_or_default()
}

fn to_yaml(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    arity("toYaml", &args, 1)?;
    s(yaml(&args[0]))
}

/// Istio's `indent`: every line but the first gets `spaces` spaces.
fn indent(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    arity("indent", &args, 2)?;
    let spaces = usize::try_from(int("indent", &args[0])?).unwrap_or(0);
    let pad = " ".repeat(spaces);
    s(strval(&args[1]).replace('\n', &format!("\n{pad}")))
}

/// `path.Split`'s directory: everything through the last `/`.
fn directory(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    arity("directory", &args, 1)?;
    let path = strval(&args[0]);
    s(path
        .rfind('/')
        .map_or(String::new(), |i| path[..=i].to_owned()))
}

fn to_lower(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    arity("toLower", &args, 1)?;
    s(string("toLower", &args[0])?.to_lowercase())
}

/// Adds the `namespace/name` network to a Multus networks annotation, JSON or
/// comma-separated, unless it is there.
fn append_multus_network(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    arity("appendMultusNetwork", &args, 2)?;
    let existing = match &args[0] {
        Value::Null => "",
        v => string("appendMultusNetwork", v)?,
    };
    let network = string("appendMultusNetwork", &args[1])?;
    if existing.is_empty() {
        return s(network.to_owned());
    }
    if let Some(close) = existing.rfind(']') {
        let Ok(networks) = serde_json::from_str::<Vec<Map<String, Value>>>(existing) else {
            return s(existing.to_owned());
        };
        let (ns, name) = network.split_once('/').unwrap_or(("", network));
        let present = networks.iter().any(|n| {
            n.get("name").and_then(Value::as_str) == Some(name)
                && n.get("namespace").and_then(Value::as_str).unwrap_or("") == ns
        });
        if present {
            return s(existing.to_owned());
        }
        let entry = if ns.is_empty() {
            format!(", {{\"name\": \"{name}\"}}")
        } else {
            format!(", {{\"name\": \"{name}\", \"namespace\": \"{ns}\"}}")
        };
        return s(format!(
            "{}{entry}{}",
            &existing[..close],
            &existing[close..]
        ));
    }
    if existing.split(',').any(|n| n.trim() == network) {
        return s(existing.to_owned());
    }
    s(format!("{existing}, {network}"))
}

/// `env KEY DEFAULT`: the variable, or the default when unset or empty.
fn env(ctx: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    arity("env", &args, 2)?;
    let key = string("env", &args[0])?;
    let fallback = string("env", &args[1])?;
    s(ctx
        .env(key)
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| fallback.to_owned()))
}

fn omit(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    at_least("omit", &args, 1)?;
    let mut map = string_map("omit", &args[0])?.cloned().unwrap_or_default();
    for key in &args[1..] {
        map.remove(string("omit", key)?);
    }
    Ok(Value::Object(map))
}

/// Sprig's `dict` with string values: a key without a value gets `""`.
fn strdict(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    let mut map = Map::new();
    for pair in args.chunks(2) {
        let key = string("strdict", &pair[0])?.to_owned();
        let value = match pair.get(1) {
            Some(v) => string("strdict", v)?.to_owned(),
            None => String::new(),
        };
        map.insert(key, Value::String(value));
    }
    Ok(Value::Object(map))
}

fn merged(args: &[Value]) -> Result<Option<Map<String, Value>>, String> {
    if args.is_empty() {
        return Ok(None);
    }
    let mut out = Map::new();
    for m in args {
        if let Some(m) = string_map("mergeMaps", m)? {
            out.extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }
    Ok(Some(out))
}

fn merge_maps(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    Ok(merged(&args)?.map_or(Value::Null, Value::Object))
}

fn to_json_map(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    s(match merged(&args)? {
        Some(m) => go_json(&Value::Object(m), false),
        None => "null".to_owned(),
    })
}

/// Drops nils from maps and lists, recursively; a map or list left empty by that is
/// itself nil.
pub fn without_nils(v: Value) -> Value {
    match v {
        Value::Object(map) => {
            if !map.values().any(has_nil) {
                return Value::Object(map);
            }
            let out: Map<String, Value> = map
                .into_iter()
                .map(|(k, v)| (k, without_nils(v)))
                .filter(|(_, v)| !v.is_null())
                .collect();
            if out.is_empty() {
                Value::Null
            } else {
                Value::Object(out)
            }
        }
        Value::Array(items) => {
            if !items.iter().any(has_nil) {
                return Value::Array(items);
            }
            let out: Vec<Value> = items
                .into_iter()
                .map(without_nils)
                .filter(|v| !v.is_null())
                .collect();
            if out.is_empty() {
                Value::Null
            } else {
                Value::Array(out)
            }
        }
        other => other,
    }
}

fn has_nil(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.values().any(has_nil),
        Value::Array(a) => a.iter().any(has_nil),
        _ => false,
    }
}

fn omit_nil(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    arity("omitNil", &args, 1)?;
    Ok(without_nils(args.into_iter().next().unwrap_or_default()))
}

/// A protobuf Duration (JSON `"1.5s"`) as Go's `time.Duration` prints it (`1.5s`,
/// `1m30s`, `2h0m0s`).
fn format_duration(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    arity("formatDuration", &args, 1)?;
    let nanos: i128 = match &args[0] {
        Value::Null => 0,
        Value::String(text) => {
            let secs = text
                .strip_suffix('s')
                .and_then(|n| n.parse::<f64>().ok())
                .ok_or_else(|| format!("formatDuration: not a duration: {text:?}"))?;
            (secs * 1e9).round() as i128
        }
        other => {
            return Err(format!(
                "formatDuration: not a duration: {}",
                value::to_string(other)
            ))
        }
    };
    s(go_duration(nanos))
}

/// `time.Duration.String`.
pub fn go_duration(nanos: i128) -> String {
    if nanos == 0 {
        return "0s".to_owned();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    if n < 1_000_000_000 {
        let (unit, div) = if n < 1_000 {
            ("ns", 1)
        } else if n < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{sign}{}{unit}", fraction(n, div));
    }
    let (hours, rest) = (n / 3_600_000_000_000, n % 3_600_000_000_000);
    let (minutes, rest) = (rest / 60_000_000_000, rest % 60_000_000_000);
    let seconds = fraction(rest, 1_000_000_000);
    if hours > 0 {
        format!("{sign}{hours}h{minutes}m{seconds}s")
    } else if minutes > 0 {
        format!("{sign}{minutes}m{seconds}s")
    } else {
        format!("{sign}{seconds}s")
    }
}

/// `n / div` with the fraction's trailing zeros dropped.
fn fraction(n: u128, div: u128) -> String {
    let (whole, part) = (n / div, n % div);
    if part == 0 {
        return whole.to_string();
    }
    let width = div.to_string().len() - 1;
    let digits = format!("{part:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// OpenTelemetry resource attributes for the proxy, when a mesh OpenTelemetry provider
/// asks for semantic-convention enrichment; otherwise empty.
fn otel_resource_attributes(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
    arity("otelResourceAttributes", &args, 5)?;
    let [mesh, annotations, labels, namespace, containers] = &args[..] else {
        return s(String::new());
    };
    let enriched = member(mesh, "ExtensionProviders")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| member(p, "Opentelemetry"))
        .any(|otel| {
            member(otel, "ServiceAttributeEnrichment").and_then(Value::as_str)
                == Some("OTEL_SEMANTIC_CONVENTIONS")
        });
    if !enriched {
        return s(String::new());
    }
    let lookup = |m: &Value, k: &str| {
        m.get(k)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let namespace = namespace.as_str().unwrap_or("");
    let containers: &[Value] = containers.as_array().map_or(&[], Vec::as_slice);
    let mut attrs = Vec::new();
    if let Some(v) = lookup(annotations, "resource.opentelemetry.io/service.namespace") {
        attrs.push(format!("service.namespace={v}"));
    } else if !namespace.is_empty() {
        attrs.push(format!("service.namespace={namespace}"));
    }
    if let Some(v) = lookup(annotations, "resource.opentelemetry.io/service.version")
        .or_else(|| lookup(labels, "app.kubernetes.io/version"))
    {
        attrs.push(format!("service.version={v}"));
    } else if let [only] = containers {
        let image = member(only, "Image").and_then(Value::as_str).unwrap_or("");
        let (image, digest) = image.split_once('@').unwrap_or((image, ""));
        let tag = match (image.rfind(':'), image.rfind('/')) {
            (Some(colon), slash) if slash.is_none_or(|s| colon > s) => &image[colon + 1..],
            _ => "",
        };
        let version = match (tag.is_empty(), digest.is_empty()) {
            (false, false) => format!("{tag}@{digest}"),
            (true, false) => digest.to_owned(),
            (false, true) => tag.to_owned(),
            (true, true) => String::new(),
        };
        if !version.is_empty() {
            attrs.push(format!("service.version={version}"));
        }
    }
    if let Some(v) = lookup(annotations, "resource.opentelemetry.io/service.instance.id") {
        attrs.push(format!("service.instance.id={v}"));
    } else if let Some(first) = containers.first() {
        let name = member(first, "Name").and_then(Value::as_str).unwrap_or("");
        attrs.push(format!(
            "service.instance.id={namespace}.$(POD_NAME).{name}"
        ));
    }
    s(attrs.join(","))
}
