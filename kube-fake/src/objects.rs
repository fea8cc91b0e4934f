//! Builders of the Kubernetes objects that tests and load drivers put in an API server or
//! a push context, as JSON: `service("demo", "web").cluster_ip("10.96.0.1").port(80,
//! "http").build()`. Only what a builder is told is set, so a fixture says what it needs.
//! Methods that refine "the last" port, endpoint or container panic when there is none:
//! a mistake in the fixture.

use std::marker::PhantomData;

use serde_json::{json, Value};

/// An object being built; `K` says which kind's methods apply.
#[derive(Debug, Clone)]
pub struct Builder<K> {
    value: Value,
    kind: PhantomData<K>,
}

/// Kinds of [`Builder`].
pub enum Service {}
pub enum EndpointSlice {}
pub enum Pod {}
pub enum Node {}
pub enum Namespace {}
pub enum ConfigMap {}

fn object<K>(api_version: &str, kind: &str, namespace: Option<&str>, name: &str) -> Builder<K> {
    let mut value = json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name}});
    if let Some(ns) = namespace {
        value["metadata"]["namespace"] = json!(ns);
    }
    Builder {
        value,
        kind: PhantomData,
    }
}

/// Appends `item` to the list at `slot`, making it a list if it is not one yet.
fn push(slot: &mut Value, item: Value) {
    match slot {
        Value::Array(items) => items.push(item),
        _ => *slot = json!([item]),
    }
}

/// The last item of the list at `slot`.
fn last<'a>(slot: &'a mut Value, what: &str) -> &'a mut Value {
    match slot.as_array_mut().and_then(|items| items.last_mut()) {
        Some(item) => item,
        None => panic!("fixture: {what} comes after the item it refines"),
    }
}

impl<K> Builder<K> {
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.value["metadata"]["labels"][key] = json!(value);
        self
    }

    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.value["metadata"]["annotations"][key] = json!(value);
        self
    }

    /// Sets any field: `.set(&["spec", "type"], json!("ExternalName"))`.
    pub fn set(mut self, path: &[&str], value: Value) -> Self {
        let mut slot = &mut self.value;
        for key in path {
            slot = &mut slot[*key];
        }
        *slot = value;
        self
    }

    pub fn build(self) -> Value {
        self.value
    }
}

/// A Service with no ports yet.
pub fn service(namespace: &str, name: &str) -> Builder<Service> {
    object("v1", "Service", Some(namespace), name).set(&["spec"], json!({}))
}

impl Builder<Service> {
    /// `clusterIP`, and `clusterIPs` as the API server fills it.
    pub fn cluster_ip(mut self, ip: &str) -> Self {
        self.value["spec"]["clusterIP"] = json!(ip);
        self.value["spec"]["clusterIPs"] = json!([ip]);
        self
    }

    pub fn port(mut self, port: u16, name: &str) -> Self {
        push(
            &mut self.value["spec"]["ports"],
            json!({"name": name, "port": port}),
        );
        self
    }

    /// The last port's `targetPort`.
    pub fn target_port(mut self, port: u16) -> Self {
        last(&mut self.value["spec"]["ports"], "target_port")["targetPort"] = json!(port);
        self
    }

    /// The last port's `appProtocol`.
    pub fn app_protocol(mut self, protocol: &str) -> Self {
        last(&mut self.value["spec"]["ports"], "app_protocol")["appProtocol"] = json!(protocol);
        self
    }

    pub fn selector(mut self, key: &str, value: &str) -> Self {
        self.value["spec"]["selector"][key] = json!(value);
        self
    }
}

/// An IPv4 EndpointSlice of `service`, with no endpoints yet.
pub fn endpoint_slice(namespace: &str, name: &str, service: &str) -> Builder<EndpointSlice> {
    object(
        "discovery.k8s.io/v1",
        "EndpointSlice",
        Some(namespace),
        name,
    )
    .label("kubernetes.io/service-name", service)
    .set(&["addressType"], json!("IPv4"))
    .set(&["endpoints"], json!([]))
}

impl Builder<EndpointSlice> {
    pub fn port(mut self, port: u16, name: &str) -> Self {
        push(
            &mut self.value["ports"],
            json!({"name": name, "port": port}),
        );
        self
    }

    /// An endpoint at `address`.
    pub fn endpoint(mut self, address: &str) -> Self {
        push(
            &mut self.value["endpoints"],
            json!({"addresses": [address]}),
        );
        self
    }

    fn last_endpoint(&mut self, what: &str) -> &mut Value {
        last(&mut self.value["endpoints"], what)
    }

    /// The last endpoint's `conditions.ready`.
    pub fn ready(mut self, ready: bool) -> Self {
        self.last_endpoint("ready")["conditions"]["ready"] = json!(ready);
        self
    }

    /// The last endpoint's `zone`.
    pub fn zone(mut self, zone: &str) -> Self {
        self.last_endpoint("zone")["zone"] = json!(zone);
        self
    }

    /// The last endpoint's `nodeName`.
    pub fn node(mut self, node: &str) -> Self {
        self.last_endpoint("node")["nodeName"] = json!(node);
        self
    }

    /// The last endpoint's `targetRef`: a Pod of the slice's namespace.
    pub fn pod(mut self, pod: &str) -> Self {
        let namespace = self.value["metadata"]["namespace"].clone();
        self.last_endpoint("pod")["targetRef"] =
            json!({"kind": "Pod", "name": pod, "namespace": namespace});
        self
    }
}

/// A Pod with no containers yet.
pub fn pod(namespace: &str, name: &str) -> Builder<Pod> {
    object("v1", "Pod", Some(namespace), name).set(&["spec"], json!({"containers": []}))
}

impl Builder<Pod> {
    pub fn container(mut self, name: &str) -> Self {
        push(&mut self.value["spec"]["containers"], json!({"name": name}));
        self
    }

    /// The last container's image.
    pub fn image(mut self, image: &str) -> Self {
        last(&mut self.value["spec"]["containers"], "image")["image"] = json!(image);
        self
    }

    /// A port of the last container.
    pub fn container_port(mut self, port: u16, name: &str) -> Self {
        let container = last(&mut self.value["spec"]["containers"], "container_port");
        push(
            &mut container["ports"],
            json!({"containerPort": port, "name": name}),
        );
        self
    }

    /// `status.podIP`, and `status.podIPs` as the kubelet fills it.
    pub fn ip(mut self, ip: &str) -> Self {
        self.value["status"]["podIP"] = json!(ip);
        self.value["status"]["podIPs"] = json!([{"ip": ip}]);
        self
    }

    pub fn host_ip(mut self, ip: &str) -> Self {
        self.value["status"]["hostIP"] = json!(ip);
        self
    }

    pub fn node(mut self, node: &str) -> Self {
        self.value["spec"]["nodeName"] = json!(node);
        self
    }

    pub fn service_account(mut self, name: &str) -> Self {
        self.value["spec"]["serviceAccountName"] = json!(name);
        self
    }

    /// Running and Ready.
    pub fn running(mut self) -> Self {
        self.value["status"]["phase"] = json!("Running");
        self.value["status"]["conditions"] = json!([{"type": "Ready", "status": "True"}]);
        self
    }
}

/// A Node.
pub fn node(name: &str) -> Builder<Node> {
    object("v1", "Node", None, name)
}

/// A Namespace, with the name label the API server gives every namespace.
pub fn namespace(name: &str) -> Builder<Namespace> {
    object("v1", "Namespace", None, name).label("kubernetes.io/metadata.name", name)
}

/// A ConfigMap with no data yet.
pub fn config_map(namespace: &str, name: &str) -> Builder<ConfigMap> {
    object("v1", "ConfigMap", Some(namespace), name)
}

impl Builder<ConfigMap> {
    pub fn data(mut self, key: &str, value: &str) -> Self {
        self.value["data"][key] = json!(value);
        self
    }
}

/// `n` services `svc-<i>` in `default` of one shape (port 80 named `protocol`, to 8080),
/// each with an EndpointSlice of one endpoint, as in upstream's generation benchmarks.
pub fn services(n: usize, protocol: &str) -> Vec<Value> {
    (0..n)
        .flat_map(|i| {
            let (a, b) = (i / 250, i % 250);
            let name = format!("svc-{i}");
            [
                service("default", &name)
                    .cluster_ip(&format!("10.{a}.{b}.1"))
                    .port(80, protocol)
                    .target_port(8080)
                    .build(),
                endpoint_slice("default", &format!("{name}-1"), &name)
                    .port(8080, protocol)
                    .endpoint(&format!("10.200.{a}.{b}"))
                    .build(),
            ]
        })
        .collect()
}

/// Mesh-wide STRICT mTLS (a PeerAuthentication in `istio-system`) and `n` ALLOW
/// AuthorizationPolicies for the whole `default` namespace, each admitting one client
/// identity to `GET /api/<i>/*`: the security config of the benchmarks' secured mesh.
pub fn mesh_security(n: usize) -> Vec<Value> {
    mesh_security_in("security.istio.io/v1", n, |_| "default".to_owned())
}

/// [`mesh_security`] at `api_version`, with policy `i` in namespace `namespace_of(i)` (and
/// admitting a client of that namespace).
pub fn mesh_security_in(
    api_version: &str,
    n: usize,
    namespace_of: impl Fn(usize) -> String,
) -> Vec<Value> {
    let strict = json!({
        "apiVersion": api_version,
        "kind": "PeerAuthentication",
        "metadata": {"name": "default", "namespace": "istio-system"},
        "spec": {"mtls": {"mode": "STRICT"}},
    });
    let policy = |i: usize| {
        let ns = namespace_of(i);
        json!({
            "apiVersion": api_version,
            "kind": "AuthorizationPolicy",
            "metadata": {"name": format!("allow-{i}"), "namespace": ns},
            "spec": {
                "action": "ALLOW",
                "rules": [{
                    "from": [{"source": {"principals": [format!("cluster.local/ns/{ns}/sa/client-{i}")]}}],
                    "to": [{"operation": {"methods": ["GET"], "paths": [format!("/api/{i}/*")]}}],
                }],
            },
        })
    };
    std::iter::once(strict).chain((0..n).map(policy)).collect()
}

/// Objects as one multi-document YAML text, as `kubectl apply -f` and a config folder
/// read them.
pub fn manifests(objects: &[Value]) -> String {
    objects
        .iter()
        .map(|o| serde_yaml::to_string(o).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("---\n")
}

#[cfg(test)]
mod tests;
