//! SDS: the Secrets gateways name by `credentialName`, as Envoy `Secret` resources, for
//! the names a proxy subscribes to and may read (upstream's `SecretGen`).
//!
//! A pure function of (Secrets, the proxy's access, subscription, time): a name that does
//! not parse, is refused, or whose Secret is missing or broken is left out and reported in
//! [`Sds::errors`]; the stream logs and counts them. One bad reference never keeps the
//! others from being served. An expired certificate is served and reported, as upstream.

use envoy_types::pb::envoy::config::core::v3::{data_source::Specifier, DataSource};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    secret, CertificateValidationContext, Secret, TlsCertificate,
};

use super::{Resource, Subscription};
use crate::config::secrets::Secrets;
use crate::model::credentials::{
    parse_resource_name, resolve, validity_problem, Access, CaInfo, CertInfo, Credential,
    CredentialError, Denied,
};

/// Why a subscribed name got no resource.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdsError {
    /// Nothing is served to a proxy without an authenticated identity.
    #[error("proxy is not authorized to receive secrets; connect over the TLS port (15012) with a workload identity")]
    Unauthenticated,
    /// The proxy may not read these names.
    #[error("proxy attempted to access unauthorized certificates {names}: {reason}")]
    Denied { names: String, reason: Denied },
    /// The name does not parse, or its Secret is missing or unusable.
    #[error("{name}: {error}")]
    Credential {
        name: String,
        error: CredentialError,
    },
    /// Served anyway, as upstream: the certificate is expired or not yet valid.
    #[error("invalid certificates: {name}: {reason}")]
    NotValidNow { name: String, reason: String },
}

/// The resources of one SDS response and what was left out (or served with a warning).
#[derive(Debug, Default)]
pub struct Sds {
    pub resources: Vec<Resource>,
    pub errors: Vec<SdsError>,
}

/// The Secrets `sub` names that `access` allows, in name order; certificates are checked
/// for validity at `now`.
pub fn secrets(
    secrets: &Secrets,
    access: &Access,
    sub: &Subscription,
    now: time::OffsetDateTime,
) -> Sds {
    let mut out = Sds::default();
    // SDS is not a wildcard type: a proxy gets only what it names.
    let names: Vec<&String> = sub.names().collect();
    if names.is_empty() {
        return out;
    }
    if *access == Access::Unauthenticated {
        out.errors.push(SdsError::Unauthenticated);
        return out;
    }
    // Denials are reported once per response, as upstream aggregates them.
    let mut denied: Vec<&str> = Vec::new();
    let mut reason = None;
    for name in names {
        let r = match parse_resource_name(name, access.namespace()) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(error) => {
                out.errors.push(SdsError::Credential {
                    name: name.clone(),
                    error,
                });
                continue;
            }
        };
        if let Err(why) = access.check(&r) {
            denied.push(name);
            reason.get_or_insert(why);
            continue;
        }
        let resolved = resolve(secrets, &r);
        let cert = match &resolved {
            Ok(Credential::Certificate(info)) => Some(&info.cert),
            Ok(Credential::Ca(info)) => Some(&info.cert),
            Err(_) => None,
        };
        if let Some(reason) = cert.and_then(|c| validity_problem(c, now)) {
            out.errors.push(SdsError::NotValidNow {
                name: name.clone(),
                reason,
            });
        }
        match resolved {
            Ok(Credential::Certificate(info)) => out.resources.push(tls_secret(name, info)),
            Ok(Credential::Ca(info)) => out.resources.push(ca_secret(name, info)),
            Err(error) => out.errors.push(SdsError::Credential {
                name: name.clone(),
                error,
            }),
        }
    }
    if let Some(reason) = reason {
        out.errors.push(SdsError::Denied {
            names: at_most(&denied, 3),
            reason,
        });
    }
    out
}

/// The first `n` names, then how many more (upstream's `atMostNJoin`).
fn at_most(names: &[&str], n: usize) -> String {
    if names.len() <= n {
        return names.join(", ");
    }
    format!("{}, and {} others", names[..n].join(", "), names.len() - n)
}

fn inline(bytes: Vec<u8>) -> DataSource {
    DataSource {
        specifier: Some(Specifier::InlineBytes(bytes)),
        ..Default::default()
    }
}

/// A certificate chain and key, inline (no private key provider: upstream's CryptoMB and
/// QAT providers are not supported).
fn tls_secret(name: &str, info: CertInfo) -> Resource {
    let secret = Secret {
        name: name.to_owned(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(inline(info.cert)),
            private_key: Some(inline(info.key)),
            ocsp_staple: info.staple.map(inline),
            ..Default::default()
        })),
    };
    Resource::new(name, &secret)
}

/// A CA bundle (and CRL) as a validation context.
fn ca_secret(name: &str, info: CaInfo) -> Resource {
    let secret = Secret {
        name: name.to_owned(),
        r#type: Some(secret::Type::ValidationContext(
            CertificateValidationContext {
                trusted_ca: Some(inline(info.cert)),
                crl: info.crl.map(inline),
                ..Default::default()
            },
        )),
    };
    Resource::new(name, &secret)
}

#[cfg(test)]
mod tests;
