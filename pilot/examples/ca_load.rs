//! End-to-end CA load: starts `pilot-discovery` (release build), then N concurrent gRPC
//! clients over TLS call `CreateCertificate` with a JWT for a fixed time and report the
//! certificates issued per second.
//!
//! `ca_load --binary target/release/pilot-discovery [--clients 50] [--seconds 10]
//!          [--csr ec|rsa] [--root-key rsa|ec]`

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hyper_util::rt::TokioIo;
use pilot::ca::pb::istio_certificate_service_client::IstioCertificateServiceClient;
use pilot::ca::pb::IstioCertificateRequest;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tonic::transport::{Channel, Endpoint};

struct Opts {
    binary: PathBuf,
    clients: usize,
    seconds: u64,
    csr: String,
    root_key: String,
}

fn opts() -> anyhow::Result<Opts> {
    let mut o = Opts {
        binary: PathBuf::from("target/release/pilot-discovery"),
        clients: 50,
        seconds: 10,
        csr: "ec".into(),
        root_key: "rsa".into(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().context("flag without value")?;
        match flag.as_str() {
            "--binary" => o.binary = value.into(),
            "--clients" => o.clients = value.parse()?,
            "--seconds" => o.seconds = value.parse()?,
            "--csr" => o.csr = value,
            "--root-key" => o.root_key = value,
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(o)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(StdListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn b64url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let mut n = 0u32;
        for (i, b) in chunk.iter().enumerate() {
            n |= u32::from(*b) << (16 - 8 * i);
        }
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

struct Istiod {
    child: Child,
    secure: u16,
    root: PathBuf,
}

impl Drop for Istiod {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(o: &Opts, dir: &Path, jwks: &Path) -> anyhow::Result<Istiod> {
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect::<Result<_, _>>()?;
    std::fs::create_dir_all(dir.join("config"))?;
    let root = dir.join("root-cert.pem");
    let rule = format!(
        r#"{{"issuer":"https://issuer.bench","jwksUri":"file://{}"}}"#,
        jwks.display()
    );
    let key_type = if o.root_key == "ec" {
        "ECDSA_P256"
    } else {
        "RSA"
    };
    let child = Command::new(&o.binary)
        .current_dir(dir)
        .args(["discovery", "--registries=", "--httpsAddr="])
        .arg("--configDir")
        .arg(dir.join("config"))
        .arg(format!("--grpcAddr=127.0.0.1:{}", ports[0]))
        .arg(format!("--httpAddr=127.0.0.1:{}", ports[1]))
        .arg(format!("--monitoringAddr=127.0.0.1:{}", ports[2]))
        .arg(format!("--secureGRPCAddr=127.0.0.1:{}", ports[3]))
        .env("JWT_RULE", rule)
        .env("PILOT_ROOT_CERT_FILE", &root)
        .env("CITADEL_SELF_SIGNED_CA_KEY_TYPE", key_type)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", o.binary.display()))?;
    let d = Istiod {
        child,
        secure: ports[3],
        root,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !d.root.exists() || std::net::TcpStream::connect(("127.0.0.1", d.secure)).is_err() {
        if Instant::now() > deadline {
            bail!("istiod did not publish its root and open the secure port");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(d)
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

fn csr(kind: &str) -> anyhow::Result<String> {
    let key = match kind {
        "rsa" => pilot::ca::keys::generate(pilot::ca::keys::KeyType::Rsa(2048))?.pair,
        _ => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?,
    };
    let params = rcgen::CertificateParams::default();
    Ok(params.serialize_request(&key)?.pem()?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut o = opts()?;
    o.binary = std::fs::canonicalize(&o.binary)
        .with_context(|| format!("--binary {}", o.binary.display()))?;
    let dir = tempfile::tempdir()?;
    // The test issuer: an EC key, its JWKS, one token for all clients.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let point = key.public_key_raw();
    let jwks = serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k",
        "x": b64url(&point[1..33]), "y": b64url(&point[33..65])}]});
    let jwks_path = dir.path().join("jwks.json");
    std::fs::write(&jwks_path, jwks.to_string())?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = serde_json::json!({"iss": "https://issuer.bench", "aud": "istio-ca",
        "exp": now + 3600, "kubernetes.io": {"namespace": "bench", "serviceaccount": {"name": "load"}}});
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("k".into());
    let token = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_ec_pem(key.serialize_pem().as_bytes())?,
    )?;

    let istiod = start(&o, dir.path(), &jwks_path)?;
    let roots = std::fs::read(&istiod.root)?;
    let issued = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    // Connections and CSRs first (RSA keys are slow to make: a few, shared), then the clock.
    let csrs: Vec<String> = (0..o.clients.min(4))
        .map(|_| csr(&o.csr))
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
