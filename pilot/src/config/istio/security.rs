//! `security.istio.io` specs istiod turns into xDS: AuthorizationPolicy.

use serde::{Deserialize, Serialize};

use super::{LabelSelector, Labels};

/// An AuthorizationPolicy spec: which workloads, which action, which requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AuthorizationPolicy {
    pub selector: Option<LabelSelector>,
    /// Deprecated single form of `target_refs`; read only when `target_refs` is empty.
    pub target_ref: Option<PolicyTargetReference>,
    pub target_refs: Vec<PolicyTargetReference>,
    pub action: Action,
    /// The extension provider of a CUSTOM policy.
    pub provider: Option<ExtensionProvider>,
    /// `None` entries are rules written as `null`, which upstream skips with an error.
    pub rules: Vec<Option<Rule>>,
}

impl AuthorizationPolicy {
    /// `targetRefs`, or the legacy `targetRef` when that is all there is.
    pub fn target_refs(&self) -> Vec<&PolicyTargetReference> {
        if self.target_refs.is_empty() {
            self.target_ref.iter().collect()
        } else {
            self.target_refs.iter().collect()
        }
    }

    /// The workload labels the policy selects; `None` selects every workload.
    pub fn match_labels(&self) -> Option<&Labels> {
        self.selector.as_ref().map(|s| &s.match_labels)
    }
}

/// What a matching policy does. Unknown values are kept so that they can be reported.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Action {
    #[default]
    Allow,
    Deny,
    Audit,
    Custom,
    #[serde(untagged)]
    Unknown(String),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ExtensionProvider {
    pub name: String,
}

/// A reference to the object a policy attaches to (a Gateway, a Service...).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PolicyTargetReference {
    pub group: String,
    pub kind: String,
    pub name: String,
    pub namespace: String,
}

/// One rule: it matches when some `from`, some `to` and every `when` match.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Rule {
    pub from: Vec<From>,
    pub to: Vec<To>,
    pub when: Vec<Condition>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct From {
    pub source: Option<Source>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct To {
    pub operation: Option<Operation>,
}

/// Who sends the request. Each field is a list of values, any of which may match.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Source {
    pub principals: Vec<String>,
    pub not_principals: Vec<String>,
    pub request_principals: Vec<String>,
    pub not_request_principals: Vec<String>,
    pub namespaces: Vec<String>,
    pub not_namespaces: Vec<String>,
    pub service_accounts: Vec<String>,
    pub not_service_accounts: Vec<String>,
    pub trust_domains: Vec<String>,
    pub not_trust_domains: Vec<String>,
    pub ip_blocks: Vec<String>,
    pub not_ip_blocks: Vec<String>,
    pub remote_ip_blocks: Vec<String>,
    pub not_remote_ip_blocks: Vec<String>,
}

/// What the request asks for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Operation {
    pub hosts: Vec<String>,
    pub not_hosts: Vec<String>,
    pub ports: Vec<String>,
    pub not_ports: Vec<String>,
    pub methods: Vec<String>,
    pub not_methods: Vec<String>,
    pub paths: Vec<String>,
    pub not_paths: Vec<String>,
}

/// A `when` condition on an attribute such as `request.headers[x-token]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Condition {
    pub key: String,
    pub values: Vec<String>,
    pub not_values: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_policy() {
        let p: AuthorizationPolicy = serde_json::from_value(serde_json::json!({
            "selector": {"matchLabels": {"app": "httpbin"}},
            "action": "DENY",
            "rules": [
                {"from": [{"source": {"notIpBlocks": ["1.2.3.4"]}}],
                 "to": [{"operation": {"methods": ["GET"]}}],
                 "when": [{"key": "source.ip", "values": ["10.0.0.0/8"]}]},
                null
            ]
        }))
        .unwrap();
        assert_eq!(p.action, Action::Deny);
        assert_eq!(p.rules.len(), 2);
        assert!(p.rules[1].is_none());
        let rule = p.rules[0].as_ref().unwrap();
        let source = rule.from[0].source.as_ref().unwrap();
        assert_eq!(source.not_ip_blocks, ["1.2.3.4"]);
        assert_eq!(p.match_labels().unwrap()["app"], "httpbin");
    }

    #[test]
    fn action_defaults_to_allow_and_keeps_unknown_values() {
        let p: AuthorizationPolicy = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(p.action, Action::Allow);
        let p: AuthorizationPolicy =
            serde_json::from_value(serde_json::json!({"action": "BOGUS"})).unwrap();
        assert_eq!(p.action, Action::Unknown("BOGUS".into()));
    }

    #[test]
    fn legacy_target_ref_is_used_only_alone() {
        let p: AuthorizationPolicy = serde_json::from_value(serde_json::json!({
            "targetRef": {"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "a"}
        }))
        .unwrap();
        assert_eq!(p.target_refs()[0].name, "a");
        let p: AuthorizationPolicy = serde_json::from_value(serde_json::json!({
            "targetRef": {"kind": "Gateway", "name": "a"},
            "targetRefs": [{"kind": "Gateway", "name": "b"}]
        }))
        .unwrap();
        let names: Vec<&str> = p.target_refs().iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["b"]);
    }
}
