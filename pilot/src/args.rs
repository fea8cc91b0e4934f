//! `pilot-discovery discovery` flags, with upstream's names and defaults. Environment
//! variables are read in `settings`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{ArgAction, Args};

use crate::settings::{go_bool, go_duration};

/// Flags of `pilot-discovery discovery`, as upstream istiod and its Helm chart spell them.
#[derive(Debug, Clone, Args)]
#[command(rename_all = "verbatim", args_override_self = true)]
pub struct DiscoveryArgs {
    /// Comma-separated service registries to read from (`Kubernetes`, `Mock`); empty for the
    /// file-only mode with `--configDir`.
    #[arg(long, value_delimiter = ',', default_value = "Kubernetes")]
    pub registries: Vec<String>,
    /// Namespace holding remote-cluster secrets.
    #[arg(
        long = "clusterRegistriesNamespace",
        env = "POD_NAMESPACE",
        default_value = "istio-system"
    )]
    pub cluster_registries_namespace: String,
    /// Kubeconfig file; else `KUBECONFIG`, else in-cluster config.
    #[arg(long, default_value = "")]
    pub kubeconfig: String,
    /// Mesh config file.
    #[arg(long = "meshConfig", default_value = "./etc/istio/config/mesh")]
    pub mesh_config: String,
    /// Mesh networks file.
    #[arg(
        long = "networksConfig",
        default_value = "./etc/istio/config/meshNetworks"
    )]
    pub networks_config: String,
    /// Namespace istiod runs in.
    #[arg(
        short = 'n',
        long,
        env = "POD_NAMESPACE",
        default_value = "istio-system"
    )]
    pub namespace: String,
    /// Namespace of the Istio CNI plugin.
    #[arg(long = "cniNamespace", default_value = "")]
    pub cni_namespace: String,
    /// Time to drain connections on shutdown.
    #[arg(long = "shutdownDuration", default_value = "10s", value_parser = go_duration)]
    pub shutdown_duration: Duration,
    /// Folder of Kubernetes-style YAML manifests to serve (watched for changes).
    #[arg(long = "configDir", default_value = "")]
    pub config_dir: String,
    /// DNS domain suffix of services.
    #[arg(long, default_value = "cluster.local")]
    pub domain: String,
    /// Name of this cluster.
    #[arg(long = "clusterID", env = "CLUSTER_ID", default_value = "Kubernetes")]
    pub cluster_id: String,
    /// Aliases of cluster IDs (`alias=cluster`).
    #[arg(long = "clusterAliases", value_delimiter = ',')]
    pub cluster_aliases: Vec<String>,
    /// Readiness and debug HTTP address.
    #[arg(long = "httpAddr", default_value = ":8080")]
    pub http_addr: String,
    /// HTTPS address of the webhooks.
    #[arg(long = "httpsAddr", default_value = ":15017")]
    pub https_addr: String,
    /// Plaintext xDS gRPC address.
    #[arg(long = "grpcAddr", default_value = ":15010")]
    pub grpc_addr: String,
    /// xDS and CA gRPC address over TLS.
    #[arg(long = "secureGRPCAddr", default_value = ":15012")]
    pub secure_grpc_addr: String,
    /// Metrics (Prometheus) address.
    #[arg(long = "monitoringAddr", default_value = ":15014")]
    pub monitoring_addr: String,
    /// Serve profiling endpoints under /debug/pprof.
    #[arg(long, default_value = "true", action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", value_parser = go_bool)]
    pub profile: bool,
    /// Kubernetes API client queries per second.
    #[arg(long = "kubernetesApiQPS", default_value = "80")]
    pub kubernetes_api_qps: f32,
    /// Kubernetes API client burst.
    #[arg(long = "kubernetesApiBurst", default_value = "160")]
    pub kubernetes_api_burst: u32,
    /// gRPC keepalive ping interval.
    #[arg(long = "keepaliveInterval", env = "GRPC_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = go_duration)]
    pub keepalive_interval: Duration,
    /// gRPC keepalive ping timeout.
    #[arg(long = "keepaliveTimeout", env = "GRPC_KEEPALIVE_TIMEOUT", default_value = "10s", value_parser = go_duration)]
    pub keepalive_timeout: Duration,
    /// Maximum age of a gRPC connection before the server asks the client to reconnect.
    #[arg(long = "keepaliveMaxServerConnectionAge", value_parser = go_duration)]
    pub keepalive_max_server_connection_age: Option<Duration>,
    /// Address of the ControlZ introspection port (accepted for compatibility).
    #[arg(long = "ctrlz_address", default_value = "localhost")]
    pub ctrlz_address: String,
    /// ControlZ port (accepted for compatibility).
    #[arg(long = "ctrlz_port", default_value = "9876")]
    pub ctrlz_port: u16,
    /// Log levels per scope, `scope:level,...` (`default:info`).
    #[arg(long = "log_output_level", default_value = "default:info")]
    pub log_output_level: String,
    /// Log as JSON.
    #[arg(long = "log_as_json", default_value = "false", action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", value_parser = go_bool)]
    pub log_as_json: bool,
    /// Log output paths (accepted for compatibility; logs go to stderr/stdout).
    #[arg(long = "log_target", value_delimiter = ',', default_value = "stdout")]
    pub log_target: Vec<String>,
    /// Scopes whose messages include the caller (accepted for compatibility).
    #[arg(long = "log_caller", default_value = "")]
    pub log_caller: String,
    /// Minimum level at which stack traces are captured (accepted for compatibility).
    #[arg(long = "log_stacktrace_level", default_value = "default:none")]
    pub log_stacktrace_level: String,
    /// CA bundle of a custom serving certificate (with `--tlsCertFile` and `--tlsKeyFile`).
    #[arg(long = "caCertFile", default_value = "")]
    pub ca_cert_file: String,
    /// Custom serving certificate chain for the TLS ports.
    #[arg(long = "tlsCertFile", default_value = "")]
    pub tls_cert_file: String,
    /// Private key of the custom serving certificate.
    #[arg(long = "tlsKeyFile", default_value = "")]
    pub tls_key_file: String,
    /// Minimum TLS version of the TLS ports: `1.2` or `1.3`.
    #[arg(long = "tls-min-version", default_value = "1.2")]
    pub tls_min_version: String,
    /// TLS 1.2 cipher suites (accepted for compatibility; rustls' safe defaults apply).
    #[arg(long = "tls-cipher-suites", value_delimiter = ',')]
    pub tls_cipher_suites: Vec<String>,
}

/// Words that make a flag name a security setting: TLS, certificates and keys, the CA,
/// authentication. An unknown `discovery` flag made of one of them stops istiod instead of
/// being ignored: running without a TLS or authentication setting the operator asked for
/// is worse than not starting.
const SECURITY_WORDS: &[&str] = &[
    "tls",
    "ssl",
    "mtls",
    "cipher",
    "ciphers",
    "cert",
    "certs",
    "certificate",
    "certificates",
    "x509",
    "pem",
    "key",
    "keys",
    "ca",
    "cacert",
    "cacerts",
    "trust",
    "spiffe",
    "auth",
    "authn",
    "authz",
    "authentication",
    "authorization",
    "jwt",
    "jwks",
    "oidc",
    "token",
    "tokens",
    "audience",
    "audiences",
    "issuer",
    "secure",
    "secret",
    "credential",
    "credentials",
];

/// The error for an unknown `discovery` flag that names a security setting (see
/// [`SECURITY_WORDS`]); `None` for any other flag, which is ignored with a warning as
/// upstream does.
pub fn unknown_security_flag(flag: &str) -> Option<String> {
    let name = flag.trim_start_matches('-');
    let name = name.split('=').next().unwrap_or(name);
    let words = flag_words(name);
    let word = words
        .iter()
        .find(|w| SECURITY_WORDS.contains(&w.as_str()))?;
    Some(format!(
        "unknown flag {flag}: {word:?} makes it a TLS, certificate, CA or authentication \
         setting, which this istiod does not implement; refusing to start rather than run \
         without it (remove the flag, or use the setting this istiod has for it)"
    ))
}

/// The words of a flag name, lowercased: split at `-`, `_` and `.`, and at camel-case
/// boundaries (`secureGRPCAddr` is secure, grpc, addr).
fn flag_words(name: &str) -> Vec<String> {
    let mut words = Vec::new();
    for part in name.split(['-', '_', '.']) {
        let chars: Vec<char> = part.chars().collect();
        let mut word = String::new();
        for (i, &c) in chars.iter().enumerate() {
            let prev = i.checked_sub(1).and_then(|j| chars.get(j));
            let next = chars.get(i + 1);
            let boundary = c.is_uppercase()
                && !word.is_empty()
                && (prev.is_some_and(|p| p.is_lowercase() || p.is_ascii_digit())
                    || next.is_some_and(|n| n.is_lowercase()));
            if boundary {
                words.push(std::mem::take(&mut word).to_lowercase());
            }
            word.push(c);
        }
        if !word.is_empty() {
            words.push(word.to_lowercase());
        }
    }
    words
}

/// Parses a listen address as Go does: `:15010` means every interface; empty disables.
pub fn listen_addr(flag: &str, value: &str) -> Result<Option<SocketAddr>, String> {
    if value.is_empty() {
        return Ok(None);
    }
    let full = if value.starts_with(':') {
        format!("0.0.0.0{value}")
    } else if let Some(port) = value.strip_prefix("localhost:") {
        format!("127.0.0.1:{port}")
    } else {
        value.to_owned()
    };
    full.parse().map(Some).map_err(|e| {
        format!("--{flag}={value:?} is not a listen address (host:port or :port): {e}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        assert_eq!(
            listen_addr("grpcAddr", ":15010").unwrap(),
            Some("0.0.0.0:15010".parse().unwrap())
        );
        assert_eq!(
            listen_addr("grpcAddr", "127.0.0.1:0").unwrap(),
            Some("127.0.0.1:0".parse().unwrap())
        );
        assert_eq!(listen_addr("grpcAddr", "").unwrap(), None);
        let err = listen_addr("grpcAddr", "nope").unwrap_err();
        assert!(err.contains("--grpcAddr"), "{err}");
    }

    #[test]
    fn flag_names_split_into_words() {
        assert_eq!(flag_words("secureGRPCAddr"), ["secure", "grpc", "addr"]);
        assert_eq!(flag_words("tls-min-version"), ["tls", "min", "version"]);
        assert_eq!(flag_words("caCertFile"), ["ca", "cert", "file"]);
        assert_eq!(flag_words("log_output_level"), ["log", "output", "level"]);
        assert_eq!(
            flag_words("keepaliveMaxServerConnectionAge"),
            ["keepalive", "max", "server", "connection", "age"]
        );
        assert_eq!(flag_words("x509Roots"), ["x509", "roots"]);
    }

    #[test]
    fn unknown_security_flags_are_refused_and_others_ignored() {
        for flag in [
            "--tlsMaxVersion=1.3",
            "--caKeyFile",
            "--jwtPolicy=first-party-jwt",
            "--tls-client-auth",
            "--trustDomain",
            "--secureGRPCAddress",
            "--workloadCertTTL",
            "--token-audiences=a",
        ] {
            let err = unknown_security_flag(flag);
            assert!(
                err.as_deref()
                    .is_some_and(|e| e.contains(flag) && e.contains("refusing to start")),
                "{flag}: {err:?}"
            );
        }
        for flag in [
            "--futureFlag=1",
            "--resync",
            "--plugins=x",
            "--cacheSize",
            "--keepaliveFoo",
            "--monitoringPath",
            "--castle",
        ] {
            assert_eq!(unknown_security_flag(flag), None, "{flag}");
        }
    }
}
