"""An injector config of our own, shaped like upstream's chart writes it (the `config` and `values`
keys of the `istio-sidecar-injector` ConfigMap), and helpers for AdmissionReviews of Pods."""

import base64
import json
import pathlib

import jsonpatch

# A sidecar template in the manner of upstream's: labels and annotations, istio-init with the
# iptables arguments, istio-proxy with the agent's arguments, env, ports, probe and mounts, and the
# volumes they need.
CONFIG = r"""
policy: enabled
alwaysInjectSelector: []
neverInjectSelector:
- matchExpressions:
  - {key: openshift.io/build.name, operator: Exists}
injectedAnnotations: {}
defaultTemplates: [sidecar]
templates:
  sidecar: |
    {{- $containers := list }}
    {{- range $index, $container := .Spec.Containers }}{{ if not (eq $container.Name "istio-proxy") }}{{ $containers = append $containers $container.Name }}{{end}}{{- end}}
    metadata:
      labels:
        security.istio.io/tlsMode: {{ index .ObjectMeta.Labels `security.istio.io/tlsMode` | default "istio" | quote }}
        service.istio.io/canonical-name: {{ index .ObjectMeta.Labels `app` | default .DeploymentMeta.Name | quote }}
        service.istio.io/canonical-revision: {{ index .ObjectMeta.Labels `version` | default "latest" | quote }}
      annotations:
        istio.io/rev: {{ .Revision | default "default" | quote }}
        kubectl.kubernetes.io/default-container: {{ (index $containers 0) | quote }}
    spec:
      initContainers:
      - name: istio-init
        image: {{ .ProxyImage | quote }}
        args:
        - istio-iptables
        - "-p"
        - "15001"
        - "-z"
        - "15006"
        - "-u"
        - "{{ .ProxyUID }}"
        - "-m"
        - REDIRECT
        - "-i"
        - '*'
        - "-b"
        - '*'
        - "-d"
        - "15090,15021,{{ .Values.global.proxy.statusPort }}"
        securityContext:
          allowPrivilegeEscalation: false
          capabilities:
            add: [NET_ADMIN, NET_RAW]
            drop: [ALL]
          runAsUser: 0
          runAsNonRoot: false
      containers:
      - name: istio-proxy
        image: {{ .ProxyImage | quote }}
        args:
        - proxy
        - sidecar
        - --domain
        - $(POD_NAMESPACE).svc.{{ .Values.global.proxy.clusterDomain }}
        - --proxyLogLevel={{ annotation .ObjectMeta `sidecar.istio.io/logLevel` .Values.global.proxy.logLevel }}
        env:
        - name: PILOT_CERT_PROVIDER
          value: {{ .Values.global.pilotCertProvider | quote }}
        - name: CA_ADDR
          value: istiod.{{ .Values.global.istioNamespace }}.svc:15012
        - name: POD_NAME
          valueFrom:
            fieldRef: {fieldPath: metadata.name}
        - name: POD_NAMESPACE
          valueFrom:
            fieldRef: {fieldPath: metadata.namespace}
        - name: ISTIO_META_APP_CONTAINERS
          value: "{{ $containers | join "," }}"
        - name: ISTIO_META_WORKLOAD_NAME
          value: {{ .DeploymentMeta.Name | quote }}
        - name: ISTIO_META_OWNER
          value: kubernetes://apis/{{ .TypeMeta.APIVersion }}/namespaces/{{ .DeploymentMeta.Namespace }}/{{ toLower .TypeMeta.Kind }}s/{{ .DeploymentMeta.Name }}
        - name: ISTIO_META_MESH_ID
          value: {{ .Values.global.meshID | default .MeshConfig.TrustDomain | quote }}
        ports:
        - containerPort: 15090
          protocol: TCP
          name: http-envoy-prom
        readinessProbe:
          httpGet:
            path: /healthz/ready
            port: 15021
          periodSeconds: 15
        resources:
          requests: {cpu: 100m, memory: 128Mi}
        securityContext:
          runAsUser: {{ .ProxyUID }}
          runAsGroup: {{ .ProxyGID }}
          runAsNonRoot: true
        volumeMounts:
        - name: istio-envoy
          mountPath: /etc/istio/proxy
        - name: istio-podinfo
          mountPath: /etc/istio/pod
      volumes:
      - name: istio-envoy
        emptyDir: {medium: Memory}
      - name: istio-podinfo
        downwardAPI:
          items:
          - path: labels
            fieldRef: {fieldPath: metadata.labels}
"""

VALUES = """
global:
  hub: docker.io/istio
  tag: 1.28.0
  istioNamespace: istio-system
  pilotCertProvider: istiod
  proxy:
    image: proxyv2
    clusterDomain: cluster.local
    logLevel: warning
    statusPort: 15020
  proxy_init:
    image: proxyv2
sidecarInjectorWebhook:
  rewriteAppHTTPProbe: true
"""


def write_config(workdir: pathlib.Path, config: str = CONFIG, values: str = VALUES) -> pathlib.Path:
    """Mounts the config where istiod reads it: ./var/lib/istio/inject under its working folder."""
    d = pathlib.Path(workdir) / "var" / "lib" / "istio" / "inject"
    d.mkdir(parents=True, exist_ok=True)
    (d / "config").write_text(config)
    (d / "values").write_text(values)
    return d


def pod(name="web", namespace="shop", labels=None, annotations=None, **spec) -> dict:
    meta = {"name": name, "namespace": namespace, "labels": labels or {"app": name}}
    if annotations:
        meta["annotations"] = annotations
    containers = [{
        "name": "app", "image": "shop/web:1",
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}},
    }]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"containers": containers, **spec}}


def review(obj: dict, version: str = "v1", uid: str = "0c9d9b1e-6a43-4d89-9a0e-0f1e2d3c4b5a") -> dict:
    return {
        "apiVersion": f"admission.k8s.io/{version}", "kind": "AdmissionReview",
        "request": {"uid": uid, "operation": "CREATE", "namespace": obj["metadata"].get("namespace", ""),
                    "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "resource": {"group": "", "version": "v1", "resource": "pods"},
                    "object": obj},
    }


def apply_patch(obj: dict, response: dict) -> dict:
    """The pod after the response's JSON patch, applied by an RFC 6902 implementation of its own."""
    assert response.get("patchType") == "JSONPatch", response
    ops = json.loads(base64.b64decode(response["patch"]))
    return jsonpatch.JsonPatch(ops).apply(obj)


def names(items) -> list:
    return [i["name"] for i in items or []]


def env_of(container: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}
