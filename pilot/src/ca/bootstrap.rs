//! Builds the CA subsystem from its settings: key material, the authority, the serving
//! certificate, authenticators and the TLS configuration of the secure port; and runs its
//! background work (root rotation, publication, serving-certificate renewal).

use std::path::PathBuf;
use std::sync::Arc;

use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tracing::{info, warn};

use super::authn::{Chain, ClientCertAuthenticator};
use super::authority::{Authority, TtlPolicy};
use super::config::CaConfig;
use super::jwt::JwtAuthenticator;
use super::metrics::Metrics;
use super::root::{self, SelfSignedOptions};
use super::rotation::{self, RotationOptions};
use super::secure::{self, MeshClientVerifier, TlsMinVersion};
use super::service::CaService;
use super::serving::{CustomCertFiles, ServingCert};
use super::store::RootStore;
use super::{read_file, Error};

/// The secure-port flags: `--caCertFile/--tlsCertFile/--tlsKeyFile/--tls-min-version`.
#[derive(Debug, Clone, Default)]
pub struct SecureOptions {
    pub custom_cert: Option<CustomCertFiles>,
    pub tls_min_version: TlsMinVersion,
}

impl SecureOptions {
    /// All three files or none, as upstream.
    pub fn from_flags(
        ca_cert_file: &str,
        tls_cert_file: &str,
        tls_key_file: &str,
        tls_min_version: &str,
    ) -> Result<Self, String> {
        let set = [ca_cert_file, tls_cert_file, tls_key_file]
            .iter()
            .filter(|f| !f.is_empty())
            .count();
        let custom_cert = match set {
            0 => None,
            3 => Some(CustomCertFiles {
                cert: PathBuf::from(tls_cert_file),
                key: PathBuf::from(tls_key_file),
                ca: PathBuf::from(ca_cert_file),
            }),
            _ => {
                return Err(
                    "--tlsCertFile, --tlsKeyFile and --caCertFile must be given together"
                        .to_owned(),
                )
            }
        };
        Ok(SecureOptions {
            custom_cert,
            tls_min_version: tls_min_version.parse()?,
        })
    }
}

/// The CA subsystem, ready to serve.
pub struct Ca {
    config: CaConfig,
    opts: SecureOptions,
    store: RootStore,
    authority: Option<Arc<Authority>>,
    metrics: Metrics,
    authn: Chain,
    serving: Option<Arc<ServingCert>>,
    verifier: Option<Arc<MeshClientVerifier>>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("enabled", &self.authority.is_some())
            .field("store", &self.store)
            .field("authn", &self.authn)
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// Loads or creates the key material and everything built on it. A plugged-in CA in
    /// `ROOT_CA_DIR` wins; else the self-signed root comes from `store`.
    pub async fn new(
        config: CaConfig,
        opts: SecureOptions,
        store: RootStore,
        registry: &mut Registry,
    ) -> Result<Self, Error> {
        let metrics = Metrics::new(registry);
        let authority = if config.enabled {
            let bundle = match root::load_plugged(&config.root_ca_dir)? {
                Some(b) => b,
                None => store.load_or_create(&self_signed_options(&config)).await?,
            };
            let ttl = TtlPolicy {
                default: config.default_ttl,
                max: config.max_ttl,
            };
            let a = Arc::new(Authority::new(bundle, ttl, &config.trust_domain)?);
            rotation::update_expiry_metrics(&a, &metrics);
            Some(a)
        } else {
            info!("CA server disabled (ENABLE_CA_SERVER=false)");
            None
        };

        let serving = match (&opts.custom_cert, &authority) {
            (Some(files), _) => Some(Arc::new(ServingCert::from_files(files)?)),
            (None, Some(a)) => Some(Arc::new(ServingCert::from_authority(
                a,
                &config.serving_dns_names(),
                config.self_signed_ttl,
            )?)),
            (None, None) => None,
        };
        let roots_pem = match (&authority, &opts.custom_cert) {
            (Some(a), _) => Some(a.trust_bundle().pem()),
            (None, Some(files)) => {
                Some(String::from_utf8(read_file(&files.ca)?).map_err(|_| {
                    Error::BadCertificate {
                        what: files.ca.display().to_string(),
                        reason: "not UTF-8 PEM".to_owned(),
                    }
                })?)
            }
            (None, None) => None,
        };
        let verifier = match roots_pem {
            Some(pem) => Some(Arc::new(MeshClientVerifier::new(&pem)?)),
            None => None,
        };

        let mut authn = Chain::new(vec![Arc::new(ClientCertAuthenticator)]);
        if let Some(rule) = &config.jwt_rule {
            let jwt = JwtAuthenticator::from_rule_json(
                rule,
                &config.trust_domain,
                &config.token_audiences,
            )
            .map_err(|e| Error::Tls(format!("JWT_RULE: {e}")))?;
            info!(authenticator = ?jwt, "JWT authenticator enabled");
            authn.push(Arc::new(jwt));
        }
        Ok(Ca {
            config,
            opts,
            store,
            authority,
            metrics,
            authn,
            serving,
            verifier,
        })
    }

    /// The authority, when the CA is enabled.
    pub fn authority(&self) -> Option<&Arc<Authority>> {
        self.authority.as_ref()
    }

    /// The authenticator chain of the secure port.
    pub fn authn(&self) -> Chain {
        self.authn.clone()
    }

    /// The TLS configuration of the secure port, or `None` when there is neither a CA nor a
    /// custom certificate (upstream then does not serve 15012).
    pub fn tls_config(&self) -> Result<Option<Arc<rustls::ServerConfig>>, Error> {
        match (&self.serving, &self.verifier) {
            (Some(cert), Some(verifier)) => Ok(Some(secure::server_config(
                cert.clone(),
                verifier.clone(),
                self.opts.tls_min_version,
            )?)),
            _ => Ok(None),
        }
    }

    /// Adds the CA service to `routes` when the CA is enabled.
    pub fn add_service(&self, routes: Routes) -> Routes {
        match &self.authority {
            Some(a) => {
                routes.add_service(CaService::new(a.clone(), self.metrics.clone()).into_server())
            }
            None => routes,
        }
    }

    /// Runs root rotation, root publication, client-verifier and serving-certificate
    /// renewal until `cancel`.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut tasks = tokio::task::JoinSet::new();
        if let Some(a) = &self.authority {
            let opts = RotationOptions {
                check_interval: self.config.root_check_interval,
                grace_percentile: self.config.grace_period_percentile,
                self_signed: self_signed_options(&self.config),
                store: self.store.clone(),
            };
            tasks.spawn(rotation::run_rotator(
                a.clone(),
                opts,
                self.metrics.clone(),
                cancel.clone(),
            ));
            if let Some(path) = &self.config.root_cert_file {
                tasks.spawn(rotation::run_publisher(
                    a.clone(),
                    path.clone(),
                    cancel.clone(),
                ));
            }
            if let Some(v) = &self.verifier {
                let (a, v, cancel) = (a.clone(), v.clone(), cancel.clone());
                tasks.spawn(async move {
                    let mut rx = a.subscribe();
                    loop {
                        tokio::select! {
                            _ = cancel.cancelled() => return,
                            changed = rx.changed() => if changed.is_err() { return },
                        }
                        let pem = rx.borrow_and_update().pem();
                        if let Err(error) = v.set_roots(&pem) {
                            warn!(%error, "updating client-certificate roots failed");
                        }
                    }
                });
            }
        }
        if let Some(serving) = &self.serving {
            match (&self.opts.custom_cert, &self.authority) {
                (Some(files), _) => {
                    tasks.spawn(
                        serving
                            .clone()
                            .run_file_reload(files.clone(), cancel.clone()),
                    );
                }
                (None, Some(a)) => {
                    tasks.spawn(serving.clone().run_rotation(
                        a.clone(),
                        self.config.serving_dns_names(),
                        self.config.self_signed_ttl,
                        cancel.clone(),
                    ));
                }
                (None, None) => {}
            }
        }
        while tasks.join_next().await.is_some() {}
    }
}

fn self_signed_options(config: &CaConfig) -> SelfSignedOptions {
    SelfSignedOptions {
        trust_domain: config.trust_domain.clone(),
        ttl: config.self_signed_ttl,
        key_type: config.key_type,
    }
}
