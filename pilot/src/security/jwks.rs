//! The JWKS resolver: istiod fetches the keys of each `jwksUri` a RequestAuthentication
//! names (or finds it through the issuer's OpenID discovery document), keeps them, and
//! refreshes them every `PILOT_JWT_PUB_KEY_REFRESH_INTERVAL`. Generators never fetch: each
//! push context carries a [`JwksKeys`] snapshot, and a change of keys triggers a push.
//!
//! A source never fetched successfully has no keys in the snapshot, and the filter builder
//! inlines [`PUBLIC_ONLY_JWKS`] for it, so tokens are rejected rather than let through
//! unverified (as upstream does).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::settings::{
    Env, SettingError, BLOCKED_CIDRS_IN_JWKS_URIS, JWKS_RESOLVER_INSECURE_SKIP_VERIFY,
    PILOT_JWT_ENABLE_REMOTE_JWKS, PILOT_JWT_PUB_KEY_REFRESH_INTERVAL,
};

/// A JWKS with one RSA public key whose private half was discarded when it was made: no
/// token verifies against it. Inlined for sources whose keys could not be fetched.
pub const PUBLIC_ONLY_JWKS: &str = r#"{"keys":[{"kty":"RSA","e":"AQAB","n":"w_z0tiLIGRuum9uD7y1ybebxmo0w67KU5EE4DoQyeuKCOY593uii9Sat38u-OadFtmSVRnrImGD40ETtizYvLZgDFx7yLY_xumsuQdWTVrbUxMRttGR96p14iATtfrD_MGUl9HVmhx35c_rK3TlCRZugwz-eY1qRUqIJghKnoUBcgV6YjSAkgkQ4xanDqy02ZvgVPgr11eEANfg2f3GE0q-aJ3y0C7jEM6vkd6nosw-9ogs7R3U_pCvkw0o6pz5mLq_y_0tPYorJ2p499Pbt3JGeJ7OHplarR6KT7ywGmsK4iyNDyDBC8V3TpcsSGC-MOBxcLCdQYAwaASAjfe7LVQ"}]}"#;

/// Largest JWKS (or discovery document) istiod reads: real key sets are a few KiB, and the
/// body ends up in every matching proxy's listener.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Refresh interval after a failed refresh; it doubles on each further failure.
const REFRESH_ON_FAILURE: Duration = Duration::from_secs(60);
/// First retry of a source that has no keys; it doubles up to [`REFRESH_ON_FAILURE`].
const MISSING_RETRY: Duration = Duration::from_secs(5);
/// Cap of the doubling refresh interval on failure.
const FAILURE_BACKOFF_CAP: Duration = Duration::from_secs(60 * 60);
/// Keys not refreshed successfully for this long are dropped (tokens are then rejected).
const EVICT_AFTER: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// Extra CA certificates trusted for `https` JWKS servers, where upstream reads them.
const EXTRA_ROOTS_PATH: &str = "/cacerts/extra.pem";
const OPENID_DISCOVERY_SUFFIX: &str = "/.well-known/openid-configuration";

/// Who fetches a `jwksUri` (`PILOT_JWT_ENABLE_REMOTE_JWKS`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum JwksFetchMode {
    /// istiod fetches and inlines the keys (`istiod`, `false`; the default).
    #[default]
    Istiod,
    /// Envoy fetches when the URI is a service of the mesh, istiod otherwise (`hybrid`,
    /// `true`).
    Hybrid,
    /// Envoy always fetches (`envoy`).
    Envoy,
}

impl JwksFetchMode {
    /// Upstream's reading: unknown values mean `istiod`.
    pub fn parse(s: &str) -> JwksFetchMode {
        match s {
            "hybrid" | "true" => JwksFetchMode::Hybrid,
            "envoy" => JwksFetchMode::Envoy,
            _ => JwksFetchMode::Istiod,
        }
    }
}

/// An IP range (`10.0.0.0/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (addr, prefix) = s.split_once('/')?;
        let addr: IpAddr = addr.trim().parse().ok()?;
        let prefix: u8 = prefix.trim().parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        fn masked(bits: u128, prefix: u8, width: u8) -> u128 {
            let keep = u32::from(prefix);
            if keep == 0 {
                return 0;
            }
            bits >> (u32::from(width) - keep)
        }
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u128::from(u32::from(net)), self.prefix, 32)
                    == masked(u128::from(u32::from(ip)), self.prefix, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(net), self.prefix, 128)
                    == masked(u128::from(ip), self.prefix, 128)
            }
            _ => false,
        }
    }
}

/// The resolver's variables.
#[derive(Debug, Clone)]
pub struct JwksSettings {
    /// `PILOT_JWT_ENABLE_REMOTE_JWKS`.
    pub fetch_mode: JwksFetchMode,
    /// `PILOT_JWT_PUB_KEY_REFRESH_INTERVAL`.
    pub refresh_interval: Duration,
    /// `JWKS_RESOLVER_INSECURE_SKIP_VERIFY`.
    pub insecure_skip_verify: bool,
    /// `BLOCKED_CIDRS_IN_JWKS_URIS`, on top of the always-blocked link-local and cloud
    /// metadata addresses.
    pub blocked: Vec<Cidr>,
}

impl Default for JwksSettings {
    fn default() -> Self {
        JwksSettings {
            fetch_mode: JwksFetchMode::Istiod,
            refresh_interval: Duration::from_secs(20 * 60),
            insecure_skip_verify: false,
            blocked: Vec::new(),
        }
    }
}

impl JwksSettings {
    /// Reads the resolver's variables (see `settings::VARIABLES`).
    pub fn from_env(env: &Env) -> Result<Self, SettingError> {
        let refresh = env.duration(
            PILOT_JWT_PUB_KEY_REFRESH_INTERVAL,
            JwksSettings::default().refresh_interval,
        )?;
        if refresh.is_zero() {
            return Err(SettingError::new(
                PILOT_JWT_PUB_KEY_REFRESH_INTERVAL,
                "0",
                "must be above zero",
            ));
        }
        let mut blocked = Vec::new();
        for cidr in env.list(BLOCKED_CIDRS_IN_JWKS_URIS).unwrap_or_default() {
            match Cidr::parse(&cidr) {
                Some(c) => blocked.push(c),
                // Upstream skips what it cannot read, with a warning.
                None => warn!(
                    var = BLOCKED_CIDRS_IN_JWKS_URIS,
                    cidr, "not a CIDR; ignored"
                ),
            }
        }
        Ok(JwksSettings {
            fetch_mode: JwksFetchMode::parse(&env.string(PILOT_JWT_ENABLE_REMOTE_JWKS, "false")),
            refresh_interval: refresh,
            insecure_skip_verify: env.bool(JWKS_RESOLVER_INSECURE_SKIP_VERIFY, false)?,
            blocked,
        })
    }
}

/// Where keys come from: a rule's issuer and `jwksUri` (empty: OpenID discovery).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JwksSource {
    pub issuer: String,
    pub jwks_uri: String,
}

/// The keys istiod has fetched, as a push context carries them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JwksKeys {
    pub mode: JwksFetchMode,
    keys: BTreeMap<JwksSource, Arc<str>>,
}

impl JwksKeys {
    /// The fetched JWKS of `source`, if a fetch has succeeded.
    pub fn get(&self, source: &JwksSource) -> Option<&str> {
        self.keys.get(source).map(|k| &**k)
    }

    /// A snapshot with given keys (tests and benchmarks).
    pub fn with(mode: JwksFetchMode, keys: impl IntoIterator<Item = (JwksSource, String)>) -> Self {
        JwksKeys {
            mode,
            keys: keys.into_iter().map(|(s, k)| (s, Arc::from(k))).collect(),
        }
    }
}

/// Why keys could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("{uri:?} is not an http or https URL")]
    Url { uri: String },
    #[error("{uri:?}: address {ip} is blocked")]
    Blocked { uri: String, ip: IpAddr },
    #[error("{uri:?}: {source}")]
    Http {
        uri: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{uri:?}: status {status}")]
    Status { uri: String, status: u16 },
    #[error("{uri:?}: body larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge { uri: String },
    #[error("{uri:?}: not a JWKS: {reason}")]
    NotJwks { uri: String, reason: String },
    #[error("{uri:?}: no jwks_uri in the OpenID discovery document")]
    Discovery { uri: String },
    #[error("HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

#[derive(Debug)]
struct Entry {
    /// The last keys fetched successfully.
    keys: Option<Arc<str>>,
    last_ok: Option<Instant>,
    timeout: Duration,
}

#[derive(Debug, Default)]
struct State {
    /// Sources the current config needs, with their fetch timeouts.
    entries: BTreeMap<JwksSource, Entry>,
    /// Sources named by config but not fetched yet.
    pending: BTreeSet<JwksSource>,
}

/// What a refresh did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Refreshed {
    /// Some source's keys changed (a push is needed).
    pub changed: bool,
    /// Some fetch failed.
    pub failed: bool,
}

/// Fetches, caches and refreshes JWKS for the push contexts.
pub struct JwksResolver {
    settings: JwksSettings,
    client: reqwest::Client,
    state: Mutex<State>,
    snapshot: ArcSwap<JwksKeys>,
    /// Counts key changes found by the periodic refresh; the push loop watches it.
    changes: watch::Sender<u64>,
    /// Wakes the refresh task when a new source failed its first fetch.
    missing: tokio::sync::Notify,
}

impl std::fmt::Debug for JwksResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksResolver")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl JwksResolver {
    pub fn new(settings: JwksSettings) -> Result<Arc<Self>, JwksError> {
        // reqwest is built without a crypto provider of its own: use ring, as the rest of
        // the process does. An error only means one is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let blocked = Arc::new(Blocklist(settings.blocked.clone()));
        let redirect_blocked = blocked.clone();
        let mut builder = reqwest::Client::builder()
            .dns_resolver(blocked)
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                // Names are checked when resolved; literal addresses never are.
                let literal = attempt.url().host_str().and_then(literal_ip);
                match literal.filter(|ip| redirect_blocked.blocks(*ip)) {
                    Some(ip) => attempt.error(format!("redirect to blocked address {ip}")),
                    None if attempt.previous().len() >= 10 => attempt.stop(),
                    None => attempt.follow(),
                }
            }))
            .pool_max_idle_per_host(0)
            .tls_danger_accept_invalid_certs(settings.insecure_skip_verify);
        if let Ok(pem) = std::fs::read(EXTRA_ROOTS_PATH) {
            match reqwest::Certificate::from_pem_bundle(&pem) {
                Ok(certs) => {
                    for c in certs {
                        builder = builder.add_root_certificate(c);
                    }
                }
                Err(e) => warn!(path = EXTRA_ROOTS_PATH, error = %e, "unreadable CA bundle"),
            }
        }
        let client = builder.build().map_err(JwksError::Client)?;
        Ok(Arc::new(JwksResolver {
            snapshot: ArcSwap::from_pointee(JwksKeys {
                mode: settings.fetch_mode,
                keys: BTreeMap::new(),
            }),
            settings,
            client,
            state: Mutex::new(State::default()),
            changes: watch::channel(0).0,
            missing: tokio::sync::Notify::new(),
        }))
    }

    pub fn mode(&self) -> JwksFetchMode {
        self.settings.fetch_mode
    }

    /// Notifications that the periodic refresh changed some keys.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Records the sources the config needs (forgetting the others) and returns the keys
    /// known now. New sources are fetched by the next [`JwksResolver::fetch_pending`].
    pub fn keys_for(&self, wanted: BTreeMap<JwksSource, Duration>) -> Arc<JwksKeys> {
        let mut state = self.lock();
        let before = state.entries.len();
        state.entries.retain(|s, _| wanted.contains_key(s));
        let mut forgot = state.entries.len() != before;
        state.pending.retain(|s| wanted.contains_key(s));
        for (source, timeout) in wanted {
            match state.entries.get_mut(&source) {
                Some(e) => e.timeout = timeout,
                None => {
                    state.entries.insert(
                        source.clone(),
                        Entry {
                            keys: None,
                            last_ok: None,
                            timeout,
                        },
                    );
                    state.pending.insert(source);
                }
            }
        }
        forgot |= self.snapshot.load().keys.len()
            != state.entries.values().filter(|e| e.keys.is_some()).count();
        if forgot {
            self.publish(&state);
        }
        self.snapshot.load_full()
    }

    /// Fetches the sources never fetched yet (each bounded by its timeout, as upstream
    /// fetches on the push path without retrying). `Some(keys)` when anything was fetched.
    pub async fn fetch_pending(&self) -> Option<Arc<JwksKeys>> {
        let pending: Vec<(JwksSource, Duration)> = {
            let mut state = self.lock();
            let pending = std::mem::take(&mut state.pending);
            pending
                .into_iter()
                .filter_map(|s| state.entries.get(&s).map(|e| (s, e.timeout)))
                .collect()
        };
        if pending.is_empty() {
            return None;
        }
        if self.fetch_all(pending).await.failed {
            self.missing.notify_one();
        }
        Some(self.snapshot.load_full())
    }

    /// Fetches every source again; a change of keys is published and counted.
    pub async fn refresh(&self) -> Refreshed {
        self.refresh_where(|_| true).await
    }

    /// Fetches again the sources that have no keys (their first fetch failed).
    pub async fn retry_missing(&self) -> Refreshed {
        self.refresh_where(|e| e.keys.is_none()).await
    }

    /// Whether some source the config names has no keys.
    fn has_missing(&self) -> bool {
        self.lock().entries.values().any(|e| e.keys.is_none())
    }

    async fn refresh_where(&self, pick: impl Fn(&Entry) -> bool) -> Refreshed {
        let sources: Vec<(JwksSource, Duration)> = {
            let mut state = self.lock();
            let picked: Vec<(JwksSource, Duration)> = state
                .entries
                .iter()
                .filter(|(_, e)| pick(e))
                .map(|(s, e)| (s.clone(), e.timeout))
                .collect();
            // Fetched now, so no longer waiting for the next push to be fetched.
            for (s, _) in &picked {
                state.pending.remove(s);
            }
            picked
        };
        let result = self.fetch_all(sources).await;
        if result.changed {
            self.changes.send_modify(|n| *n += 1);
        }
        result
    }

    /// Refreshes every `PILOT_JWT_PUB_KEY_REFRESH_INTERVAL` until `shutdown`; after a
    /// failure sooner, backing off as upstream does. Sources without keys (tokens of their
    /// issuer are being rejected) are retried in between: after 5 s, doubling up to 1 min.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut interval = self.settings.refresh_interval;
        let mut refresh_at = Instant::now() + interval;
        let mut failed_before = false;
        let mut retry = MISSING_RETRY;
        loop {
            let retry_at = self.has_missing().then(|| Instant::now() + retry);
            let wake = retry_at.map_or(refresh_at, |r| r.min(refresh_at));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                // A new source failed its first fetch: retry it soon.
                _ = self.missing.notified() => {
                    retry = MISSING_RETRY;
                    continue;
                }
                _ = tokio::time::sleep_until(wake) => {}
            }
            if Instant::now() < refresh_at {
                let result = self.retry_missing().await;
                retry = if result.failed {
                    (retry * 2).min(REFRESH_ON_FAILURE)
                } else {
                    MISSING_RETRY
                };
                debug!(?result, "JWKS retry of sources without keys");
                continue;
            }
            let result = self.refresh().await;
            interval = next_interval(
                self.settings.refresh_interval,
                interval,
                result.failed,
                failed_before,
            );
            failed_before = result.failed;
            refresh_at = Instant::now() + interval;
            retry = MISSING_RETRY;
            debug!(?result, next = ?interval, "JWKS refresh");
        }
    }

    async fn fetch_all(&self, sources: Vec<(JwksSource, Duration)>) -> Refreshed {
        let fetches = sources.into_iter().map(|(source, timeout)| async move {
            let result = self.fetch_source(&source, timeout).await;
            (source, result)
        });
        let results = futures::future::join_all(fetches).await;
        let mut out = Refreshed::default();
        let mut state = self.lock();
        let now = Instant::now();
        for (source, result) in results {
            // The config may have dropped the source while it was fetched.
            let Some(entry) = state.entries.get_mut(&source) else {
                continue;
            };
            match result {
                Ok(keys) => {
                    entry.last_ok = Some(now);
                    if entry
                        .keys
                        .as_deref()
                        .is_none_or(|old| !same_keys(old, &keys))
                    {
                        info!(issuer = %source.issuer, uri = %source.jwks_uri, "JWKS updated");
                        entry.keys = Some(Arc::from(keys));
                        out.changed = true;
                    }
                }
                Err(e) => {
                    out.failed = true;
                    warn!(issuer = %source.issuer, error = %e, "JWKS fetch failed; tokens of this issuer are rejected until it succeeds");
                    let stale = entry.last_ok.is_none_or(|t| now - t >= EVICT_AFTER);
                    if stale && entry.keys.take().is_some() {
                        out.changed = true;
                    }
                }
            }
        }
        if out.changed {
            self.publish(&state);
        }
        out
    }

    fn publish(&self, state: &State) {
        let keys = state
            .entries
            .iter()
            .filter_map(|(s, e)| e.keys.clone().map(|k| (s.clone(), k)))
            .collect();
        self.snapshot.store(Arc::new(JwksKeys {
            mode: self.settings.fetch_mode,
            keys,
        }));
    }

    async fn fetch_source(
        &self,
        source: &JwksSource,
        timeout: Duration,
    ) -> Result<String, JwksError> {
        let uri = if source.jwks_uri.is_empty() {
            self.discover(&source.issuer, timeout).await?
        } else {
            source.jwks_uri.clone()
        };
        let body = self.get(&uri, timeout).await?;
        check_jwks(&body).map_err(|reason| JwksError::NotJwks {
            uri: uri.clone(),
            reason,
        })?;
        String::from_utf8(body).map_err(|_| JwksError::NotJwks {
            uri,
            reason: "not UTF-8".into(),
        })
    }

    /// The `jwks_uri` of the issuer's OpenID discovery document.
    async fn discover(&self, issuer: &str, timeout: Duration) -> Result<String, JwksError> {
        let uri = format!("{}{OPENID_DISCOVERY_SUFFIX}", issuer.trim_end_matches('/'));
        let body = self.get(&uri, timeout).await?;
        let doc: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| JwksError::NotJwks {
                uri: uri.clone(),
                reason: e.to_string(),
            })?;
        doc.get("jwks_uri")
            .and_then(|u| u.as_str())
            .map(str::to_owned)
            .ok_or(JwksError::Discovery { uri })
    }

    /// GETs `uri`, refusing blocked addresses and bodies past [`MAX_JWKS_BYTES`].
    async fn get(&self, uri: &str, timeout: Duration) -> Result<Vec<u8>, JwksError> {
        let url = reqwest::Url::parse(uri).map_err(|_| JwksError::Url { uri: uri.into() })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(JwksError::Url { uri: uri.into() });
        }
        let literal = url.host_str().and_then(literal_ip);
        if let Some(ip) = literal.filter(|ip| Blocklist(self.settings.blocked.clone()).blocks(*ip))
        {
            return Err(JwksError::Blocked {
                uri: uri.into(),
                ip,
            });
        }
        let http = |source| JwksError::Http {
            uri: uri.into(),
            source,
        };
        let mut resp = self
            .client
            .get(url)
            .timeout(timeout)
            .send()
            .await
            .map_err(http)?;
        if !resp.status().is_success() {
            return Err(JwksError::Status {
                uri: uri.into(),
                status: resp.status().as_u16(),
            });
        }
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err(JwksError::TooLarge { uri: uri.into() });
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(http)? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(JwksError::TooLarge { uri: uri.into() });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The address of a URL host written as one (`10.0.0.1`, `[::1]`).
fn literal_ip(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// Upstream's schedule: the configured interval while refreshes succeed; after a failure
/// one minute, doubling while failures continue, up to an hour.
fn next_interval(base: Duration, current: Duration, failed: bool, failed_before: bool) -> Duration {
    match (failed, failed_before) {
        (false, _) => base,
        (true, false) => REFRESH_ON_FAILURE,
        (true, true) => (current * 2).min(FAILURE_BACKOFF_CAP),
    }
}

/// A JWKS is a JSON object with a `keys` array. Anything else is refused, so that a URI
/// pointed at some other endpoint does not end up inlined in proxies' config.
fn check_jwks(body: &[u8]) -> Result<(), String> {
    let doc: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    match doc.get("keys") {
        Some(serde_json::Value::Array(_)) => Ok(()),
        Some(_) => Err("\"keys\" is not an array".into()),
        None => Err("no \"keys\"".into()),
    }
}

/// Whether two JWKS hold the same keys, whatever their order or formatting.
fn same_keys(old: &str, new: &str) -> bool {
    if old == new {
        return true;
    }
    fn sorted(s: &str) -> Option<Vec<serde_json::Value>> {
        let doc: serde_json::Value = serde_json::from_str(s).ok()?;
        let mut keys = doc.get("keys")?.as_array()?.clone();
        keys.sort_by_key(|k| k.to_string());
        Some(keys)
    }
    matches!((sorted(old), sorted(new)), (Some(a), Some(b)) if a == b)
}

/// The addresses istiod never fetches keys from: link-local (cloud instance metadata),
/// well-known metadata addresses outside it, and `BLOCKED_CIDRS_IN_JWKS_URIS`. Checked on
/// every address a name resolves to, so a name cannot smuggle one in.
#[derive(Debug)]
struct Blocklist(Vec<Cidr>);

impl Blocklist {
    fn blocks(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let always = [
            "169.254.0.0/16",
            "fe80::/10",
            "ff02::/16",
            "224.0.0.0/24",
            "100.100.100.200/32",
            "fd00:ec2::/32",
        ];
        always
            .iter()
            .filter_map(|c| Cidr::parse(c))
            .chain(self.0.iter().copied())
            .any(|c| c.contains(ip))
    }
}

impl reqwest::dns::Resolve for Blocklist {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        let blocked = Blocklist(self.0.clone());
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = addrs
                .iter()
                .copied()
                .filter(|a| !blocked.blocks(a.ip()))
                .collect();
            if allowed.is_empty() && !addrs.is_empty() {
                return Err(format!("{host} resolves only to blocked addresses").into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests;
