//! Client-side TLS of outbound clusters: the DestinationRule's `tls` settings, or auto mTLS
//! (mesh `enableAutoMtls`) where the rule sets none, as upstream decides them.
//!
//! Auto mTLS cannot know which endpoints run a sidecar when it builds the cluster, so the
//! cluster carries two transport sockets and each endpoint picks one by its metadata:
//! `tlsMode-istio` (mTLS) for endpoints labelled `security.istio.io/tlsMode: istio`, and
//! `tlsMode-disabled` (plaintext) for the rest (see `eds::lb_endpoint`).

use std::collections::BTreeSet;

use envoy_types::pb::envoy::config::cluster::v3::{
    cluster::{ClusterDiscoveryType, DiscoveryType, TransportSocketMatch},
    Cluster,
};
use envoy_types::pb::envoy::config::core::v3::UpstreamHttpProtocolOptions;
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};

use super::policy::{http_protocol_options, store_http_protocol_options};
use crate::config::istio::ClientTlsSettings;
use crate::model::service::{Resolution, Service};
use crate::model::PushContext;
use crate::security::peer_authn::MtlsMode;
use crate::security::tls::{istio_mutual, raw_buffer_socket, tls_socket, user_tls};

/// The endpoint label that says a workload runs a sidecar that terminates mesh mTLS.
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";
/// The EDS metadata key Envoy matches transport sockets against.
pub const TRANSPORT_SOCKET_MATCH_KEY: &str = "envoy.transport_socket_match";
/// The short key within it.
pub const TLS_MODE_KEY: &str = "tlsMode";
pub const TLS_MODE_ISTIO: &str = "istio";
pub const TLS_MODE_DISABLED: &str = "disabled";

/// The mTLS SNI of a cluster: `outbound_.<port>_.<subset>_.<host>`.
pub fn istio_mtls_sni(port: u16, subset: &str, host: &str) -> String {
    format!("outbound_.{port}_.{subset}_.{host}")
}

/// The identities (SPIFFE URIs) of a service's workloads, sorted: the names a client accepts
/// on the server's certificate.
pub fn service_identities(push: &PushContext, svc: &Service) -> Vec<String> {
    let declared = push
        .endpoints(&svc.hostname)
        .iter()
        .filter_map(|e| e.identity.as_deref())
        .chain(svc.service_accounts.iter().map(String::as_str));
    with_trust_domain_aliases(declared, &push.mesh.trust_domain_aliases)
        .into_iter()
        .collect()
}

/// `identities` plus, for each SPIFFE one, the same identity in every alias trust domain
/// (upstream's `ExpandWithTrustDomains`): a server whose certificate still carries an
/// alias trust domain is accepted during a trust domain migration.
fn with_trust_domain_aliases<'a>(
    identities: impl Iterator<Item = &'a str>,
    aliases: &[String],
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for id in identities {
        out.insert(id.to_owned());
        let Some(path) = id
            .strip_prefix("spiffe://")
            .and_then(|rest| rest.split_once('/'))
            .map(|(_, path)| path)
        else {
            continue;
        };
        for alias in aliases {
            out.insert(format!("spiffe://{alias}/{path}"));
        }
    }
    out
}

/// The mode the client guesses the service accepts, from the namespace- and mesh-level
/// PeerAuthentications (workload policies are per endpoint, unknowable here); `None` for
/// services outside the mesh. Passthrough services need every endpoint to have a sidecar.
pub fn infer_service_mode(
    push: &PushContext,
    svc: &Service,
    port: u16,
    passthrough_lb: bool,
) -> Option<MtlsMode> {
    if svc.mesh_external {
        return None;
    }
    if svc.resolution == Resolution::Passthrough || passthrough_lb {
        let eps: Vec<_> = push
            .endpoints(&svc.hostname)
            .iter()
            .filter(|e| e.service_port == port)
            .collect();
        if eps.is_empty() || eps.iter().any(|e| tls_mode(&e.labels) == TLS_MODE_DISABLED) {
            return Some(MtlsMode::Disable);
        }
    }
    Some(
        push.peer_authn
            .namespace_mode(&svc.namespace)
            .unwrap_or(MtlsMode::Permissive),
    )
}

/// The TLS mode of an endpoint from its labels: `istio` or `disabled`.
pub fn tls_mode(labels: &std::collections::BTreeMap<String, String>) -> &str {
    labels
        .get(TLS_MODE_LABEL)
        .map_or(TLS_MODE_DISABLED, String::as_str)
}

/// What the cluster is and what it needs to decide its TLS.
pub struct UpstreamTls<'a> {
    pub push: &'a PushContext,
    pub svc: &'a Service,
    pub port: u16,
    pub subset: &'a str,
    pub http2: bool,
    /// The merged DestinationRule `tls` for this cluster.
    pub tls: Option<&'a ClientTlsSettings>,
    /// The DestinationRule's load balancer is `PASSTHROUGH`.
    pub passthrough_lb: bool,
    /// The DestinationRule has a workload selector (it may name Secrets for sidecars).
    pub rule_has_selector: bool,
}

/// Sets the cluster's transport socket (or auto-mTLS socket matches).
pub fn apply(cluster: &mut Cluster, u: &UpstreamTls<'_>) {
    let sni = istio_mtls_sni(u.port, u.subset, &u.svc.hostname);
    let (settings, auto) = match u.tls {
        Some(t) => (t.clone(), false),
        None => {
            let mode = infer_service_mode(u.push, u.svc, u.port, u.passthrough_lb);
            let auto_on = u.push.mesh.enable_auto_mtls;
            if !auto_on || matches!(mode, None | Some(MtlsMode::Disable)) {
                return;
            }
            let istio = ClientTlsSettings {
                mode: Some("ISTIO_MUTUAL".into()),
                ..Default::default()
            };
            (istio, true)
        }
    };
    let context = match settings.mode.as_deref().unwrap_or("DISABLE") {
        "ISTIO_MUTUAL" => {
            let sans = settings
                .subject_alt_names
                .clone()
                .unwrap_or_else(|| service_identities(u.push, u.svc));
            let sni = settings
                .sni
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or(sni);
            istio_mutual(&sans, &sni, u.http2)
        }
        mode @ ("SIMPLE" | "MUTUAL") => {
            let secret = settings
                .credential_name
                .as_deref()
                .is_some_and(|c| !c.is_empty() && !c.starts_with("configmap://"));
            if secret && !u.rule_has_selector {
                // A sidecar may not read Secrets for a rule that applies to every workload,
                // as upstream refuses: no TLS rather than a client that never connects.
                tracing::warn!(
                    cluster = %cluster.name,
                    "DestinationRule tls.credentialName is only honoured for sidecars with a workloadSelector; sending plaintext"
                );
                return;
            }
            let defaults = u.push.mesh.tls_defaults.as_ref();
            match user_tls(
                &settings,
                &cluster.name,
                mode == "MUTUAL",
                u.http2,
                defaults,
            ) {
                Ok(c) => {
                    set_auto_sni_and_san_validation(cluster, &settings);
                    c
                }
                Err(e) => {
                    tracing::warn!(error = %e, "DestinationRule tls settings not applied");
                    return;
                }
            }
        }
        _ => return,
    };
    let socket = tls_socket(&context);
    let original_dst = cluster.cluster_discovery_type
        == Some(ClusterDiscoveryType::Type(
            DiscoveryType::OriginalDst as i32,
        ));
    if auto && !original_dst {
        cluster.transport_socket_matches = vec![
            TransportSocketMatch {
                name: format!("tlsMode-{TLS_MODE_ISTIO}"),
                r#match: Some(Struct {
                    fields: [(
                        TLS_MODE_KEY.to_owned(),
                        Value {
                            kind: Some(Kind::StringValue(TLS_MODE_ISTIO.into())),
                        },
                    )]
                    .into(),
                }),
                transport_socket: Some(socket),
            },
            TransportSocketMatch {
                name: format!("tlsMode-{TLS_MODE_DISABLED}"),
                r#match: Some(Struct::default()),
                transport_socket: Some(raw_buffer_socket()),
            },
        ];
    } else {
        cluster.transport_socket = Some(socket);
    }
}

/// DestinationRule SIMPLE/MUTUAL without `sni`: Envoy takes each connection's SNI from the
/// request's host (`auto_sni`), and, when no `subjectAltNames` are given either and the
/// certificate is verified, checks the server's certificate against that host
/// (`auto_san_validation`), as upstream's `setAutoSniAndAutoSanValidation` does for every
/// such cluster.
fn set_auto_sni_and_san_validation(cluster: &mut Cluster, tls: &ClientTlsSettings) {
    let auto_sni = tls.sni.as_deref().is_none_or(str::is_empty);
    let no_sans = tls.subject_alt_names.as_ref().is_none_or(Vec::is_empty);
    let skip_verify = tls.insecure_skip_verify == Some(true);
    let auto_san = auto_sni && no_sans && !skip_verify;
    if !auto_sni {
        return;
    }
    let mut options = http_protocol_options(cluster);
    let upstream = options
        .upstream_http_protocol_options
        .get_or_insert_with(UpstreamHttpProtocolOptions::default);
    upstream.auto_sni = true;
    upstream.auto_san_validation = auto_san;
    store_http_protocol_options(cluster, options);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_expanded_to_every_alias_trust_domain() {
        let ids = [
            "spiffe://cluster.local/ns/default/sa/reviews",
            "spiffe://cluster.local/ns/default/sa/reviews",
            "reviews.example.com",
            "spiffe://no-path",
        ];
        let aliases = ["old.example".to_owned(), "new.example".to_owned()];
        let got: Vec<String> = with_trust_domain_aliases(ids.into_iter(), &aliases)
            .into_iter()
            .collect();
        assert_eq!(
            got,
            [
                "reviews.example.com",
                "spiffe://cluster.local/ns/default/sa/reviews",
                "spiffe://new.example/ns/default/sa/reviews",
                "spiffe://no-path",
                "spiffe://old.example/ns/default/sa/reviews",
            ]
        );
        let plain: Vec<String> = with_trust_domain_aliases(ids.into_iter(), &[])
            .into_iter()
            .collect();
        assert_eq!(plain.len(), 3, "{plain:?}");
    }
}
