//! CA settings from upstream's environment variables, with errors that name the variable,
//! the value and the reason. `CaConfig::from_env` takes a lookup function so tests call
//! it directly.

use std::path::PathBuf;
use std::time::Duration;

use super::keys::KeyType;

pub const ENABLE_CA_SERVER: &str = "ENABLE_CA_SERVER";
pub const DEFAULT_WORKLOAD_CERT_TTL: &str = "DEFAULT_WORKLOAD_CERT_TTL";
pub const MAX_WORKLOAD_CERT_TTL: &str = "MAX_WORKLOAD_CERT_TTL";
pub const SELF_SIGNED_CA_CERT_TTL: &str = "CITADEL_SELF_SIGNED_CA_CERT_TTL";
pub const ROOT_CERT_CHECK_INTERVAL: &str = "CITADEL_SELF_SIGNED_ROOT_CERT_CHECK_INTERVAL";
pub const ROOT_CERT_GRACE_PERIOD_PERCENTILE: &str =
    "CITADEL_SELF_SIGNED_ROOT_CERT_GRACE_PERIOD_PERCENTILE";
pub const SELF_SIGNED_CA_RSA_KEY_SIZE: &str = "CITADEL_SELF_SIGNED_CA_RSA_KEY_SIZE";
/// Not upstream: the key type of a newly generated self-signed root (`RSA` by default).
pub const SELF_SIGNED_CA_KEY_TYPE: &str = "CITADEL_SELF_SIGNED_CA_KEY_TYPE";
pub const ROOT_CA_DIR: &str = "ROOT_CA_DIR";
/// Not upstream: where file mode keeps the self-signed root (upstream: Secret
/// `istio-ca-secret`), in the same five-key layout. Unset: the root lives in memory only.
pub const SELF_SIGNED_CA_DIR: &str = "PILOT_SELF_SIGNED_CA_DIR";
/// Not upstream: the file the trust bundle is published to in file mode (upstream:
/// ConfigMaps `istio-ca-root-cert`).
pub const ROOT_CERT_PUBLISH_FILE: &str = "PILOT_ROOT_CERT_FILE";
pub const ISTIOD_CUSTOM_HOST: &str = "ISTIOD_CUSTOM_HOST";
pub const TOKEN_AUDIENCES: &str = "TOKEN_AUDIENCES";
pub const JWT_RULE: &str = "JWT_RULE";
pub const TRUST_DOMAIN: &str = "TRUST_DOMAIN";
pub const POD_NAMESPACE: &str = "POD_NAMESPACE";
pub const REVISION: &str = "REVISION";

/// A setting that could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{var}={value:?}: {reason}")]
pub struct ConfigError {
    pub var: &'static str,
    pub value: String,
    pub reason: String,
}

/// Everything the CA needs to start.
#[derive(Debug, Clone, PartialEq)]
pub struct CaConfig {
    pub enabled: bool,
    pub trust_domain: String,
    pub default_ttl: Duration,
    pub max_ttl: Duration,
    pub self_signed_ttl: Duration,
    pub root_check_interval: Duration,
    pub grace_period_percentile: u32,
    pub key_type: KeyType,
    pub root_ca_dir: PathBuf,
    pub self_signed_dir: Option<PathBuf>,
    pub root_cert_file: Option<PathBuf>,
    pub namespace: String,
    pub revision: String,
    pub custom_hosts: Vec<String>,
    /// The host of MeshConfig `defaultConfig.discoveryAddress`, the name proxies verify.
    pub discovery_host: Option<String>,
    pub token_audiences: Vec<String>,
    pub jwt_rule: Option<String>,
}

impl Default for CaConfig {
    fn default() -> Self {
        CaConfig {
            enabled: true,
            trust_domain: "cluster.local".to_owned(),
            default_ttl: Duration::from_secs(24 * 3600),
            max_ttl: Duration::from_secs(90 * 24 * 3600),
            self_signed_ttl: Duration::from_secs(3650 * 24 * 3600),
            root_check_interval: Duration::from_secs(3600),
            grace_period_percentile: 20,
            key_type: KeyType::Rsa(2048),
            root_ca_dir: PathBuf::from("./etc/cacerts"),
            self_signed_dir: None,
            root_cert_file: None,
            namespace: "istio-system".to_owned(),
            revision: "default".to_owned(),
            custom_hosts: Vec::new(),
            discovery_host: None,
            token_audiences: vec!["istio-ca".to_owned()],
            jwt_rule: None,
        }
    }
}

impl CaConfig {
    /// Reads the settings through `lookup` (normally `std::env::var`).
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut c = CaConfig::default();
        let get = |var: &'static str| lookup(var).filter(|v| !v.trim().is_empty());
        if let Some(v) = get(ENABLE_CA_SERVER) {
            c.enabled = parse_bool(ENABLE_CA_SERVER, &v)?;
        }
        if let Some(v) = get(TRUST_DOMAIN) {
            c.trust_domain = v;
        }
        if let Some(v) = get(DEFAULT_WORKLOAD_CERT_TTL) {
            c.default_ttl = parse_duration(DEFAULT_WORKLOAD_CERT_TTL, &v)?;
        }
        if let Some(v) = get(MAX_WORKLOAD_CERT_TTL) {
            c.max_ttl = parse_duration(MAX_WORKLOAD_CERT_TTL, &v)?;
        }
        if let Some(v) = get(SELF_SIGNED_CA_CERT_TTL) {
            c.self_signed_ttl = parse_duration(SELF_SIGNED_CA_CERT_TTL, &v)?;
        }
        if let Some(v) = get(ROOT_CERT_CHECK_INTERVAL) {
            c.root_check_interval = parse_duration(ROOT_CERT_CHECK_INTERVAL, &v)?;
        }
        if let Some(v) = get(ROOT_CERT_GRACE_PERIOD_PERCENTILE) {
            c.grace_period_percentile = v
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|p| (1..=100).contains(p))
                .ok_or_else(|| err(ROOT_CERT_GRACE_PERIOD_PERCENTILE, &v, "want 1..100"))?;
        }
        if let Some(v) = get(SELF_SIGNED_CA_KEY_TYPE) {
            c.key_type = v
                .parse()
                .map_err(|e: String| err(SELF_SIGNED_CA_KEY_TYPE, &v, &e))?;
        }
        if let Some(v) = get(SELF_SIGNED_CA_RSA_KEY_SIZE) {
            let bits = v
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|b| (2048..=8192).contains(b))
                .ok_or_else(|| err(SELF_SIGNED_CA_RSA_KEY_SIZE, &v, "want 2048..8192"))?;
            if let KeyType::Rsa(_) = c.key_type {
                c.key_type = KeyType::Rsa(bits);
            }
        }
        if let Some(v) = get(ROOT_CA_DIR) {
            c.root_ca_dir = PathBuf::from(v);
        }
        c.self_signed_dir = get(SELF_SIGNED_CA_DIR).map(PathBuf::from);
        c.root_cert_file = get(ROOT_CERT_PUBLISH_FILE).map(PathBuf::from);
        if let Some(v) = get(POD_NAMESPACE) {
            c.namespace = v;
        }
        if let Some(v) = get(REVISION) {
            c.revision = v;
        }
        if let Some(v) = get(ISTIOD_CUSTOM_HOST) {
            c.custom_hosts = split_list(&v);
        }
        if let Some(v) = get(TOKEN_AUDIENCES) {
            c.token_audiences = split_list(&v);
        }
        c.jwt_rule = get(JWT_RULE);
        if c.default_ttl > c.max_ttl {
            return Err(err(
                DEFAULT_WORKLOAD_CERT_TTL,
                &humantime::format_duration(c.default_ttl).to_string(),
                "is greater than MAX_WORKLOAD_CERT_TTL",
            ));
        }
        Ok(c)
    }

    /// The DNS names of istiod's serving certificate, sorted and unique, as upstream.
    pub fn serving_dns_names(&self) -> Vec<String> {
        let ns = &self.namespace;
        let mut names = vec![
            format!("istiod.{ns}.svc"),
            format!("istiod-remote.{ns}.svc"),
            format!("istio-pilot.{ns}.svc"),
        ];
        if !self.revision.is_empty() && self.revision != "default" {
            names.push(format!("istiod-{}.{ns}.svc", self.revision));
        }
        names.extend(self.custom_hosts.iter().cloned());
        names.extend(self.discovery_host.iter().cloned());
        names.sort();
        names.dedup();
        names
    }
}

/// The host of a `host:port` discovery address (`[v6]:port` unbracketed); `None` when the
/// address has no port, as upstream refuses it.
pub fn discovery_host(address: &str) -> Option<String> {
    let (host, port) = address.trim().rsplit_once(':')?;
    if port.parse::<u16>().is_err() {
        return None;
    }
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then(|| host.to_owned())
}

fn err(var: &'static str, value: &str, reason: &str) -> ConfigError {
    ConfigError {
        var,
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

fn parse_bool(var: &'static str, v: &str) -> Result<bool, ConfigError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "t" | "true" => Ok(true),
        "0" | "f" | "false" => Ok(false),
        _ => Err(err(var, v, "want true or false")),
    }
}

/// Go-style durations (`24h`, `2160h`, `90s`), and a bare number of seconds.
pub fn parse_duration(var: &'static str, v: &str) -> Result<Duration, ConfigError> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(v).map_err(|e| err(var, v, &format!("not a duration: {e}")))
}

fn split_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn defaults_match_upstream() {
        let c = CaConfig::from_env(env(&[])).unwrap();
        assert_eq!(c, CaConfig::default());
        assert_eq!(c.max_ttl, Duration::from_secs(2160 * 3600));
    }

    #[test]
    fn reads_overrides() {
        let c = CaConfig::from_env(env(&[
            (DEFAULT_WORKLOAD_CERT_TTL, "1h"),
            (MAX_WORKLOAD_CERT_TTL, "48h"),
            (ROOT_CERT_GRACE_PERIOD_PERCENTILE, "50"),
            (SELF_SIGNED_CA_KEY_TYPE, "ECDSA_P256"),
            (ISTIOD_CUSTOM_HOST, "a.example.com, b.example.com"),
            (REVISION, "canary"),
            (ENABLE_CA_SERVER, "false"),
        ]))
        .unwrap();
        assert_eq!(c.default_ttl, Duration::from_secs(3600));
        assert_eq!(c.max_ttl, Duration::from_secs(48 * 3600));
        assert_eq!(c.grace_period_percentile, 50);
        assert_eq!(c.key_type, KeyType::EcdsaP256);
        assert!(!c.enabled);
        assert_eq!(
            c.serving_dns_names(),
            vec![
                "a.example.com",
                "b.example.com",
                "istio-pilot.istio-system.svc",
                "istiod-canary.istio-system.svc",
                "istiod-remote.istio-system.svc",
                "istiod.istio-system.svc",
            ]
        );
    }

    #[test]
    fn serving_names_include_the_discovery_address_host() {
        let mut c = CaConfig::from_env(env(&[(POD_NAMESPACE, "istio-live")])).unwrap();
        c.discovery_host = discovery_host("istiod.istio-system.svc:15012");
        assert_eq!(
            c.serving_dns_names(),
            vec![
                "istio-pilot.istio-live.svc",
                "istiod-remote.istio-live.svc",
                "istiod.istio-live.svc",
                "istiod.istio-system.svc",
            ]
        );
        // The same name as a known one is listed once.
        c.discovery_host = discovery_host("istiod.istio-live.svc:15012");
        assert_eq!(c.serving_dns_names().len(), 3);
        assert_eq!(
            discovery_host("[fd00::1]:15012").as_deref(),
            Some("fd00::1")
        );
        assert_eq!(discovery_host("istiod.istio-system.svc"), None);
        assert_eq!(discovery_host(":15012"), None);
    }

    #[test]
    fn errors_name_the_variable() {
        for (var, value) in [
            (MAX_WORKLOAD_CERT_TTL, "soon"),
            (ROOT_CERT_GRACE_PERIOD_PERCENTILE, "0"),
            (SELF_SIGNED_CA_RSA_KEY_SIZE, "1024"),
            (SELF_SIGNED_CA_KEY_TYPE, "DSA"),
            (ENABLE_CA_SERVER, "maybe"),
        ] {
            let e = CaConfig::from_env(env(&[(var, value)])).unwrap_err();
            assert_eq!(e.var, var);
            assert!(e.to_string().contains(value), "{e}");
        }
        let e = CaConfig::from_env(env(&[(DEFAULT_WORKLOAD_CERT_TTL, "100d")])).unwrap_err();
        assert_eq!(e.var, DEFAULT_WORKLOAD_CERT_TTL);
    }
}
