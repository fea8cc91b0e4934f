//! The injector's configuration, as upstream reads it: the `config` and `values` keys of
//! the `istio-sidecar-injector[-<rev>]` ConfigMap (mounted as
//! `/var/lib/istio/inject/config` and `values`). `config` holds the policy, the
//! selectors that force or refuse injection, the annotations added to every injected
//! pod, and the templates with their default list and aliases; `values` the chart's
//! Helm values, which templates read as `.Values`.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::Deserialize;
use serde_json::{Map, Value};
use tracing::warn;

use super::selector::Selector;
use super::template::{self, Templates};
use crate::config::yaml::{self, YamlError};

/// The template used when neither the config nor the pod names one.
pub const SIDECAR_TEMPLATE: &str = "sidecar";
/// Pod annotation naming the templates to apply, comma-separated.
pub const TEMPLATES_ANNOTATION: &str = "inject.istio.io/templates";

/// Why a configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading the injection {key}: {source}")]
    Yaml {
        key: &'static str,
        #[source]
        source: YamlError,
    },
    #[error("the injection {key} has the wrong shape: {source}")]
    Shape {
        key: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("injection values must be a map, not {0}")]
    ValuesNotAMap(&'static str),
    #[error("injection template {name:?}: {source}")]
    Template {
        name: String,
        #[source]
        source: template::Error,
    },
}

/// Whether pods are injected when neither they nor the selectors say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Policy {
    /// Inject unless the pod opts out.
    Enabled,
    /// Inject only pods that opt in.
    Disabled,
    /// Any other value: as upstream, logged and treated as injecting nothing by default.
    Invalid(String),
}

impl Policy {
    fn parse(s: &str) -> Self {
        match s {
            "enabled" => Policy::Enabled,
            "disabled" => Policy::Disabled,
            other => {
                warn!(policy = other, "invalid injection policy, must be enabled or disabled: pods are injected only when they ask");
                Policy::Invalid(other.to_owned())
            }
        }
    }
}

/// The `config` key as written: every field optional, unknown ones ignored.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawConfig {
    policy: Option<String>,
    default_templates: Option<Vec<String>>,
    templates: Option<BTreeMap<String, String>>,
    aliases: Option<BTreeMap<String, Vec<String>>>,
    never_inject_selector: Option<Vec<LabelSelector>>,
    always_inject_selector: Option<Vec<LabelSelector>>,
    injected_annotations: Option<BTreeMap<String, String>>,
}

/// The parsed `config`.
#[derive(Debug, Clone)]
pub struct Config {
    pub policy: Policy,
    /// Templates applied to a pod that names none (`sidecar` when the config names none).
    pub default_templates: Vec<String>,
    /// Each template parsed in a set of its own, as upstream parses each separately.
    pub templates: BTreeMap<String, Templates>,
    /// A name standing for several templates; expanded once, not recursively.
    pub aliases: BTreeMap<String, Vec<String>>,
    /// Pods matching any of these are never injected (before `always_inject_selector`).
    pub never_inject_selector: Vec<Selector>,
    /// Pods matching any of these are injected whatever the policy.
    pub always_inject_selector: Vec<Selector>,
    /// Added to every injected pod's annotations.
    pub injected_annotations: BTreeMap<String, String>,
}

impl Config {
    /// Parses the `config` key. Every template must parse; a selector Kubernetes would
    /// refuse is left out with a warning, as upstream skips it when matching.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let key = "config";
        let value = yaml::single(text).map_err(|source| ConfigError::Yaml { key, source })?;
        let raw: RawConfig = if value.is_null() {
            RawConfig::default()
        } else {
            serde_json::from_value(value).map_err(|source| ConfigError::Shape { key, source })?
        };
        let raw_templates = raw.templates.unwrap_or_default();
        if raw_templates.is_empty() {
            warn!("injection templates are empty: the config may be from an older Istio, and pods would not be injected");
        }
        let mut templates = BTreeMap::new();
        for (name, text) in raw_templates {
            let mut set = Templates::new();
            set.parse(&name, &text)
                .map_err(|source| ConfigError::Template {
                    name: name.clone(),
                    source,
                })?;
            templates.insert(name, set);
        }
        let default_templates = match raw.default_templates {
            Some(names) if !names.is_empty() => names,
            _ => vec![SIDECAR_TEMPLATE.to_owned()],
        };
        Ok(Config {
            policy: Policy::parse(raw.policy.as_deref().unwrap_or_default()),
            default_templates,
            templates,
            aliases: raw.aliases.unwrap_or_default(),
            never_inject_selector: selectors("neverInjectSelector", raw.never_inject_selector),
            always_inject_selector: selectors("alwaysInjectSelector", raw.always_inject_selector),
            injected_annotations: raw.injected_annotations.unwrap_or_default(),
        })
    }

    /// The templates for a pod: those its `inject.istio.io/templates` annotation names,
    /// else the defaults; aliases expanded.
    pub fn select_templates(&self, annotations: &BTreeMap<String, String>) -> Vec<String> {
        let names: Vec<String> = match annotations.get(TEMPLATES_ANNOTATION) {
            Some(list) => list.split(',').map(|n| n.trim().to_owned()).collect(),
            None => self.default_templates.clone(),
        };
        names
            .into_iter()
            .flat_map(|name| match self.aliases.get(&name) {
                Some(expanded) => expanded.clone(),
                None => vec![name],
            })
            .collect()
    }

    /// Whether a non-empty `neverInjectSelector` entry matches the labels.
    pub fn never_inject(&self, labels: &BTreeMap<String, String>) -> bool {
        any_matches(&self.never_inject_selector, labels)
    }

    /// Whether a non-empty `alwaysInjectSelector` entry matches the labels.
    pub fn always_inject(&self, labels: &BTreeMap<String, String>) -> bool {
        any_matches(&self.always_inject_selector, labels)
    }
}

fn selectors(field: &'static str, raw: Option<Vec<LabelSelector>>) -> Vec<Selector> {
    raw.unwrap_or_default()
        .iter()
        .filter_map(|s| match Selector::new(s) {
            Ok(selector) => Some(selector),
            Err(error) => {
                warn!(field, %error, "skipping an injection selector");
                None
            }
        })
        .collect()
}

/// As upstream, an empty selector selects nothing here.
fn any_matches(selectors: &[Selector], labels: &BTreeMap<String, String>) -> bool {
    selectors.iter().any(|s| !s.is_empty() && s.matches(labels))
}

/// The `values` key: the chart's Helm values, given to templates as `.Values`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Values(Map<String, Value>);

impl Values {
    /// Parses the `values` key (YAML or JSON); empty is no values.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let key = "values";
        match yaml::single(text).map_err(|source| ConfigError::Yaml { key, source })? {
            Value::Object(map) => Ok(Values(map)),
            Value::Null => Ok(Values::default()),
            Value::Array(_) => Err(ConfigError::ValuesNotAMap("a list")),
            _ => Err(ConfigError::ValuesNotAMap("a scalar")),
        }
    }

    /// The values as one JSON object, for template data.
    pub fn to_value(&self) -> Value {
        Value::Object(self.0.clone())
    }

    /// The value at a dotted path (`global.proxy.image`), if there is one.
    pub fn get(&self, path: &str) -> Option<&Value> {
        let mut parts = path.split('.');
        let first = self.0.get(parts.next()?)?;
        parts.try_fold(first, |v, part| v.get(part))
    }
}
