//! `security.istio.io/v1` RequestAuthentication: the JWT rules a workload accepts. Field
//! names follow the CRD's JSON form (camelCase), as `kubectl` and `--configDir` carry them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::security::PolicyTargetReference;
use super::LabelSelector;

/// How long Envoy or istiod waits for a JWKS server when a rule names no `timeout`.
pub const DEFAULT_JWKS_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RequestAuthentication {
    /// Workloads (by label) the policy applies to; none: every workload of the namespace
    /// (of the mesh in the root namespace).
    pub selector: Option<LabelSelector>,
    /// Gateway/waypoint attachment; a policy with a target never applies to sidecars.
    pub target_ref: Option<PolicyTargetReference>,
    pub target_refs: Vec<PolicyTargetReference>,
    pub jwt_rules: Vec<JwtRule>,
}

impl RequestAuthentication {
    /// Whether the policy names a target (`targetRef` or `targetRefs`), which takes it
    /// away from selector-based attachment.
    pub fn has_target(&self) -> bool {
        self.target_ref.is_some() || !self.target_refs.is_empty()
    }
}

/// One accepted issuer: where its keys are, where the token is, and what to pass on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct JwtRule {
    pub issuer: String,
    pub audiences: Vec<String>,
    /// Where the keys are published; istiod fetches it (see `security::jwks`). Empty with
    /// no `jwks`: found through OpenID discovery on the issuer.
    pub jwks_uri: String,
    /// The keys inline (a JWKS JSON document).
    pub jwks: String,
    pub from_headers: Vec<JwtHeader>,
    pub from_params: Vec<String>,
    pub from_cookies: Vec<String>,
    pub output_payload_to_header: String,
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    pub forward_original_token: bool,
    /// Claims whose space-separated string values are split into lists (added to
    /// `scope` and `permission`, which always are).
    pub space_delimited_claims: Vec<String>,
    /// JWKS fetch timeout, a protobuf JSON duration (`"5s"`).
    pub timeout: Option<String>,
}

impl JwtRule {
    /// The fetch timeout: the rule's, else [`DEFAULT_JWKS_TIMEOUT`]; an unreadable or zero
    /// value also falls back, since validation has already refused it in a live cluster.
    pub fn timeout(&self) -> Duration {
        self.timeout
            .as_deref()
            .and_then(super::parse_duration)
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_JWKS_TIMEOUT)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct JwtHeader {
    pub name: String,
    pub prefix: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClaimToHeader {
    pub header: String,
    pub claim: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_field() {
        let ra: RequestAuthentication = serde_json::from_value(serde_json::json!({
            "selector": {"matchLabels": {"app": "httpbin"}},
            "jwtRules": [{
                "issuer": "https://example.com",
                "audiences": ["a", "b"],
                "jwksUri": "https://example.com/keys",
                "fromHeaders": [{"name": "x-jwt", "prefix": "Bearer "}],
                "fromParams": ["token"],
                "fromCookies": ["session"],
                "outputPayloadToHeader": "x-payload",
                "outputClaimToHeaders": [{"header": "x-sub", "claim": "sub"}],
                "forwardOriginalToken": true,
                "spaceDelimitedClaims": ["roles"],
                "timeout": "1.5s"
            }]
        }))
        .unwrap();
        assert!(!ra.has_target());
        let rule = &ra.jwt_rules[0];
        assert_eq!(rule.from_headers[0].prefix, "Bearer ");
        assert_eq!(rule.output_claim_to_headers[0].claim, "sub");
        assert!(rule.forward_original_token);
        assert_eq!(rule.timeout(), Duration::from_millis(1500));
        assert_eq!(
            ra.selector
                .unwrap()
                .match_labels
                .get("app")
                .map(String::as_str),
            Some("httpbin")
        );
    }

    #[test]
    fn timeout_falls_back() {
        for t in [None, Some("0s"), Some("soon")] {
            let rule = JwtRule {
                timeout: t.map(str::to_owned),
                ..Default::default()
            };
            assert_eq!(rule.timeout(), DEFAULT_JWKS_TIMEOUT, "{t:?}");
        }
    }

    #[test]
    fn target_ref_forms() {
        let one: RequestAuthentication = serde_json::from_value(
            serde_json::json!({"targetRef": {"kind": "Gateway", "name": "gw"}}),
        )
        .unwrap();
        let many: RequestAuthentication = serde_json::from_value(
            serde_json::json!({"targetRefs": [{"kind": "Service", "name": "svc"}]}),
        )
        .unwrap();
        assert!(one.has_target() && many.has_target());
    }
}
