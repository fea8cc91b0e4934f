//! Client-side rate limiting of Kubernetes API requests (`--kubernetesApiQPS`,
//! `--kubernetesApiBurst`): a token bucket as client-go's, so `burst` requests go out at
//! once and then `qps` a second. A watch is one request however long it stays open.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};
use tower::{Layer, Service};

/// How fast the client may send requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Sustained requests per second; zero, negative or not finite: no limit.
    pub qps: f32,
    /// Requests allowed at once after a quiet period (at least one).
    pub burst: u32,
}

impl RateLimit {
    /// No limit at all (tests, tools).
    pub const UNLIMITED: RateLimit = RateLimit { qps: 0.0, burst: 0 };
}

/// Wraps a service so each request first takes a token from a bucket shared by every
/// service the layer builds.
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    bucket: Option<Arc<Mutex<Bucket>>>,
}

impl RateLimitLayer {
    pub fn new(limit: RateLimit) -> Self {
        let enabled = limit.qps.is_finite() && limit.qps > 0.0;
        let bucket = enabled.then(|| {
            let burst = f64::from(limit.burst.max(1));
            Arc::new(Mutex::new(Bucket {
                rate: f64::from(limit.qps),
                burst,
                tokens: burst,
                last: Instant::now(),
            }))
        });
        RateLimitLayer { bucket }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimitService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService {
            inner,
            bucket: self.bucket.clone(),
            permit: Permit::None,
        }
    }
}

#[derive(Debug)]
struct Bucket {
    /// Tokens added per second.
    rate: f64,
    /// The most tokens the bucket holds.
    burst: f64,
    /// Tokens now; negative when requests already wait for tokens to come.
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// Takes a token and says how long until it is really there: a request that finds
    /// the bucket empty reserves the next token and waits for it, so waiters queue up in
    /// order and the rate holds however many wait.
    fn reserve(&mut self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst) - 1.0;
        if self.tokens >= 0.0 {
            return Duration::ZERO;
        }
        Duration::try_from_secs_f64(-self.tokens / self.rate).unwrap_or(Duration::MAX)
    }
}

/// Where the next request stands with its token.
#[derive(Debug)]
enum Permit {
    /// No token taken yet.
    None,
    /// A token is reserved and becomes available when the sleep ends.
    Waiting(Pin<Box<Sleep>>),
    /// The token is there; `call` spends it.
    Ready,
}

/// The service built by [`RateLimitLayer`].
#[derive(Debug)]
pub struct RateLimitService<S> {
    inner: S,
    bucket: Option<Arc<Mutex<Bucket>>>,
    permit: Permit,
}

impl<S, R> Service<R> for RateLimitService<S>
where
    S: Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if let Some(bucket) = &self.bucket {
            loop {
                match &mut self.permit {
                    Permit::Ready => break,
                    Permit::None => {
                        let wait = bucket
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .reserve(Instant::now());
                        self.permit = if wait.is_zero() {
                            Permit::Ready
                        } else {
                            Permit::Waiting(Box::pin(tokio::time::sleep(wait)))
                        };
                    }
                    Permit::Waiting(sleep) => {
                        ready!(sleep.as_mut().poll(cx));
                        self.permit = Permit::Ready;
                    }
                }
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        self.permit = Permit::None;
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::ServiceExt;

    use super::*;

    /// Sends `n` requests one after the other through a limiter with `limit`; returns the
    /// (paused-clock) time they took.
    async fn send(limit: RateLimit, n: usize) -> Duration {
        let echo = tower::service_fn(|request: u32| async move { Ok::<_, Infallible>(request) });
        let mut service = RateLimitLayer::new(limit).layer(echo);
        let start = Instant::now();
        for i in 0..n as u32 {
            let answer = service
                .ready()
                .await
                .expect("ready")
                .call(i)
                .await
                .expect("answered");
            assert_eq!(answer, i);
        }
        start.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_goes_at_once_then_the_rate_holds() {
        let limit = RateLimit {
            qps: 10.0,
            burst: 2,
        };
        // Two from the burst, then 100ms for each of the other five.
        let took = send(limit, 7).await;
        assert!(took >= Duration::from_millis(500), "{took:?}");
        assert!(took < Duration::from_millis(600), "{took:?}");

        assert_eq!(send(limit, 2).await, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_period_refills_the_bucket_up_to_the_burst() {
        let mut bucket = Bucket {
            rate: 10.0,
            burst: 2.0,
            tokens: 2.0,
            last: Instant::now(),
        };
        // Float arithmetic: equal to within a microsecond.
        let about =
            |d: Duration, ms: u64| d.abs_diff(Duration::from_millis(ms)) < Duration::from_micros(1);
        let now = Instant::now();
        assert_eq!(bucket.reserve(now), Duration::ZERO);
        assert_eq!(bucket.reserve(now), Duration::ZERO);
        assert!(about(bucket.reserve(now), 100));
        assert!(about(bucket.reserve(now), 200));
        // Long after: full again, but never more than the burst.
        let later = now + Duration::from_secs(60);
        assert_eq!(bucket.reserve(later), Duration::ZERO);
        assert_eq!(bucket.reserve(later), Duration::ZERO);
        assert!(about(bucket.reserve(later), 100));
    }

    #[tokio::test(start_paused = true)]
    async fn a_non_positive_qps_disables_limiting() {
        for qps in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            let took = send(RateLimit { qps, burst: 1 }, 50).await;
            assert_eq!(took, Duration::ZERO, "qps {qps}");
        }
        assert_eq!(send(RateLimit::UNLIMITED, 50).await, Duration::ZERO);
    }
}
