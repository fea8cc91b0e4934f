//! The service registry: services and endpoints derived from the config store's Kubernetes
//! objects (Service, EndpointSlice, Pod) and Istio objects (ServiceEntry, WorkloadEntry).
//!
//! A pure function of a store snapshot, so every source (folder, Kubernetes API) that fills
//! the store with the same objects yields the same registry.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::Pod;

use super::service::{
    labels_match, Endpoint, ExportTo, Health, Port, Protocol, Registry, Resolution, Service,
};
use crate::config::istio::WorkloadEntry;
use crate::config::{Kind, Snapshot, Spec};

/// Annotation that sets a Kubernetes service's `exportTo`.
pub const EXPORT_TO_ANNOTATION: &str = "networking.istio.io/exportTo";
/// Label linking an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Pod label that sets its locality, `region.zone.subzone` (Kubernetes label values have
/// no `/`).
const LOCALITY_LABEL: &str = "istio-locality";

/// Facts about a pod that proxies and endpoints need.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PodInfo {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    /// `region/zone/subzone`: the `istio-locality` label, else its node's topology labels.
    pub locality: Option<String>,
}

/// Every service with its endpoints, and pods by IP.
#[derive(Debug, Default, Clone)]
pub struct ServiceIndex {
    pub services: Vec<Service>,
    /// Endpoints per service host name.
    pub endpoints: HashMap<String, Vec<Endpoint>>,
    pub pods_by_ip: HashMap<String, PodInfo>,
}

/// Builds the registry from a snapshot. `domain` is the cluster DNS suffix.
pub fn build(snapshot: &Snapshot, domain: &str, trust_domain: &str) -> ServiceIndex {
    let mut index = ServiceIndex::default();
    let localities = node_localities(snapshot);
    for c in snapshot.of_kind(Kind::Pod) {
        if let Spec::Pod(pod) = &c.spec {
            if let Some((ip, info)) =
                pod_info(pod, &c.key.namespace, &c.key.name, &c.labels, &localities)
            {
                index.pods_by_ip.insert(ip, info);
            }
        }
    }
    kube_services(snapshot, domain, trust_domain, &localities, &mut index);
    service_entries(snapshot, trust_domain, &mut index);
    index.services.sort_by(|a, b| {
        a.hostname
            .cmp(&b.hostname)
            .then(a.namespace.cmp(&b.namespace))
    });
    for eps in index.endpoints.values_mut() {
        eps.sort_by(|a, b| {
            (a.service_port, &a.address, a.port).cmp(&(b.service_port, &b.address, b.port))
        });
    }
    index
}

/// The SPIFFE identity of a service account.
pub fn spiffe(trust_domain: &str, namespace: &str, sa: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/sa/{sa}")
}

fn pod_info(
    pod: &Pod,
    namespace: &str,
    name: &str,
    labels: &BTreeMap<String, String>,
    localities: &HashMap<String, String>,
) -> Option<(String, PodInfo)> {
    let ip = pod.status.as_ref()?.pod_ip.clone()?;
    let locality = labels
        .get(LOCALITY_LABEL)
        .filter(|l| !l.is_empty())
        .map(|l| l.replace('.', "/"))
        .or_else(|| {
            let node = pod.spec.as_ref()?.node_name.as_ref()?;
            localities.get(node).cloned()
        });
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".to_owned());
    Some((
        ip,
        PodInfo {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            labels: labels.clone(),
            service_account: sa,
            locality,
        },
    ))
}

/// `region/zone/subzone` of each node that has topology labels.
fn node_localities(snapshot: &Snapshot) -> HashMap<String, String> {
    snapshot
        .of_kind(Kind::Node)
        .filter_map(|c| {
            let label = |k: &str| c.labels.get(k).map_or("", |v| v.as_str());
            let parts = [
                label("topology.kubernetes.io/region"),
                label("topology.kubernetes.io/zone"),
                label("topology.istio.io/subzone"),
            ];
            (parts != ["", "", ""]).then(|| (c.key.name.clone(), parts.join("/")))
        })
        .collect()
}

fn kube_services(
    snapshot: &Snapshot,
    domain: &str,
    trust_domain: &str,
    localities: &HashMap<String, String>,
    index: &mut ServiceIndex,
) {
    // Slices grouped by (namespace, service name).
    let mut slices: HashMap<(&str, &str), Vec<&k8s_openapi::api::discovery::v1::EndpointSlice>> =
        HashMap::new();
    for c in snapshot.of_kind(Kind::EndpointSlice) {
        if let (Spec::EndpointSlice(s), Some(svc)) = (&c.spec, c.labels.get(SERVICE_NAME_LABEL)) {
            slices
                .entry((c.key.namespace.as_str(), svc.as_str()))
                .or_default()
                .push(s);
        }
    }
    for c in snapshot.of_kind(Kind::Service) {
        let Spec::Service(svc) = &c.spec else {
            continue;
        };
        let Some(spec) = svc.spec.as_ref() else {
            continue;
        };
        let ns = c.key.namespace.as_str();
        let hostname = format!("{}.{}.svc.{}", c.key.name, ns, domain);
        let ports: Vec<Port> = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some(Port {
                    name: p.name.clone().unwrap_or_default(),
                    port: u16::try_from(p.port).ok()?,
                    protocol: Protocol::of_kube_port(
                        p.name.as_deref().unwrap_or_default(),
                        p.app_protocol.as_deref(),
                        p.protocol.as_deref(),
                    ),
                })
            })
            .collect();
        let external_name = (spec.type_.as_deref() == Some("ExternalName"))
            .then(|| spec.external_name.clone())
            .flatten();
        let cluster_ip = spec.cluster_ip.clone().filter(|ip| !ip.is_empty());
        let headless = cluster_ip.as_deref() == Some("None");
        let resolution = if external_name.is_some() {
            Resolution::DnsLb
        } else if headless {
            Resolution::Passthrough
        } else {
            Resolution::ClientSideLb
        };
        let export_to = c
            .annotations
            .get(EXPORT_TO_ANNOTATION)
            .map(|v| {
                let list: Vec<String> = v.split(',').map(|s| s.trim().to_owned()).collect();
                ExportTo::from_list(&list, ns)
            })
            .unwrap_or(ExportTo::All);

        let mut endpoints = match &external_name {
            Some(target) => dns_endpoints(target, &ports),
            None => Vec::new(),
        };
        for slice in slices.get(&(ns, c.key.name.as_str())).into_iter().flatten() {
            for ep in &slice.endpoints {
                let cond = ep.conditions.as_ref();
                let ready = cond.and_then(|c| c.ready).unwrap_or(true);
                let terminating = cond.and_then(|c| c.terminating).unwrap_or(false);
                let health = if terminating {
                    Health::Draining
                } else if ready {
                    Health::Healthy
                } else {
                    Health::Unhealthy
                };
                for addr in &ep.addresses {
                    let pod = index.pods_by_ip.get(addr);
                    // The pod's locality (its label, else its node's), else the slice's
                    // node, else the slice's zone hint.
                    let locality = pod
                        .and_then(|p| p.locality.clone())
                        .or_else(|| {
                            ep.node_name
                                .as_ref()
                                .and_then(|n| localities.get(n).cloned())
                        })
                        .or_else(|| ep.zone.as_ref().map(|z| format!("/{z}/")))
                        .unwrap_or_default();
                    for sp in slice.ports.iter().flatten() {
                        let Some(port) = sp.port.and_then(|p| u16::try_from(p).ok()) else {
                            continue;
                        };
                        let slice_port_name = sp.name.clone().unwrap_or_default();
                        // Match the service port by name; an unnamed single port matches.
                        let Some(svc_port) = ports.iter().find(|p| p.name == slice_port_name)
                        else {
                            continue;
                        };
                        endpoints.push(Endpoint {
                            address: addr.clone(),
                            port,
                            service_port: svc_port.port,
                            labels: pod.map(|p| p.labels.clone()).unwrap_or_default(),
                            identity: pod
                                .map(|p| spiffe(trust_domain, &p.namespace, &p.service_account)),
                            locality: locality.clone(),
                            health,
                            weight: 1,
                        });
                    }
                }
            }
        }
        index.endpoints.insert(hostname.clone(), endpoints);
        index.services.push(Service {
            hostname,
            namespace: ns.to_owned(),
            name: c.key.name.clone(),
            address: if headless { None } else { cluster_ip },
            ports,
            resolution,
            registry: Registry::Kubernetes,
            mesh_external: false,
            export_to,
            service_accounts: Vec::new(),
        });
    }
}

fn service_entries(snapshot: &Snapshot, trust_domain: &str, index: &mut ServiceIndex) {
    let workload_entries: Vec<(&str, &BTreeMap<String, String>, &WorkloadEntry)> = snapshot
        .of_kind(Kind::WorkloadEntry)
        .filter_map(|c| match &c.spec {
            Spec::WorkloadEntry(we) => Some((c.key.namespace.as_str(), &c.labels, we.as_ref())),
            _ => None,
        })
        .collect();
    for c in snapshot.of_kind(Kind::ServiceEntry) {
        let Spec::ServiceEntry(se) = &c.spec else {
            continue;
        };
        let ns = c.key.namespace.as_str();
        let ports: Vec<Port> = se
            .ports
            .iter()
            .filter_map(|p| {
                Some(Port {
                    name: p.name.clone(),
                    port: u16::try_from(p.number).ok()?,
                    protocol: Protocol::parse(&p.protocol),
                })
            })
            .collect();
        let resolution = match se.resolution.as_deref() {
            Some("STATIC") => Resolution::ClientSideLb,
            Some("DNS") => Resolution::DnsLb,
            Some("DNS_ROUND_ROBIN") => Resolution::DnsRoundRobin,
            _ => Resolution::Passthrough,
        };
        // Workloads: inline endpoints, plus selected WorkloadEntries and Pods.
        let mut workloads: Vec<(WorkloadEntry, Option<String>)> =
            se.endpoints.iter().map(|we| (we.clone(), None)).collect();
        if let Some(sel) = se
            .workload_selector
            .as_ref()
            .filter(|s| !s.labels.is_empty())
        {
            for (we_ns, we_labels, we) in &workload_entries {
                let mut labels = (*we_labels).clone();
                labels.extend(we.labels.clone());
                if *we_ns == ns && labels_match(&sel.labels, &labels) {
                    let mut we = (*we).clone();
                    we.labels = labels;
                    workloads.push((we, Some(ns.to_owned())));
                }
            }
            let mut pods: Vec<(&String, &PodInfo)> = index.pods_by_ip.iter().collect();
            pods.sort_by(|a, b| a.0.cmp(b.0));
            for (ip, pod) in pods {
                if pod.namespace == ns && labels_match(&sel.labels, &pod.labels) {
                    workloads.push((
                        WorkloadEntry {
                            address: ip.clone(),
                            labels: pod.labels.clone(),
                            service_account: pod.service_account.clone(),
                            ..Default::default()
                        },
                        Some(ns.to_owned()),
                    ));
                }
            }
        }
        for host in &se.hosts {
            let mut endpoints = Vec::new();
            for (we, we_ns) in &workloads {
                for p in &se.ports {
                    let Ok(service_port) = u16::try_from(p.number) else {
                        continue;
                    };
                    let target = we
                        .ports
                        .get(&p.name)
                        .copied()
                        .or(p.target_port)
                        .unwrap_or(p.number);
                    let Ok(port) = u16::try_from(target) else {
                        continue;
                    };
                    endpoints.push(Endpoint {
                        address: we.address.clone(),
                        port,
                        service_port,
                        labels: we.labels.clone(),
                        identity: (!we.service_account.is_empty()).then(|| {
                            spiffe(
                                trust_domain,
                                we_ns.as_deref().unwrap_or(ns),
                                &we.service_account,
                            )
                        }),
                        locality: we.locality.clone(),
                        health: Health::Healthy,
                        weight: we.weight.filter(|w| *w > 0).unwrap_or(1),
                    });
                }
            }
            if endpoints.is_empty()
                && matches!(resolution, Resolution::DnsLb | Resolution::DnsRoundRobin)
            {
                // DNS entries without endpoints resolve the host itself.
                endpoints = dns_endpoints(host, &ports);
            }
            index
                .endpoints
                .entry(host.clone())
                .or_default()
                .extend(endpoints);
            index.services.push(Service {
                hostname: host.clone(),
                namespace: ns.to_owned(),
                name: c.key.name.clone(),
                address: se.addresses.first().cloned(),
                ports: ports.clone(),
                resolution,
                registry: Registry::ServiceEntry,
                mesh_external: se.location.as_deref() == Some("MESH_EXTERNAL"),
                export_to: ExportTo::from_list(&se.export_to, ns),
                service_accounts: se.subject_alt_names.clone(),
            });
        }
    }
}

/// One endpoint per port at a DNS name the proxy resolves: an ExternalName service's
/// target, or the host of a DNS ServiceEntry without endpoints.
fn dns_endpoints(host: &str, ports: &[Port]) -> Vec<Endpoint> {
    ports
        .iter()
        .map(|p| Endpoint {
            address: host.to_owned(),
            port: p.port,
            service_port: p.port,
            labels: BTreeMap::new(),
            identity: None,
            locality: String::new(),
            health: Health::Healthy,
            weight: 1,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use kube_fake::objects::{self, manifests};

    use super::*;
    use crate::config::ConfigStore;

    fn index(yaml: &str) -> ServiceIndex {
        let store = ConfigStore::new();
        store.replace_source(
            "t",
            crate::config::object::parse_manifests(yaml)
                .unwrap()
                .configs,
        );
        build(&store.snapshot(), "cluster.local", "cluster.local")
    }

    #[test]
    fn kubernetes_service_with_slices_and_pods() {
        let idx = index(&manifests(&[
            objects::service("demo", "echo")
                .cluster_ip("10.96.0.10")
                .port(7070, "grpc")
                .target_port(17070)
                .port(9090, "metrics")
                .app_protocol("http")
                .build(),
            objects::endpoint_slice("demo", "echo-1", "echo")
                .port(17070, "grpc")
                .endpoint("10.1.0.1")
                .zone("zone-a")
                .endpoint("10.1.0.2")
                .ready(false)
                .node("node-1")
                .build(),
            objects::node("node-1")
                .label("topology.kubernetes.io/region", "r1")
                .label("topology.kubernetes.io/zone", "z1")
                .build(),
            objects::pod("demo", "echo-a")
                .label("app", "echo")
                .label("version", "v1")
                .service_account("echo")
                .container("c")
                .ip("10.1.0.1")
                .build(),
        ]));
        let svc = &idx.services[0];
        assert_eq!(svc.hostname, "echo.demo.svc.cluster.local");
        assert_eq!(svc.ports[0].protocol, Protocol::Grpc);
        assert_eq!(svc.ports[1].protocol, Protocol::Http);
        let eps = &idx.endpoints[&svc.hostname];
        assert_eq!(eps.len(), 2);
        assert_eq!(eps[0].port, 17070);
        assert_eq!(eps[0].service_port, 7070);
        assert_eq!(eps[0].labels["version"], "v1");
        assert_eq!(
            eps[0].identity.as_deref(),
            Some("spiffe://cluster.local/ns/demo/sa/echo")
        );
        assert_eq!(eps[0].locality, "/zone-a/");
        assert_eq!(eps[1].health, Health::Unhealthy);
        assert_eq!(eps[1].locality, "r1/z1/");
    }

    #[test]
    fn endpoint_locality_comes_from_the_pod_then_the_slice() {
        let topology = |name: &str, region: &str, zone: &str| {
            objects::node(name)
                .label("topology.kubernetes.io/region", region)
                .label("topology.kubernetes.io/zone", zone)
        };
        let idx = index(&manifests(&[
            objects::service("demo", "web")
                .cluster_ip("10.96.0.11")
                .port(80, "http")
                .build(),
            objects::endpoint_slice("demo", "web-1", "web")
                .port(8080, "http")
                .endpoint("10.2.0.1")
                .endpoint("10.2.0.2")
                .node("node-b")
                .endpoint("10.2.0.3")
                .node("node-b")
                .endpoint("10.2.0.4")
                .node("bare")
                .build(),
            topology("node-a", "r1", "z1")
                .label("topology.istio.io/subzone", "s1")
                .build(),
            topology("node-b", "r2", "z2").build(),
            objects::node("bare").build(),
            objects::pod("demo", "on-a")
                .node("node-a")
                .container("c")
                .ip("10.2.0.1")
                .build(),
            objects::pod("demo", "labelled")
                .label("istio-locality", "r9.z9.s9")
                .node("node-b")
                .container("c")
                .ip("10.2.0.2")
                .build(),
        ]));
        let localities: Vec<&str> = idx.endpoints["web.demo.svc.cluster.local"]
            .iter()
            .map(|e| e.locality.as_str())
            .collect();
        // The pod's node (the slice names none); the pod's label over its node; the slice's
        // node for an address no pod has; nothing for a node without topology labels.
        assert_eq!(localities, ["r1/z1/s1", "r9/z9/s9", "r2/z2/", ""]);
    }

    #[test]
    fn service_entry_with_workload_entries() {
        let idx = index(
            r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: vms, namespace: demo}
spec:
  hosts: [vm.example.com]
  addresses: [240.0.0.1]
  ports: [{number: 80, name: http, protocol: HTTP, targetPort: 8080}]
  resolution: STATIC
  workloadSelector: {labels: {app: vm}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm-1, namespace: demo}
spec: {address: 192.0.2.1, labels: {app: vm}, serviceAccount: vm, weight: 3}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: demo}
spec:
  hosts: [api.example.org]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: DNS
  location: MESH_EXTERNAL
"#,
        );
        let vm = idx
            .services
            .iter()
            .find(|s| s.hostname == "vm.example.com")
            .unwrap();
        assert_eq!(vm.resolution, Resolution::ClientSideLb);
        let eps = &idx.endpoints["vm.example.com"];
        assert_eq!(
            (eps[0].address.as_str(), eps[0].port, eps[0].weight),
            ("192.0.2.1", 8080, 3)
        );
        let ext = &idx.endpoints["api.example.org"];
        assert_eq!(ext[0].address, "api.example.org");
    }
}
