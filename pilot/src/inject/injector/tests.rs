//! A whole injection with a template shaped like upstream's sidecar template: what the
//! pod gains, in which order, and that a second injection changes nothing.

use serde_json::json;

use super::*;
use crate::inject::policy::Decision;
use crate::inject::post::STATUS_ANNOTATION;

const CONFIG: &str = r#"
policy: enabled
injectedAnnotations:
  sidecar.istio.io/injected-by: test
templates:
  sidecar: |
    metadata:
      labels:
        security.istio.io/tlsMode: {{ index .ObjectMeta.Labels "security.istio.io/tlsMode" | default "istio" | quote }}
        service.istio.io/canonical-name: {{ index .ObjectMeta.Labels "app" | default .DeploymentMeta.Name | quote }}
      annotations:
        kubectl.kubernetes.io/default-container: {{ (index .Spec.Containers 0).Name | quote }}
    spec:
      initContainers:
      - name: istio-init
        image: {{ .ProxyInitImage | quote }}
        args: ["istio-iptables", "-p", "15001", "-z", "15006", "-u", "{{ .ProxyUID }}", "-m", "REDIRECT"]
      containers:
      - name: istio-proxy
        image: {{ .ProxyImage | quote }}
        args: ["proxy", "sidecar", "--domain", "{{ .ObjectMeta.Namespace }}.svc.cluster.local"]
        env:
        - name: ISTIO_META_WORKLOAD_NAME
          value: {{ .DeploymentMeta.Name | quote }}
        - name: ISTIO_META_OWNER
          value: "kubernetes://apis/{{ .TypeMeta.APIVersion }}/namespaces/{{ .DeploymentMeta.Namespace }}/{{ .TypeMeta.Kind | lower }}s/{{ .DeploymentMeta.Name }}"
        - name: PILOT_ADDRESS
          value: {{ .ProxyConfig.DiscoveryAddress | quote }}
        - name: ISTIO_META_INTERCEPTION_MODE
          value: "{{ or (index .ObjectMeta.Annotations `sidecar.istio.io/interceptionMode`) .ProxyConfig.InterceptionMode.String }}"
        - name: ISTIO_META_APP_CONTAINERS
          value: "{{ range $i, $c := .Spec.Containers }}{{ if $i }},{{ end }}{{ $c.Name }}{{ end }}"
        ports:
        - containerPort: 15090
          name: http-envoy-prom
        readinessProbe:
          httpGet: {path: /healthz/ready, port: 15021}
        volumeMounts:
        - name: istio-envoy
          mountPath: /etc/istio/proxy
      volumes:
      - name: istio-envoy
        emptyDir: {medium: Memory}
  broken: |
    metadata:
      labels:
        x: {{ len 3 }}
"#;

const VALUES: &str = r#"
global:
  hub: docker.io/istio
  tag: 1.2.3
  variant: distroless
  proxy: {image: proxyv2}
  proxy_init: {image: proxyv2}
sidecarInjectorWebhook:
  rewriteAppHTTPProbe: true
"#;

fn injector(values: &str) -> Injector {
    Injector {
        config: Config::parse(CONFIG).expect("config"),
        values: Values::parse(values).expect("values"),
        revision: String::new(),
    }
}

fn pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "web-7d9f8c-",
            "namespace": "shop",
            "labels": {"app": "web", "pod-template-hash": "7d9f8c"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f8c",
                                 "uid": "u1", "controller": true}],
        },
        "spec": {
            "containers": [{
                "name": "app", "image": "shop/web:1",
                "ports": [{"name": "http", "containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}},
            }],
            "volumes": [{"name": "data", "emptyDir": {}}],
        },
    })
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|c| c["name"].as_str().unwrap_or(""))
        .collect()
}

fn env<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)?["value"]
        .as_str()
}

#[test]
fn a_pod_gains_the_proxy_the_init_container_and_the_status() {
    let inj = injector(VALUES);
    let original = pod();
    assert_eq!(inj.decide(&original), Decision::PolicyEnabled);
    let out = inj
        .inject(&original, &MeshConfig::default(), BTreeMap::new())
        .expect("inject");

    let spec = &out["spec"];
    assert_eq!(names(&spec["containers"]), ["app", "istio-proxy"]);
    assert_eq!(names(&spec["initContainers"]), ["istio-init"]);
    assert_eq!(names(&spec["volumes"]), ["data", "istio-envoy"]);
    let proxy = &spec["containers"][1];
    assert_eq!(proxy["image"], "docker.io/istio/proxyv2:1.2.3-distroless");
    assert_eq!(spec["initContainers"][0]["args"][6], "1337");
    assert_eq!(proxy["args"][3], "shop.svc.cluster.local");
    assert_eq!(env(proxy, "ISTIO_META_WORKLOAD_NAME"), Some("web"));
    assert_eq!(
        env(proxy, "ISTIO_META_OWNER"),
        Some("kubernetes://apis/apps/v1/namespaces/shop/deployments/web")
    );
    assert_eq!(
        env(proxy, "PILOT_ADDRESS"),
        Some("istiod.istio-system.svc:15012")
    );
    assert_eq!(env(proxy, "ISTIO_META_APP_CONTAINERS"), Some("app"));
    assert_eq!(env(proxy, "ISTIO_META_INTERCEPTION_MODE"), Some("REDIRECT"));

    // Probes go through the agent; the originals (named port resolved) go to it.
    assert_eq!(
        spec["containers"][0]["readinessProbe"],
        json!({"httpGet": {"path": "/app-health/app/readyz", "port": 15020}})
    );
    let probers: Value =
        serde_json::from_str(env(proxy, "ISTIO_KUBE_APP_PROBERS").expect("probers")).expect("json");
    assert_eq!(
        probers,
        json!({"/app-health/app/readyz": {"httpGet": {"path": "/ready", "port": 8080}}})
    );
    // The proxy's own probe is its own.
    assert_eq!(proxy["readinessProbe"]["httpGet"]["port"], 15021);

    let meta = &out["metadata"];
    assert_eq!(
        meta["annotations"][STATUS_ANNOTATION],
        r#"{"initContainers":["istio-init"],"containers":["istio-proxy"],"volumes":["istio-envoy"],"imagePullSecrets":null,"revision":"default"}"#
    );
    assert_eq!(meta["annotations"]["sidecar.istio.io/injected-by"], "test");
    assert_eq!(
        meta["annotations"]["kubectl.kubernetes.io/default-container"],
        "app"
    );
    assert_eq!(meta["annotations"]["prometheus.io/port"], "15020");
    assert_eq!(
        meta["annotations"]["prometheus.io/path"],
        "/stats/prometheus"
    );
    assert_eq!(meta["labels"]["security.istio.io/tlsMode"], "istio");
    assert_eq!(meta["labels"]["service.istio.io/canonical-name"], "web");

    // The patch turns the pod sent into the injected pod.
    let mut patched = original.clone();
    json_patch::patch(&mut patched, &patch(&original, &out)).expect("apply");
    assert_eq!(patched, out);
}

#[test]
fn injecting_an_injected_pod_changes_nothing() {
    let inj = injector(VALUES);
    let once = inj
        .inject(&pod(), &MeshConfig::default(), BTreeMap::new())
        .expect("inject");
    let twice = inj
        .inject(&once, &MeshConfig::default(), BTreeMap::new())
        .expect("inject again");
    assert_eq!(patch(&once, &twice).0, vec![], "{twice:#}");
}

#[test]
fn hold_application_puts_the_proxy_first() {
    let held = format!("{VALUES}\n");
    let held = held.replace(
        "proxy: {image: proxyv2}",
        "proxy: {image: proxyv2, holdApplicationUntilProxyStarts: true}",
    );
    let out = injector(&held)
        .inject(&pod(), &MeshConfig::default(), BTreeMap::new())
        .expect("inject");
    assert_eq!(names(&out["spec"]["containers"]), ["istio-proxy", "app"]);

    let mut annotated = pod();
    annotated["metadata"]["annotations"] =
        json!({PROXY_CONFIG_ANNOTATION: "holdApplicationUntilProxyStarts: true"});
    let out = injector(VALUES)
        .inject(&annotated, &MeshConfig::default(), BTreeMap::new())
        .expect("inject");
    assert_eq!(names(&out["spec"]["containers"]), ["istio-proxy", "app"]);
}

#[test]
fn the_users_own_istio_proxy_settings_win_and_are_recorded() {
    let mut p = pod();
    p["spec"]["containers"]
        .as_array_mut()
        .expect("list")
        .push(json!({
            "name": "istio-proxy", "image": "auto",
            "resources": {"limits": {"cpu": "1"}},
        }));
    let out = injector(VALUES)
        .inject(&p, &MeshConfig::default(), BTreeMap::new())
        .expect("inject");
    let proxy = &out["spec"]["containers"][1];
    assert_eq!(proxy["name"], "istio-proxy");
    assert_eq!(proxy["image"], "docker.io/istio/proxyv2:1.2.3-distroless");
    assert_eq!(proxy["resources"]["limits"]["cpu"], "1");
    let kept: Value = serde_json::from_str(
        out["metadata"]["annotations"]["proxy.istio.io/overrides"]
            .as_str()
            .expect("overrides"),
    )
    .expect("json");
    assert_eq!(
        kept,
        json!({"containers": [{"name": "istio-proxy", "resources": {"limits": {"cpu": "1"}}}]})
    );
}

#[test]
fn the_webhook_url_sets_cluster_and_network() {
    let envs = BTreeMap::from([
        (CLUSTER_ENV.to_owned(), "east".to_owned()),
        (NETWORK_ENV.to_owned(), "net1".to_owned()),
    ]);
    let out = injector(VALUES)
        .inject(&pod(), &MeshConfig::default(), envs)
        .expect("inject");
    let proxy = &out["spec"]["containers"][1];
    assert_eq!(env(proxy, CLUSTER_ENV), Some("east"));
    assert_eq!(env(proxy, NETWORK_ENV), Some("net1"));
    assert_eq!(out["metadata"]["labels"][post::NETWORK_LABEL], "net1");
}

#[test]
fn errors_name_the_template_and_line() {
    let mut p = pod();
    p["metadata"]["annotations"] = json!({"inject.istio.io/templates": "sidecar,broken"});
    let error = injector(VALUES)
        .inject(&p, &MeshConfig::default(), BTreeMap::new())
        .expect_err("broken template")
        .to_string();
    assert!(
        error.contains("\"broken\"") && error.contains("broken:3"),
        "{error}"
    );

    p["metadata"]["annotations"] = json!({"inject.istio.io/templates": "missing"});
    let error = injector(VALUES)
        .inject(&p, &MeshConfig::default(), BTreeMap::new())
        .expect_err("missing template")
        .to_string();
    assert!(error.contains("\"missing\" not found"), "{error}");
}

#[test]
fn images_follow_variant_and_annotation() {
    let values =
        Values::parse("global: {hub: h, tag: 1.2-debug, variant: distroless}").expect("values");
    let none = BTreeMap::new();
    assert_eq!(
        render::image(&values, "global.proxy.image", None, &none),
        "h/proxyv2:1.2-distroless"
    );
    let default = BTreeMap::from([(
        render::IMAGE_TYPE_ANNOTATION.to_owned(),
        "default".to_owned(),
    )]);
    assert_eq!(
        render::image(&values, "global.proxy.image", None, &default),
        "h/proxyv2:1.2"
    );
    let plain = Values::parse("global: {hub: h, tag: 7}").expect("values");
    assert_eq!(
        render::image(&plain, "global.proxy.image", None, &none),
        "h/proxyv2:7"
    );
}
