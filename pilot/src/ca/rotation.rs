//! Background work on the root of trust: re-issuing the self-signed root (same key) when
//! less than the grace percentile of its life remains, persisting it, publishing the trust
//! bundle to a file, and keeping the expiry metrics current.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::authority::Authority;
use super::metrics::Metrics;
use super::root::{self, Mode, SelfSignedOptions};

/// How the rotator is configured.
#[derive(Debug, Clone)]
pub struct RotationOptions {
    pub check_interval: Duration,
    pub grace_percentile: u32,
    pub self_signed: SelfSignedOptions,
    /// Where the self-signed root is persisted (five-key layout), if anywhere.
    pub dir: Option<PathBuf>,
}

/// Checks once; returns true when the root was rotated.
pub fn check_once(authority: &Authority, opts: &RotationOptions) -> bool {
    if authority.mode() != Mode::SelfSigned {
        return false;
    }
    let now = OffsetDateTime::now_utc();
    let rotated = authority.with_bundle(|b| {
        if !root::needs_rotation(&b.ca_cert_pem, now, opts.grace_percentile) {
            return None;
        }
        Some(root::rotate(b, &opts.self_signed))
    });
    match rotated {
        None => false,
        Some(Err(e)) => {
            error!(error = %e, "re-issuing the self-signed root failed");
            false
        }
        Some(Ok(bundle)) => {
            if let Some(dir) = &opts.dir {
                if let Err(e) = root::store_self_signed(dir, &bundle) {
                    // Keep the old root rather than serve one a restart would lose.
                    error!(error = %e, "persisting the rotated root failed; keeping the old one");
                    return false;
                }
            }
            match authority.replace(bundle) {
                Ok(()) => {
                    info!("rotated the self-signed root, keeping its key");
                    true
                }
                Err(e) => {
                    error!(error = %e, "installing the rotated root failed");
                    false
                }
            }
        }
    }
}

/// Runs the rotation checks until `cancel`, starting after a random jitter as upstream.
pub async fn run_rotator(
    authority: Arc<Authority>,
    opts: RotationOptions,
    metrics: Metrics,
    cancel: CancellationToken,
) {
    let jitter_ms = (opts.check_interval.as_millis() as u64 / 10).max(1);
    let mut wait = Duration::from_millis(rand::random::<u64>() % jitter_ms);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = opts.check_interval;
        check_once(&authority, &opts);
        update_expiry_metrics(&authority, &metrics);
    }
}

/// Sets the `citadel_server_*_expiry_*` gauges.
pub fn update_expiry_metrics(authority: &Authority, metrics: &Metrics) {
    let (root, chain) = authority.expiries();
    metrics.set_expiries(root, chain, OffsetDateTime::now_utc().unix_timestamp());
}

/// Writes the trust bundle to `path` now and after every change, until `cancel`.
pub async fn run_publisher(authority: Arc<Authority>, path: PathBuf, cancel: CancellationToken) {
    let mut rx = authority.subscribe();
    loop {
        let pem = rx.borrow_and_update().pem();
        match root::write_atomic(&path, pem.as_bytes(), 0o644) {
            Ok(()) => info!(path = %path.display(), "published root certificate"),
            Err(e) => warn!(error = %e, "publishing root certificate failed"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = rx.changed() => if changed.is_err() { return },
        }
    }
}
