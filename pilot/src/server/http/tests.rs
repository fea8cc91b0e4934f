//! The shared HTTP server's limits, against a real socket.

use std::sync::Arc;

use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use super::*;

const GUARD: Duration = Duration::from_secs(20);

struct Server {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(router: Router, limits: Limits) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve("test", listener, router, limits, shutdown.clone()));
        Server {
            addr,
            shutdown,
            task,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(GUARD, self.task)
            .await
            .expect("server drains")
            .unwrap()
            .unwrap();
    }
}

fn limits(header_read_timeout: Duration) -> Limits {
    Limits {
        header_read_timeout,
        request_timeout: Duration::from_secs(30),
        max_connections: 16,
        max_requests: 1,
    }
}

/// Sends one request and returns the response text; the server closes the connection.
async fn get_text(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(GUARD, s.read_to_string(&mut out))
        .await
        .expect("an answer")
        .unwrap();
    out
}

/// Waits until the server closes `s` (a read of 0 bytes or a reset).
async fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(GUARD, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
    })
    .await
    .unwrap_or(false)
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_closed_and_others_are_served() {
    let router = Router::new().route("/ready", get(|| async { "ready\n" }));
    let server = Server::start(router, limits(Duration::from_millis(200))).await;
    let mut slow = Vec::new();
    for _ in 0..8 {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        s.write_all(b"GET /ready HTTP/1.1\r\nhost: x\r\nx-slow: ")
            .await
            .unwrap();
        slow.push(s);
    }
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    assert!(get_text(server.addr, "/ready")
        .await
        .starts_with("HTTP/1.1 200"));
    for s in &mut slow {
        assert!(closed_by_server(s).await, "a partial header is cut off");
    }
    assert!(closed_by_server(&mut silent).await, "a silent client too");
    server.stop().await;
}

#[tokio::test]
async fn requests_past_the_cap_are_shed_with_503() {
    let release = Arc::new(Notify::new());
    let entered = Arc::new(Notify::new());
    let router = Router::new()
        .route(
            "/slow",
            get({
                let (release, entered) = (release.clone(), entered.clone());
                || async move {
                    entered.notify_one();
                    release.notified().await;
                    "done\n"
                }
            }),
        )
        .route("/fast", get(|| async { "fast\n" }));
    let server = Server::start(router, limits(Duration::from_secs(10))).await;
    let slow = tokio::spawn(get_text(server.addr, "/slow"));
    entered.notified().await;
    let refused = get_text(server.addr, "/fast").await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("too many requests in flight"), "{refused}");
    release.notify_one();
    assert!(slow.await.unwrap().starts_with("HTTP/1.1 200"));
    // The place is free again.
    assert!(get_text(server.addr, "/fast")
        .await
        .starts_with("HTTP/1.1 200"));
    server.stop().await;
}

#[tokio::test]
async fn connections_past_the_cap_wait_for_a_place() {
    let router = Router::new().route("/ready", get(|| async { "ready\n" }));
    let mut l = limits(Duration::from_millis(300));
    l.max_connections = 1;
    let server = Server::start(router, l).await;
    // Holds the only place until its header deadline passes.
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    idle.write_all(b"GET").await.unwrap();
    let answered = get_text(server.addr, "/ready").await;
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    assert!(closed_by_server(&mut idle).await);
    server.stop().await;
}

#[tokio::test]
async fn debug_handlers_see_the_peer_address() {
    let router = Router::new().route(
        "/peer",
        get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.ip().to_string() }),
    );
    let server = Server::start(router, limits(Duration::from_secs(10))).await;
    assert!(get_text(server.addr, "/peer").await.ends_with("127.0.0.1"));
    server.stop().await;
}

#[tokio::test]
async fn shutdown_lets_a_request_in_flight_finish() {
    let release = Arc::new(Notify::new());
    let entered = Arc::new(Notify::new());
    let router = Router::new().route(
        "/slow",
        get({
            let (release, entered) = (release.clone(), entered.clone());
            || async move {
                entered.notify_one();
                release.notified().await;
                "done\n"
            }
        }),
    );
    let server = Server::start(router, limits(Duration::from_secs(10))).await;
    let slow = tokio::spawn(get_text(server.addr, "/slow"));
    entered.notified().await;
    server.shutdown.cancel();
    release.notify_one();
    assert!(slow.await.unwrap().ends_with("done\n"));
    server.stop().await;
}
