//! TLS settings, shared by the kinds that carry them: the server side of Gateway servers
//! and the client side of DestinationRule traffic policies.

use std::collections::BTreeSet;

use serde_json::Value;

use super::super::common::*;
use super::super::report::{field, index, Report};

/// Server-side TLS (Gateway servers).
pub(super) fn server_tls(t: &Value, p: &str, r: &mut Report) {
    let mode = str_of(t, "mode").unwrap_or("PASSTHROUGH");
    let cert = !text(t, "serverCertificate").is_empty();
    let key_ = !text(t, "privateKey").is_empty();
    let ca = !text(t, "caCertificates").is_empty();
    let cred = !text(t, "credentialName").is_empty();
    let creds = !list(t, "credentialNames").is_empty();
    let tls_certs = !list(t, "tlsCertificates").is_empty();
    if mode == "ISTIO_MUTUAL" {
        istio_mutual_alone(
            [
                (cert, "server certificate"),
                (key_, "private key"),
                (ca, "CA bundle"),
                (tls_certs, "tlsCertificates"),
                (cred, "credentialName"),
                (creds, "credentialNames"),
            ],
            p,
            r,
        );
        return;
    }
    let sources = [cred, creds, cert || key_, tls_certs]
        .iter()
        .filter(|x| **x)
        .count();
    if sources > 1 {
        r.error(
            p,
            "only one of credential_name, credential_names, server_certificate/private_key, tls_certificates should be specified",
        );
    }
    if creds && list(t, "credentialNames").len() > 2 {
        r.error(
            field(p, "credentialNames"),
            "credentialNames may hold at most two names",
        );
    }
    if matches!(mode, "SIMPLE" | "MUTUAL" | "OPTIONAL_MUTUAL") && !cred && !creds && !tls_certs {
        if !cert {
            r.error(
                field(p, "serverCertificate"),
                format!("{mode} TLS requires a server certificate"),
            );
        }
        if !key_ {
            r.error(
                field(p, "privateKey"),
                format!("{mode} TLS requires a private key"),
            );
        }
        if mode != "SIMPLE" && !ca {
            r.error(
                field(p, "caCertificates"),
                format!("{mode} TLS requires a client CA bundle"),
            );
        }
    }
    if !text(t, "caCrl").is_empty() {
        if cred {
            r.error(
                field(p, "caCrl"),
                "CRL is not supported with credentialName. CRL has to be specified in the credential",
            );
        } else if mode == "SIMPLE" {
            r.error(field(p, "caCrl"), "CRL is not supported with SIMPLE TLS");
        }
    }
    let order = |v: &str| match v {
        "TLSV1_0" => 1,
        "TLSV1_1" => 2,
        "TLSV1_2" => 3,
        "TLSV1_3" => 4,
        _ => 0,
    };
    let (min, max) = (
        order(text(t, "minProtocolVersion")),
        order(text(t, "maxProtocolVersion")),
    );
    if min > 0 && max > 0 && min > max {
        r.error(
            field(p, "minProtocolVersion"),
            "tls.minProtocolVersion should not be higher than tls.maxProtocolVersion",
        );
    }
    let mut seen = BTreeSet::new();
    for (i, c) in strings(t, "cipherSuites").iter().enumerate() {
        if !seen.insert(*c) {
            r.warn(
                index(&field(p, "cipherSuites"), i),
                format!("cipher suite {c} is duplicated"),
            );
        }
    }
}

/// Client-side TLS (DestinationRule traffic policies).
pub(super) fn client_tls(t: &Value, p: &str, r: &mut Report) {
    let mode = text(t, "mode");
    let cert = !text(t, "clientCertificate").is_empty();
    let key_ = !text(t, "privateKey").is_empty();
    let cred = !text(t, "credentialName").is_empty();
    match mode {
        "ISTIO_MUTUAL" => {
            istio_mutual_alone(
                [
                    (cert, "client certificate"),
                    (key_, "private key"),
                    (!text(t, "caCertificates").is_empty(), "CA bundle"),
                    (cred, "credentialName"),
                ],
                p,
                r,
            );
        }
        "MUTUAL" if !cred => {
            if !cert {
                r.error(
                    field(p, "clientCertificate"),
                    "client certificate required for mutual tls",
                );
            }
            if !key_ {
                r.error(
                    field(p, "privateKey"),
                    "private key required for mutual tls",
                );
            }
        }
        _ => {}
    }
    if boolean(t, "insecureSkipVerify")
        && (!text(t, "caCertificates").is_empty() || !list(t, "subjectAltNames").is_empty())
    {
        r.error(
            field(p, "insecureSkipVerify"),
            "cannot set caCertificates or subjectAltNames when insecureSkipVerify is true",
        );
    }
}

/// ISTIO_MUTUAL takes its certificates from the mesh: each other source of key material
/// that is `set` is an error.
fn istio_mutual_alone<const N: usize>(sources: [(bool, &str); N], p: &str, r: &mut Report) {
    for (set, what) in sources {
        if set {
            r.error(p, format!("ISTIO_MUTUAL TLS cannot have associated {what}"));
        }
    }
}
