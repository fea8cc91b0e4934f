//! A configuration object as stored: identity, metadata, typed spec and, for kinds whose
//! typed form is not the whole object, the raw manifest.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::{Deserialize, Serialize};

use super::istio;
use super::kind::Kind;
use super::secrets::{SecretData, SecretKey};

/// Identity of an object: kind, namespace (empty for cluster-scoped) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ConfigKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl ConfigKey {
    /// The key of an object of `kind` from its metadata alone: a namespaced object without
    /// a namespace is in `default`, a cluster-scoped one has none. `None` without a name.
    pub fn from_metadata(kind: Kind, namespace: Option<&str>, name: Option<&str>) -> Option<Self> {
        let name = name.filter(|n| !n.is_empty())?;
        let namespace = if kind.is_namespaced() {
            namespace.filter(|n| !n.is_empty()).unwrap_or("default")
        } else {
            ""
        };
        Some(ConfigKey {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }
}

impl fmt::Display for ConfigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}/{}", self.kind, self.name)
        } else {
            write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// The typed body of an object.
#[derive(Debug, Clone, PartialEq)]
pub enum Spec {
    Namespace(Box<Namespace>),
    Service(Box<Service>),
    EndpointSlice(Box<EndpointSlice>),
    Pod(Box<Pod>),
    ServiceEntry(Box<istio::ServiceEntry>),
    WorkloadEntry(Box<istio::WorkloadEntry>),
    VirtualService(Box<istio::VirtualService>),
    DestinationRule(Box<istio::DestinationRule>),
    Sidecar(Box<istio::Sidecar>),
    Gateway(Box<istio::Gateway>),
    PeerAuthentication(Box<istio::PeerAuthentication>),
    AuthorizationPolicy(Box<istio::AuthorizationPolicy>),
    RequestAuthentication(Box<istio::RequestAuthentication>),
    Node(Box<k8s_openapi::api::core::v1::Node>),
    /// A kind istiod stores (for validation, debugging, later features) but does not yet
    /// turn into xDS: kept as its manifest in [`Config::raw`].
    Other,
}

/// One configuration object.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub key: ConfigKey,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub spec: Spec,
    /// The manifest as read, for `/debug/configz` and validation. `None` for the kinds whose
    /// typed form is the whole object (Namespace, Node, Service, EndpointSlice, Pod): they
    /// are the bulk of a cluster, and [`Config::manifest`] re-encodes them on demand.
    pub raw: Option<serde_json::Value>,
}

impl Config {
    /// The object as a manifest: the raw one, else the typed form encoded again.
    pub fn manifest(&self) -> serde_json::Value {
        if let Some(raw) = &self.raw {
            return raw.clone();
        }
        let encoded = match &self.spec {
            Spec::Namespace(o) => serde_json::to_value(o),
            Spec::Service(o) => serde_json::to_value(o),
            Spec::EndpointSlice(o) => serde_json::to_value(o),
            Spec::Pod(o) => serde_json::to_value(o),
            Spec::Node(o) => serde_json::to_value(o),
            _ => Ok(serde_json::Value::Null),
        };
        encoded.unwrap_or(serde_json::Value::Null)
    }
}

/// Why a manifest could not be turned into a [`Config`].
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("document {doc}: invalid YAML: {source}")]
    Yaml {
        doc: usize,
        #[source]
        source: super::yaml::YamlError,
    },
    #[error("document {doc}: invalid Secret: {source}")]
    Secret {
        doc: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("document {doc}: missing {field}")]
    Missing { doc: usize, field: &'static str },
    #[error("document {doc}: {kind} {name}: invalid {what}: {source}")]
    Spec {
        doc: usize,
        kind: Kind,
        name: String,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

#[derive(Deserialize)]
struct TypeMeta {
    #[serde(rename = "apiVersion")]
    api_version: Option<String>,
    kind: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Metadata {
    name: Option<String>,
    namespace: Option<String>,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

/// What a manifest file held: the objects understood, the Secrets (for SDS, kept apart
/// from config: see `config::secrets`), and the kinds it skipped.
#[derive(Debug, Default)]
pub struct Parsed {
    pub configs: Vec<Config>,
    pub secrets: Vec<(SecretKey, SecretData)>,
    pub skipped: Vec<String>,
}

/// Parses a multi-document YAML (or JSON) text. A `List` is flattened. Kinds istiod does not
/// use are skipped and named in [`Parsed::skipped`]; any error rejects the whole text, so a
/// half-edited file never replaces a good one.
pub fn parse_manifests(text: &str) -> Result<Parsed, ParseError> {
    let mut parsed = Parsed::default();
    for (doc, value) in super::yaml::documents(text).enumerate() {
        let value = value.map_err(|source| ParseError::Yaml { doc, source })?;
        collect(doc, value, &mut parsed)?;
    }
    Ok(parsed)
}

fn collect(doc: usize, value: serde_json::Value, out: &mut Parsed) -> Result<(), ParseError> {
    if value.is_null() {
        return Ok(()); // an empty document (`---` at the end of a file)
    }
    let tm: TypeMeta =
        serde_json::from_value(value.clone()).map_err(|source| ParseError::Spec {
            doc,
            kind: Kind::Namespace,
            name: String::new(),
            what: "type metadata",
            source,
        })?;
    let api_version = tm.api_version.ok_or(ParseError::Missing {
        doc,
        field: "apiVersion",
    })?;
    let kind_name = tm.kind.ok_or(ParseError::Missing { doc, field: "kind" })?;
    if kind_name == "List" {
        if let Some(items) = value.get("items").and_then(|i| i.as_array()) {
            for item in items {
                collect(doc, item.clone(), out)?;
            }
        }
        return Ok(());
    }
    if api_version == "v1" && kind_name == "Secret" {
        let secret =
            serde_json::from_value(value).map_err(|source| ParseError::Secret { doc, source })?;
        match SecretData::from_secret(secret) {
            Some(s) => out.secrets.push(s),
            None => out.skipped.push("v1/Secret".to_owned()),
        }
        return Ok(());
    }
    let Some(kind) = Kind::from_type_meta(&api_version, &kind_name) else {
        out.skipped.push(format!("{api_version}/{kind_name}"));
        return Ok(());
    };
    out.configs.push(to_config(doc, kind, value)?);
    Ok(())
}

/// Turns one manifest of `kind` into a [`Config`].
pub fn to_config(doc: usize, kind: Kind, value: serde_json::Value) -> Result<Config, ParseError> {
    let meta: Metadata = match value.get("metadata") {
        Some(m) => serde_json::from_value(m.clone()).map_err(|source| ParseError::Spec {
            doc,
            kind,
            name: String::new(),
            what: "metadata",
            source,
        })?,
        None => {
            return Err(ParseError::Missing {
                doc,
                field: "metadata",
            })
        }
    };
    let key = ConfigKey::from_metadata(kind, meta.namespace.as_deref(), meta.name.as_deref())
        .ok_or(ParseError::Missing {
            doc,
            field: "metadata.name",
        })?;
    let spec_err = |what, source| ParseError::Spec {
        doc,
        kind,
        name: key.name.clone(),
        what,
        source,
    };
    // Core kinds are typed whole, so the manifest is consumed rather than kept.
    let (spec, raw) = match kind {
        Kind::Namespace => (
            Spec::Namespace(Box::new(
                serde_json::from_value(value).map_err(|e| spec_err("Namespace", e))?,
            )),
            None,
        ),
        Kind::Service => (
            Spec::Service(Box::new(
                serde_json::from_value(value).map_err(|e| spec_err("Service", e))?,
            )),
            None,
        ),
        Kind::EndpointSlice => (
            Spec::EndpointSlice(Box::new(
                serde_json::from_value(value).map_err(|e| spec_err("EndpointSlice", e))?,
            )),
            None,
        ),
        Kind::Pod => (
            Spec::Pod(Box::new(
                serde_json::from_value(value).map_err(|e| spec_err("Pod", e))?,
            )),
            None,
        ),
        Kind::Node => (
            Spec::Node(Box::new(
                serde_json::from_value(value).map_err(|e| spec_err("Node", e))?,
            )),
            None,
        ),
        _ => (
            istio_spec(kind, &value).map_err(|e| spec_err("spec", e))?,
            Some(value),
        ),
    };
    Ok(Config {
        key,
        labels: meta.labels,
        annotations: meta.annotations,
        spec,
        raw,
    })
}

/// The typed spec of an Istio kind; kinds not yet turned into xDS are [`Spec::Other`].
fn istio_spec(kind: Kind, value: &serde_json::Value) -> Result<Spec, serde_json::Error> {
    fn typed<T: serde::de::DeserializeOwned>(v: &serde_json::Value) -> serde_json::Result<Box<T>> {
        match v.get("spec") {
            Some(spec) => T::deserialize(spec).map(Box::new),
            None => serde_json::from_value(serde_json::Value::Null).map(Box::new),
        }
    }
    Ok(match kind {
        Kind::ServiceEntry => Spec::ServiceEntry(typed(value)?),
        Kind::WorkloadEntry => Spec::WorkloadEntry(typed(value)?),
        Kind::VirtualService => Spec::VirtualService(typed(value)?),
        Kind::DestinationRule => Spec::DestinationRule(typed(value)?),
        Kind::Sidecar => Spec::Sidecar(typed(value)?),
        Kind::Gateway => Spec::Gateway(typed(value)?),
        Kind::PeerAuthentication => Spec::PeerAuthentication(typed(value)?),
        Kind::AuthorizationPolicy => Spec::AuthorizationPolicy(typed(value)?),
        Kind::RequestAuthentication => Spec::RequestAuthentication(typed(value)?),
        _ => Spec::Other,
    })
}

#[cfg(test)]
mod tests;
