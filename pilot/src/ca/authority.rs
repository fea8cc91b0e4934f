//! Signing: workload certificates from CSRs and istiod's own serving certificate, with the
//! chain the clients need (leaf, intermediates, root).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rcgen::{
    CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;
use tokio::sync::watch;
use tracing::debug;

use super::csr::ValidCsr;
use super::root::{self, KeyBundle, Mode};
use super::Error;
use crate::security::Identity;

/// TTL limits for workload certificates.
#[derive(Debug, Clone, Copy)]
pub struct TtlPolicy {
    /// Used when the request asks for 0 or less (`DEFAULT_WORKLOAD_CERT_TTL`).
    pub default: Duration,
    /// Requests above this are refused (`MAX_WORKLOAD_CERT_TTL`).
    pub max: Duration,
}

impl Default for TtlPolicy {
    fn default() -> Self {
        TtlPolicy {
            default: Duration::from_secs(24 * 3600),
            max: Duration::from_secs(90 * 24 * 3600),
        }
    }
}

/// The roots workloads should trust, newest first; published to files, `/debug` and the
/// TLS client verifier.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustBundle {
    pub roots: Vec<String>,
}

impl TrustBundle {
    /// All roots concatenated, as in `root-cert.pem`.
    pub fn pem(&self) -> String {
        self.roots.concat()
    }
}

/// What signing needs, swapped as a whole when the root rotates.
struct Signer {
    bundle: KeyBundle,
    issuer: Issuer<'static, KeyPair>,
    ca_not_after: OffsetDateTime,
}

/// The certificate authority: signs with the current key bundle.
pub struct Authority {
    signer: ArcSwap<Signer>,
    ttl: TtlPolicy,
    trust_domain: String,
    roots_tx: watch::Sender<TrustBundle>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("trust_domain", &self.trust_domain)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Authority {
    pub fn new(bundle: KeyBundle, ttl: TtlPolicy, trust_domain: &str) -> Result<Self, Error> {
        let signer = Signer::new(bundle)?;
        let (roots_tx, _) = watch::channel(TrustBundle {
            roots: signer.bundle.roots.clone(),
        });
        Ok(Authority {
            signer: ArcSwap::from_pointee(signer),
            ttl,
            trust_domain: trust_domain.to_owned(),
            roots_tx,
        })
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn ttl_policy(&self) -> TtlPolicy {
        self.ttl
    }

    pub fn mode(&self) -> Mode {
        self.signer.load().bundle.mode
    }

    /// The current trust bundle.
    pub fn trust_bundle(&self) -> TrustBundle {
        self.roots_tx.borrow().clone()
    }

    /// Watches the trust bundle; changes when the root rotates.
    pub fn subscribe(&self) -> watch::Receiver<TrustBundle> {
        self.roots_tx.subscribe()
    }

    /// Expiry of the current root and of the signing certificate (seconds since epoch).
    pub fn expiries(&self) -> (i64, i64) {
        let s = self.signer.load();
        let root = root::validity(s.bundle.root_pem())
            .map(|(_, na)| na.unix_timestamp())
            .unwrap_or_default();
        (root, s.ca_not_after.unix_timestamp())
    }

    /// Runs `f` on the current key bundle (for rotation and persistence).
    pub fn with_bundle<T>(&self, f: impl FnOnce(&KeyBundle) -> T) -> T {
        f(&self.signer.load().bundle)
    }

    /// Replaces the key bundle (root rotation) and announces the new trust bundle.
    pub fn replace(&self, bundle: KeyBundle) -> Result<(), Error> {
        let signer = Signer::new(bundle)?;
        let roots = signer.bundle.roots.clone();
        self.signer.store(Arc::new(signer));
        self.roots_tx.send_replace(TrustBundle { roots });
        Ok(())
    }

    /// The TTL for a request, per `DEFAULT_WORKLOAD_CERT_TTL` / `MAX_WORKLOAD_CERT_TTL`.
    pub fn ttl_for(&self, requested_secs: i64) -> Result<Duration, Error> {
        if requested_secs <= 0 {
            return Ok(self.ttl.default);
        }
        let requested = Duration::from_secs(requested_secs.unsigned_abs());
        if requested > self.ttl.max {
            return Err(Error::TtlTooLong {
                requested,
                max: self.ttl.max,
            });
        }
        Ok(requested)
    }

    /// Signs a workload certificate for `identity`; the CSR contributes only its public key.
    /// Returns the chain: leaf, intermediates, root.
    pub fn sign_workload(
        &self,
        csr: &ValidCsr,
        identity: &Identity,
        ttl: Duration,
    ) -> Result<Vec<String>, Error> {
        let s = self.signer.load();
        let mut params = leaf_params(ttl, s.ca_not_after);
        params.subject_alt_names = vec![SanType::URI(identity.to_string().try_into()?)];
        let spki = rcgen::SubjectPublicKeyInfo::from_der(&csr.spki_der)?;
        let cert = params.signed_by(&spki, &s.issuer)?;
        debug!(identity = %identity, ttl = ?ttl, "signed workload certificate");
        Ok(s.chain(cert.pem()))
    }

    /// Signs istiod's serving certificate for `hosts` with `key`. As upstream, a host that
    /// parses as an IP address (an `ISTIOD_CUSTOM_HOST` of `127.0.0.1`, say) becomes an IP
    /// SAN, one starting `spiffe://` a URI SAN, anything else a DNS SAN.
    pub fn sign_serving(
        &self,
        hosts: &[String],
        key: &KeyPair,
        ttl: Duration,
    ) -> Result<Vec<String>, Error> {
        let s = self.signer.load();
        let mut params = leaf_params(ttl, s.ca_not_after);
        params.subject_alt_names = hosts
            .iter()
            .map(|h| serving_san(h))
            .collect::<Result<_, rcgen::Error>>()?;
        let cert = params.signed_by(key, &s.issuer)?;
        Ok(s.chain(cert.pem()))
    }
}

/// The SAN of one serving-certificate host.
fn serving_san(host: &str) -> Result<SanType, rcgen::Error> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    if host.starts_with("spiffe://") {
        return Ok(SanType::URI(host.to_owned().try_into()?));
    }
    Ok(SanType::DnsName(host.to_owned().try_into()?))
}

impl Signer {
    fn new(bundle: KeyBundle) -> Result<Self, Error> {
        let der = root::der_of(&bundle.ca_cert_pem, root::CA_CERT)?;
        let key = keys_copy(&bundle)?;
        let issuer = Issuer::from_ca_cert_der(&der.as_slice().into(), key)?;
        let (_, ca_not_after) = root::validity(&bundle.ca_cert_pem)?;
        Ok(Signer {
            bundle,
            issuer,
            ca_not_after,
        })
    }

    /// Leaf, then the signing certificate when it is not itself the root, intermediates,
    /// then the root.
    fn chain(&self, leaf: String) -> Vec<String> {
        let b = &self.bundle;
        let mut out = vec![leaf];
        if b.mode == Mode::Plugged && !b.roots.contains(&b.ca_cert_pem) {
            out.push(b.ca_cert_pem.clone());
        }
        out.extend(b.intermediates.iter().cloned());
        out.push(b.root_pem().to_owned());
        out
    }
}

fn keys_copy(bundle: &KeyBundle) -> Result<KeyPair, Error> {
    Ok(super::keys::parse_pem(&bundle.key.pem, root::CA_KEY)?.pair)
}

/// Parameters shared by every leaf: no subject, SANs set by the caller, usages as upstream,
/// never outliving the signing certificate.
fn leaf_params(ttl: Duration, ca_not_after: OffsetDateTime) -> CertificateParams {
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.not_before = now;
    params.not_after = (now + ttl).min(ca_not_after);
    params.serial_number = Some(random_serial());
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params
}

/// A random positive 128-bit serial number.
pub fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    if bytes[0] == 0 {
        bytes[0] = 1;
    }
    SerialNumber::from_slice(&bytes)
}

#[cfg(test)]
mod tests;
