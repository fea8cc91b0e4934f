//! Istio `Gateway` resources as a router proxy sees them: the Gateways whose selector
//! matches its labels, merged port by port as upstream's `MergedGateway`, and the binding
//! of VirtualServices to Gateways by name.
//!
//! Merging follows upstream's rules so that the same config gives the same listeners: on
//! one port, plaintext HTTP servers of every Gateway share one route config
//! (`http.<port>`); TLS-terminating HTTPS servers get one filter chain each with a route
//! config of their own (`https.<port>.<portName>.<gateway>.<namespace>`); a server whose
//! protocol cannot share the port with the first one there is dropped, as is a TLS server
//! repeating a host already served on that port.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::proxy::Proxy;
use super::push_context::{Named, PushContext};
use super::service::{labels_match, Protocol};
use crate::config::istio::{Gateway, GatewayServer, MESH_GATEWAY};

/// A Gateway server's TLS mode, as upstream's `ServerTLSSettings.TLSmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    Passthrough,
    Simple,
    Mutual,
    AutoPassthrough,
    IstioMutual,
    OptionalMutual,
}

impl TlsMode {
    /// The mode of a `tls.mode` value; unset (and unknown) is `SIMPLE`, the API's default.
    pub fn parse(mode: Option<&str>) -> TlsMode {
        match mode.unwrap_or_default() {
            "PASSTHROUGH" => TlsMode::Passthrough,
            "MUTUAL" => TlsMode::Mutual,
            "AUTO_PASSTHROUGH" => TlsMode::AutoPassthrough,
            "ISTIO_MUTUAL" => TlsMode::IstioMutual,
            "OPTIONAL_MUTUAL" => TlsMode::OptionalMutual,
            _ => TlsMode::Simple,
        }
    }

    /// The proxy forwards the TLS stream without terminating it.
    pub fn is_passthrough(self) -> bool {
        matches!(self, TlsMode::Passthrough | TlsMode::AutoPassthrough)
    }
}

/// One server of a Gateway on one resolved port, with the Gateway it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct MergedServer {
    /// `namespace/name` of the Gateway.
    pub gateway: String,
    pub gateway_name: String,
    pub gateway_namespace: String,
    /// The server with its hosts' namespace parts resolved (`./h` → `<ns>/h`, `*/h` → `h`).
    pub server: GatewayServer,
    /// The port the proxy listens on (the Gateway port translated to its target port when
    /// the router's own Service declares it, as upstream).
    pub port: u32,
    /// The server's protocol.
    pub protocol: Protocol,
    /// The route config name (`http.<port>` or `https.<port>.<portName>.<gw>.<ns>`), empty
    /// for TCP, TLS and passthrough servers.
    pub route_name: String,
    /// SNI hosts of a server with `tls` (its hosts without namespace, sorted).
    pub sni_hosts: Vec<String>,
}

impl MergedServer {
    /// The server's TLS mode, if it has `tls` settings.
    pub fn tls_mode(&self) -> Option<TlsMode> {
        self.server
            .tls
            .as_ref()
            .map(|t| TlsMode::parse(t.mode.as_deref()))
    }

    /// Upstream's `IsHTTPServer`: HTTP, or HTTPS terminated by the proxy.
    pub fn is_http(&self) -> bool {
        self.protocol.is_http()
            || (self.protocol == Protocol::Https
                && !self.tls_mode().is_some_and(TlsMode::is_passthrough))
    }

    /// Upstream's `IsTLSServer`: a server with `tls` that is not plain HTTP (an HTTP server's
    /// `tls` only carries `httpsRedirect`).
    pub fn is_tls(&self) -> bool {
        self.server.tls.is_some() && !self.protocol.is_http()
    }

    /// Upstream's `IsHTTPSServerWithTLSTermination`.
    pub fn is_https_terminated(&self) -> bool {
        self.protocol == Protocol::Https && self.tls_mode().is_some_and(|m| !m.is_passthrough())
    }

    /// Whether the server redirects plaintext requests to HTTPS.
    pub fn https_redirect(&self) -> bool {
        self.server.tls.as_ref().is_some_and(|t| t.https_redirect)
    }
}

/// A listening port: number, protocol of the first server there, and bind address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerPort {
    pub number: u32,
    pub protocol: String,
    pub bind: String,
}

/// The servers of one listening port; `route_name` is the plaintext HTTP route config.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MergedServers {
    /// Indexes into [`MergedGateway::servers`].
    pub servers: Vec<usize>,
    pub route_name: String,
}

/// Every Gateway server a router serves, merged by port.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MergedGateway {
    pub servers: Vec<MergedServer>,
    /// Listening ports in the order they were first seen.
    pub server_ports: Vec<ServerPort>,
    pub merged_servers: BTreeMap<ServerPort, MergedServers>,
    /// The servers whose HTTP routes make each route config.
    pub servers_by_route_name: BTreeMap<String, Vec<usize>>,
    /// Some server is `AUTO_PASSTHROUGH`: the router needs the `sni-dnat` clusters.
    pub auto_passthrough: bool,
}

impl MergedGateway {
    /// The servers of `port`.
    pub fn servers_of(&self, port: &ServerPort) -> impl Iterator<Item = &MergedServer> {
        self.merged_servers
            .get(port)
            .into_iter()
            .flat_map(|m| m.servers.iter())
            .filter_map(|i| self.servers.get(*i))
    }

    /// The servers whose routes make route config `name`.
    pub fn servers_for_route(&self, name: &str) -> impl Iterator<Item = &MergedServer> {
        self.servers_by_route_name
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|i| self.servers.get(*i))
    }
}

/// `name`, `ns/name`, `./name` or the legacy `name.ns.svc.<domain>` → `ns/name`, relative
/// to `namespace` (the VirtualService's); `mesh` stays `mesh`.
pub fn resolve_gateway_name(name: &str, namespace: &str) -> String {
    if name == MESH_GATEWAY {
        return name.to_owned();
    }
    match name.split_once('/') {
        Some((".", gw)) => format!("{namespace}/{gw}"),
        Some(_) => name.to_owned(),
        None => match name.split_once('.') {
            None => format!("{namespace}/{name}"),
            Some((gw, rest)) => {
                let ns = rest.split('.').next().unwrap_or(rest);
                format!("{ns}/{gw}")
            }
        },
    }
}

impl PushContext {
    /// The Gateways that select `proxy` (by labels; every namespace, or only the proxy's
    /// with `PILOT_SCOPE_GATEWAY_TO_NAMESPACE`), merged. `None` when none selects it.
    pub fn merged_gateway(&self, proxy: &Proxy) -> Option<MergedGateway> {
        let selected: Vec<&Arc<Named<Gateway>>> = self
            .gateways
            .iter()
            .filter(|g| !self.scope_gateway_to_namespace || g.namespace == proxy.config_namespace)
            .filter(|g| labels_match(&g.spec.selector, &proxy.labels))
            .collect();
        if selected.is_empty() {
            return None;
        }
        // The router's own Service ports: a Gateway port that one declares listens on its
        // target port.
        let targets: Vec<(u32, u32)> = self
            .services
            .iter()
            .flat_map(|svc| self.endpoints(&svc.hostname))
            .filter(|e| proxy.ip_addresses.contains(&e.address))
            .map(|e| (u32::from(e.service_port), u32::from(e.port)))
            .collect();
        Some(merge(&selected, &targets))
    }
}

/// Merges `gateways` (in priority order) for a router whose Services map port → target
/// port as in `targets`.
pub fn merge(gateways: &[&Arc<Named<Gateway>>], targets: &[(u32, u32)]) -> MergedGateway {
    let mut m = MergedGateway::default();
    let mut gateway_ports: BTreeSet<u32> = BTreeSet::new();
    let mut plaintext: BTreeMap<u32, ServerPort> = BTreeMap::new();
    let mut tls_hosts: BTreeMap<u32, BTreeMap<String, String>> = BTreeMap::new();
    for gw in gateways {
        let gateway = format!("{}/{}", gw.namespace, gw.name);
        for s in &gw.spec.servers {
            let Some(port) = &s.port else {
                tracing::debug!(gateway = %gateway, "server without port skipped");
                continue;
            };
            let server = sanitize_hosts(s, &gw.namespace);
            let resolved = targets
                .iter()
                .find(|(p, _)| *p == port.number)
                .map_or(port.number, |(_, t)| *t);
            let protocol = Protocol::parse(&port.protocol);
            let mut ms = MergedServer {
                gateway: gateway.clone(),
                gateway_name: gw.name.clone(),
                gateway_namespace: gw.namespace.clone(),
                sni_hosts: Vec::new(),
                route_name: String::new(),
                server,
                port: resolved,
                protocol,
            };
            ms.route_name = route_name(&ms, port.number, &port.name);
            if ms.server.tls.is_some() {
                let known = tls_hosts.entry(resolved).or_default();
                let dup = check_duplicates(&ms.server.hosts, &ms.server.bind, known);
                if !dup.is_empty() {
                    tracing::warn!(gateway = %gateway, hosts = ?dup, "server skipped: duplicate host names on its port");
                    continue;
                }
                ms.sni_hosts = ms
                    .server
                    .hosts
                    .iter()
                    .map(|h| h.split_once('/').map_or(h.as_str(), |(_, h)| h).to_owned())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                if ms.tls_mode() == Some(TlsMode::AutoPassthrough) {
                    m.auto_passthrough = true;
                }
            }
            let sp = ServerPort {
                number: resolved,
                protocol: port.protocol.clone(),
                bind: ms.server.bind.clone(),
            };
            if !gateway_ports.insert(resolved) {
                // The port is taken: merge into it if upstream would.
                if let Some(current) = plaintext.get(&resolved).cloned() {
                    if !can_merge(Protocol::parse(&current.protocol), protocol)
                        && current.bind == sp.bind
                    {
                        tracing::info!(gateway = %gateway, port = resolved, "server skipped: its protocol conflicts with the port's first server");
                        continue;
                    }
                    if ms.route_name.is_empty() && current.bind == sp.bind {
                        tracing::debug!(gateway = %gateway, port = resolved, "server skipped: no route name");
                        continue;
                    }
                    let index = m.servers.len();
                    let route = ms.route_name.clone();
                    m.servers.push(ms);
                    if current.bind != sp.bind {
                        if m.merged_servers.contains_key(&sp) {
                            let entry = m.merged_servers.entry(sp).or_default();
                            entry.route_name = route.clone();
                            entry.servers.push(index);
                            m.servers_by_route_name
                                .entry(route)
                                .or_default()
                                .push(index);
                        } else {
                            add_plaintext(&mut m, &mut plaintext, index, sp);
                        }
                    } else {
                        m.merged_servers
                            .entry(current)
                            .or_default()
                            .servers
                            .push(index);
                        m.servers_by_route_name
                            .entry(route)
                            .or_default()
                            .push(index);
                    }
                    continue;
                }
                if !ms.is_tls() {
                    // A plaintext server after TLS ones on the port: a separate entry.
                    plaintext.insert(resolved, sp.clone());
                    let index = m.servers.len();
                    if ms.is_http() {
                        m.servers_by_route_name
                            .insert(ms.route_name.clone(), vec![index]);
                    }
                    m.merged_servers.insert(
                        sp.clone(),
                        MergedServers {
                            servers: vec![index],
                            route_name: ms.route_name.clone(),
                        },
                    );
                    m.server_ports.push(sp);
                    m.servers.push(ms);
                    continue;
                }
                if ms.is_http() {
                    if ms.route_name.is_empty() {
                        continue;
                    }
                    if m.servers_by_route_name.contains_key(&ms.route_name) {
                        tracing::info!(gateway = %gateway, route = %ms.route_name, "server skipped: its HTTPS port name is not unique");
                        continue;
                    }
                }
                let index = m.servers.len();
                if ms.is_http() {
                    m.servers_by_route_name
                        .insert(ms.route_name.clone(), vec![index]);
                }
                m.servers.push(ms);
                match m.merged_servers.get_mut(&sp) {
                    Some(entry) => entry.servers.push(index),
                    None => {
                        m.merged_servers.insert(
                            sp.clone(),
                            MergedServers {
                                servers: vec![index],
                                route_name: String::new(),
                            },
                        );
                        m.server_ports.push(sp);
                    }
                }
            } else {
                let index = m.servers.len();
                m.servers.push(ms);
                add_plaintext(&mut m, &mut plaintext, index, sp);
            }
        }
    }
    m
}

/// The first server of a port (upstream's `addPlainTextServer`, which also takes the first
/// TLS server of a port).
fn add_plaintext(
    m: &mut MergedGateway,
    plaintext: &mut BTreeMap<u32, ServerPort>,
    index: usize,
    sp: ServerPort,
) {
    let Some(s) = m.servers.get(index) else {
        return;
    };
    if !s.is_tls() {
        plaintext.insert(sp.number, sp.clone());
    }
    if s.is_http() {
        m.servers_by_route_name
            .insert(s.route_name.clone(), vec![index]);
    }
    m.merged_servers.insert(
        sp.clone(),
        MergedServers {
            servers: vec![index],
            route_name: s.route_name.clone(),
        },
    );
    m.server_ports.push(sp);
}

/// Upstream's `canMergeProtocols`: HTTP servers share a port with HTTP ones.
fn can_merge(current: Protocol, p: Protocol) -> bool {
    (current.is_http() || current == p) && p.is_http()
}

/// The RDS name of a server: `http.<port>[.<bind>]` for plaintext HTTP (the resolved
/// port), `https.<number>.<portName>.<gateway>.<namespace>[.<bind>]` for HTTPS the proxy
/// terminates (the Gateway's port number); empty otherwise.
fn route_name(s: &MergedServer, number: u32, port_name: &str) -> String {
    let bind = if s.server.bind.is_empty() {
        String::new()
    } else {
        format!(".{}", s.server.bind)
    };
    if s.protocol.is_http() {
        format!("http.{}{bind}", s.port)
    } else if s.protocol == Protocol::Https && !s.tls_mode().is_some_and(TlsMode::is_passthrough) {
        format!(
            "https.{number}.{port_name}.{}.{}{bind}",
            s.gateway_name, s.gateway_namespace
        )
    } else {
        String::new()
    }
}

/// Upstream's `sanitizeServerHostNamespace`: `./h` names the Gateway's namespace, `*/h`
/// any namespace (so just `h`), `*/*` everything.
fn sanitize_hosts(server: &GatewayServer, namespace: &str) -> GatewayServer {
    let mut out = server.clone();
    let mut hosts = Vec::with_capacity(server.hosts.len());
    for h in &server.hosts {
        match h.split_once('/') {
            Some((".", host)) => hosts.push(format!("{namespace}/{host}")),
            Some(("*", "*")) => {
                hosts = vec!["*".to_owned()];
                break;
            }
            Some(("*", host)) => hosts.push(host.to_owned()),
            _ => hosts.push(h.clone()),
        }
    }
    out.hosts = hosts;
    out
}

/// Hosts already served on the port with the same bind; records the hosts when there are
/// none.
fn check_duplicates(
    hosts: &[String],
    bind: &str,
    known: &mut BTreeMap<String, String>,
) -> Vec<String> {
    let dup: Vec<String> = hosts
        .iter()
        .filter(|h| known.get(*h).is_some_and(|b| b == bind))
        .cloned()
        .collect();
    if dup.is_empty() {
        for h in hosts {
            known.insert(h.clone(), bind.to_owned());
        }
    }
    dup
}

#[cfg(test)]
mod tests;
