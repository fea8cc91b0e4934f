//! Security of the secure gRPC port (`--secureGRPCAddr`, 15012): the TLS configuration
//! (istiod's serving certificate, optional client certificates verified against the mesh
//! roots) and the authenticating layer that puts `security::Caller` into every request.
//! The server itself is `server::grpc`.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, UnixTime};
use tonic::body::Body;
use tracing::warn;
use x509_parser::prelude::FromDer;

use super::authn::{Chain, Credentials, FAILED};
use super::serving::ServingCert;
use super::Error;
use crate::security::{Caller, Identity};

/// gRPC path prefix of the CA service: unauthenticated calls reach it so that it can
/// count and answer them; every other service refuses them in the layer.
const CA_PATH_PREFIX: &str = "/istio.v1.auth.IstioCertificateService/";

/// Why authentication failed, for the CA service to report.
#[derive(Debug, Clone)]
pub struct AuthFailure(pub String);

/// What the TLS layer learned about the peer; in each request's extensions.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub remote_addr: Option<SocketAddr>,
    /// SPIFFE identities of a verified client certificate.
    pub identities: Arc<Vec<Identity>>,
}

/// Minimum TLS version (`--tls-min-version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMinVersion {
    #[default]
    Tls12,
    Tls13,
}

impl std::str::FromStr for TlsMinVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s
            .trim()
            .to_ascii_uppercase()
            .trim_start_matches("TLS")
            .trim_start_matches('V')
        {
            "" | "1.2" | "1_2" | "12" => Ok(TlsMinVersion::Tls12),
            "1.3" | "1_3" | "13" => Ok(TlsMinVersion::Tls13),
            _ => Err(format!(
                "unsupported TLS version {s:?}: only 1.2 and 1.3 are accepted"
            )),
        }
    }
}

/// Verifies client certificates, when given, against the current mesh roots.
#[derive(Debug)]
pub struct MeshClientVerifier {
    inner: ArcSwap<Arc<dyn ClientCertVerifier>>,
}

impl MeshClientVerifier {
    pub fn new(roots_pem: &str) -> Result<Self, Error> {
        Ok(MeshClientVerifier {
            inner: ArcSwap::from_pointee(build_verifier(roots_pem)?),
        })
    }

    /// Replaces the roots (after root rotation).
    pub fn set_roots(&self, roots_pem: &str) -> Result<(), Error> {
        self.inner.store(Arc::new(build_verifier(roots_pem)?));
        Ok(())
    }
}

fn build_verifier(roots_pem: &str) -> Result<Arc<dyn ClientCertVerifier>, Error> {
    let mut store = RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(roots_pem.as_bytes()) {
        let der = der.map_err(|e| Error::Tls(format!("mesh roots: {e}")))?;
        store
            .add(der)
            .map_err(|e| Error::Tls(format!("mesh roots: {e}")))?;
    }
    WebPkiClientVerifier::builder_with_provider(
        Arc::new(store),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| Error::Tls(e.to_string()))
}

impl ClientCertVerifier for MeshClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: clients send whatever certificate they have.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner
            .load()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.load().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.load().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.load().supported_verify_schemes()
    }
}

/// The rustls configuration of 15012: h2, the serving certificate resolver, optional
/// client certificates against the mesh roots.
pub fn server_config(
    cert: Arc<ServingCert>,
    verifier: Arc<MeshClientVerifier>,
    min_version: TlsMinVersion,
) -> Result<Arc<rustls::ServerConfig>, Error> {
    let versions: &[&rustls::SupportedProtocolVersion] = match min_version {
        TlsMinVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsMinVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .map_err(|e| Error::Tls(e.to_string()))?
    .with_client_cert_verifier(verifier)
    .with_cert_resolver(cert);
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

/// SPIFFE identities in the URI SANs of a DER certificate.
pub fn spiffe_identities(der: &[u8]) -> Vec<Identity> {
    let Ok((_, x509)) = x509_parser::certificate::X509Certificate::from_der(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = x509.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) => Identity::parse(u).ok(),
            _ => None,
        })
        .collect()
}

/// Authenticates every request, inserting `Caller` (or `AuthFailure` for the CA).
#[derive(Clone, Debug)]
pub struct AuthLayer {
    chain: Chain,
}

impl AuthLayer {
    pub fn new(chain: Chain) -> Self {
        AuthLayer { chain }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            chain: self.chain.clone(),
        }
    }
}

/// See [`AuthLayer`].
#[derive(Clone, Debug)]
pub struct AuthService<S> {
    inner: S,
    chain: Chain,
}

impl<S> tower::Service<http::Request<Body>> for AuthService<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        // Take the service that was polled ready; leave a clone in its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let chain = self.chain.clone();
        Box::pin(async move {
            let peer = req
                .extensions()
                .get::<PeerInfo>()
                .map(|p| p.identities.as_ref().clone())
                .unwrap_or_default();
            let creds = Credentials::from_headers(req.headers(), peer);
            match chain.authenticate(&creds).await {
                Ok(identity) => {
                    req.extensions_mut().insert(Caller(identity));
                }
                Err(reason) => {
                    if !req.uri().path().starts_with(CA_PATH_PREFIX) {
                        let peer = req
                            .extensions()
                            .get::<PeerInfo>()
                            .and_then(|p| p.remote_addr);
                        warn!(path = req.uri().path(), peer = ?peer, %reason, "refusing an unauthenticated request");
                        return Ok(tonic::Status::unauthenticated(FAILED).into_http());
                    }
                    req.extensions_mut().insert(AuthFailure(reason));
                }
            }
            inner.call(req).await
        })
    }
}
