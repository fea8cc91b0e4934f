//! One way to serve HTTP on istiod's HTTP listeners: readiness and debug (8080), metrics
//! (15014) and the webhook (15017, over TLS). Every connection and request is bounded with
//! hyper's and tower's own limits, so a slow or hostile client cannot pin a listener:
//! headers must arrive within a deadline, requests get a deadline of their own, and the
//! connections and requests in flight are capped (past the request cap, 503 at once).

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use axum::serve::Listener;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::{BoxError, ServiceBuilder, ServiceExt};
use tracing::{debug, info};

/// The bounds of one HTTP listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Time a client has to send a request's headers; an idle kept-alive connection is
    /// closed after it too.
    pub header_read_timeout: Duration,
    /// Time to read a request's body and answer it (408 after it).
    pub request_timeout: Duration,
    /// Open connections; further clients wait in the kernel's accept backlog.
    pub max_connections: usize,
    /// Requests handled at once; further ones are refused with 503.
    pub max_requests: usize,
}

impl Limits {
    /// Readiness and debug (8080) and metrics (15014): probes, scrapes and operators.
    pub const ADMIN: Limits = Limits {
        header_read_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(30),
        max_connections: 256,
        max_requests: 64,
    };

    /// The webhook (15017): AdmissionReviews of up to 6 MiB each, so fewer at once.
    pub const WEBHOOK: Limits = Limits {
        header_read_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(30),
        max_connections: 256,
        max_requests: 32,
    };
}

/// Serves `router` over HTTP/1.1 on `listener` within `limits` until `shutdown` fires;
/// in-flight requests finish first. `name` names the listener in logs.
pub async fn serve<L>(
    name: &'static str,
    mut listener: L,
    router: Router,
    limits: Limits,
    shutdown: CancellationToken,
) -> std::io::Result<()>
where
    L: Listener<Addr = SocketAddr>,
{
    let addr = listener.local_addr()?;
    info!(server = name, %addr, ?limits, "serving HTTP");
    let service = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(refusal))
        .load_shed()
        .concurrency_limit(limits.max_requests)
        .timeout(limits.request_timeout)
        .service(router);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = connections.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (io, remote) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (service, http, shutdown) = (service.clone(), http.clone(), shutdown.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
                // Handlers that care about the peer (`/debug`) read it as axum's ConnectInfo.
                req.extensions_mut().insert(ConnectInfo(remote));
                service.clone().oneshot(req)
            });
            let conn = http.serve_connection(TokioIo::new(io), service);
            tokio::pin!(conn);
            let ended = tokio::select! {
                ended = conn.as_mut() => ended,
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(error) = ended {
                debug!(server = name, %remote, %error, "connection closed");
            }
            drop(permit);
        });
    }
    // Draining: every connection gives its place back when it ends; the app's shutdown
    // deadline bounds the wait.
    let max = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = connections.acquire_many(max).await;
    Ok(())
}

/// The answer to a request the limits refused.
async fn refusal(error: BoxError) -> (StatusCode, &'static str) {
    if error.is::<tower::load_shed::error::Overloaded>() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many requests in flight; retry later\n",
        )
    } else if error.is::<tower::timeout::error::Elapsed>() {
        (StatusCode::REQUEST_TIMEOUT, "request timed out\n")
    } else {
        (StatusCode::INTERNAL_SERVER_ERROR, "request failed\n")
    }
}
