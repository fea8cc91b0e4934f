//! The HTTPS server of the webhook port (15017): connections from the shared TLS acceptor
//! (`server::tls`) served by the shared HTTP server (`server::http`) within
//! [`Limits::WEBHOOK`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::http::{self, Limits};
use super::tls;
use crate::args::listen_addr;

/// Errors starting the webhook server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid --httpsAddr: {0}")]
    Address(String),
    #[error("listening on --httpsAddr={addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// A listener of TLS connections, fed by the shared TLS acceptor.
pub struct TlsListener {
    conns: mpsc::Receiver<tls::Accepted>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts on `listener` and handshakes with `tls` until `shutdown`.
    pub fn new(
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        shutdown: CancellationToken,
    ) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let conns = tls::accept("httpsAddr", listener, tls, shutdown);
        Ok(TlsListener { conns, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.conns.recv().await {
            Some(conn) => (conn.stream, conn.remote),
            // The acceptor stopped (shutdown): wait for the server's own shutdown.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// The webhook's TLS configuration: istiod's certificate (from the CA's resolver), with
/// HTTP/1.1 negotiated as the API server and other clients speak it.
pub fn tls_config(base: &rustls::ServerConfig) -> Arc<rustls::ServerConfig> {
    let mut cfg = base.clone();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// Binds `--httpsAddr` and returns its address and the server future (run until
/// `shutdown`). `None` when the flag is empty.
pub async fn start(
    https_addr: &str,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    shutdown: CancellationToken,
) -> Result<Option<(SocketAddr, impl Future<Output = std::io::Result<()>>)>, Error> {
    let Some(addr) = listen_addr("httpsAddr", https_addr).map_err(Error::Address)? else {
        return Ok(None);
    };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind {
            addr: https_addr.to_owned(),
            source,
        })?;
    let tls_listener =
        TlsListener::new(listener, tls, shutdown.clone()).map_err(|source| Error::Bind {
            addr: https_addr.to_owned(),
            source,
        })?;
    let local = tls_listener.local;
    info!(addr = %local, "serving the validation webhook over HTTPS");
    let serve = http::serve("https", tls_listener, router, Limits::WEBHOOK, shutdown);
    Ok(Some((local, serve)))
}
