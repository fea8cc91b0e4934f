//! Validation of Istio configuration resources: the structural schema of each CRD and
//! upstream's semantic rules, per kind. One validator backs the admission webhook, the
//! `pilot-discovery validate` command and the `--configDir` source.

pub mod common;
pub mod extensions;
pub mod files;
pub mod networking;
pub mod report;
pub mod schema;
pub mod security;
pub mod telemetry;

#[cfg(test)]
mod tests;

use serde_json::{Map, Value};

pub use report::{Finding, Report};

/// Annotation that makes the webhook reject a resource (its readiness self-test).
pub const ALWAYS_REJECT: &str = "internal.istio.io/webhook-always-reject";
/// Annotations only istiod itself may set.
const INTERNAL_ANNOTATIONS: &[&str] = &[
    "internal.istio.io/parent-namespace",
    "internal.istio.io/parent-names",
];
/// Top-level fields of a resource; anything else is rejected.
const TOP_LEVEL_FIELDS: &[&str] = &["apiVersion", "kind", "metadata", "spec", "status"];
/// Gateway API kinds are accepted as they are (upstream validates them with CEL).
const GATEWAY_API_GROUP: &str = "gateway.networking.k8s.io";

/// The API groups whose kinds istiod validates.
pub const ISTIO_GROUPS: &[&str] = &[
    "networking.istio.io",
    "security.istio.io",
    "telemetry.istio.io",
    "extensions.istio.io",
];

/// A resource being validated: its identity and its spec.
#[derive(Debug)]
pub struct Resource<'a> {
    pub group: &'a str,
    pub version: &'a str,
    pub kind: &'a str,
    pub name: &'a str,
    pub namespace: &'a str,
    pub annotations: Option<&'a Map<String, Value>>,
    pub spec: &'a Value,
}

impl Resource<'_> {
    pub fn annotation(&self, k: &str) -> Option<&str> {
        self.annotations
            .and_then(|a| a.get(k))
            .and_then(Value::as_str)
    }
}

type Rules = fn(&Resource<'_>, &mut Report);

/// Every validated kind: `(group, kind, plural resource name, semantic rules)`.
const KINDS: &[(&str, &str, &str, Rules)] = &[
    (
        "networking.istio.io",
        "VirtualService",
        "virtualservices",
        networking::virtual_service,
    ),
    (
        "networking.istio.io",
        "DestinationRule",
        "destinationrules",
        networking::destination_rule,
    ),
    (
        "networking.istio.io",
        "Gateway",
        "gateways",
        networking::gateway,
    ),
    (
        "networking.istio.io",
        "ServiceEntry",
        "serviceentries",
        networking::service_entry,
    ),
    (
        "networking.istio.io",
        "Sidecar",
        "sidecars",
        networking::sidecar,
    ),
    (
        "networking.istio.io",
        "WorkloadEntry",
        "workloadentries",
        networking::workload_entry,
    ),
    (
        "networking.istio.io",
        "WorkloadGroup",
        "workloadgroups",
        networking::workload_group,
    ),
    (
        "networking.istio.io",
        "EnvoyFilter",
        "envoyfilters",
        networking::envoy_filter,
    ),
    (
        "networking.istio.io",
        "ProxyConfig",
        "proxyconfigs",
        networking::proxy_config,
    ),
    (
        "security.istio.io",
        "AuthorizationPolicy",
        "authorizationpolicies",
        security::authorization_policy,
    ),
    (
        "security.istio.io",
        "PeerAuthentication",
        "peerauthentications",
        security::peer_authentication,
    ),
    (
        "security.istio.io",
        "RequestAuthentication",
        "requestauthentications",
        security::request_authentication,
    ),
    (
        "telemetry.istio.io",
        "Telemetry",
        "telemetries",
        telemetry::telemetry,
    ),
    (
        "extensions.istio.io",
        "WasmPlugin",
        "wasmplugins",
        extensions::wasm_plugin,
    ),
    (
        "extensions.istio.io",
        "TrafficExtension",
        "trafficextensions",
        extensions::traffic_extension,
    ),
];

/// Why a document could not be validated as a resource at all.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Error {
    #[error("resource is not an object")]
    NotAnObject,
    #[error("missing {0}")]
    Missing(&'static str),
    #[error("unrecognized type {kind} in group {group}")]
    UnknownKind { group: String, kind: String },
    #[error("unrecognized version {version} of {group}/{kind}; served versions are {served}")]
    UnknownVersion {
        group: String,
        version: String,
        kind: String,
        served: String,
    },
}

/// The result of validating one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub name: String,
    pub namespace: String,
    pub report: Report,
}

impl Outcome {
    /// `Kind/name`, as findings are listed.
    pub fn id(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }
}

/// Splits `apiVersion` into group and version (the core group is empty).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.rsplit_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

/// True for kinds in the Istio API groups (validated) and the Gateway API (accepted).
pub fn is_validated_group(group: &str) -> bool {
    ISTIO_GROUPS.contains(&group) || group == GATEWAY_API_GROUP
}

/// A validated kind as the API server names it in an AdmissionReview's `request.resource`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServedResource {
    pub group: &'static str,
    pub version: &'static str,
    pub resource: &'static str,
}

/// The validated kind served as `group`/`version`/`resource` (plural), if there is one; its
/// names are istiod's own, never the caller's text.
pub fn served_resource(group: &str, version: &str, resource: &str) -> Option<ServedResource> {
    let (group, kind, resource) = KINDS
        .iter()
        .find(|(g, _, r, _)| *g == group && *r == resource)
        .map(|(g, k, r, _)| (*g, *k, *r))?;
    let served = schema::schemas().get(&format!("{group}/{kind}"))?;
    let version = served.versions.iter().find(|v| *v == version)?;
    Some(ServedResource {
        group,
        version: version.as_str(),
        resource,
    })
}

/// Validates a whole resource (`apiVersion`, `kind`, `metadata`, `spec`).
pub fn validate(obj: &Value) -> Result<Outcome, Error> {
    let map = obj.as_object().ok_or(Error::NotAnObject)?;
    let api_version = map
        .get("apiVersion")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or(Error::Missing("apiVersion"))?;
    let kind = map
        .get("kind")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or(Error::Missing("kind"))?;
    let (group, version) = split_api_version(api_version);
    let empty = Value::Object(Map::new());
    let metadata = map.get("metadata").unwrap_or(&empty);
    let name = common::text(metadata, "name");
    let namespace = common::text(metadata, "namespace");
    let mut outcome = Outcome {
        group: group.to_owned(),
        version: version.to_owned(),
        kind: kind.to_owned(),
        name: name.to_owned(),
        namespace: namespace.to_owned(),
        report: Report::default(),
    };
    if group == GATEWAY_API_GROUP {
        return Ok(outcome);
    }
    let Some((_, _, _, rules)) = KINDS.iter().find(|(g, k, _, _)| *g == group && *k == kind) else {
        return Err(Error::UnknownKind {
            group: group.to_owned(),
            kind: kind.to_owned(),
        });
    };
    let schemas = schema::schemas();
    let kind_schema = schemas.get(&format!("{group}/{kind}"));
    if let Some(ks) = kind_schema {
        if !ks.versions.iter().any(|v| v == version) {
            return Err(Error::UnknownVersion {
                group: group.to_owned(),
                version: version.to_owned(),
                kind: kind.to_owned(),
                served: ks.versions.join(", "),
            });
        }
    }
    let r = &mut outcome.report;
    for k in map.keys() {
        if !TOP_LEVEL_FIELDS.contains(&k.as_str()) {
            r.error(k.as_str(), "unknown field");
        }
    }
    check_metadata(metadata, r);
    let spec = map.get("spec").filter(|s| !s.is_null()).unwrap_or(&empty);
    if let Some(ks) = kind_schema {
        schema::check(spec, &ks.spec, "spec", r);
    }
    let resource = Resource {
        group,
        version,
        kind,
        name,
        namespace,
        annotations: common::obj(metadata, "annotations"),
        spec,
    };
    // Semantic rules read the spec defensively, so they run even over structural errors:
    // a user sees every problem at once.
    if spec.is_object() {
        rules(&resource, r);
    }
    Ok(outcome)
}

/// Why a stored object must not be applied: `Some(message)` for an Istio resource the
/// webhook would deny (the same message), `None` for valid ones and other API groups.
pub fn rejection(raw: &Value) -> Option<String> {
    let api_version = raw.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let (group, _) = split_api_version(api_version);
    if !ISTIO_GROUPS.contains(&group) {
        return None;
    }
    match validate(raw) {
        Ok(o) if o.report.is_valid() => None,
        Ok(o) => Some(format!(
            "configuration is invalid: {}",
            o.report.error_message()
        )),
        Err(e) => Some(e.to_string()),
    }
}

fn check_metadata(metadata: &Value, r: &mut Report) {
    if !metadata.is_object() {
        r.error("metadata", "must be an object");
        return;
    }
    if let Some(annotations) = common::obj(metadata, "annotations") {
        if annotations.contains_key(ALWAYS_REJECT) {
            r.error(
                "metadata.annotations",
                format!("{ALWAYS_REJECT:?} annotation found, rejecting"),
            );
        }
        for a in INTERNAL_ANNOTATIONS {
            if annotations.contains_key(*a) {
                r.error(
                    "metadata.annotations",
                    format!("{a:?} annotation found, this may not be set by users"),
                );
            }
        }
    }
    if let Some(labels) = common::obj(metadata, "labels") {
        common::check_labels_map(labels, "metadata.labels", r, false);
    }
}
