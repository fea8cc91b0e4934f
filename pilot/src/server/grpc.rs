//! istiod's gRPC servers: plaintext xDS (15010) and xDS + CA over TLS (15012), built from
//! one set of settings so that keepalive and connection age apply to both ports alike.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::time::Sleep;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::transport::server::Connected;
use tracing::info;

use super::tls;
use crate::ca::authn::Chain;
use crate::ca::secure::{spiffe_identities, AuthLayer, PeerInfo};

/// How long in-flight streams may run on after a connection reached its maximum age
/// (upstream's `MaxServerConnectionAgeGrace`, fixed at 10 s).
pub const MAX_CONNECTION_AGE_GRACE: Duration = Duration::from_secs(10);

/// Keepalive and connection lifetime of both gRPC ports.
#[derive(Debug, Clone)]
pub struct GrpcSettings {
    /// `--keepaliveInterval`: HTTP/2 pings on idle connections.
    pub keepalive_interval: Duration,
    /// `--keepaliveTimeout`: a ping not answered in this time closes the connection.
    pub keepalive_timeout: Duration,
    /// `--keepaliveMaxServerConnectionAge`: after this, the server sends GOAWAY so the
    /// client reconnects (to another replica, perhaps); `None` for no limit.
    pub max_connection_age: Option<Duration>,
    /// After GOAWAY, how long streams may finish before the connection is closed.
    pub max_connection_age_grace: Duration,
    /// `ISTIO_GPRC_MAXSTREAMS`: HTTP/2 streams a client may open at once on one connection.
    pub max_concurrent_streams: u32,
}

impl GrpcSettings {
    /// A tonic server with these settings.
    fn builder(&self) -> tonic::transport::Server {
        let mut server = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(self.keepalive_interval))
            .http2_keepalive_timeout(Some(self.keepalive_timeout))
            .max_concurrent_streams(Some(self.max_concurrent_streams));
        if let Some(age) = self.max_connection_age {
            server = server.max_connection_age(age);
        }
        server
    }

    /// When a connection accepted now must be closed, if ever.
    fn hard_deadline(&self) -> Option<Duration> {
        self.max_connection_age
            .map(|age| age.saturating_add(self.max_connection_age_grace))
    }
}

/// Serves `routes` in plaintext on `listener` (15010) until `shutdown`.
pub async fn serve_plaintext(
    listener: TcpListener,
    settings: GrpcSettings,
    routes: Routes,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let addr = listener.local_addr().ok();
    info!(?addr, "serving plaintext xDS");
    let deadline = settings.hard_deadline();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(move |conn| {
        conn.map(|tcp| {
            let _ = tcp.set_nodelay(true);
            let info = tcp.connect_info();
            Conn::new(tcp, info, deadline)
        })
    });
    settings
        .builder()
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await
}

/// Serves `routes` (the CA service, ADS, ...) over TLS on `listener` (15012) until
/// `shutdown`; every request passes the authentication layer first.
pub async fn serve_secure(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    settings: GrpcSettings,
    authn: Chain,
    routes: Routes,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let addr = listener.local_addr().ok();
    info!(?addr, "secure gRPC server listening");
    let deadline = settings.hard_deadline();
    let accepted = tls::accept("secureGRPCAddr", listener, tls, shutdown.clone());
    let incoming = ReceiverStream::new(accepted).map(move |a| {
        let identities = a
            .stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|leaf| spiffe_identities(leaf))
            .unwrap_or_default();
        let info = PeerInfo {
            remote_addr: Some(a.remote),
            identities: Arc::new(identities),
        };
        Ok::<_, io::Error>(Conn::new(a.stream, info, deadline))
    });
    settings
        .builder()
        .layer(AuthLayer::new(authn))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await
}

/// An accepted connection: its stream, what tonic is told about the peer (the TCP
/// addresses, or what the TLS handshake learned), and a deadline after which every read
/// and write fails: the end of the grace period after the server's GOAWAY, for clients
/// whose streams never finish.
pub struct Conn<T, I> {
    io: T,
    info: I,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<T, I> Conn<T, I> {
    pub fn new(io: T, info: I, lifetime: Option<Duration>) -> Self {
        Conn {
            io,
            info,
            deadline: lifetime.map(|d| Box::pin(tokio::time::sleep(d))),
        }
    }

    /// Polls the deadline (registering the waker), true once it has passed.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        match &mut self.deadline {
            Some(sleep) => sleep.as_mut().poll(cx).is_ready(),
            None => false,
        }
    }
}

fn aged_out() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "connection closed: maximum connection age and grace period passed",
    )
}

impl<T, I: Clone + Send + Sync + 'static> Connected for Conn<T, I> {
    type ConnectInfo = I;
    fn connect_info(&self) -> I {
        self.info.clone()
    }
}

impl<T: AsyncRead + Unpin, I: Unpin> AsyncRead for Conn<T, I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.expired(cx) {
            return Poll::Ready(Err(aged_out()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin, I: Unpin> AsyncWrite for Conn<T, I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.expired(cx) {
            return Poll::Ready(Err(aged_out()));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.expired(cx) {
            return Poll::Ready(Err(aged_out()));
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests;
