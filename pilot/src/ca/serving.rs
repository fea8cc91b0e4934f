//! istiod's serving certificate for 15012 (and 15017): issued by our CA for upstream's DNS
//! names and re-issued on root rotation and at half-life, or loaded from
//! `--tlsCertFile/--tlsKeyFile/--caCertFile` and reloaded when the files change. Served
//! through a rustls certificate resolver, so a new certificate applies to new handshakes
//! without dropping connections.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::authority::Authority;
use super::keys::{self, KeyType};
use super::{read_file, Error};

/// `--tlsCertFile/--tlsKeyFile/--caCertFile`.
#[derive(Debug, Clone)]
pub struct CustomCertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// The certificate served on the TLS ports; swapped atomically.
#[derive(Debug)]
pub struct ServingCert {
    current: ArcSwap<CertifiedKey>,
    /// PEM of the CA bundle clients should trust for this certificate.
    ca_bundle: ArcSwap<String>,
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl ServingCert {
    /// Issues a certificate from our CA.
    pub fn from_authority(
        authority: &Authority,
        dns_names: &[String],
        ttl: Duration,
    ) -> Result<Self, Error> {
        let (key, ca) = issue(authority, dns_names, ttl)?;
        Ok(ServingCert {
            current: ArcSwap::from_pointee(key),
            ca_bundle: ArcSwap::from_pointee(ca),
        })
    }

    /// Loads custom files.
    pub fn from_files(files: &CustomCertFiles) -> Result<Self, Error> {
        let (key, ca) = load_files(files)?;
        Ok(ServingCert {
            current: ArcSwap::from_pointee(key),
            ca_bundle: ArcSwap::from_pointee(ca),
        })
    }

    /// The CA bundle for this certificate (what webhook configurations get).
    pub fn ca_bundle(&self) -> Arc<String> {
        self.ca_bundle.load_full()
    }

    /// The certificate chain currently served.
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.current.load().cert.clone()
    }

    /// Re-issues on root change and at half-life until `cancel`.
    pub async fn run_rotation(
        self: Arc<Self>,
        authority: Arc<Authority>,
        dns_names: Vec<String>,
        ttl: Duration,
        cancel: CancellationToken,
    ) {
        let mut roots = authority.subscribe();
        loop {
            let due = half_life(&self.chain()).unwrap_or(Duration::from_secs(60));
            // Wake at least hourly so a long-lived certificate never needs a far timer.
            let wait = due.min(Duration::from_secs(3600));
            tokio::select! {
                _ = cancel.cancelled() => return,
                changed = roots.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(wait) => if wait < due { continue },
            }
            match issue(&authority, &dns_names, ttl) {
                Ok((key, ca)) => {
                    self.current.store(Arc::new(key));
                    self.ca_bundle.store(Arc::new(ca));
                    info!(dns = ?dns_names, "re-issued istiod serving certificate");
                }
                Err(error) => {
                    warn!(%error, "re-issuing istiod serving certificate failed");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(10)) => {}
                    }
                }
            }
        }
    }

    /// Reloads custom files when they change (polled), until `cancel`.
    pub async fn run_file_reload(
        self: Arc<Self>,
        files: CustomCertFiles,
        cancel: CancellationToken,
    ) {
        let stamp = |f: &CustomCertFiles| {
            [&f.cert, &f.key, &f.ca].map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        };
        let mut last: [Option<SystemTime>; 3] = stamp(&files);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
            let now = stamp(&files);
            if now == last {
                continue;
            }
            last = now;
            match load_files(&files) {
                Ok((key, ca)) => {
                    self.current.store(Arc::new(key));
                    self.ca_bundle.store(Arc::new(ca));
                    info!(cert = %files.cert.display(), "reloaded serving certificate");
                }
                Err(error) => warn!(%error, "reloading serving certificate failed"),
            }
        }
    }
}

fn issue(
    authority: &Authority,
    dns_names: &[String],
    ttl: Duration,
) -> Result<(CertifiedKey, String), Error> {
    let key = keys::generate(KeyType::EcdsaP256)?;
    let chain = authority.sign_serving(dns_names, &key.pair, ttl)?;
    // The served chain stops before the root; clients have it.
    let served = chain[..chain.len().saturating_sub(1)].concat();
    let certified = certified_key(&served, &key.pair.serialize_pem(), "istiod certificate")?;
    Ok((certified, authority.trust_bundle().pem()))
}

fn load_files(files: &CustomCertFiles) -> Result<(CertifiedKey, String), Error> {
    let text = |p: &PathBuf| {
        String::from_utf8(read_file(p)?).map_err(|_| Error::BadCertificate {
            what: p.display().to_string(),
            reason: "not UTF-8 PEM".to_owned(),
        })
    };
    let certified = certified_key(
        &text(&files.cert)?,
        &text(&files.key)?,
        &files.cert.display().to_string(),
    )?;
    Ok((certified, text(&files.ca)?))
}

/// A rustls certified key from PEM chain and key.
pub fn certified_key(chain_pem: &str, key_pem: &str, what: &str) -> Result<CertifiedKey, Error> {
    let certs = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::BadCertificate {
            what: what.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(Error::BadCertificate {
            what: what.to_owned(),
            reason: "no certificate".to_owned(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| Error::BadKey {
        what: what.to_owned(),
        reason: e.to_string(),
    })?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| Error::BadKey {
            what: what.to_owned(),
            reason: e.to_string(),
        })?;
    Ok(CertifiedKey::new(certs, signing))
}

/// Half the remaining lifetime of the leaf, at least a second.
fn half_life(chain: &[CertificateDer<'static>]) -> Option<Duration> {
    use x509_parser::prelude::FromDer;
    let leaf = chain.first()?;
    let (_, x509) = x509_parser::certificate::X509Certificate::from_der(leaf).ok()?;
    let nb = x509.validity().not_before.timestamp();
    let na = x509.validity().not_after.timestamp();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let target = nb + (na - nb) / 2;
    Some(Duration::from_secs(target.saturating_sub(now).max(1) as u64))
}
