//! CA settings from upstream's environment variables (read through `settings::Env`, whose
//! errors name the variable, the value and the reason).

use std::path::PathBuf;
use std::time::Duration;

use super::keys::KeyType;

use crate::settings::{
    Env, SettingError, CITADEL_SELF_SIGNED_CA_CERT_TTL as SELF_SIGNED_CA_CERT_TTL,
    CITADEL_SELF_SIGNED_CA_KEY_TYPE as SELF_SIGNED_CA_KEY_TYPE,
    CITADEL_SELF_SIGNED_CA_RSA_KEY_SIZE as SELF_SIGNED_CA_RSA_KEY_SIZE,
    CITADEL_SELF_SIGNED_ROOT_CERT_CHECK_INTERVAL as ROOT_CERT_CHECK_INTERVAL,
    CITADEL_SELF_SIGNED_ROOT_CERT_GRACE_PERIOD_PERCENTILE as ROOT_CERT_GRACE_PERIOD_PERCENTILE,
    DEFAULT_WORKLOAD_CERT_TTL, ENABLE_CA_SERVER, ISTIOD_CUSTOM_HOST, JWT_RULE,
    MAX_WORKLOAD_CERT_TTL, PILOT_ROOT_CERT_FILE as ROOT_CERT_PUBLISH_FILE,
    PILOT_SELF_SIGNED_CA_DIR as SELF_SIGNED_CA_DIR, POD_NAMESPACE, REVISION, ROOT_CA_DIR,
    TOKEN_AUDIENCES, TRUST_DOMAIN,
};

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
    /// Reads the CA's variables from `env` (see `settings::VARIABLES`).
    pub fn from_env(env: &Env) -> Result<Self, SettingError> {
        let d = CaConfig::default();
        let grace_period_percentile = env.parse(
            ROOT_CERT_GRACE_PERIOD_PERCENTILE,
            d.grace_period_percentile,
            |v| {
                v.parse::<u32>()
                    .ok()
                    .filter(|p| (1..=100).contains(p))
                    .ok_or_else(|| "want 1..100".to_owned())
            },
        )?;
        let mut key_type = env.parse(SELF_SIGNED_CA_KEY_TYPE, d.key_type, |v| v.parse())?;
        let rsa_bits = env.parse(SELF_SIGNED_CA_RSA_KEY_SIZE, None, |v| {
            v.parse::<usize>()
                .ok()
                .filter(|b| (2048..=8192).contains(b))
                .map(Some)
                .ok_or_else(|| "want 2048..8192".to_owned())
        })?;
        if let (KeyType::Rsa(_), Some(bits)) = (key_type, rsa_bits) {
            key_type = KeyType::Rsa(bits);
        }
        let c = CaConfig {
            enabled: env.bool(ENABLE_CA_SERVER, d.enabled)?,
            trust_domain: env.string(TRUST_DOMAIN, &d.trust_domain),
            default_ttl: env.duration(DEFAULT_WORKLOAD_CERT_TTL, d.default_ttl)?,
            max_ttl: env.duration(MAX_WORKLOAD_CERT_TTL, d.max_ttl)?,
            self_signed_ttl: env.duration(SELF_SIGNED_CA_CERT_TTL, d.self_signed_ttl)?,
            root_check_interval: env.duration(ROOT_CERT_CHECK_INTERVAL, d.root_check_interval)?,
            grace_period_percentile,
            key_type,
            root_ca_dir: env.get(ROOT_CA_DIR).map_or(d.root_ca_dir, PathBuf::from),
            self_signed_dir: env.get(SELF_SIGNED_CA_DIR).map(PathBuf::from),
            root_cert_file: env.get(ROOT_CERT_PUBLISH_FILE).map(PathBuf::from),
            namespace: env.string(POD_NAMESPACE, &d.namespace),
            revision: env.string(REVISION, &d.revision),
            custom_hosts: env.list(ISTIOD_CUSTOM_HOST).unwrap_or(d.custom_hosts),
            discovery_host: None,
            token_audiences: env.list(TOKEN_AUDIENCES).unwrap_or(d.token_audiences),
            jwt_rule: env.get(JWT_RULE).map(str::to_owned),
        };
        if c.default_ttl > c.max_ttl {
            return Err(SettingError::new(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn defaults_match_upstream() {
        let c = CaConfig::from_env(&env(&[])).unwrap();
        assert_eq!(c, CaConfig::default());
        assert_eq!(c.max_ttl, Duration::from_secs(2160 * 3600));
    }

    #[test]
    fn reads_overrides() {
        let c = CaConfig::from_env(&env(&[
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
        let mut c = CaConfig::from_env(&env(&[(POD_NAMESPACE, "istio-live")])).unwrap();
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
            let e = CaConfig::from_env(&env(&[(var, value)])).unwrap_err();
            assert_eq!(e.var, var);
            assert!(e.to_string().contains(value), "{e}");
        }
        let e = CaConfig::from_env(&env(&[(DEFAULT_WORKLOAD_CERT_TTL, "100d")])).unwrap_err();
        assert_eq!(e.var, DEFAULT_WORKLOAD_CERT_TTL);
    }
}
