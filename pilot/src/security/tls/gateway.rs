//! The server side of a Gateway server's `tls` (upstream's `BuildListenerTLSContext`).
//!
//! Certificates never travel in config. A `credentialName` is fetched from istiod itself
//! over the ADS stream (`kubernetes://<name>`, its CA as `kubernetes://<name>-cacert`);
//! `ISTIO_MUTUAL` uses the agent's workload certificate and roots (`default`, `ROOTCA` on
//! `sds-grpc`); file paths are served by the agent as `file-cert:`/`file-root:` secrets.

use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context::ValidationContextType, tls_parameters::TlsProtocol,
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, TlsParameters,
};
use envoy_types::pb::google::protobuf::BoolValue;

use super::{
    combined_validation, credential_secret, exact, min_tls_version, sds_secret, strings,
    ALPN_DOWNSTREAM_WITH_MXC, ALPN_HTTP, SDS_CA_SUFFIX, SDS_DEFAULT, SDS_ROOT,
};
use crate::config::istio::ServerTlsSettings;
use crate::model::gateway::TlsMode;
use crate::model::mesh::TlsConfig;

/// The `DownstreamTlsContext` of a Gateway server that terminates TLS. `tcp_terminated`:
/// the server is not HTTP(S) (an `ISTIO_MUTUAL` TCP server then offers metadata exchange
/// first, as upstream). `None` for passthrough modes.
pub fn gateway_server_tls(
    tls: &ServerTlsSettings,
    tcp_terminated: bool,
    mesh_defaults: Option<&TlsConfig>,
) -> Option<DownstreamTlsContext> {
    let mode = TlsMode::parse(tls.mode.as_deref());
    if mode.is_passthrough() {
        return None;
    }
    let alpn = if mode == TlsMode::IstioMutual && tcp_terminated {
        strings(ALPN_DOWNSTREAM_WITH_MXC)
    } else {
        strings(ALPN_HTTP)
    };
    let require_client = matches!(mode, TlsMode::Mutual | TlsMode::IstioMutual);
    let validate_client = require_client || mode == TlsMode::OptionalMutual;
    let mut common = CommonTlsContext {
        alpn_protocols: alpn,
        ..Default::default()
    };
    let credentials: Vec<&str> = if tls.credential_names.is_empty() {
        Some(tls.credential_name.as_str())
            .filter(|c| !c.is_empty())
            .into_iter()
            .collect()
    } else {
        tls.credential_names.iter().map(String::as_str).collect()
    };
    if mode == TlsMode::IstioMutual {
        common.tls_certificate_sds_secret_configs = vec![sds_secret(SDS_DEFAULT)];
        if validate_client {
            common.validation_context_type =
                combined_validation(exact(&tls.subject_alt_names), sds_secret(SDS_ROOT));
        }
    } else if let Some(first) = credentials.first() {
        common.tls_certificate_sds_secret_configs =
            credentials.iter().map(|c| credential_secret(c)).collect();
        let ca = if tls.ca_cert_credential_name.is_empty() {
            format!("{first}{SDS_CA_SUFFIX}")
        } else {
            tls.ca_cert_credential_name.clone()
        };
        if matches!(mode, TlsMode::Mutual | TlsMode::OptionalMutual) {
            common.validation_context_type =
                combined_validation(exact(&tls.subject_alt_names), credential_secret(&ca));
        } else if !tls.subject_alt_names.is_empty() {
            common.validation_context_type = Some(ValidationContextType::ValidationContext(
                #[allow(deprecated)]
                CertificateValidationContext {
                    match_subject_alt_names: exact(&tls.subject_alt_names),
                    ..Default::default()
                },
            ));
        }
    } else {
        // Files in the gateway's container, served by its agent.
        let cert = if tls.server_certificate.is_empty() || tls.private_key.is_empty() {
            SDS_DEFAULT.to_owned()
        } else {
            format!("file-cert:{}~{}", tls.server_certificate, tls.private_key)
        };
        common.tls_certificate_sds_secret_configs = vec![sds_secret(&cert)];
        if validate_client {
            let root = if tls.ca_certificates.is_empty() {
                SDS_ROOT.to_owned()
            } else {
                format!("file-root:{}", tls.ca_certificates)
            };
            common.validation_context_type =
                combined_validation(exact(&tls.subject_alt_names), sds_secret(&root));
        }
    }
    if matches!(
        mode,
        TlsMode::Simple | TlsMode::Mutual | TlsMode::OptionalMutual
    ) {
        apply_versions_and_ciphers(&mut common, tls, mesh_defaults);
    }
    Some(DownstreamTlsContext {
        common_tls_context: Some(common),
        require_client_certificate: Some(BoolValue {
            value: require_client,
        }),
        ..Default::default()
    })
}

/// The mesh's `tlsDefaults`, then the server's own versions, curves and ciphers.
fn apply_versions_and_ciphers(
    common: &mut CommonTlsContext,
    tls: &ServerTlsSettings,
    mesh: Option<&TlsConfig>,
) {
    if let Some(d) = mesh {
        if !d.ecdh_curves.is_empty() {
            params(common).ecdh_curves = d.ecdh_curves.clone();
        }
        if !d.cipher_suites.is_empty() {
            params(common).cipher_suites = d.cipher_suites.clone();
        }
        if !d.min_protocol_version.is_empty() && d.min_protocol_version != "TLS_AUTO" {
            params(common).tls_minimum_protocol_version =
                min_tls_version(&d.min_protocol_version) as i32;
        }
    }
    if let Some(v) = tls.min_protocol_version.as_deref().and_then(tls_protocol) {
        params(common).tls_minimum_protocol_version = v as i32;
    }
    if !tls.ecdh_curves.is_empty() {
        params(common).ecdh_curves = tls.ecdh_curves.clone();
    }
    if !tls.cipher_suites.is_empty() {
        params(common).cipher_suites = tls.cipher_suites.clone();
    }
    if let Some(v) = tls.max_protocol_version.as_deref().and_then(tls_protocol) {
        params(common).tls_maximum_protocol_version = v as i32;
    }
}

fn params(c: &mut CommonTlsContext) -> &mut TlsParameters {
    c.tls_params.get_or_insert_with(TlsParameters::default)
}

/// A Gateway `TLSProtocol` as Envoy's; `None` for `TLS_AUTO` (and unknown values), which
/// leave Envoy's default.
fn tls_protocol(v: &str) -> Option<TlsProtocol> {
    Some(match v {
        "TLSV1_0" => TlsProtocol::TlSv10,
        "TLSV1_1" => TlsProtocol::TlSv11,
        "TLSV1_2" => TlsProtocol::TlSv12,
        "TLSV1_3" => TlsProtocol::TlSv13,
        _ => return None,
    })
}
