//! Every setting istiod reads from its environment, read once in `main` and passed down.
//!
//! One snapshot of the environment ([`Env`]), one set of parse rules with Go's semantics
//! (upstream reads these variables with `strconv.ParseBool` and `time.ParseDuration`), and
//! one error naming the variable, its value and what is wrong with it. [`VARIABLES`] lists
//! every variable with its default and rule; `docs/settings.md` is generated from it.

use std::collections::HashMap;
use std::time::Duration;

use crate::ca::CaConfig;

/// A variable that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("environment variable {var}={value:?}: {reason}")]
pub struct SettingError {
    pub var: &'static str,
    pub value: String,
    pub reason: String,
}

impl SettingError {
    pub fn new(var: &'static str, value: &str, reason: impl Into<String>) -> Self {
        SettingError {
            var,
            value: value.to_owned(),
            reason: reason.into(),
        }
    }
}

/// A snapshot of the environment: what a variable is set to, and typed reads of it.
/// A variable set to the empty string counts as unset, as upstream.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

impl Env {
    /// The process environment, read once.
    pub fn process() -> Self {
        Env {
            vars: std::env::vars().collect(),
        }
    }

    /// A given environment (tests).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Env {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The value of `var`, if set and not blank.
    pub fn get(&self, var: &str) -> Option<&str> {
        self.vars
            .get(var)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }

    /// `var` as a string, or `default`.
    pub fn string(&self, var: &'static str, default: &str) -> String {
        self.get(var).unwrap_or(default).to_owned()
    }

    /// `var` parsed by `parse`, or `default` when unset.
    pub fn parse<T>(
        &self,
        var: &'static str,
        default: T,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, SettingError> {
        match self.get(var) {
            None => Ok(default),
            Some(v) => parse(v.trim()).map_err(|reason| SettingError::new(var, v, reason)),
        }
    }

    /// `var` as a boolean (`strconv.ParseBool`), or `default`.
    pub fn bool(&self, var: &'static str, default: bool) -> Result<bool, SettingError> {
        self.parse(var, default, go_bool)
    }

    /// `var` as a duration (`time.ParseDuration`), or `default`.
    pub fn duration(&self, var: &'static str, default: Duration) -> Result<Duration, SettingError> {
        self.parse(var, default, go_duration)
    }

    /// `var` as a comma-separated list (blank entries dropped), or `None` when unset.
    pub fn list(&self, var: &'static str) -> Option<Vec<String>> {
        self.get(var).map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
    }
}

/// Go's `strconv.ParseBool`: `1 t T TRUE true True` and `0 f F FALSE false False`.
pub fn go_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!(
            "{s:?} is not a boolean (1, t, T, TRUE, true, True, 0, f, F, FALSE, false, False)"
        )),
    }
}

/// Go's `time.ParseDuration`: `100ms`, `10s`, `1h30m`, `1.5h`, or `0`; no bare numbers.
pub fn go_duration(s: &str) -> Result<Duration, String> {
    crate::config::istio::parse_duration(s)
        .ok_or_else(|| format!("{s:?} is not a duration such as 100ms, 10s or 1h30m"))
}

/// How a variable's value is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Go's `strconv.ParseBool`.
    Bool,
    /// Go's `time.ParseDuration`.
    Duration,
    /// A whole number (with its range in the meaning).
    Integer,
    /// A decimal number.
    Number,
    /// Any text.
    Text,
    /// Comma-separated values.
    List,
    /// A file or folder path.
    Path,
}

impl Rule {
    fn name(self) -> &'static str {
        match self {
            Rule::Bool => "boolean",
            Rule::Duration => "duration",
            Rule::Integer => "integer",
            Rule::Number => "number",
            Rule::Text => "string",
            Rule::List => "comma-separated list",
            Rule::Path => "path",
        }
    }
}

/// One variable istiod reads.
#[derive(Debug, Clone, Copy)]
pub struct Variable {
    pub name: &'static str,
    pub default: &'static str,
    pub rule: Rule,
    pub meaning: &'static str,
}

const fn var(
    name: &'static str,
    default: &'static str,
    rule: Rule,
    meaning: &'static str,
) -> Variable {
    Variable {
        name,
        default,
        rule,
        meaning,
    }
}

/// Every environment variable istiod reads, with upstream's names and defaults.
pub const VARIABLES: &[Variable] = &[
    // Identity of this replica.
    var(POD_NAME, "", Rule::Text, "This replica's name: leader-election identity and the control-plane ID in responses."),
    var(POD_NAMESPACE, "istio-system", Rule::Text, "The istiod namespace: the root namespace's default, the CA Secret's and the election locks' home."),
    var(REVISION, "default", Rule::Text, "The control-plane revision: webhook configurations and locks of this revision."),
    var(CLUSTER_ID, "Kubernetes", Rule::Text, "The cluster's name (`--clusterID`)."),
    var(KUBECONFIG, "", Rule::Path, "Kubeconfig when `--kubeconfig` is empty; in-cluster config when neither exists."),
    // xDS.
    var(PILOT_DEBOUNCE_AFTER, "100ms", Rule::Duration, "Quiet time after a config change before a push starts."),
    var(PILOT_DEBOUNCE_MAX, "10s", Rule::Duration, "Longest a push waits for quiet."),
    var(PILOT_ENABLE_EDS_DEBOUNCE, "true", Rule::Bool, "Endpoint changes wait for the debounce too."),
    var(PILOT_PUSH_THROTTLE, "0", Rule::Integer, "Connections pushed at once; 0 means min(15 + 5 × cores, 100)."),
    var(PILOT_MAX_REQUESTS_PER_SECOND, "0", Rule::Number, "New xDS streams admitted per second; 0 means min(15 + 5 × cores, 100)."),
    var(PILOT_XDS_SEND_TIMEOUT, "30s", Rule::Duration, "A stream whose client takes no response for this long is closed and counted in `pilot_xds_write_timeout`; 0 never closes (upstream's default is 0)."),
    var(PILOT_MAX_XDS_STREAMS, "20000", Rule::Integer, "xDS streams served at once by this replica, including those waiting for admission; beyond it new streams get RESOURCE_EXHAUSTED (not upstream)."),
    var(ISTIO_GPRC_MAXSTREAMS, "100", Rule::Integer, "HTTP/2 streams at once per gRPC connection (15010, 15012); upstream's default is 100000."),
    var(PILOT_ENABLE_XDS_IDENTITY_CHECK, "true", Rule::Bool, "A caller authenticated on 15012 may only claim its own namespace."),
    var(ENABLE_DEBUG_ON_HTTP, "true", Rule::Bool, "Serve `/debug/*` on the HTTP port (8080) as well as on 15014."),
    var(PILOT_ENABLE_AMBIENT, "false", Rule::Bool, "Accept ztunnel connections."),
    var(PILOT_SCOPE_GATEWAY_TO_NAMESPACE, "false", Rule::Bool, "A gateway proxy takes only the Gateway resources of its own namespace."),
    var(PILOT_SKIP_VALIDATE_TRUST_DOMAIN, "false", Rule::Bool, "Inbound mTLS accepts peers of any trust domain the mesh roots sign (no SAN check)."),
    var(GRPC_KEEPALIVE_INTERVAL, "30s", Rule::Duration, "`--keepaliveInterval`: HTTP/2 pings on idle gRPC connections (15010, 15012)."),
    var(GRPC_KEEPALIVE_TIMEOUT, "10s", Rule::Duration, "`--keepaliveTimeout`: an unanswered ping closes the connection."),
    // Sidecar injection.
    var(INJECT_ENABLED, "true", Rule::Bool, "Serve the sidecar injection webhook (`/inject` on 15017) when `./var/lib/istio/inject/config` exists."),
    // Kubernetes writers.
    var(ENABLE_LEADER_ELECTION, "true", Rule::Bool, "Elect one replica for the namespace controller; false: this replica always leads."),
    // CA.
    var(ENABLE_CA_SERVER, "true", Rule::Bool, "Run the CA (IstioCertificateService on 15012)."),
    var(TRUST_DOMAIN, "cluster.local", Rule::Text, "Trust domain of issued identities (the mesh config's `trustDomain` wins)."),
    var(DEFAULT_WORKLOAD_CERT_TTL, "24h", Rule::Duration, "Lifetime of a workload certificate when the request names none."),
    var(MAX_WORKLOAD_CERT_TTL, "2160h", Rule::Duration, "Longest workload certificate lifetime granted."),
    var(CITADEL_SELF_SIGNED_CA_CERT_TTL, "87600h", Rule::Duration, "Lifetime of a generated self-signed root."),
    var(CITADEL_SELF_SIGNED_ROOT_CERT_CHECK_INTERVAL, "1h", Rule::Duration, "How often the self-signed root is checked for rotation."),
    var(CITADEL_SELF_SIGNED_ROOT_CERT_GRACE_PERIOD_PERCENTILE, "20", Rule::Integer, "Rotate the self-signed root when this percent (1..100) of its life remains."),
    var(CITADEL_SELF_SIGNED_CA_RSA_KEY_SIZE, "2048", Rule::Integer, "RSA key size (2048..8192) of a generated root."),
    var(CITADEL_SELF_SIGNED_CA_KEY_TYPE, "RSA", Rule::Text, "Key type of a generated root: RSA, ECDSA_P256 or ECDSA_P384 (not upstream)."),
    var(ROOT_CA_DIR, "./etc/cacerts", Rule::Path, "Folder of a plugged-in CA (`ca-cert.pem`, `ca-key.pem`, `root-cert.pem`, `cert-chain.pem`)."),
    var(PILOT_SELF_SIGNED_CA_DIR, "", Rule::Path, "Without Kubernetes: folder that keeps the self-signed root (not upstream; unset: memory only)."),
    var(PILOT_ROOT_CERT_FILE, "", Rule::Path, "Without Kubernetes: file the trust bundle is published to (not upstream)."),
    var(ISTIOD_CUSTOM_HOST, "", Rule::List, "Extra names of istiod's serving certificate."),
    var(TOKEN_AUDIENCES, "istio-ca", Rule::List, "Audiences a service-account token must carry to be accepted."),
    var(JWT_RULE, "", Rule::Text, "A JSON JWT rule (issuer, audiences, JWKS) for callers authenticated by a third-party token."),
    // RequestAuthentication keys.
    var(PILOT_JWT_ENABLE_REMOTE_JWKS, "false", Rule::Text, "Who fetches a `jwksUri`: `istiod`/`false` (istiod inlines the keys), `hybrid`/`true` (Envoy for services of the mesh, else istiod), `envoy`."),
    var(PILOT_JWT_PUB_KEY_REFRESH_INTERVAL, "20m", Rule::Duration, "How often istiod fetches each `jwksUri` again; a change of keys triggers a push."),
    var(JWKS_RESOLVER_INSECURE_SKIP_VERIFY, "false", Rule::Bool, "Do not verify the certificate of `https` JWKS servers."),
    var(BLOCKED_CIDRS_IN_JWKS_URIS, "", Rule::List, "Address ranges istiod never fetches keys from, on top of link-local and cloud metadata addresses."),
];

pub const POD_NAME: &str = "POD_NAME";
pub const POD_NAMESPACE: &str = "POD_NAMESPACE";
pub const REVISION: &str = "REVISION";
pub const CLUSTER_ID: &str = "CLUSTER_ID";
pub const KUBECONFIG: &str = "KUBECONFIG";
pub const PILOT_DEBOUNCE_AFTER: &str = "PILOT_DEBOUNCE_AFTER";
pub const PILOT_DEBOUNCE_MAX: &str = "PILOT_DEBOUNCE_MAX";
pub const PILOT_ENABLE_EDS_DEBOUNCE: &str = "PILOT_ENABLE_EDS_DEBOUNCE";
pub const PILOT_SCOPE_GATEWAY_TO_NAMESPACE: &str = "PILOT_SCOPE_GATEWAY_TO_NAMESPACE";
pub const PILOT_SKIP_VALIDATE_TRUST_DOMAIN: &str = "PILOT_SKIP_VALIDATE_TRUST_DOMAIN";
pub const PILOT_PUSH_THROTTLE: &str = "PILOT_PUSH_THROTTLE";
pub const PILOT_MAX_REQUESTS_PER_SECOND: &str = "PILOT_MAX_REQUESTS_PER_SECOND";
pub const PILOT_XDS_SEND_TIMEOUT: &str = "PILOT_XDS_SEND_TIMEOUT";
pub const PILOT_MAX_XDS_STREAMS: &str = "PILOT_MAX_XDS_STREAMS";
pub const ISTIO_GPRC_MAXSTREAMS: &str = "ISTIO_GPRC_MAXSTREAMS";
pub const PILOT_ENABLE_XDS_IDENTITY_CHECK: &str = "PILOT_ENABLE_XDS_IDENTITY_CHECK";
pub const ENABLE_DEBUG_ON_HTTP: &str = "ENABLE_DEBUG_ON_HTTP";
pub const PILOT_ENABLE_AMBIENT: &str = "PILOT_ENABLE_AMBIENT";
pub const GRPC_KEEPALIVE_INTERVAL: &str = "GRPC_KEEPALIVE_INTERVAL";
pub const GRPC_KEEPALIVE_TIMEOUT: &str = "GRPC_KEEPALIVE_TIMEOUT";
pub const ENABLE_LEADER_ELECTION: &str = "ENABLE_LEADER_ELECTION";
pub const INJECT_ENABLED: &str = "INJECT_ENABLED";
pub const ENABLE_CA_SERVER: &str = "ENABLE_CA_SERVER";
pub const TRUST_DOMAIN: &str = "TRUST_DOMAIN";
pub const DEFAULT_WORKLOAD_CERT_TTL: &str = "DEFAULT_WORKLOAD_CERT_TTL";
pub const MAX_WORKLOAD_CERT_TTL: &str = "MAX_WORKLOAD_CERT_TTL";
pub const CITADEL_SELF_SIGNED_CA_CERT_TTL: &str = "CITADEL_SELF_SIGNED_CA_CERT_TTL";
pub const CITADEL_SELF_SIGNED_ROOT_CERT_CHECK_INTERVAL: &str =
    "CITADEL_SELF_SIGNED_ROOT_CERT_CHECK_INTERVAL";
pub const CITADEL_SELF_SIGNED_ROOT_CERT_GRACE_PERIOD_PERCENTILE: &str =
    "CITADEL_SELF_SIGNED_ROOT_CERT_GRACE_PERIOD_PERCENTILE";
pub const CITADEL_SELF_SIGNED_CA_RSA_KEY_SIZE: &str = "CITADEL_SELF_SIGNED_CA_RSA_KEY_SIZE";
pub const CITADEL_SELF_SIGNED_CA_KEY_TYPE: &str = "CITADEL_SELF_SIGNED_CA_KEY_TYPE";
pub const ROOT_CA_DIR: &str = "ROOT_CA_DIR";
pub const PILOT_SELF_SIGNED_CA_DIR: &str = "PILOT_SELF_SIGNED_CA_DIR";
pub const PILOT_ROOT_CERT_FILE: &str = "PILOT_ROOT_CERT_FILE";
pub const ISTIOD_CUSTOM_HOST: &str = "ISTIOD_CUSTOM_HOST";
pub const TOKEN_AUDIENCES: &str = "TOKEN_AUDIENCES";
pub const JWT_RULE: &str = "JWT_RULE";
pub const PILOT_JWT_ENABLE_REMOTE_JWKS: &str = "PILOT_JWT_ENABLE_REMOTE_JWKS";
pub const PILOT_JWT_PUB_KEY_REFRESH_INTERVAL: &str = "PILOT_JWT_PUB_KEY_REFRESH_INTERVAL";
pub const JWKS_RESOLVER_INSECURE_SKIP_VERIFY: &str = "JWKS_RESOLVER_INSECURE_SKIP_VERIFY";
pub const BLOCKED_CIDRS_IN_JWKS_URIS: &str = "BLOCKED_CIDRS_IN_JWKS_URIS";

/// The reference table of `docs/settings.md`, generated from [`VARIABLES`].
pub fn reference_table() -> String {
    let mut out = String::from("| Variable | Default | Type | Meaning |\n|---|---|---|---|\n");
    for v in VARIABLES {
        let default = if v.default.is_empty() {
            "(unset)".to_owned()
        } else {
            format!("`{}`", v.default)
        };
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            v.name,
            default,
            v.rule.name(),
            v.meaning
        ));
    }
    out
}

/// Tunables of the xDS server, with upstream's names and defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    /// `PILOT_DEBOUNCE_AFTER`: quiet time before a push starts.
    pub debounce_after: Duration,
    /// `PILOT_DEBOUNCE_MAX`: longest a push waits for quiet.
    pub debounce_max: Duration,
    /// `PILOT_ENABLE_EDS_DEBOUNCE`: endpoint changes wait for the debounce too.
    pub enable_eds_debounce: bool,
    /// `PILOT_PUSH_THROTTLE`: connections pushed at once.
    pub push_throttle: usize,
    /// `PILOT_MAX_REQUESTS_PER_SECOND`: new xDS streams accepted per second.
    pub max_requests_per_second: f64,
    /// `PILOT_XDS_SEND_TIMEOUT`: how long a stream waits for its client to take a
    /// response; zero waits forever.
    pub xds_send_timeout: Duration,
    /// `PILOT_MAX_XDS_STREAMS`: streams served at once, admitted or waiting.
    pub max_xds_streams: usize,
    /// `ISTIO_GPRC_MAXSTREAMS`: HTTP/2 streams at once per gRPC connection.
    pub max_streams_per_connection: u32,
    /// `REVISION`: the control-plane revision.
    pub revision: String,
    /// `POD_NAME`.
    pub pod_name: String,
    /// `PILOT_ENABLE_XDS_IDENTITY_CHECK`: a TLS caller may only claim its own namespace.
    pub xds_identity_check: bool,
    /// `ENABLE_DEBUG_ON_HTTP`: serve `/debug/*` on the HTTP port.
    pub enable_debug_on_http: bool,
    /// `PILOT_ENABLE_AMBIENT`: accept ztunnel connections.
    pub enable_ambient: bool,
    /// `PILOT_SCOPE_GATEWAY_TO_NAMESPACE`: a router takes only its namespace's Gateways.
    pub scope_gateway_to_namespace: bool,
    /// `PILOT_SKIP_VALIDATE_TRUST_DOMAIN`: inbound mTLS checks no peer trust domain.
    pub skip_validate_trust_domain: bool,
}

impl Features {
    /// Reads the xDS tunables from `env`.
    pub fn from_env(env: &Env) -> Result<Self, SettingError> {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        // Upstream's heuristic for both limits: min(15 + 5 * cores, 100).
        let auto_limit = (15 + 5 * cpus).min(100);
        let throttle = env.parse(PILOT_PUSH_THROTTLE, 0usize, |s| {
            s.parse().map_err(|e| format!("not a whole number: {e}"))
        })?;
        let rps = env.parse(PILOT_MAX_REQUESTS_PER_SECOND, 0f64, |s| {
            match s.parse::<f64>() {
                Ok(v) if v >= 0.0 && v.is_finite() => Ok(v),
                Ok(_) => Err("must be a finite number, not negative".into()),
                Err(e) => Err(format!("not a number: {e}")),
            }
        })?;
        Ok(Features {
            debounce_after: env.duration(PILOT_DEBOUNCE_AFTER, Duration::from_millis(100))?,
            debounce_max: env.duration(PILOT_DEBOUNCE_MAX, Duration::from_secs(10))?,
            enable_eds_debounce: env.bool(PILOT_ENABLE_EDS_DEBOUNCE, true)?,
            push_throttle: if throttle == 0 { auto_limit } else { throttle },
            max_requests_per_second: if rps == 0.0 { auto_limit as f64 } else { rps },
            xds_send_timeout: env.duration(PILOT_XDS_SEND_TIMEOUT, Duration::from_secs(30))?,
            max_xds_streams: env.parse(PILOT_MAX_XDS_STREAMS, 20_000usize, positive)?,
            max_streams_per_connection: env.parse(ISTIO_GPRC_MAXSTREAMS, 100u32, positive)?,
            revision: env.string(REVISION, ""),
            pod_name: env.string(POD_NAME, ""),
            xds_identity_check: env.bool(PILOT_ENABLE_XDS_IDENTITY_CHECK, true)?,
            enable_debug_on_http: env.bool(ENABLE_DEBUG_ON_HTTP, true)?,
            enable_ambient: env.bool(PILOT_ENABLE_AMBIENT, false)?,
            scope_gateway_to_namespace: env.bool(PILOT_SCOPE_GATEWAY_TO_NAMESPACE, false)?,
            skip_validate_trust_domain: env.bool(PILOT_SKIP_VALIDATE_TRUST_DOMAIN, false)?,
        })
    }
}

/// A whole number above zero.
fn positive<T: std::str::FromStr + PartialOrd + Default>(s: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    match s.parse::<T>() {
        Ok(v) if v > T::default() => Ok(v),
        Ok(_) => Err("must be above zero".into()),
        Err(e) => Err(format!("not a whole number: {e}")),
    }
}

/// Everything istiod reads from its environment, built once in `main`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `KUBECONFIG`, when `--kubeconfig` is empty.
    pub kubeconfig: String,
    /// `ENABLE_LEADER_ELECTION`.
    pub leader_election: bool,
    /// `INJECT_ENABLED`: serve injection when its config is mounted.
    pub inject_enabled: bool,
    /// xDS tunables, and this replica's `POD_NAME` and `REVISION`.
    pub features: Features,
    /// The CA's variables, and the istiod namespace (`POD_NAMESPACE`).
    pub ca: CaConfig,
    /// The JWKS resolver's variables.
    pub jwks: crate::security::jwks::JwksSettings,
}

impl Settings {
    /// Reads and checks every variable; the first unusable one is the error.
    pub fn from_env(env: &Env) -> Result<Self, SettingError> {
        Ok(Settings {
            kubeconfig: env.string(KUBECONFIG, ""),
            leader_election: env.bool(ENABLE_LEADER_ELECTION, true)?,
            inject_enabled: env.bool(INJECT_ENABLED, true)?,
            features: Features::from_env(env)?,
            ca: CaConfig::from_env(env)?,
            jwks: crate::security::jwks::JwksSettings::from_env(env)?,
        })
    }
}

#[cfg(test)]
mod tests;
