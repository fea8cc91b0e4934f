//! End-to-end CA load: starts `pilot-discovery` (release build), then N concurrent gRPC
//! clients over TLS call `CreateCertificate` with a JWT for a fixed time and report the
//! certificates issued per second.
//!
//! ```text
//! ca_load --binary target/release/pilot-discovery [--clients 50] [--seconds 10]
//!         [--csr ec|rsa] [--root-key rsa|ec]
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use hyper_util::rt::TokioIo;
use pilot::ca::pb::istio_certificate_service_client::IstioCertificateServiceClient;
use pilot::ca::pb::IstioCertificateRequest;
use pilot::testing::jwt::{service_account_claims, Issuer};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tonic::transport::{Channel, Endpoint};

use bench::process::{free_port, Server};

/// A key algorithm, of the clients' CSRs or of the CA's self-signed root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum KeyKind {
    /// ECDSA P-256.
    Ec,
    /// RSA 2048.
    Rsa,
}

impl std::fmt::Display for KeyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyKind::Ec => "ec",
            KeyKind::Rsa => "rsa",
        })
    }
}

#[derive(Debug, Parser)]
#[command(about = "Certificates per second issued by pilot-discovery's CA over gRPC and TLS")]
struct Args {
    /// The pilot-discovery binary to start.
    #[arg(long, default_value = "target/release/pilot-discovery")]
    binary: PathBuf,
    /// Concurrent clients, one TLS connection each.
    #[arg(long, default_value_t = 50)]
    clients: usize,
    /// How long the clients send requests.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Key of the clients' CSRs.
    #[arg(long, value_enum, default_value_t = KeyKind::Ec)]
    csr: KeyKind,
    /// Key of the CA's self-signed root.
    #[arg(long, value_enum, default_value_t = KeyKind::Rsa)]
    root_key: KeyKind,
}

/// The started server: its secure gRPC port and the root certificate it writes.
struct Istiod {
    _server: Server,
    secure: u16,
    root: PathBuf,
}

/// Starts `pilot-discovery` in `dir` with the CA on and a JWT issuer whose keys are in
/// `jwks`; returns once it has written its root certificate and opened the secure port.
async fn start(args: &Args, dir: &Path, jwks: &Path) -> anyhow::Result<Istiod> {
    std::fs::create_dir_all(dir.join("config"))?;
    let root = dir.join("root-cert.pem");
    let rule = format!(
        r#"{{"issuer":"https://issuer.bench","jwksUri":"file://{}"}}"#,
        jwks.display()
    );
    let key_type = match args.root_key {
        KeyKind::Ec => "ECDSA_P256",
        KeyKind::Rsa => "RSA",
    };
    let secure = free_port()?;
    let mut flags = vec![
        "discovery".to_owned(),
        "--registries=".to_owned(),
        "--httpsAddr=".to_owned(),
        "--configDir".to_owned(),
        dir.join("config").display().to_string(),
        format!("--secureGRPCAddr=127.0.0.1:{secure}"),
    ];
    for flag in ["--grpcAddr", "--httpAddr", "--monitoringAddr"] {
        flags.push(format!("{flag}=127.0.0.1:{}", free_port()?));
    }
    let root_env = root.display().to_string();
    let server = Server::spawn_in(
        &args.binary,
        &flags,
        &[
            ("JWT_RULE", rule.as_str()),
            ("PILOT_ROOT_CERT_FILE", root_env.as_str()),
            ("CITADEL_SELF_SIGNED_CA_KEY_TYPE", key_type),
            ("RUST_LOG", "warn"),
        ],
        dir.join("pilot-discovery.log"),
        Some(dir),
    )?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !root.exists()
        || tokio::net::TcpStream::connect(("127.0.0.1", secure))
            .await
            .is_err()
    {
        if Instant::now() > deadline {
            bail!("istiod did not publish its root and open the secure port");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Istiod {
        _server: server,
        secure,
        root,
    })
}

async fn channel(port: u16, roots_pem: &[u8]) -> anyhow::Result<Channel> {
    let mut store = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(roots_pem) {
        store.add(c?)?;
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(store)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let ch = Endpoint::from_static("http://istiod.istio-system.svc")
        .connect_with_connector(tower::service_fn(move |_| {
            let connector = connector.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
                let name = ServerName::try_from("istiod.istio-system.svc")
                    .map_err(std::io::Error::other)?;
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await?;
    Ok(ch)
}

fn csr(kind: KeyKind) -> anyhow::Result<String> {
    let key = match kind {
        KeyKind::Rsa => pilot::ca::keys::generate(pilot::ca::keys::KeyType::Rsa(2048))?.pair,
        KeyKind::Ec => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?,
    };
    let params = rcgen::CertificateParams::default();
    Ok(params.serialize_request(&key)?.pem()?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut o = Args::parse();
    o.binary = std::fs::canonicalize(&o.binary)
        .with_context(|| format!("--binary {}", o.binary.display()))?;
    let dir = tempfile::tempdir()?;
    // The test issuer: an EC key, its JWKS, one token for all clients.
    let issuer = Issuer::new("k");
    let jwks_path = dir.path().join("jwks.json");
    std::fs::write(&jwks_path, issuer.jwks())?;
    let token = issuer.sign(&service_account_claims(
        "https://issuer.bench",
        "istio-ca",
        "bench",
        "load",
        3600,
    ));

    let istiod = start(&o, dir.path(), &jwks_path).await?;
    let roots = std::fs::read(&istiod.root)?;
    let issued = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    // Connections and CSRs first (RSA keys are slow to make: a few, shared), then the clock.
    let csrs: Vec<String> = (0..o.clients.min(4))
        .map(|_| csr(o.csr))
        .collect::<Result<_, _>>()?;
    let mut channels = Vec::with_capacity(o.clients);
    for _ in 0..o.clients {
        channels.push(channel(istiod.secure, &roots).await?);
    }
    let start = Instant::now();
    let deadline = start + Duration::from_secs(o.seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, ch) in channels.into_iter().enumerate() {
        let csr = csrs[i % csrs.len()].clone();
        let (token, issued, errors) = (token.clone(), issued.clone(), errors.clone());
        tasks.spawn(async move {
            let mut client = IstioCertificateServiceClient::new(ch);
            while Instant::now() < deadline {
                let mut req = tonic::Request::new(IstioCertificateRequest {
                    csr: csr.clone(),
                    validity_duration: 3600,
                    metadata: None,
                });
                if let Ok(v) = format!("Bearer {token}").parse() {
                    req.metadata_mut().insert("authorization", v);
                }
                match client.create_certificate(req).await {
                    Ok(_) => issued.fetch_add(1, Ordering::Relaxed),
                    Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                };
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let secs = start.elapsed().as_secs_f64();
    let n = issued.load(Ordering::Relaxed);
    println!(
        "ca_load: root={} csr={} clients={} issued={} errors={} seconds={:.1} certs_per_second={:.0}",
        o.root_key,
        o.csr,
        o.clients,
        n,
        errors.load(Ordering::Relaxed),
        secs,
        n as f64 / secs
    );
    drop(istiod);
    Ok(())
}
