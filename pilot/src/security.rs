//! Workload identities shared by the CA and the xDS server, the security policies
//! (PeerAuthentication, RequestAuthentication, TLS settings) that xDS generation turns
//! into Envoy config, and the warnings about policies that conflict or select nothing.

pub mod jwks;
pub mod peer_authn;
pub mod request_authn;
pub mod tls;
pub mod warnings;

pub mod authz;

use std::fmt;

/// A SPIFFE workload identity: `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
}

/// Why a string is not a SPIFFE workload identity.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("identity {0:?} does not start with spiffe://")]
    Scheme(String),
    #[error("identity {0:?} is not of the form spiffe://<trust-domain>/ns/<ns>/sa/<sa>")]
    Shape(String),
}

impl Identity {
    pub fn new(trust_domain: &str, namespace: &str, service_account: &str) -> Self {
        Identity {
            trust_domain: trust_domain.to_owned(),
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
        }
    }

    /// Parses a SPIFFE URI as found in a certificate's URI SAN.
    pub fn parse(uri: &str) -> Result<Self, IdentityError> {
        let rest = uri
            .strip_prefix("spiffe://")
            .ok_or_else(|| IdentityError::Scheme(uri.to_owned()))?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            [td, "ns", ns, "sa", sa] if !td.is_empty() && !ns.is_empty() && !sa.is_empty() => {
                Ok(Identity::new(td, ns, sa))
            }
            _ => Err(IdentityError::Shape(uri.to_owned())),
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

/// The identity a request was authenticated as, put into the request's extensions by the
/// authenticating layer of the secure gRPC server (15012). Absent on plaintext 15010.
#[derive(Debug, Clone)]
pub struct Caller(pub Identity);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let id = Identity::parse("spiffe://cluster.local/ns/default/sa/bookinfo").unwrap();
        assert_eq!(id, Identity::new("cluster.local", "default", "bookinfo"));
        assert_eq!(
            id.to_string(),
            "spiffe://cluster.local/ns/default/sa/bookinfo"
        );
    }

    #[test]
    fn rejects_other_shapes() {
        for bad in [
            "http://cluster.local/ns/a/sa/b",
            "spiffe://cluster.local/ns/a",
            "spiffe://cluster.local/ns//sa/b",
            "spiffe:///ns/a/sa/b",
            "spiffe://td/ns/a/sa/b/extra",
        ] {
            assert!(Identity::parse(bad).is_err(), "{bad}");
        }
    }
}
