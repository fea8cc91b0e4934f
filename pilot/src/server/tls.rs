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

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn configs() -> (Arc<rustls::ServerConfig>, tokio_rustls::TlsConnector) {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["istiod".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let der_key = rustls_pki_types::PrivatePkcs8KeyDer::from(key.serialize_der());
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], der_key.into())
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (
            Arc::new(server),
            tokio_rustls::TlsConnector::from(Arc::new(client)),
        )
    }

    #[tokio::test]
    async fn a_stalled_handshake_does_not_hold_up_the_next_client() {
        let (server, connector) = configs();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let mut accepted = accept("test", listener, server, shutdown.clone());
        // Connected first: one silent, one that stops within its ClientHello.
        let silent = TcpStream::connect(addr).await.unwrap();
        let mut partial = TcpStream::connect(addr).await.unwrap();
        partial
            .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
            .await
            .unwrap();
        let client = tokio::spawn(async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let name = rustls_pki_types::ServerName::try_from("istiod").unwrap();
            let mut tls = connector.connect(name, tcp).await.unwrap();
            tls.write_all(b"ping").await.unwrap();
            tls
        });
        let mut conn = tokio::time::timeout(Duration::from_secs(20), accepted.recv())
            .await
            .expect("the complete handshake is delivered")
            .unwrap();
        let mut buf = [0u8; 4];
        conn.stream.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        // Served while the stalled ones still wait: nothing waited for their deadline.
        let mut one = [0u8; 1];
        for stalled in [&silent, &partial] {
            let pending = stalled.try_read(&mut one);
            assert!(
                matches!(&pending, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
                "{pending:?}"
            );
        }
        client.await.unwrap();
        shutdown.cancel();
    }
}
