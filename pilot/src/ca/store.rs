//! Where the self-signed root is kept. In file mode: the five-key layout in a folder
//! (`PILOT_SELF_SIGNED_CA_DIR`), or memory only. With Kubernetes: a store every replica
//! shares (upstream's Secret `istio-ca-secret`), so that all of them sign with one root and
//! a rotation by one reaches the others. The shared store is a trait, implemented by
//! `kube::ca_secret`, so the CA does not depend on the Kubernetes client.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;

use super::keys;
use super::root::{self, KeyBundle, Mode, SelfSignedOptions, CA_CERT, CA_KEY, ROOT_CERT};
use super::Error;

/// The self-signed root in the five-key layout (`key.pem` is always empty).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RootPem {
    /// `ca-cert.pem`: the signing certificate, which is the current root.
    pub ca_cert: String,
    /// `ca-key.pem`.
    pub ca_key: String,
    /// `root-cert.pem`: every root workloads should trust, current first; a rotated root
    /// keeps the previous ones until they expire.
    pub root_cert: String,
    /// `cert-chain.pem`: empty for a self-signed root.
    pub cert_chain: String,
}

impl fmt::Debug for RootPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RootPem")
            .field("ca_cert", &self.ca_cert)
            .field("root_cert", &self.root_cert)
            .finish_non_exhaustive()
    }
}

impl RootPem {
    /// The stored form of a self-signed bundle.
    pub fn of(bundle: &KeyBundle) -> Self {
        RootPem {
            ca_cert: bundle.ca_cert_pem.clone(),
            ca_key: bundle.key.pem.clone(),
            root_cert: bundle.roots.concat(),
            cert_chain: String::new(),
        }
    }

    /// Parses and checks stored material; errors name `source` and the key.
    pub fn to_bundle(&self, source: &str) -> Result<KeyBundle, Error> {
        let what = |key: &str| format!("{source} key {key}");
        let key = keys::parse_pem(&self.ca_key, &what(CA_KEY))?;
        let ca_cert_pem = root::split_pem(&self.ca_cert, &what(CA_CERT))?
            .into_iter()
            .next()
            .ok_or_else(|| Error::BadCertificate {
                what: what(CA_CERT),
                reason: "no certificate".to_owned(),
            })?;
        // The signing certificate first: it is the root this CA chains to.
        let mut roots = vec![ca_cert_pem.clone()];
        roots.extend(
            root::split_pem(&self.root_cert, &what(ROOT_CERT))?
                .into_iter()
                .filter(|r| *r != ca_cert_pem),
        );
        let bundle = KeyBundle {
            mode: Mode::SelfSigned,
            key,
            ca_cert_pem,
            intermediates: Vec::new(),
            roots,
        };
        root::check_key_matches_in(&bundle, &what(CA_CERT), &what(CA_KEY))?;
        Ok(bundle)
    }
}

/// Makes a root when the shared store holds none.
pub type Generate<'a> = Box<dyn FnOnce() -> Result<RootPem, Error> + Send + 'a>;

/// Why the shared store could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store no longer holds the root the update replaces: another replica rotated
    /// first. Reload and adopt its root.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Failed(Box<dyn std::error::Error + Send + Sync>),
}

/// A root store that every replica shares; `Display` names it (`Secret ns/name`).
pub trait SharedRoot: fmt::Display + Send + Sync {
    /// The stored root. If there is none, `generate`'s is stored and returned, unless
    /// another replica stores one first: then that one is returned.
    fn load_or_create<'a>(
        &'a self,
        generate: Generate<'a>,
    ) -> BoxFuture<'a, Result<RootPem, StoreError>>;

    /// Replaces `previous` with `next`; [`StoreError::Conflict`] when the store no longer
    /// holds `previous`.
    fn update<'a>(
        &'a self,
        previous: &'a RootPem,
        next: &'a RootPem,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
}

/// Where the self-signed root lives.
#[derive(Clone)]
pub enum RootStore {
    /// Files in the five-key layout in this folder, or memory only.
    Files(Option<PathBuf>),
    /// A store all replicas share.
    Shared(Arc<dyn SharedRoot>),
}

impl fmt::Debug for RootStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RootStore::Files(Some(dir)) => write!(f, "Files({})", dir.display()),
            RootStore::Files(None) => f.write_str("Memory"),
            RootStore::Shared(store) => write!(f, "Shared({store})"),
        }
    }
}

impl RootStore {
    /// The stored self-signed root, or a new one, stored.
    pub async fn load_or_create(&self, opts: &SelfSignedOptions) -> Result<KeyBundle, Error> {
        match self {
            RootStore::Files(dir) => root::load_or_create_self_signed(dir.as_deref(), opts),
            RootStore::Shared(store) => {
                let generate: Generate<'_> =
                    Box::new(|| root::generate_self_signed(opts).map(|b| RootPem::of(&b)));
                let stored = store.load_or_create(generate).await?;
                // Parsed from the stored form even when just generated, so every replica
                // holds byte-identical roots.
                stored.to_bundle(&store.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests;
