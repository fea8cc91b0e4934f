//! Services and endpoints as the generators see them, whichever registry they came from.

use std::collections::BTreeMap;

use serde::Serialize;

/// Application protocol of a service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Protocol {
    Http,
    Http2,
    Grpc,
    Https,
    Tls,
    Tcp,
    Udp,
    Mongo,
    Redis,
    Mysql,
    /// Not declared: upstream sniffs the protocol; we route such ports as TCP.
    Unsupported,
}

impl Protocol {
    /// Parses an Istio protocol name (case-insensitive): `HTTP`, `GRPC`, `TCP`...
    pub fn parse(name: &str) -> Protocol {
        match name.to_ascii_lowercase().as_str() {
            "http" | "http1" => Protocol::Http,
            "http2" | "h2c" => Protocol::Http2,
            "grpc" | "grpc-web" => Protocol::Grpc,
            "https" => Protocol::Https,
            "tls" => Protocol::Tls,
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "mongo" => Protocol::Mongo,
            "redis" => Protocol::Redis,
            "mysql" => Protocol::Mysql,
            _ => Protocol::Unsupported,
        }
    }

    /// The protocol of a Kubernetes service port: `appProtocol` first, then the port name
    /// prefix (`http-web`, `grpc`), as Istio's protocol selection does.
    pub fn of_kube_port(name: &str, app_protocol: Option<&str>, l4: Option<&str>) -> Protocol {
        if l4 == Some("UDP") {
            return Protocol::Udp;
        }
        if let Some(ap) = app_protocol {
            let p = match ap {
                "kubernetes.io/h2c" => Protocol::Http2,
                "kubernetes.io/ws" | "kubernetes.io/wss" => Protocol::Http,
                other => Protocol::parse(other),
            };
            if p != Protocol::Unsupported {
                return p;
            }
        }
        let prefix = name.split('-').next().unwrap_or_default();
        Protocol::parse(prefix)
    }

    pub fn is_http(self) -> bool {
        matches!(self, Protocol::Http | Protocol::Http2 | Protocol::Grpc)
    }

    pub fn is_http2(self) -> bool {
        matches!(self, Protocol::Http2 | Protocol::Grpc)
    }
}

/// A port of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Port {
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
}

/// How a client finds a service's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Resolution {
    /// Endpoints come from istiod (EDS).
    ClientSideLb,
    /// The proxy resolves the host names in DNS and balances over all answers.
    DnsLb,
    /// The proxy resolves in DNS and uses one answer at a time.
    DnsRoundRobin,
    /// Traffic goes to the original destination (headless services, `resolution: NONE`).
    Passthrough,
}

/// Where a service's definition came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Registry {
    Kubernetes,
    ServiceEntry,
}

/// Visibility of a service or config across namespaces (`exportTo`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum ExportTo {
    All,
    /// Only the listed namespaces (`.` already replaced by the owner's namespace).
    Namespaces(Vec<String>),
}

impl ExportTo {
    /// Builds the visibility from `exportTo` entries of an object in `namespace`.
    pub fn from_list(list: &[String], namespace: &str) -> ExportTo {
        if list.is_empty() || list.iter().any(|e| e == "*") {
            return ExportTo::All;
        }
        ExportTo::Namespaces(
            list.iter()
                .filter(|e| *e != "~")
                .map(|e| {
                    if e == "." {
                        namespace.to_owned()
                    } else {
                        e.clone()
                    }
                })
                .collect(),
        )
    }

    pub fn visible_in(&self, namespace: &str) -> bool {
        match self {
            ExportTo::All => true,
            ExportTo::Namespaces(ns) => ns.iter().any(|n| n == namespace),
        }
    }
}

/// A service: a host name with ports, reachable at a virtual IP or through DNS.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Service {
    pub hostname: String,
    pub namespace: String,
    pub name: String,
    /// Virtual IP, if any (`None` for headless and address-less entries).
    pub address: Option<String>,
    pub ports: Vec<Port>,
    pub resolution: Resolution,
    pub registry: Registry,
    pub mesh_external: bool,
    pub export_to: ExportTo,
    /// Identities declared for the service's workloads beyond its endpoints' own (a
    /// ServiceEntry's `subjectAltNames`); clients accept these in ISTIO_MUTUAL.
    pub service_accounts: Vec<String>,
}

impl Service {
    pub fn port(&self, number: u16) -> Option<&Port> {
        self.ports.iter().find(|p| p.port == number)
    }
}

/// Health of an endpoint as Envoy understands it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Health {
    Healthy,
    Unhealthy,
    Draining,
}

/// One instance of a service port: an address and port with the workload's attributes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Endpoint {
    pub address: String,
    pub port: u16,
    /// The service port this endpoint serves.
    pub service_port: u16,
    pub labels: BTreeMap<String, String>,
    /// SPIFFE identity of the workload, if known.
    pub identity: Option<String>,
    /// `region/zone/subzone`.
    pub locality: String,
    pub health: Health,
    pub weight: u32,
}

/// Whether `labels` has every key/value of `selector`.
pub fn labels_match(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}
