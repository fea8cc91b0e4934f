//! Envoy TLS contexts for mesh traffic, as upstream builds them.
//!
//! Certificates never travel in config: every context names secrets the proxy's agent serves
//! over SDS on its local `sds-grpc` cluster (`default` for the workload certificate, `ROOTCA`
//! for the mesh roots), or file paths / Secrets the user named in a DestinationRule.

use envoy_types::pb::envoy::config::core::v3::{
    api_config_source::ApiType, config_source::ConfigSourceSpecifier, grpc_service,
    transport_socket, ApiConfigSource, ApiVersion, ConfigSource, GrpcService, TransportSocket,
};
use envoy_types::pb::envoy::extensions::transport_sockets::raw_buffer::v3::RawBuffer;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context::{CombinedCertificateValidationContext, ValidationContextType},
    tls_parameters::TlsProtocol,
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig,
    TlsParameters, UpstreamTlsContext,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher::MatchPattern, StringMatcher};
use envoy_types::pb::google::protobuf::{BoolValue, Duration};
use prost::{Message, Name};

use crate::config::istio::ClientTlsSettings;
use crate::model::mesh::{MeshConfig, TlsConfig};
use crate::xds::gen::filters::{ads_config_source, any};

pub mod gateway;

/// The agent's SDS cluster.
pub const SDS_CLUSTER: &str = "sds-grpc";
/// The workload certificate's SDS name.
pub const SDS_DEFAULT: &str = "default";
/// The mesh roots' SDS name.
pub const SDS_ROOT: &str = "ROOTCA";
/// Suffix of the SDS name of a credential's CA certificate.
pub const SDS_CA_SUFFIX: &str = "-cacert";
pub const TLS_TRANSPORT_SOCKET: &str = "envoy.transport_sockets.tls";
pub const RAW_BUFFER_TRANSPORT_SOCKET: &str = "envoy.transport_sockets.raw_buffer";

/// ALPN an inbound HTTP port offers.
pub const ALPN_HTTP: [&str; 2] = ["h2", "http/1.1"];
/// ALPN an inbound TCP port offers: metadata exchange, then HTTP.
pub const ALPN_DOWNSTREAM_WITH_MXC: [&str; 3] = ["istio-peer-exchange", "h2", "http/1.1"];
/// ALPN a client in the mesh sends: `istio` marks in-mesh traffic for the server's chains.
pub const ALPN_IN_MESH_WITH_MXC: [&str; 2] = ["istio-peer-exchange", "istio"];
pub const ALPN_IN_MESH_H2_WITH_MXC: [&str; 3] = ["istio-peer-exchange", "istio", "h2"];
pub const ALPN_H2_ONLY: [&str; 1] = ["h2"];

/// The cipher suites inbound mTLS accepts when the mesh sets none (TLS 1.2; TLS 1.3 suites
/// are not configurable in Envoy).
pub const SUPPORTED_CIPHERS: [&str; 6] = [
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-GCM-SHA256",
];

/// Which kind of chain an inbound context serves; it decides the ALPN offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerProtocol {
    Http,
    Tcp,
}

/// Why a DestinationRule's TLS settings cannot become a context.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TlsError {
    #[error("cluster {cluster}: tls mode MUTUAL needs clientCertificate and privateKey (or credentialName)")]
    MutualWithoutCertificate { cluster: String },
}

fn strings<const N: usize>(v: [&str; N]) -> Vec<String> {
    v.map(str::to_owned).to_vec()
}

/// An SDS secret fetched from the agent. The workload certificate and roots are requested
/// with no initial fetch timeout, so listeners wait for them instead of starting without.
pub fn sds_secret(name: &str) -> SdsSecretConfig {
    let agent_owned = name == SDS_DEFAULT || name == SDS_ROOT;
    SdsSecretConfig {
        name: name.to_owned(),
        sds_config: Some(ConfigSource {
            config_source_specifier: Some(ConfigSourceSpecifier::ApiConfigSource(
                ApiConfigSource {
                    api_type: ApiType::Grpc as i32,
                    set_node_on_first_message_only: true,
                    transport_api_version: ApiVersion::V3 as i32,
                    grpc_services: vec![GrpcService {
                        target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                            grpc_service::EnvoyGrpc {
                                cluster_name: SDS_CLUSTER.to_owned(),
                                ..Default::default()
                            },
                        )),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            )),
            resource_api_version: ApiVersion::V3 as i32,
            initial_fetch_timeout: agent_owned.then_some(Duration {
                seconds: 0,
                nanos: 0,
            }),
            ..Default::default()
        }),
    }
}

/// The SDS name of a `credentialName` (`kubernetes://` prefixed as upstream names it).
pub fn credential_resource(name: &str) -> String {
    if name.contains("://") {
        name.to_owned()
    } else {
        format!("kubernetes://{name}")
    }
}

/// A Gateway's `credentialName` secret, fetched from istiod over the ADS stream (not from
/// the agent), as upstream's `ConstructSdsSecretConfigForCredential`.
pub fn credential_secret(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: credential_resource(name),
        sds_config: Some(ads_config_source()),
    }
}

/// A transport socket carrying a TLS context.
pub fn tls_socket<M: Message + Name>(context: &M) -> TransportSocket {
    TransportSocket {
        name: TLS_TRANSPORT_SOCKET.to_owned(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(context))),
    }
}

/// Plaintext, named explicitly (in transport socket matches).
pub fn raw_buffer_socket() -> TransportSocket {
    TransportSocket {
        name: RAW_BUFFER_TRANSPORT_SOCKET.to_owned(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(
            &RawBuffer::default(),
        ))),
    }
}

fn exact(values: &[String]) -> Vec<StringMatcher> {
    values
        .iter()
        .map(|v| StringMatcher {
            match_pattern: Some(MatchPattern::Exact(v.clone())),
            ..Default::default()
        })
        .collect()
}

// Upstream still sends the SAN matchers in `match_subject_alt_names` (deprecated in favour of
// the typed form, which it does not use); every supported Envoy accepts it.
#[allow(deprecated)]
fn combined_validation(
    sans: Vec<StringMatcher>,
    roots: SdsSecretConfig,
) -> Option<ValidationContextType> {
    Some(ValidationContextType::CombinedValidationContext(
        CombinedCertificateValidationContext {
            default_validation_context: Some(CertificateValidationContext {
                match_subject_alt_names: sans,
                ..Default::default()
            }),
            validation_context_sds_secret_config: Some(roots),
            ..Default::default()
        },
    ))
}

/// What the mesh config decides of inbound mesh mTLS, as upstream's `BuildInboundTLS`
/// reads it: the minimum version and cipher suites of `meshMTLS`, and the trust domains
/// whose client certificates are accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundMtlsSettings {
    pub min_version: TlsProtocol,
    pub cipher_suites: Vec<String>,
    /// Client SANs must start with `spiffe://<one of these>/`.
    pub trust_domains: Vec<String>,
}

impl InboundMtlsSettings {
    /// `skip_trust_domain` (`PILOT_SKIP_VALIDATE_TRUST_DOMAIN`) leaves the trust domains
    /// empty, as upstream's `TrustDomainsForValidation`: any peer the roots sign is accepted.
    pub fn from_mesh(mesh: &MeshConfig, skip_trust_domain: bool) -> Self {
        let mesh_mtls = mesh.mesh_mtls.as_ref();
        let cipher_suites = mesh_mtls
            .map(|t| t.cipher_suites.clone())
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| strings(SUPPORTED_CIPHERS));
        InboundMtlsSettings {
            min_version: min_tls_version(mesh_mtls.map_or("", |t| t.min_protocol_version.as_str())),
            cipher_suites,
            trust_domains: if skip_trust_domain {
                Vec::new()
            } else {
                mesh.trust_domains_for_validation()
            },
        }
    }
}

/// A mesh config `TLSProtocol` as Envoy's minimum version: TLS 1.3 when asked for, else
/// TLS 1.2 (`TLS_AUTO` and unknown values too, as upstream's `GetMinTLSVersion`).
pub fn min_tls_version(v: &str) -> TlsProtocol {
    match v {
        "TLSV1_3" => TlsProtocol::TlSv13,
        _ => TlsProtocol::TlSv12,
    }
}

/// The server side of mesh mTLS on an inbound port: the workload certificate, client
/// certificates required and checked against the mesh roots and the trust domains.
pub fn inbound_mtls(
    protocol: ListenerProtocol,
    settings: &InboundMtlsSettings,
) -> DownstreamTlsContext {
    let alpn = match protocol {
        ListenerProtocol::Http => strings(ALPN_HTTP),
        ListenerProtocol::Tcp => strings(ALPN_DOWNSTREAM_WITH_MXC),
    };
    let sans = settings
        .trust_domains
        .iter()
        .map(|td| StringMatcher {
            match_pattern: Some(MatchPattern::Prefix(format!("spiffe://{td}/"))),
            ..Default::default()
        })
        .collect();
    DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            alpn_protocols: alpn,
            tls_params: Some(TlsParameters {
                tls_minimum_protocol_version: settings.min_version as i32,
                tls_maximum_protocol_version: TlsProtocol::TlSv13 as i32,
                cipher_suites: settings.cipher_suites.clone(),
                ..Default::default()
            }),
            tls_certificate_sds_secret_configs: vec![sds_secret(SDS_DEFAULT)],
            validation_context_type: combined_validation(sans, sds_secret(SDS_ROOT)),
            ..Default::default()
        }),
        require_client_certificate: Some(BoolValue { value: true }),
        ..Default::default()
    }
}

fn upstream_common() -> CommonTlsContext {
    CommonTlsContext {
        tls_params: Some(TlsParameters {
            tls_minimum_protocol_version: TlsProtocol::TlSv12 as i32,
            tls_maximum_protocol_version: TlsProtocol::TlSv13 as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The client side of mesh mTLS (`ISTIO_MUTUAL`): the workload certificate, the server's
/// identity checked against `sans`, in-mesh ALPN.
pub fn istio_mutual(sans: &[String], sni: &str, http2: bool) -> UpstreamTlsContext {
    let mut common = upstream_common();
    common.tls_certificate_sds_secret_configs = vec![sds_secret(SDS_DEFAULT)];
    common.validation_context_type = combined_validation(exact(sans), sds_secret(SDS_ROOT));
    common.alpn_protocols = if http2 {
        strings(ALPN_IN_MESH_H2_WITH_MXC)
    } else {
        strings(ALPN_IN_MESH_WITH_MXC)
    };
    UpstreamTlsContext {
        common_tls_context: Some(common),
        sni: sni.to_owned(),
        ..Default::default()
    }
}

/// TLS to a server outside the mesh (`SIMPLE`, or `MUTUAL` with a client certificate) as a
/// DestinationRule configures it: from a Secret (`credentialName`, over SDS from the agent)
/// or from files in the proxy's container (also fetched over SDS by path, as upstream does).
/// The mesh's `tlsDefaults` (ECDH curves and cipher suites) apply, as upstream's
/// `applyTLSDefaults`; its minimum version does not (upstream applies it to gateways'
/// server TLS only).
pub fn user_tls(
    tls: &ClientTlsSettings,
    cluster: &str,
    mutual: bool,
    http2: bool,
    defaults: Option<&TlsConfig>,
) -> Result<UpstreamTlsContext, TlsError> {
    let mut common = upstream_common();
    if let (Some(d), Some(params)) = (defaults, common.tls_params.as_mut()) {
        if !d.ecdh_curves.is_empty() {
            params.ecdh_curves = d.ecdh_curves.clone();
        }
        if !d.cipher_suites.is_empty() {
            params.cipher_suites = d.cipher_suites.clone();
        }
    }
    let sans = tls.subject_alt_names.clone().unwrap_or_default();
    let skip_verify = tls.insecure_skip_verify == Some(true);
    if let Some(credential) = tls.credential_name.as_deref().filter(|c| !c.is_empty()) {
        let resource = credential_resource(credential);
        if mutual {
            common.tls_certificate_sds_secret_configs = vec![sds_secret(&resource)];
        }
        if !skip_verify {
            common.validation_context_type = combined_validation(
                exact(&sans),
                sds_secret(&format!("{resource}{SDS_CA_SUFFIX}")),
            );
        }
    } else {
        if mutual {
            let (Some(cert), Some(key)) = (
                tls.client_certificate.as_deref().filter(|s| !s.is_empty()),
                tls.private_key.as_deref().filter(|s| !s.is_empty()),
            ) else {
                return Err(TlsError::MutualWithoutCertificate {
                    cluster: cluster.to_owned(),
                });
            };
            common.tls_certificate_sds_secret_configs =
                vec![sds_secret(&format!("file-cert:{cert}~{key}"))];
        }
        let ca = tls
            .ca_certificates
            .as_deref()
            .filter(|s| !s.is_empty())
            .unwrap_or("system");
        if skip_verify {
            // An empty validation context: nothing to verify against, as upstream sends.
            common.validation_context_type = Some(ValidationContextType::ValidationContext(
                CertificateValidationContext::default(),
            ));
        } else {
            common.validation_context_type =
                combined_validation(exact(&sans), sds_secret(&format!("file-root:{ca}")));
        }
    }
    if http2 {
        common.alpn_protocols = strings(ALPN_H2_ONLY);
    }
    Ok(UpstreamTlsContext {
        common_tls_context: Some(common),
        sni: tls.sni.clone().unwrap_or_default(),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests;
