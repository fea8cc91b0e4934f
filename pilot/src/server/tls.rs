//! The TLS acceptor of istiod's TLS ports (15012 and 15017): every handshake runs in its
//! own task under a timeout, and at most [`MAX_HANDSHAKES`] connections are between accept
//! and the server at once, so a slow or silent client holds up neither other clients nor
//! the accept loop's memory.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// How long a client may take to complete its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections handshaking or waiting for the server at once; further connections wait in
/// the kernel's backlog.
pub const MAX_HANDSHAKES: usize = 1024;
/// Connections handshaken but not yet taken by the server.
const BACKLOG: usize = 128;

/// A connection whose TLS handshake completed.
pub struct Accepted {
    pub stream: TlsStream<TcpStream>,
    pub remote: SocketAddr,
}

/// Accepts on `listener` and handshakes with `tls` until `shutdown`; `port` names the
/// listener in logs. Finished connections arrive on the returned channel.
pub fn accept(
    port: &'static str,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
) -> mpsc::Receiver<Accepted> {
    let (tx, rx) = mpsc::channel(BACKLOG);
    let acceptor = TlsAcceptor::from(tls);
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                _ = shutdown.cancelled() => return,
                permit = handshakes.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            let (tcp, remote) = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(error) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        warn!(port, %error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
                match handshake {
                    // The place is kept until the server takes the connection, so
                    // connections the server cannot take yet stay bounded too.
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Accepted { stream, remote }).await;
                    }
                    Ok(Err(error)) => debug!(port, %remote, %error, "TLS handshake failed"),
                    Err(_) => debug!(port, %remote, "TLS handshake timed out"),
                }
                drop(permit);
            });
        }
    });
    rx
}
