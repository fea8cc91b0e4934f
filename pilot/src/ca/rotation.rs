//! Background work on the root of trust: re-issuing the self-signed root (same key) when
//! less than the grace percentile of its life remains, persisting it, adopting a root that
//! another replica stored, publishing the trust bundle to a file, and keeping the expiry
//! metrics current.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::authority::Authority;
use super::metrics::Metrics;
use super::root::{self, KeyBundle, Mode, SelfSignedOptions};
use super::store::{RootPem, RootStore, SharedRoot, StoreError};
use super::Error;

/// How the rotator is configured.
#[derive(Debug, Clone)]
pub struct RotationOptions {
    pub check_interval: Duration,
    pub grace_percentile: u32,
    pub self_signed: SelfSignedOptions,
    /// Where the self-signed root is kept.
    pub store: RootStore,
}

/// Checks once; returns true when the root changed (rotated here, or adopted from the
/// shared store).
pub async fn check_once(authority: &Authority, opts: &RotationOptions) -> bool {
    if authority.mode() != Mode::SelfSigned {
        return false;
    }
    match &opts.store {
        RootStore::Files(dir) => check_files(authority, opts, dir.as_deref()),
        RootStore::Shared(store) => check_shared(authority, opts, store.as_ref()).await,
    }
}

/// The re-issued root when the current one is due, per the grace percentile.
fn due_rotation(authority: &Authority, opts: &RotationOptions) -> Option<KeyBundle> {
    let now = OffsetDateTime::now_utc();
    let rotated = authority.with_bundle(|b| {
        root::needs_rotation(&b.ca_cert_pem, now, opts.grace_percentile)
            .then(|| root::rotate(b, &opts.self_signed))
    })?;
    rotated
        .inspect_err(|e| error!(error = %e, "re-issuing the self-signed root failed"))
        .ok()
}

/// Signs with the rotated root from now on.
fn install_rotated(authority: &Authority, bundle: KeyBundle) -> bool {
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

fn check_files(authority: &Authority, opts: &RotationOptions, dir: Option<&Path>) -> bool {
    let Some(bundle) = due_rotation(authority, opts) else {
        return false;
    };
    if let Some(dir) = dir {
        if let Err(e) = root::store_self_signed(dir, &bundle) {
            // Keep the old root rather than serve one a restart would lose.
            error!(error = %e, "persisting the rotated root failed; keeping the old one");
            return false;
        }
    }
    install_rotated(authority, bundle)
}

/// Reloads the shared root (adopting one another replica rotated, or storing ours again if
/// it was deleted), then rotates it if due. The stored root is only replaced if it is still
/// the one this replica read, so two replicas never rotate over each other.
async fn check_shared(
    authority: &Authority,
    opts: &RotationOptions,
    store: &dyn SharedRoot,
) -> bool {
    let (stored, mut changed) = match adopt(authority, store).await {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %e, store = %store, "reloading the CA root failed; keeping the current one");
            return false;
        }
    };
    let Some(next) = due_rotation(authority, opts) else {
        return changed;
    };
    match store.update(&stored, &RootPem::of(&next)).await {
        Ok(()) => {
            changed |= install_rotated(authority, next);
        }
        Err(StoreError::Conflict(reason)) => {
            info!(%reason, "another replica rotated the CA root first; adopting it");
            match adopt(authority, store).await {
                Ok((_, adopted)) => changed |= adopted,
                Err(e) => warn!(error = %e, store = %store, "reloading the CA root failed"),
            }
        }
        Err(e) => {
            // Keep the old root rather than serve one the other replicas do not know.
            error!(error = %e, "storing the rotated root failed; keeping the old one");
        }
    }
    changed
}

/// Loads the shared root and installs it if it differs from the current one. Returns the
/// stored form (what a later update must replace) and whether the root changed.
async fn adopt(authority: &Authority, store: &dyn SharedRoot) -> Result<(RootPem, bool), Error> {
    let current = authority.with_bundle(RootPem::of);
    let stored = store.load_or_create(Box::new(move || Ok(current))).await?;
    let bundle = stored.to_bundle(&store.to_string())?;
    let same =
        authority.with_bundle(|b| b.ca_cert_pem == bundle.ca_cert_pem && b.roots == bundle.roots);
    if same {
        return Ok((stored, false));
    }
    authority.replace(bundle)?;
    info!(store = %store, "adopted the CA root stored by another replica");
    Ok((stored, true))
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
        check_once(&authority, &opts).await;
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
        match super::file::write_atomic(&path, pem.as_bytes(), 0o644) {
            Ok(()) => info!(path = %path.display(), "published root certificate"),
            Err(e) => warn!(error = %e, "publishing root certificate failed"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = rx.changed() => if changed.is_err() { return },
        }
    }
}
