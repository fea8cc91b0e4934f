//! The push context: an immutable snapshot of everything generators need, built once per
//! push and shared by every connection.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use super::authorization::AuthorizationPolicies;
use super::gateway::resolve_gateway_name;
use super::mesh::MeshConfig;
use super::proxy::Proxy;
use super::registry::{self, PodInfo};
use super::service::{labels_match, Endpoint, ExportTo, Service};
use crate::config::istio::{
    DestinationRule, Gateway, RequestAuthentication, Sidecar, VirtualService,
};
use crate::config::store::SourceError;
use crate::config::{Kind, Snapshot, Spec};
use crate::security::jwks::JwksKeys;
use crate::security::peer_authn::PeerAuthnPolicies;
use crate::security::warnings::ConfigWarnings;

/// A named Istio object of type `T` with its namespace and visibility.
#[derive(Debug, Clone, PartialEq)]
pub struct Named<T> {
    pub name: String,
    pub namespace: String,
    pub export_to: ExportTo,
    pub spec: T,
}

/// The snapshot generators read.
#[derive(Debug, Default)]
pub struct PushContext {
    /// Version stamped on every response of this push: `RFC3339/<counter>`.
    pub version: String,
    pub mesh: MeshConfig,
    pub domain: String,
    /// Every service, sorted by host name.
    pub services: Vec<Arc<Service>>,
    service_by_host: HashMap<String, Arc<Service>>,
    endpoints: HashMap<String, Vec<Endpoint>>,
    /// Every endpoint address, to tell a proxy that serves a service from a pure client.
    endpoint_ips: HashSet<String>,
    pub pods_by_ip: HashMap<String, PodInfo>,
    /// Virtual services with their hosts resolved to FQDNs and their gateway names to
    /// `namespace/name` (or `mesh`), sorted by namespace/name.
    pub virtual_services: Vec<Arc<Named<VirtualService>>>,
    /// Istio Gateways, oldest first (then by name and namespace), as upstream orders them
    /// for merging.
    pub gateways: Vec<Arc<Named<Gateway>>>,
    /// `PILOT_SCOPE_GATEWAY_TO_NAMESPACE`: a router proxy only takes the Gateways of its own
    /// namespace (set by the push builder).
    pub scope_gateway_to_namespace: bool,
    /// `PILOT_SKIP_VALIDATE_TRUST_DOMAIN`: inbound mTLS leaves peers' trust domains
    /// unchecked (set by the push builder).
    pub skip_validate_trust_domain: bool,
    destination_rules: HashMap<String, Vec<Arc<Named<DestinationRule>>>>,
    sidecars: Vec<Arc<Named<Sidecar>>>,
    /// PeerAuthentications: which inbound ports require mTLS.
    pub peer_authn: PeerAuthnPolicies,
    /// RequestAuthentications by namespace, sorted by name.
    request_authentications: HashMap<String, Vec<Arc<Named<RequestAuthentication>>>>,
    /// The JWKS istiod fetched, as of this push (set by the push builder, which owns the
    /// resolver: generators read keys here and never fetch).
    pub jwks: Arc<JwksKeys>,
    /// Errors of config sources, for `/debug/configz`.
    pub errors: Vec<SourceError>,
    /// AuthorizationPolicies by namespace (the root namespace's apply mesh-wide).
    pub authz_policies: AuthorizationPolicies,
    /// Security policies that conflict or select nothing, for logs and
    /// `/debug/config_warnings`.
    pub warnings: ConfigWarnings,
}

impl PushContext {
    /// Builds a push context from a store snapshot.
    pub fn build(
        snapshot: &Snapshot,
        mesh: MeshConfig,
        domain: &str,
        version: String,
    ) -> PushContext {
        let index = registry::build(snapshot, domain, &mesh.trust_domain);
        let services: Vec<Arc<Service>> = index.services.into_iter().map(Arc::new).collect();
        let mut service_by_host = HashMap::new();
        for s in &services {
            // Kubernetes services win over ServiceEntries for the same host (sorted first).
            service_by_host
                .entry(s.hostname.clone())
                .or_insert_with(|| s.clone());
        }
        let mut virtual_services = Vec::new();
        let mut destination_rules: HashMap<String, Vec<Arc<Named<DestinationRule>>>> =
            HashMap::new();
        let mut sidecars = Vec::new();
        let mut gateways = Vec::new();
        for c in snapshot.configs.values() {
            let ns = &c.key.namespace;
            match &c.spec {
                Spec::VirtualService(vs) => {
                    let mut vs = vs.as_ref().clone();
                    vs.hosts = vs
                        .hosts
                        .iter()
                        .map(|h| resolve_host(h, ns, domain))
                        .collect();
                    for route in &mut vs.http {
                        for d in &mut route.route {
                            d.destination.host = resolve_host(&d.destination.host, ns, domain);
                        }
                        if let Some(m) = &mut route.mirror {
                            m.host = resolve_host(&m.host, ns, domain);
                        }
                        for m in &mut route.mirrors {
                            m.destination.host = resolve_host(&m.destination.host, ns, domain);
                        }
                    }
                    for route in &mut vs.tcp {
                        for d in &mut route.route {
                            d.destination.host = resolve_host(&d.destination.host, ns, domain);
                        }
                    }
                    for route in &mut vs.tls {
                        for d in &mut route.route {
                            d.destination.host = resolve_host(&d.destination.host, ns, domain);
                        }
                    }
                    resolve_gateway_names(&mut vs, ns);
                    virtual_services.push(Arc::new(Named {
                        name: c.key.name.clone(),
                        namespace: ns.clone(),
                        export_to: ExportTo::from_list(&vs.export_to, ns),
                        spec: vs,
                    }));
                }
                Spec::DestinationRule(dr) => {
                    let mut dr = dr.as_ref().clone();
                    dr.host = resolve_host(&dr.host, ns, domain);
                    destination_rules
                        .entry(dr.host.clone())
                        .or_default()
                        .push(Arc::new(Named {
                            name: c.key.name.clone(),
                            namespace: ns.clone(),
                            export_to: ExportTo::from_list(&dr.export_to, ns),
                            spec: dr,
                        }));
                }
                Spec::Sidecar(sc) => sidecars.push(Arc::new(Named {
                    name: c.key.name.clone(),
                    namespace: ns.clone(),
                    export_to: ExportTo::All,
                    spec: sc.as_ref().clone(),
                })),
                Spec::Gateway(gw) => {
                    let created = c
                        .raw
                        .as_ref()
                        .and_then(|r| r.pointer("/metadata/creationTimestamp"))
                        .and_then(|t| t.as_str())
                        .unwrap_or_default()
                        .to_owned();
                    gateways.push((
                        created,
                        Arc::new(Named {
                            name: c.key.name.clone(),
                            namespace: ns.clone(),
                            export_to: ExportTo::All,
                            spec: gw.as_ref().clone(),
                        }),
                    ));
                }
                _ => {}
            }
        }
        // RFC 3339 timestamps of one format sort as text; objects without one come first.
        gateways.sort_by(|(ta, a), (tb, b)| {
            (ta, &a.name, &a.namespace).cmp(&(tb, &b.name, &b.namespace))
        });
        let gateways = gateways.into_iter().map(|(_, g)| g).collect();
        let endpoint_ips = index
            .endpoints
            .values()
            .flatten()
            .map(|e| e.address.clone())
            .collect();
        let peer_authn = PeerAuthnPolicies::build(snapshot, &mesh.root_namespace);
        let authz_policies = AuthorizationPolicies::build(snapshot, &mesh.root_namespace);
        let warnings = ConfigWarnings::build(snapshot, &peer_authn);
        PushContext {
            warnings,
            version,
            endpoint_ips,
            peer_authn,
            mesh,
            domain: domain.to_owned(),
            services,
            service_by_host,
            endpoints: index.endpoints,
            pods_by_ip: index.pods_by_ip,
            virtual_services,
            gateways,
            scope_gateway_to_namespace: false,
            skip_validate_trust_domain: false,
            destination_rules,
            sidecars,
            request_authentications: index_request_authentications(snapshot),
            jwks: Arc::default(),
            errors: snapshot.errors.clone(),
            authz_policies,
        }
    }

    pub fn service(&self, host: &str) -> Option<&Arc<Service>> {
        self.service_by_host.get(host)
    }

    /// All endpoints of a host, every port.
    pub fn endpoints(&self, host: &str) -> &[Endpoint] {
        self.endpoints.get(host).map_or(&[], |v| v.as_slice())
    }

    /// The hosts whose endpoints differ from those in `prev`: the only load assignments an
    /// endpoints-only push needs to send.
    pub fn endpoint_changes(&self, prev: &PushContext) -> HashSet<String> {
        let changed = |(host, eps): (&String, &Vec<Endpoint>), other: &Self| {
            (other.endpoints.get(host) != Some(eps)).then(|| host.clone())
        };
        self.endpoints
            .iter()
            .filter_map(|e| changed(e, prev))
            .chain(prev.endpoints.iter().filter_map(|e| changed(e, self)))
            .collect()
    }

    /// Whether `ip` is the address of some service endpoint (the proxy there has inbound
    /// config of its own).
    pub fn is_endpoint_ip(&self, ip: &str) -> bool {
        self.endpoint_ips.contains(ip)
    }

    /// Number of endpoints across services, for metrics and debug pages.
    pub fn endpoint_count(&self) -> usize {
        self.endpoints.values().map(Vec::len).sum()
    }

    /// The DestinationRule that applies to `host` for a proxy in `proxy_ns`: the proxy's
    /// namespace first, then the service's, then the root namespace; exact hosts beat
    /// wildcards.
    pub fn destination_rule(&self, proxy_ns: &str, host: &str) -> Option<&Named<DestinationRule>> {
        let service_ns = self.service(host).map(|s| s.namespace.as_str());
        let candidates = self
            .destination_rules
            .get(host)
            .into_iter()
            .flatten()
            .chain(
                self.destination_rules
                    .iter()
                    .filter(|(h, _)| h.starts_with('*') && host_matches(h, host))
                    .flat_map(|(_, v)| v),
            );
        let mut best: Option<(u8, &Named<DestinationRule>)> = None;
        for dr in candidates {
            if !dr.export_to.visible_in(proxy_ns) {
                continue;
            }
            let rank = if dr.namespace == proxy_ns {
                0
            } else if Some(dr.namespace.as_str()) == service_ns {
                1
            } else if dr.namespace == self.mesh.root_namespace {
                2
            } else {
                3
            };
            let exact = u8::from(dr.spec.host != host);
            let score = rank * 2 + exact;
            if best.is_none_or(|(s, _)| score < s) {
                best = Some((score, dr));
            }
        }
        best.map(|(_, dr)| dr)
    }

    /// The virtual services bound to Gateway `gateway` (`namespace/name`) that a router in
    /// `proxy_ns` sees: those exported to its namespace only first, then the public ones,
    /// as upstream's `VirtualServicesForGateway` orders them.
    pub fn virtual_services_for_gateway(
        &self,
        proxy_ns: &str,
        gateway: &str,
    ) -> Vec<&Arc<Named<VirtualService>>> {
        let bound = self
            .virtual_services
            .iter()
            .filter(|vs| vs.spec.gateways.iter().any(|g| g == gateway));
        let (public, private): (Vec<_>, Vec<_>) =
            bound.partition(|vs| vs.export_to == ExportTo::All);
        private
            .into_iter()
            .filter(|vs| vs.export_to.visible_in(proxy_ns))
            .chain(public)
            .collect()
    }

    /// The Sidecar resource that scopes `proxy`, if any. Routers take none: their view of
    /// the mesh is every service exported to them, as upstream's gateway scope.
    pub fn sidecar_for<'a>(&'a self, proxy: &'a Proxy) -> Option<&'a Arc<Named<Sidecar>>> {
        if proxy.kind == super::proxy::NodeType::Router {
            return None;
        }
        fn in_ns<'a>(
            all: &'a [Arc<Named<Sidecar>>],
            ns: &'a str,
        ) -> impl Iterator<Item = &'a Arc<Named<Sidecar>>> {
            all.iter().filter(move |s| s.namespace == ns)
        }
        in_ns(&self.sidecars, &proxy.config_namespace)
            .find(|s| {
                s.spec.workload_selector.as_ref().is_some_and(|sel| {
                    !sel.labels.is_empty() && labels_match(&sel.labels, &proxy.labels)
                })
            })
            .or_else(|| {
                in_ns(&self.sidecars, &proxy.config_namespace).find(|s| {
                    s.spec
                        .workload_selector
                        .as_ref()
                        .is_none_or(|sel| sel.labels.is_empty())
                })
            })
            .or_else(|| {
                in_ns(&self.sidecars, &self.mesh.root_namespace).find(|s| {
                    s.spec
                        .workload_selector
                        .as_ref()
                        .is_none_or(|sel| sel.labels.is_empty())
                })
            })
    }

    /// The RequestAuthentications of a sidecar in `namespace` with `labels`: its
    /// namespace's, then the root namespace's, whose selector (if any) matches. Policies
    /// with a target reference are for gateways and waypoints, never sidecars.
    pub fn request_authentications_for(
        &self,
        namespace: &str,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Vec<&Named<RequestAuthentication>> {
        let root = self.mesh.root_namespace.as_str();
        let namespaces = if namespace == root {
            vec![namespace]
        } else {
            vec![namespace, root]
        };
        namespaces
            .into_iter()
            .filter_map(|ns| self.request_authentications.get(ns))
            .flatten()
            .filter(|ra| {
                !ra.spec.has_target()
                    && ra
                        .spec
                        .selector
                        .as_ref()
                        .is_none_or(|s| labels_match(&s.match_labels, labels))
            })
            .map(|ra| ra.as_ref())
            .collect()
    }

    /// Every RequestAuthentication, namespace by namespace (the JWKS resolver's input).
    pub fn request_authentications(&self) -> impl Iterator<Item = &Named<RequestAuthentication>> {
        self.request_authentications
            .values()
            .flatten()
            .map(|ra| ra.as_ref())
    }

    /// What `proxy` sees of the mesh.
    pub fn sidecar_scope(&self, proxy: &Proxy) -> SidecarScope {
        let sidecar = self.sidecar_for(proxy).cloned();
        let ns = proxy.config_namespace.as_str();
        let egress: Vec<(String, String)> = sidecar
            .iter()
            .flat_map(|s| s.spec.egress.iter())
            .flat_map(|e| e.hosts.iter())
            .filter_map(|h| h.split_once('/'))
            .map(|(n, h)| {
                let n = if n == "." {
                    ns.to_owned()
                } else {
                    n.to_owned()
                };
                (n, h.to_owned())
            })
            .collect();
        let visible = |svc_ns: &str, host: &str| -> bool {
            if sidecar.is_none() {
                return true;
            }
            egress
                .iter()
                .any(|(n, h)| (n == "*" || n == svc_ns) && host_matches(h, host))
        };
        let services: Vec<Arc<Service>> = self
            .services
            .iter()
            .filter(|s| s.export_to.visible_in(ns) && visible(&s.namespace, &s.hostname))
            .cloned()
            .collect();
        let virtual_services = self
            .virtual_services
            .iter()
            .filter(|vs| vs.export_to.visible_in(ns) && vs.spec.binds_mesh())
            .filter(|vs| vs.spec.hosts.iter().any(|h| visible(&vs.namespace, h)))
            .cloned()
            .collect();
        let registry_only = sidecar
            .as_ref()
            .and_then(|s| s.spec.outbound_traffic_policy.as_ref())
            .and_then(|p| p.mode.as_deref())
            .map_or(self.mesh.registry_only(), |m| m == "REGISTRY_ONLY");
        SidecarScope {
            namespace: ns.to_owned(),
            sidecar: sidecar.map(|s| format!("{}/{}", s.namespace, s.name)),
            services,
            virtual_services,
            registry_only,
        }
    }
}

/// The services and routes one proxy sees (after `exportTo` and its `Sidecar`).
#[derive(Debug, Clone)]
pub struct SidecarScope {
    pub namespace: String,
    /// `namespace/name` of the Sidecar applied, if any.
    pub sidecar: Option<String>,
    pub services: Vec<Arc<Service>>,
    pub virtual_services: Vec<Arc<Named<VirtualService>>>,
    /// `REGISTRY_ONLY`: unknown destinations are dropped instead of passed through.
    pub registry_only: bool,
}

impl SidecarScope {
    /// The label keys of clients that the routing rules in scope match on
    /// (`sourceLabels` of TCP and HTTP matches): the only labels the proxy's outbound
    /// config depends on.
    pub fn source_label_keys(&self) -> BTreeSet<&str> {
        let tcp = self
            .virtual_services
            .iter()
            .flat_map(|vs| vs.spec.tcp.iter())
            .flat_map(|r| r.matches.iter())
            .flat_map(|m| m.source_labels.keys());
        let http = self
            .virtual_services
            .iter()
            .flat_map(|vs| vs.spec.http.iter())
            .flat_map(|r| r.matches.iter())
            .flat_map(|m| m.source_labels.keys());
        tcp.chain(http).map(String::as_str).collect()
    }

    /// The first virtual service (in namespace/name order) that claims `host`.
    pub fn virtual_service_for(&self, host: &str) -> Option<&Named<VirtualService>> {
        self.virtual_services
            .iter()
            .find(|vs| vs.spec.hosts.iter().any(|h| h == host))
            .or_else(|| {
                self.virtual_services.iter().find(|vs| {
                    vs.spec
                        .hosts
                        .iter()
                        .any(|h| h.starts_with('*') && host_matches(h, host))
                })
            })
            .map(|vs| vs.as_ref())
    }
}

/// Rewrites every gateway name of a virtual service (its `gateways` and those of its
/// matches) to `namespace/name`, relative to the service's namespace.
fn resolve_gateway_names(vs: &mut VirtualService, namespace: &str) {
    let resolve = |names: &mut Vec<String>| {
        for g in names.iter_mut() {
            *g = resolve_gateway_name(g, namespace);
        }
    };
    resolve(&mut vs.gateways);
    for m in vs.http.iter_mut().flat_map(|r| r.matches.iter_mut()) {
        resolve(&mut m.gateways);
    }
    for m in vs.tcp.iter_mut().flat_map(|r| r.matches.iter_mut()) {
        resolve(&mut m.gateways);
    }
    for m in vs.tls.iter_mut().flat_map(|r| r.matches.iter_mut()) {
        resolve(&mut m.gateways);
    }
}

/// Expands a short host name (`reviews`) to `reviews.<ns>.svc.<domain>`, as Istio does for
/// names without a dot.
pub fn resolve_host(host: &str, namespace: &str, domain: &str) -> String {
    if host.is_empty() || host == "*" || host.contains('.') {
        host.to_owned()
    } else {
        format!("{host}.{namespace}.svc.{domain}")
    }
}

/// Matches `host` against a pattern that may be `*` or start with `*.`.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) => host.ends_with(suffix),
        None => pattern == host,
    }
}

/// RequestAuthentications by namespace, each list sorted by name.
fn index_request_authentications(
    snapshot: &Snapshot,
) -> HashMap<String, Vec<Arc<Named<RequestAuthentication>>>> {
    let mut out: HashMap<String, Vec<Arc<Named<RequestAuthentication>>>> = HashMap::new();
    for c in snapshot.of_kind(Kind::RequestAuthentication) {
        if let Spec::RequestAuthentication(ra) = &c.spec {
            out.entry(c.key.namespace.clone())
                .or_default()
                .push(Arc::new(Named {
                    name: c.key.name.clone(),
                    namespace: c.key.namespace.clone(),
                    export_to: ExportTo::All,
                    spec: ra.as_ref().clone(),
                }));
        }
    }
    for list in out.values_mut() {
        list.sort_by(|a, b| a.name.cmp(&b.name));
    }
    out
}

/// Builds the push context of a snapshot with defaults (tests and benchmarks).
pub fn from_snapshot(snapshot: &Snapshot) -> PushContext {
    PushContext::build(
        snapshot,
        MeshConfig::default(),
        "cluster.local",
        "test/1".into(),
    )
}

/// Counts objects of a kind in a snapshot (for metrics such as `pilot_virt_services`).
pub fn count(snapshot: &Snapshot, kind: Kind) -> usize {
    snapshot.of_kind(kind).count()
}

#[cfg(test)]
mod tests;
