//! The CA's key material in Secrets of the istiod namespace, as upstream: the self-signed
//! root in `istio-ca-secret` (type `istio.io/ca-root`, five keys) so every replica signs
//! with the same root, and an operator's plugged-in CA in `cacerts`.
//!
//! The CA uses [`SecretRoot`] as its shared root store: [`CaSecrets::load_or_create`] with a
//! generator, where the first replica to create the Secret wins and the others adopt its
//! root, and [`CaSecrets::update`] guarded by the root it replaces.

use std::collections::BTreeMap;
use std::fmt;

use futures::future::BoxFuture;
use futures::FutureExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use tracing::info;

use crate::ca::store::{Generate, RootPem, SharedRoot, StoreError};

/// The self-signed root's Secret.
pub const CA_SECRET_NAME: &str = "istio-ca-secret";
/// The plugged-in CA's Secret (mounted at `/etc/cacerts` by the chart).
pub const CACERTS_NAME: &str = "cacerts";
/// The type of `istio-ca-secret`.
pub const CA_SECRET_TYPE: &str = "istio.io/ca-root";
pub const CA_CERT: &str = "ca-cert.pem";
pub const CA_KEY: &str = "ca-key.pem";
pub const ROOT_CERT: &str = "root-cert.pem";
pub const CERT_CHAIN: &str = "cert-chain.pem";
pub const PRIVATE_KEY: &str = "key.pem";
/// Marks a `cacerts` Secret that istiod generated itself (`USE_CACERTS_FOR_SELF_SIGNED_CA`).
pub const GENERATED_MARKER: &str = "istio-generated";

/// PEM material of a CA as stored in a Secret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaSecretData {
    /// The signing certificate.
    pub ca_cert: String,
    /// The signing key (PKCS#8 or PKCS#1 PEM).
    pub ca_key: String,
    /// The root(s) workloads trust.
    pub root_cert: String,
    /// Certificates from the signing certificate up to (not including) the root; empty
    /// for a self-signed root.
    pub cert_chain: String,
}

impl CaSecretData {
    /// A self-signed root: the root is the signing certificate, no chain.
    pub fn self_signed(cert_pem: &str, key_pem: &str) -> Self {
        CaSecretData {
            ca_cert: cert_pem.to_owned(),
            ca_key: key_pem.to_owned(),
            root_cert: cert_pem.to_owned(),
            cert_chain: String::new(),
        }
    }

    /// The five keys upstream writes (`key.pem` empty).
    fn to_data(&self) -> BTreeMap<String, ByteString> {
        [
            (CA_CERT, &self.ca_cert),
            (CA_KEY, &self.ca_key),
            (ROOT_CERT, &self.root_cert),
            (CERT_CHAIN, &self.cert_chain),
            (PRIVATE_KEY, &String::new()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
        .collect()
    }
}

/// Why CA material could not be read or stored.
#[derive(Debug, thiserror::Error)]
pub enum CaSecretError {
    #[error("reading Secret {namespace}/{name} (istiod needs get on secrets in its namespace): {source}")]
    Get {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing Secret {namespace}/{name} (istiod needs create/update on secrets in its namespace): {source}")]
    Write {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("Secret {namespace}/{name} was changed by another replica; reload it and retry")]
    Conflict { namespace: String, name: String },
    #[error("Secret {namespace}/{name} lacks key {key:?}; a CA Secret needs {CA_CERT}, {CA_KEY}, {ROOT_CERT} and {CERT_CHAIN}")]
    MissingKey {
        namespace: String,
        name: String,
        key: &'static str,
    },
    #[error("Secret {namespace}/{name} key {key:?} is not UTF-8 PEM")]
    NotPem {
        namespace: String,
        name: String,
        key: &'static str,
    },
    #[error("generating the self-signed root: {0}")]
    Generate(String),
}

/// Reads and writes CA Secrets in one namespace.
#[derive(Clone)]
pub struct CaSecrets {
    client: kube::Client,
    namespace: String,
}

impl CaSecrets {
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        CaSecrets {
            client,
            namespace: namespace.to_owned(),
        }
    }

    fn api(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The CA in Secret `name`, `None` if there is no such Secret. A Secret missing one
    /// of the four certificate keys is an error, as upstream.
    pub async fn read(&self, name: &str) -> Result<Option<CaSecretData>, CaSecretError> {
        let secret = self
            .api()
            .get_opt(name)
            .await
            .map_err(|source| CaSecretError::Get {
                namespace: self.namespace.clone(),
                name: name.to_owned(),
                source,
            })?;
        secret.map(|s| self.parse(name, &s)).transpose()
    }

    fn parse(&self, name: &str, secret: &Secret) -> Result<CaSecretData, CaSecretError> {
        let empty = BTreeMap::new();
        let data = secret.data.as_ref().unwrap_or(&empty);
        let field = |key: &'static str, required: bool| -> Result<String, CaSecretError> {
            match data.get(key) {
                Some(v) => String::from_utf8(v.0.clone()).map_err(|_| CaSecretError::NotPem {
                    namespace: self.namespace.clone(),
                    name: name.to_owned(),
                    key,
                }),
                None if required => Err(CaSecretError::MissingKey {
                    namespace: self.namespace.clone(),
                    name: name.to_owned(),
                    key,
                }),
                None => Ok(String::new()),
            }
        };
        Ok(CaSecretData {
            ca_cert: field(CA_CERT, true)?,
            ca_key: field(CA_KEY, true)?,
            root_cert: field(ROOT_CERT, false)?,
            cert_chain: field(CERT_CHAIN, false)?,
        })
    }

    /// The plugged-in CA from `cacerts`, unless istiod generated that Secret itself.
    pub async fn load_plugged(&self) -> Result<Option<CaSecretData>, CaSecretError> {
        let secret =
            self.api()
                .get_opt(CACERTS_NAME)
                .await
                .map_err(|source| CaSecretError::Get {
                    namespace: self.namespace.clone(),
                    name: CACERTS_NAME.to_owned(),
                    source,
                })?;
        let Some(secret) = secret else {
            return Ok(None);
        };
        if secret
            .data
            .as_ref()
            .is_some_and(|d| d.contains_key(GENERATED_MARKER))
        {
            return Ok(None);
        }
        let data = self.parse(CACERTS_NAME, &secret)?;
        for (key, value) in [(ROOT_CERT, &data.root_cert), (CERT_CHAIN, &data.cert_chain)] {
            if value.is_empty() {
                return Err(CaSecretError::MissingKey {
                    namespace: self.namespace.clone(),
                    name: CACERTS_NAME.to_owned(),
                    key,
                });
            }
        }
        Ok(Some(data))
    }

    /// The self-signed root in Secret `name` (normally [`CA_SECRET_NAME`]); if absent,
    /// `generate` makes one and it is stored. When another replica stores its root first,
    /// that root is returned instead, so all replicas share one. The flag says whether
    /// this call created the Secret.
    pub async fn load_or_create<F, E>(
        &self,
        name: &str,
        generate: F,
    ) -> Result<(CaSecretData, bool), CaSecretError>
    where
        F: FnOnce() -> Result<CaSecretData, E>,
        E: std::fmt::Display,
    {
        if let Some(existing) = self.read(name).await? {
            info!(namespace = %self.namespace, secret = name, "using the CA root stored in the Secret");
            return Ok((existing, false));
        }
        let data = generate().map_err(|e| CaSecretError::Generate(e.to_string()))?;
        let mut stored = data.to_data();
        if name == CACERTS_NAME {
            stored.insert(GENERATED_MARKER.to_owned(), ByteString(b"true".to_vec()));
        }
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(self.namespace.clone()),
                ..Default::default()
            },
            type_: Some(CA_SECRET_TYPE.to_owned()),
            data: Some(stored),
            ..Default::default()
        };
        match self.api().create(&PostParams::default(), &secret).await {
            Ok(_) => {
                info!(namespace = %self.namespace, secret = name, "stored the new self-signed CA root");
                Ok((data, true))
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                info!(namespace = %self.namespace, secret = name, "another replica stored a CA root first; using it");
                let theirs = self
                    .read(name)
                    .await?
                    .ok_or_else(|| CaSecretError::Conflict {
                        namespace: self.namespace.clone(),
                        name: name.to_owned(),
                    })?;
                Ok((theirs, false))
            }
            Err(source) => Err(CaSecretError::Write {
                namespace: self.namespace.clone(),
                name: name.to_owned(),
                source,
            }),
        }
    }

    /// Stores a rotated root in Secret `name`, only if the Secret still holds `previous`
    /// (else another replica rotated first: [`CaSecretError::Conflict`], reload).
    pub async fn update(
        &self,
        name: &str,
        previous: &CaSecretData,
        next: &CaSecretData,
    ) -> Result<(), CaSecretError> {
        let api = self.api();
        let get_err = |source| CaSecretError::Get {
            namespace: self.namespace.clone(),
            name: name.to_owned(),
            source,
        };
        let conflict = || CaSecretError::Conflict {
            namespace: self.namespace.clone(),
            name: name.to_owned(),
        };
        let mut secret = api.get(name).await.map_err(get_err)?;
        if self.parse(name, &secret)? != *previous {
            return Err(conflict());
        }
        let mut data = next.to_data();
        if let Some(marker) = secret.data.as_ref().and_then(|d| d.get(GENERATED_MARKER)) {
            data.insert(GENERATED_MARKER.to_owned(), marker.clone());
        }
        secret.data = Some(data);
        // The resource version read above makes a concurrent rotation fail here.
        match api.replace(name, &PostParams::default(), &secret).await {
            Ok(_) => {
                info!(namespace = %self.namespace, secret = name, "stored the rotated CA root");
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Err(conflict()),
            Err(source) => Err(CaSecretError::Write {
                namespace: self.namespace.clone(),
                name: name.to_owned(),
                source,
            }),
        }
    }
}

impl From<CaSecretData> for RootPem {
    fn from(d: CaSecretData) -> Self {
        RootPem {
            ca_cert: d.ca_cert,
            ca_key: d.ca_key,
            root_cert: d.root_cert,
            cert_chain: d.cert_chain,
        }
    }
}

impl From<&RootPem> for CaSecretData {
    fn from(r: &RootPem) -> Self {
        CaSecretData {
            ca_cert: r.ca_cert.clone(),
            ca_key: r.ca_key.clone(),
            root_cert: r.root_cert.clone(),
            cert_chain: r.cert_chain.clone(),
        }
    }
}

impl From<CaSecretError> for StoreError {
    fn from(e: CaSecretError) -> Self {
        match e {
            CaSecretError::Conflict { .. } => StoreError::Conflict(e.to_string()),
            e => StoreError::Failed(Box::new(e)),
        }
    }
}

/// The self-signed root in Secret `istio-ca-secret`, shared by every istiod replica.
#[derive(Clone)]
pub struct SecretRoot {
    secrets: CaSecrets,
}

impl SecretRoot {
    /// The root store in `namespace` (istiod's own).
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        SecretRoot {
            secrets: CaSecrets::new(client, namespace),
        }
    }
}

impl fmt::Display for SecretRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret {}/{CA_SECRET_NAME}", self.secrets.namespace)
    }
}

impl SharedRoot for SecretRoot {
    fn load_or_create<'a>(
        &'a self,
        generate: Generate<'a>,
    ) -> BoxFuture<'a, Result<RootPem, StoreError>> {
        async move {
            let generate = || generate().map(|r| CaSecretData::from(&r));
            let (data, _) = self
                .secrets
                .load_or_create(CA_SECRET_NAME, generate)
                .await?;
            Ok(data.into())
        }
        .boxed()
    }

    fn update<'a>(
        &'a self,
        previous: &'a RootPem,
        next: &'a RootPem,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            self.secrets
                .update(CA_SECRET_NAME, &previous.into(), &next.into())
                .await?;
            Ok(())
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests;
