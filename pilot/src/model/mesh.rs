//! Mesh-wide settings (`MeshConfig`), read from `--meshConfig` when the file exists.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::yaml::{self, YamlError};

/// The subset of Istio's MeshConfig istiod acts on. Unknown fields are accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MeshConfig {
    pub trust_domain: String,
    pub root_namespace: String,
    pub connect_timeout: String,
    pub outbound_traffic_policy: OutboundTrafficPolicy,
    pub enable_auto_mtls: bool,
    pub default_config: ProxyConfig,
    /// Other trust domains whose identities count as this one's (authorization policies).
    pub trust_domain_aliases: Vec<String>,
    /// Named providers that CUSTOM authorization policies (and other features) refer to.
    pub extension_providers: Vec<ExtensionProvider>,
    /// TLS of mesh mTLS between sidecars: the inbound side's minimum version and ciphers.
    #[serde(rename = "meshMTLS")]
    pub mesh_mtls: Option<TlsConfig>,
    /// TLS defaults for TLS the user configures (DestinationRule SIMPLE/MUTUAL).
    pub tls_defaults: Option<TlsConfig>,
    /// Extra roots (`caCertificates`); only their trust domains are read here.
    pub ca_certificates: Vec<CaCertificate>,
}

/// `MeshConfig.TLSConfig`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TlsConfig {
    /// `TLS_AUTO` (empty), `TLSV1_2` or `TLSV1_3`.
    pub min_protocol_version: String,
    pub ecdh_curves: Vec<String>,
    pub cipher_suites: Vec<String>,
}

/// One `caCertificates` entry: a root and the trust domains it signs for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CaCertificate {
    pub trust_domains: Vec<String>,
}

/// One `extensionProviders` entry. Only the external authorization kinds are read; an entry
/// of another kind has neither field set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ExtensionProvider {
    pub name: String,
    pub envoy_ext_authz_http: Option<ExtAuthzHttpProvider>,
    pub envoy_ext_authz_grpc: Option<ExtAuthzGrpcProvider>,
}

/// `envoyExtAuthzHttp`: an ext_authz server spoken to over HTTP.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ExtAuthzHttpProvider {
    pub service: String,
    pub port: u32,
    pub timeout: Option<String>,
    pub path_prefix: String,
    pub fail_open: bool,
    pub status_on_error: String,
    pub include_request_headers_in_check: Vec<String>,
    /// Deprecated spelling of `include_request_headers_in_check`, read when that is empty.
    pub include_headers_in_check: Vec<String>,
    pub include_additional_headers_in_check: std::collections::BTreeMap<String, String>,
    pub include_request_body_in_check: Option<ExtAuthzRequestBody>,
    pub headers_to_upstream_on_allow: Vec<String>,
    pub headers_to_downstream_on_deny: Vec<String>,
    pub headers_to_downstream_on_allow: Vec<String>,
}

/// `envoyExtAuthzGrpc`: an ext_authz server spoken to over gRPC.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ExtAuthzGrpcProvider {
    pub service: String,
    pub port: u32,
    pub timeout: Option<String>,
    pub fail_open: bool,
    pub status_on_error: String,
    pub include_request_body_in_check: Option<ExtAuthzRequestBody>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ExtAuthzRequestBody {
    pub max_request_bytes: u32,
    pub allow_partial_message: bool,
    pub pack_as_bytes: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OutboundTrafficPolicy {
    pub mode: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProxyConfig {
    pub discovery_address: String,
    pub proxy_listen_port: u16,
    pub proxy_inbound_listen_port: u16,
    /// The fields istiod itself does not act on (`holdApplicationUntilProxyStarts`,
    /// `proxyMetadata`, ...), kept for the sidecar injector's templates.
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            trust_domain: "cluster.local".into(),
            root_namespace: "istio-system".into(),
            connect_timeout: "10s".into(),
            outbound_traffic_policy: OutboundTrafficPolicy::default(),
            enable_auto_mtls: true,
            default_config: ProxyConfig::default(),
            trust_domain_aliases: Vec::new(),
            extension_providers: Vec::new(),
            mesh_mtls: None,
            tls_defaults: None,
            ca_certificates: Vec::new(),
        }
    }
}

impl Default for OutboundTrafficPolicy {
    fn default() -> Self {
        OutboundTrafficPolicy {
            mode: "ALLOW_ANY".into(),
        }
    }
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            discovery_address: "istiod.istio-system.svc:15012".into(),
            proxy_listen_port: 15001,
            proxy_inbound_listen_port: 15006,
            other: serde_json::Map::new(),
        }
    }
}

/// Why the mesh config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum MeshConfigError {
    #[error("reading mesh config {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing mesh config {path}: {source}")]
    Parse {
        path: String,
        #[source]
        source: YamlError,
    },
}

impl MeshConfig {
    /// Loads the file at `path`; a missing file gives the defaults, as upstream does.
    /// `root_namespace` defaults to istiod's namespace.
    pub fn load(path: &str, istiod_namespace: &str) -> Result<MeshConfig, MeshConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => MeshConfig::from_yaml(&text, istiod_namespace).map_err(|source| {
                MeshConfigError::Parse {
                    path: path.to_owned(),
                    source,
                }
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                MeshConfig::from_yaml("", istiod_namespace).map_err(|source| {
                    MeshConfigError::Parse {
                        path: path.to_owned(),
                        source,
                    }
                })
            }
            Err(source) => Err(MeshConfigError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Parses mesh config YAML (empty text gives the defaults).
    pub fn from_yaml(text: &str, istiod_namespace: &str) -> Result<MeshConfig, YamlError> {
        let value = yaml::single(text)?;
        if value.is_null() {
            return Ok(MeshConfig {
                root_namespace: istiod_namespace.to_owned(),
                ..MeshConfig::default()
            });
        }
        // Upstream's root namespace defaults to istiod's own namespace.
        let explicit_root = value.get("rootNamespace").is_some();
        let mut mesh: MeshConfig = yaml::from_value(value)?;
        if !explicit_root {
            mesh.root_namespace = istiod_namespace.to_owned();
        }
        Ok(mesh)
    }

    pub fn connect_timeout(&self) -> Duration {
        crate::config::istio::parse_duration(&self.connect_timeout)
            .unwrap_or(Duration::from_secs(10))
    }

    /// The trust domains whose peers inbound mTLS accepts, as upstream's
    /// `TrustDomainsForValidation`: this mesh's, its aliases, and those of the extra
    /// roots, without empty names or repeats.
    pub fn trust_domains_for_validation(&self) -> Vec<String> {
        let all = std::iter::once(&self.trust_domain)
            .chain(&self.trust_domain_aliases)
            .chain(self.ca_certificates.iter().flat_map(|c| &c.trust_domains));
        let mut out: Vec<String> = Vec::new();
        for td in all {
            if !td.is_empty() && !out.contains(td) {
                out.push(td.clone());
            }
        }
        out
    }

    pub fn registry_only(&self) -> bool {
        self.outbound_traffic_policy.mode == "REGISTRY_ONLY"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tls_settings_and_trust_domains() {
        let mesh = MeshConfig::from_yaml(
            "trustDomain: td\n\
             trustDomainAliases: [old, td]\n\
             meshMTLS: {minProtocolVersion: TLSV1_3, cipherSuites: [a]}\n\
             tlsDefaults: {ecdhCurves: [X25519]}\n\
             caCertificates: [{pem: x, trustDomains: [other, '']}, {spiffeBundleUrl: y}]\n",
            "istio-system",
        )
        .unwrap();
        let mtls = mesh.mesh_mtls.as_ref().unwrap();
        assert_eq!(mtls.min_protocol_version, "TLSV1_3");
        assert_eq!(mtls.cipher_suites, ["a"]);
        assert_eq!(mesh.tls_defaults.as_ref().unwrap().ecdh_curves, ["X25519"]);
        assert_eq!(mesh.trust_domains_for_validation(), ["td", "old", "other"]);
        let plain = MeshConfig::from_yaml("", "istio-system").unwrap();
        assert_eq!(plain.mesh_mtls, None);
        assert_eq!(plain.trust_domains_for_validation(), ["cluster.local"]);
    }
}
