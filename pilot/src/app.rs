//! Builds every subsystem, binds the listeners and runs until shutdown.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::args::{listen_addr, DiscoveryArgs};
use crate::ca;
use crate::config::file::{self, DirSource};
use crate::config::secrets::SecretStore;
use crate::config::{ConfigStore, Kind};
use crate::inject::files::{self as inject_files, InjectFiles};
use crate::kube as kube_source;
use crate::model::MeshConfig;
use crate::security::jwks::JwksResolver;
use crate::server::debug::{self, DebugState};
use crate::server::grpc::{self, GrpcSettings};
use crate::server::http::{self, Limits};
use crate::server::{https, monitoring, runtime_metrics};
use crate::settings::Settings;
use crate::webhook;
use crate::xds::discovery::build_push;
use crate::xds::{metrics, AdsService, DiscoveryServer};

/// Largest xDS request accepted (`ISTIO_GPRC_MAXRECVMSGSIZE`).
const MAX_RECV_MSG_SIZE: usize = 4 * 1024 * 1024;

/// A running istiod: its bound addresses, and the handle to stop it.
pub struct App {
    /// Plaintext xDS (15010).
    pub grpc_addr: Option<SocketAddr>,
    /// xDS and CA over TLS (15012).
    pub secure_grpc_addr: Option<SocketAddr>,
    /// Admission webhooks over TLS (15017).
    pub https_addr: Option<SocketAddr>,
    /// Readiness and debug HTTP (8080).
    pub http_addr: Option<SocketAddr>,
    /// Metrics (15014).
    pub monitoring_addr: Option<SocketAddr>,
    pub discovery: Arc<DiscoveryServer>,
    pub store: ConfigStore,
    shutdown: CancellationToken,
    tasks: JoinSet<anyhow::Result<()>>,
    drain: Duration,
}

impl App {
    /// Loads config, binds every listener and starts serving. Listeners on port 0 get
    /// ephemeral ports, reported in the returned [`App`].
    pub async fn start(args: DiscoveryArgs, settings: Settings) -> anyhow::Result<App> {
        let features = settings.features.clone();
        let mut registry = Registry::default();
        let xds_metrics = metrics::Metrics::new(&mut registry);
        let file_metrics = file::Metrics::new(&mut registry);
        runtime_metrics::register(&mut registry, tokio::runtime::Handle::current());
        let ready = Arc::new(AtomicBool::new(false));
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();

        // Config: every source loads once before serving, so the first push is complete.
        let store = ConfigStore::new();
        // Secrets served over SDS, kept apart from config (`config::secrets`).
        let secrets = SecretStore::new();
        // The CA's trust bundle (PEM), for the Kubernetes writers; fed once the CA exists.
        let (root_tx, root_rx) = watch::channel(String::new());
        // Sidecar injection is served, as upstream, when its config is mounted.
        let injection_files = if settings.inject_enabled {
            InjectFiles::find(inject_files::DEFAULT_DIR, &settings.features.revision)
        } else {
            None
        };
        let writers = WriterInputs {
            root_rx,
            injection_served: injection_files.is_some(),
        };
        let (mesh_rx, kube_client) = start_sources(
            &args,
            &settings,
            Stores {
                config: &store,
                secrets: &secrets,
            },
            file_metrics,
            writers,
            &shutdown,
            &mut tasks,
        )
        .await?;
        let inject_mesh = mesh_rx.clone();
        let mesh = mesh_rx.borrow().clone();
        // Subscribed after the initial load: the first push context already has it.
        let changes = store.subscribe();
        let secret_changes = secrets.subscribe();
        // RequestAuthentication keys: fetched before the first push, refreshed after.
        let jwks = JwksResolver::new(settings.jwks.clone()).context("JWKS resolver")?;
        tasks.spawn({
            let (jwks, shutdown) = (jwks.clone(), shutdown.clone());
            async move {
                jwks.run(shutdown).await;
                Ok(())
            }
        });
        let discovery = DiscoveryServer::new(
            features.clone(),
            xds_metrics,
            build_push(&store, &mesh, &args.domain, &jwks).await,
        );
        // SDS: the Secrets as loaded, then a Secret-only push for every change.
        discovery.publish_secrets(
            secrets.snapshot(),
            Default::default(),
            tokio::time::Instant::now(),
        );
        if let Some(clients) = &kube_client {
            discovery.set_secret_authorizer(Arc::new(
                kube_source::secrets::SubjectAccessReviewer::new(clients.main.clone()),
            ));
        }
        tasks.spawn({
            let (d, secrets, shutdown) = (discovery.clone(), secrets.clone(), shutdown.clone());
            async move {
                d.run_secret_pushes(secrets, secret_changes, shutdown).await;
                Ok(())
            }
        });
        tasks.spawn({
            let (d, store, domain, shutdown) = (
                discovery.clone(),
                store.clone(),
                args.domain.clone(),
                shutdown.clone(),
            );
            async move {
                d.run_pushes(store, changes, mesh_rx, domain, jwks, shutdown)
                    .await;
                Ok(())
            }
        });

        let ads = AdsService::new(discovery.clone());
        let grpc = GrpcSettings {
            keepalive_interval: args.keepalive_interval,
            keepalive_timeout: args.keepalive_timeout,
            max_connection_age: args.keepalive_max_server_connection_age,
            max_connection_age_grace: grpc::MAX_CONNECTION_AGE_GRACE,
            max_concurrent_streams: settings.features.max_streams_per_connection,
        };
        let grpc_addr = match bind(&args.grpc_addr, "grpcAddr").await? {
            Some(listener) => {
                let addr = listener.local_addr()?;
                let routes = tonic::service::Routes::new(
                    ads.clone().max_decoding_message_size(MAX_RECV_MSG_SIZE),
                );
                let (grpc, shutdown) = (grpc.clone(), shutdown.clone());
                tasks.spawn(async move {
                    grpc::serve_plaintext(listener, grpc, routes, shutdown)
                        .await
                        .context("plaintext xDS server")
                });
                Some(addr)
            }
            None => None,
        };

        // Secure gRPC (15012: xDS + CA over TLS): the CA subsystem.
        let secure = SecureGrpc {
            args: &args,
            settings: &settings,
            grpc: &grpc,
            mesh: &mesh,
            ads: &ads,
            kube_client,
        };
        let (secure_grpc_addr, ca) = secure.start(&mut registry, &shutdown, &mut tasks).await?;
        if let Some(authority) = ca.authority() {
            let (mut roots, shutdown) = (authority.subscribe(), shutdown.clone());
            tasks.spawn(async move {
                loop {
                    root_tx.send_replace(roots.borrow_and_update().pem());
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        changed = roots.changed() => if changed.is_err() { return Ok(()) },
                    }
                }
            });
        }
        // Admission webhooks (15017): TLS with the same serving certificate.
        let injection = match injection_files {
            Some(files) => Some(start_injection(
                files,
                inject_mesh,
                &mut registry,
                &shutdown,
                &mut tasks,
            )?),
            None => {
                info!(
                    dir = inject_files::DEFAULT_DIR,
                    "no injection config: not serving /inject"
                );
                None
            }
        };
        let https_addr =
            start_webhook(&args, &ca, injection, &mut registry, &shutdown, &mut tasks).await?;

        let registry = Arc::new(Mutex::new(registry));
        let debug_state = DebugState {
            discovery: discovery.clone(),
            store: store.clone(),
        };
        let monitoring_addr = match bind(&args.monitoring_addr, "monitoringAddr").await? {
            Some(listener) => {
                let addr = listener.local_addr()?;
                let router =
                    monitoring::routes(registry.clone()).merge(debug::routes(debug_state.clone()));
                let shutdown = shutdown.clone();
                tasks.spawn(async move {
                    Ok(
                        http::serve("monitoring", listener, router, Limits::ADMIN, shutdown)
                            .await?,
                    )
                });
                Some(addr)
            }
            None => None,
        };
        let http_addr = match bind(&args.http_addr, "httpAddr").await? {
            Some(listener) => {
                let addr = listener.local_addr()?;
                let mut router = Router::new()
                    .route("/ready", get(ready_handler))
                    .with_state(ready.clone());
                if features.enable_debug_on_http {
                    router = router.merge(debug::routes(debug_state));
                }
                let shutdown = shutdown.clone();
                tasks.spawn(async move {
                    Ok(http::serve("http", listener, router, Limits::ADMIN, shutdown).await?)
                });
                Some(addr)
            }
            None => None,
        };

        // Config is loaded and the first push context exists: ready to serve proxies.
        ready.store(true, Ordering::SeqCst);
        info!(version = crate::version::VERSION, "istiod ready");
        Ok(App {
            grpc_addr,
            secure_grpc_addr,
            https_addr,
            http_addr,
            monitoring_addr,
            discovery,
            store,
            shutdown,
            tasks,
            drain: args.shutdown_duration,
        })
    }

    /// A handle that stops the app when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Runs until a task fails or shutdown is requested, then drains within the
    /// shutdown duration.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        // A task that ends on its own (a watch whose source went away) is logged; one that
        // fails stops istiod, since a half-working control plane is worse than a restart.
        let result = loop {
            tokio::select! {
                // Tasks end on shutdown too: that is not "early".
                biased;
                _ = self.shutdown.cancelled() => break Ok(()),
                res = self.tasks.join_next() => match res {
                    None => break Ok(()),
                    Some(Ok(Ok(()))) => warn!("a background task finished early"),
                    Some(Ok(Err(e))) => break Err(e),
                    Some(Err(e)) => break Err(anyhow::anyhow!("task panicked: {e}")),
                },
            }
        };
        self.shutdown.cancel();
        let drained = tokio::time::timeout(self.drain, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!(timeout = ?self.drain, "drain deadline passed; closing remaining connections");
            self.tasks.abort_all();
        }
        result
    }
}

/// What the Kubernetes writers need from the rest of istiod.
struct WriterInputs {
    /// The CA's trust bundle (PEM), for webhook `caBundle`s and root ConfigMaps.
    root_rx: watch::Receiver<String>,
    /// Whether `/inject` is served, so the injector webhooks are istiod's to patch.
    injection_served: bool,
}

/// Where the sources put what they read: config, and Secrets for SDS.
struct Stores<'a> {
    config: &'a ConfigStore,
    secrets: &'a SecretStore,
}

/// Starts the config sources the flags ask for (`--configDir`, `--registries Kubernetes`)
/// and waits for their initial load. Returns the live mesh config.
async fn start_sources(
    args: &DiscoveryArgs,
    settings: &Settings,
    stores: Stores<'_>,
    file_metrics: file::Metrics,
    writers: WriterInputs,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<anyhow::Result<()>>,
) -> anyhow::Result<(watch::Receiver<MeshConfig>, Option<kube_source::Clients>)> {
    let mut kubernetes = false;
    for r in args
        .registries
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
    {
        match r {
            "Kubernetes" => kubernetes = true,
            "Mock" => {}
            other => anyhow::bail!("unknown service registry {other:?} in --registries (want Kubernetes, or empty with --configDir)"),
        }
    }
    if !kubernetes && args.config_dir.is_empty() {
        anyhow::bail!("no configuration source: pass --configDir DIR (a folder of Kubernetes-style YAML) or --registries Kubernetes");
    }
    let Stores {
        config: store,
        secrets,
    } = stores;
    let mesh_file_exists = std::path::Path::new(&args.mesh_config).exists();
    let mesh = MeshConfig::load(&args.mesh_config, &args.namespace)?;
    let (mesh_tx, mesh_rx) = watch::channel(mesh);

    if !args.config_dir.is_empty() {
        let source = DirSource::new(&args.config_dir, store.clone(), file_metrics)
            .with_secrets(secrets.clone());
        let dir_watch = source
            .watch()
            .with_context(|| format!("watching --configDir {}", args.config_dir))?;
        source
            .sync()
            .with_context(|| format!("reading --configDir {}", args.config_dir))?;
        let shutdown = shutdown.clone();
        tasks.spawn(async move { source.run(dir_watch, shutdown).await });
    }

    let mut kube_client = None;
    if kubernetes {
        let limit = kube_source::RateLimit {
            qps: args.kubernetes_api_qps,
            burst: args.kubernetes_api_burst,
        };
        let kubeconfig = if args.kubeconfig.is_empty() {
            &settings.kubeconfig
        } else {
            &args.kubeconfig
        };
        let clients = kube_source::clients(kubeconfig, limit).await?;
        let client = clients.main.clone();
        kube_client = Some(clients);
        let election = kube_source::leader::ElectionConfig::new(
            settings.leader_election,
            &args.namespace,
            &settings.features.pod_name,
            &settings.features.revision,
        )
        .context("starting the Kubernetes writers")?;
        kube_source::leader::spawn_writers(
            client.clone(),
            election,
            &settings.features.revision,
            writers.injection_served,
            writers.root_rx,
            shutdown.clone(),
            tasks,
        );
        let source =
            kube_source::KubeSource::new(client.clone(), store.clone(), Kind::ALL.to_vec());
        let sync = source.sync.clone();
        tasks.spawn({
            let shutdown = shutdown.clone();
            async move { source.run(shutdown).await }
        });
        let (secrets_synced, mut secrets_ready) = watch::channel(false);
        tasks.spawn({
            let (client, secrets, shutdown) = (client.clone(), secrets.clone(), shutdown.clone());
            async move {
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = kube_source::secrets::watch_secrets(client, secrets, secrets_synced) => {}
                }
                Ok(())
            }
        });
        if !mesh_file_exists {
            // A mesh file wins, as upstream; else the `istio[-<rev>]` ConfigMap, live.
            let (namespace, revision) =
                (args.namespace.clone(), settings.features.revision.clone());
            let shutdown = shutdown.clone();
            tasks.spawn(async move {
                kube_source::mesh::watch_mesh(client, namespace, revision, mesh_tx, shutdown).await;
                Ok(())
            });
        }
        info!("waiting for the initial sync of Kubernetes resources");
        sync.wait_reporting(Duration::from_secs(5), |pending| {
            let pending: Vec<String> = pending.iter().map(ToString::to_string).collect();
            info!(pending = %pending.join(", "), "still waiting for the initial sync of Kubernetes resources");
        })
        .await;
        // Gateways get their certificates from the first push on.
        let _ = secrets_ready.wait_for(|synced| *synced).await;
        info!("Kubernetes resources synced");
    }
    Ok((mesh_rx, kube_client))
}

async fn ready_handler(
    axum::extract::State(ready): axum::extract::State<Arc<AtomicBool>>,
) -> (StatusCode, &'static str) {
    if ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// What the CA and the secure gRPC server (15012) are built from.
struct SecureGrpc<'a> {
    args: &'a DiscoveryArgs,
    settings: &'a Settings,
    grpc: &'a GrpcSettings,
    mesh: &'a MeshConfig,
    ads: &'a AdsService,
    /// With Kubernetes: the self-signed root lives in a Secret, and service-account
    /// tokens are checked with a TokenReview.
    kube_client: Option<kube_source::Clients>,
}

impl SecureGrpc<'_> {
    /// Builds the CA and serves ADS and the CA over TLS on `--secureGRPCAddr`.
    async fn start(
        self,
        registry: &mut Registry,
        shutdown: &CancellationToken,
        tasks: &mut JoinSet<anyhow::Result<()>>,
    ) -> anyhow::Result<(Option<SocketAddr>, Arc<ca::Ca>)> {
        let SecureGrpc {
            args,
            settings,
            grpc,
            mesh,
            ads,
            kube_client,
        } = self;
        let mut config = settings.ca.clone();
        if !mesh.trust_domain.is_empty() {
            config.trust_domain = mesh.trust_domain.clone();
        }
        // Proxies verify istiod by the host they dial, as upstream's getDNSNames.
        config.discovery_host = ca::config::discovery_host(&mesh.default_config.discovery_address);
        let (audiences, trust_domain) =
            (config.token_audiences.clone(), config.trust_domain.clone());
        let opts = ca::SecureOptions::from_flags(
            &args.ca_cert_file,
            &args.tls_cert_file,
            &args.tls_key_file,
            &args.tls_min_version,
        )
        .map_err(anyhow::Error::msg)?;
        // With Kubernetes the self-signed root lives in Secret istio-ca-secret, shared by
        // every replica, as upstream; else in files (or memory).
        let store = match &kube_client {
            Some(clients) => ca::RootStore::Shared(Arc::new(
                kube_source::ca_secret::SecretRoot::new(clients.main.clone(), &args.namespace),
            )),
            None => ca::RootStore::Files(config.self_signed_dir.clone()),
        };
        let ca = ca::Ca::new(config, opts, store, registry)
            .await
            .context("starting the CA")?;
        let ca = Arc::new(ca);
        tasks.spawn({
            let (ca, shutdown) = (ca.clone(), shutdown.clone());
            async move {
                ca.run(shutdown).await;
                Ok(())
            }
        });
        let Some(listener) = bind(&args.secure_grpc_addr, "secureGRPCAddr").await? else {
            return Ok((None, ca));
        };
        let Some(tls) = ca.tls_config()? else {
            warn!("no CA and no --tlsCertFile: not serving --secureGRPCAddr");
            return Ok((None, ca));
        };
        let addr = listener.local_addr()?;
        let routes = ca.add_service(tonic::service::Routes::new(
            ads.clone().max_decoding_message_size(MAX_RECV_MSG_SIZE),
        ));
        let (mut authn, shutdown, grpc) = (ca.authn(), shutdown.clone(), grpc.clone());
        if let Some(clients) = kube_client {
            // Service-account tokens from this cluster, checked with a TokenReview on the
            // client (and request budget) kept for that.
            let reviewer =
                kube_source::tokenreview::TokenReviewer::new(clients.token_review, audiences);
            authn.push(Arc::new(
                kube_source::tokenreview::TokenReviewAuthenticator::new(
                    reviewer,
                    &trust_domain,
                    &args.cluster_id,
                ),
            ));
        }
        tasks.spawn(async move {
            grpc::serve_secure(listener, tls, grpc, authn, routes, shutdown)
                .await
                .context("secure gRPC server")
        });
        Ok((Some(addr), ca))
    }
}

/// Loads the injection config and keeps it current; a config that does not load stops
/// istiod, as upstream, since there is no last good one yet.
fn start_injection(
    files: InjectFiles,
    mesh: watch::Receiver<MeshConfig>,
    registry: &mut Registry,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<anyhow::Result<()>>,
) -> anyhow::Result<webhook::inject::InjectState> {
    let dir = files.dir().display().to_string();
    let watch = files
        .watch()
        .with_context(|| format!("watching the injection config {dir}"))?;
    let injector = files
        .load()
        .with_context(|| format!("loading the injection config {dir}"))?;
    info!(dir = %dir, templates = ?injector.config.templates.keys().collect::<Vec<_>>(), "serving sidecar injection");
    let injector = Arc::new(ArcSwap::from_pointee(injector));
    tasks.spawn({
        let (injector, shutdown) = (injector.clone(), shutdown.clone());
        async move {
            files.run(watch, injector, shutdown).await;
            Ok(())
        }
    });
    Ok(webhook::inject::InjectState {
        injector,
        mesh,
        metrics: webhook::inject::Metrics::new(registry),
    })
}

/// Serves the admission webhooks on `--httpsAddr` with istiod's serving certificate:
/// validation, and injection when its config is present.
async fn start_webhook(
    args: &DiscoveryArgs,
    ca: &ca::Ca,
    injection: Option<webhook::inject::InjectState>,
    registry: &mut Registry,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<anyhow::Result<()>>,
) -> anyhow::Result<Option<SocketAddr>> {
    let metrics = webhook::Metrics::new(registry);
    if args.https_addr.is_empty() {
        return Ok(None);
    }
    let Some(tls) = ca.tls_config()? else {
        warn!("no CA and no --tlsCertFile: not serving the admission webhooks on --httpsAddr");
        return Ok(None);
    };
    let tls = https::tls_config(&tls);
    let mut routes = webhook::routes(metrics);
    if let Some(state) = injection {
        routes = routes.merge(webhook::inject::routes(state));
    }
    let started = https::start(&args.https_addr, tls, routes, shutdown.clone()).await?;
    let Some((addr, serve)) = started else {
        return Ok(None);
    };
    tasks.spawn(async move { serve.await.context("admission webhook server") });
    Ok(Some(addr))
}

async fn bind(value: &str, flag: &str) -> anyhow::Result<Option<TcpListener>> {
    let Some(addr) = listen_addr(flag, value).map_err(anyhow::Error::msg)? else {
        return Ok(None);
    };
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on --{flag}={value}"))?;
    Ok(Some(listener))
}
