//! TLS for proxyless gRPC. gRPC has no SDS: it reads its identity certificate and the
//! mesh root from the certificate providers of its bootstrap (gRFC A29), so every TLS
//! context here names provider instance `default`, as istio-agent's gRPC bootstrap
//! declares it, with certificate `default` for the identity and `ROOTCA` for the roots.

use envoy_types::pb::envoy::config::core::v3::TransportSocket;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context::{
        CertificateProviderInstance, CombinedCertificateValidationContext, ValidationContextType,
    },
    CertificateProviderPluginInstance, CertificateValidationContext, CommonTlsContext,
    DownstreamTlsContext, UpstreamTlsContext,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher::MatchPattern, StringMatcher};
use envoy_types::pb::google::protobuf::BoolValue;

use crate::config::istio::{ClientTlsSettings, DestinationRule};
use crate::model::{PushContext, Service};
use crate::security::tls::tls_socket;
use crate::xds::gen::cds::policy::merge_traffic_policy;
use crate::xds::gen::cds::tls::service_identities;

/// The certificate provider instance of the gRPC bootstrap.
pub const PROVIDER_INSTANCE: &str = "default";
/// The provider's certificate name for the workload identity.
pub const IDENTITY_CERT_NAME: &str = "default";
/// The provider's certificate name for the trusted roots.
pub const ROOT_CERT_NAME: &str = "ROOTCA";

/// DestinationRule TLS mode that asks for Istio's own mTLS.
const ISTIO_MUTUAL: &str = "ISTIO_MUTUAL";

/// Identity and roots from the bootstrap's provider; `sans` (exact) must appear in the
/// peer's certificate when given.
///
/// Both the current provider fields and the deprecated ones are set: gRPC releases
/// before 1.66 only read the deprecated ones, later ones prefer the current ones.
#[allow(deprecated)]
pub fn common_tls_context(sans: &[String]) -> CommonTlsContext {
    let plugin = |cert: &str| CertificateProviderPluginInstance {
        instance_name: PROVIDER_INSTANCE.to_owned(),
        certificate_name: cert.to_owned(),
    };
    let legacy = |cert: &str| CertificateProviderInstance {
        instance_name: PROVIDER_INSTANCE.to_owned(),
        certificate_name: cert.to_owned(),
    };
    CommonTlsContext {
        tls_certificate_provider_instance: Some(plugin(IDENTITY_CERT_NAME)),
        tls_certificate_certificate_provider_instance: Some(legacy(IDENTITY_CERT_NAME)),
        validation_context_type: Some(ValidationContextType::CombinedValidationContext(
            CombinedCertificateValidationContext {
                default_validation_context: Some(CertificateValidationContext {
                    match_subject_alt_names: sans.iter().map(|s| exact(s)).collect(),
                    ca_certificate_provider_instance: Some(plugin(ROOT_CERT_NAME)),
                    ..Default::default()
                }),
                validation_context_certificate_provider_instance: Some(legacy(ROOT_CERT_NAME)),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

fn exact(s: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(MatchPattern::Exact(s.to_owned())),
        ..Default::default()
    }
}

/// The server side of Istio mTLS: clients must present a certificate from the mesh root.
/// gRPC servers cannot match SANs (the validation context's matcher is refused there), so
/// none are set; who may call is AuthorizationPolicy's business.
pub fn downstream_mtls() -> TransportSocket {
    let ctx = DownstreamTlsContext {
        common_tls_context: Some(common_tls_context(&[])),
        require_client_certificate: Some(BoolValue { value: true }),
        ..Default::default()
    };
    tls_socket(&ctx)
}

/// The client side of Istio mTLS, checking that the server is one of `sans`.
pub fn upstream_mtls(sans: &[String]) -> TransportSocket {
    let ctx = UpstreamTlsContext {
        common_tls_context: Some(common_tls_context(sans)),
        ..Default::default()
    };
    tls_socket(&ctx)
}

/// The client transport socket for a cluster with TLS settings `tls` to `host`.
///
/// Only an explicit `ISTIO_MUTUAL` turns TLS on, as upstream does for gRPC: there is no
/// auto mTLS, because istiod cannot know whether the client was built with xDS
/// credentials (settings it ignores otherwise) nor whether the server is an xDS server
/// that will take mTLS; and gRPC cannot reach PERMISSIVE sidecars, whose ALPN it cannot
/// set. `SIMPLE` and `MUTUAL` are not supported for gRPC upstream either.
pub fn client_transport_socket(
    push: &PushContext,
    svc: &Service,
    tls: Option<&ClientTlsSettings>,
) -> Option<TransportSocket> {
    let tls = tls?;
    if tls.mode.as_deref() != Some(ISTIO_MUTUAL) {
        return None;
    }
    // Names the DestinationRule lists replace the service's own, as for sidecars.
    let sans = tls
        .subject_alt_names
        .clone()
        .unwrap_or_else(|| service_identities(push, svc));
    Some(upstream_mtls(&sans))
}

/// The TLS settings of a cluster for `port` and `subset` (empty for the service's default
/// cluster), merged as every traffic policy component is.
pub fn cluster_tls(dr: &DestinationRule, subset: &str, port: u16) -> Option<ClientTlsSettings> {
    let subset_policy = dr
        .subsets
        .iter()
        .find(|s| !subset.is_empty() && s.name == subset)
        .and_then(|s| s.traffic_policy.as_ref());
    merge_traffic_policy(dr.traffic_policy.as_ref(), subset_policy, port).tls
}
