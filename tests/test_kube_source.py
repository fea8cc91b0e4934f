"""istiod's Kubernetes source against a real API server (tests/kube_cluster.py).

- Objects created, updated and deleted through the API (Services, EndpointSlices, Pods, Nodes,
  Namespaces, Istio kinds at several versions) reach /debug/registryz, /debug/endpointz,
  /debug/configz and xDS; an object updated to an invalid spec keeps its last valid version;
  a CRD installed while istiod runs is picked up.
- Watches survive an API server restart and an etcd compaction (410 Gone → relist) with no
  event lost.
- istiod runs with exactly the chart's RBAC; with one verb taken away, that kind alone is
  disabled with a clear error.
"""

from __future__ import annotations

import json
import os
import signal
import uuid

import pytest

from conftest import wait_until
from kube_cluster import chart_rbac, minimal_crd
from live_istiod import LiveIstiod
from live_xds import CDS, EDS, RDS, AdsStream

DOMAIN = "cluster.local"


def uid() -> str:
    return uuid.uuid4().hex[:6]


def create_namespace(cluster, name: str, labels: dict | None = None):
    cluster.apply({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": name, "labels": labels or {}}})


def configz(istiod, kind: str, namespace: str | None = None) -> dict[str, dict]:
    """The stored objects of a kind (in a namespace) by name, as /debug/configz shows them."""
    out = {}
    for c in istiod.debug_json("/debug/configz")["configs"]:
        if c["kind"] == kind and (namespace is None or c["namespace"] == namespace):
            out[c["name"]] = c["object"]
    return out


def service(istiod, host: str) -> dict | None:
    return next((s for s in istiod.debug_json("/debug/registryz") if s["hostname"] == host), None)


def endpoints(istiod, host: str) -> list[dict]:
    return istiod.debug_json("/debug/endpointz").get(host) or []


def set_pod_ip(cluster, ns: str, name: str, ip: str):
    """No kubelet runs: the Pod's IP is written through the status subresource."""
    cluster.kubectl("patch", "pod", name, "-n", ns, "--subresource=status", "--type=merge", "-p",
                    json.dumps({"status": {"podIP": ip, "podIPs": [{"ip": ip}], "phase": "Running"}}))


def pod(ns: str, name: str, labels: dict, sa: str, node: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"serviceAccountName": sa, "nodeName": node,
                     "containers": [{"name": "app", "image": "example.invalid/app:1"}]}}


def endpoint_slice(ns: str, name: str, service_name: str, ips: list[str], port: int, node: str | None = None,
                   pod_name: str | None = None) -> dict:
    eps = []
    for ip in ips:
        ep = {"addresses": [ip], "conditions": {"ready": True}}
        if node:
            ep["nodeName"] = node
        if pod_name:
            ep["targetRef"] = {"kind": "Pod", "namespace": ns, "name": pod_name}
        eps.append(ep)
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": ns, "labels": {"kubernetes.io/service-name": service_name}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
            "endpoints": eps}


def virtual_service(ns: str, name: str, version: str, host: str, subset: str, timeout: str = "3s") -> dict:
    return {"apiVersion": f"networking.istio.io/{version}", "kind": "VirtualService",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"hosts": [host], "http": [{"timeout": timeout,
                                                "route": [{"destination": {"host": host, "subset": subset}}]}]}}


@pytest.fixture
def istiod_in(tmp_path):
    """Starts LiveIstiods and stops them after the test, printing their log tails on failure."""
    started: list[LiveIstiod] = []

    def start(kubeconfig, namespace, pod_name="istiod", **kw):
        d = LiveIstiod(tmp_path / f"{pod_name}-{len(started)}", kubeconfig, namespace, pod_name, **kw)
        started.append(d)
        return d

    def stop_all():
        for d in started:
            d.stop()

    start.stop_all = stop_all
    yield start
    stop_all()


# --- 1. the Kubernetes source -----------------------------------------------------------------


def test_kube_objects_reach_registry_config_and_xds(kube_cluster, istiod_in):
    run = uid()
    istio_ns, ns, node = f"istio-src-{run}", f"app-src-{run}", f"node-src-{run}"
    create_namespace(kube_cluster, istio_ns)
    create_namespace(kube_cluster, ns, {"team": "web"})
    istiod = istiod_in(kube_cluster.kubeconfig, istio_ns)
    host = f"web.{ns}.svc.{DOMAIN}"
    try:
        kube_cluster.apply({"apiVersion": "v1", "kind": "Node",
                            "metadata": {"name": node, "labels": {
                                "topology.kubernetes.io/region": "eu-west",
                                "topology.kubernetes.io/zone": "eu-west-1a",
                                "topology.istio.io/subzone": "rack-7"}}})
        kube_cluster.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": ns},
                            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}],
                                     "selector": {"app": "web"}}})
        kube_cluster.apply(pod(ns, "web-0", {"app": "web", "version": "v1"}, "web-sa", node))
        set_pod_ip(kube_cluster, ns, "web-0", "10.40.0.5")
        # The slice names no node: the locality comes from the Pod's node.
        kube_cluster.apply(endpoint_slice(ns, "web-abc", "web", ["10.40.0.5"], 8080, None, "web-0"))
        # Istio kinds at more than one served version.
        kube_cluster.apply({"apiVersion": "networking.istio.io/v1beta1", "kind": "DestinationRule",
                            "metadata": {"name": "web", "namespace": ns},
                            "spec": {"host": host, "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                                                               {"name": "v2", "labels": {"version": "v2"}}]}})
        kube_cluster.apply(virtual_service(ns, "web", "v1", host, "v1"))
        kube_cluster.apply(virtual_service(ns, "web-alpha", "v1alpha3", f"alpha.{ns}.svc.{DOMAIN}", "v1"))
        kube_cluster.apply({"apiVersion": "security.istio.io/v1beta1", "kind": "PeerAuthentication",
                            "metadata": {"name": "default", "namespace": ns},
                            "spec": {"mtls": {"mode": "PERMISSIVE"}}})

        svc = wait_until(lambda: service(istiod, host), timeout=30, what="Service in registryz")
        assert [(p["name"], p["port"]) for p in svc["ports"]] == [("http", 80)], svc
        assert svc["address"] == kube_cluster.get_json("service", "web", "-n", ns)["spec"]["clusterIP"]
        (ep,) = wait_until(lambda: endpoints(istiod, host), timeout=30, what="endpoint in endpointz")
        assert (ep["address"], ep["port"], ep["service_port"]) == ("10.40.0.5", 8080, 80), ep
        assert ep["locality"] == "eu-west/eu-west-1a/rack-7", ep
        assert {k: ep["labels"].get(k) for k in ("app", "version")} == {"app": "web", "version": "v1"}, ep
        assert ep["identity"] == f"spiffe://{DOMAIN}/ns/{ns}/sa/web-sa", ep

        wait_until(lambda: set(configz(istiod, "VirtualService", ns)) == {"web", "web-alpha"}, timeout=30,
                   what="both VirtualService versions in configz")
        vs = configz(istiod, "VirtualService", ns)
        assert vs["web"]["spec"]["http"][0]["timeout"] == "3s"
        assert "web" in configz(istiod, "DestinationRule", ns)
        assert "default" in configz(istiod, "PeerAuthentication", ns)
        namespaces = configz(istiod, "Namespace")
        assert namespaces[ns]["metadata"]["labels"]["team"] == "web", namespaces[ns]
        assert node in configz(istiod, "Node")
        assert "web-0" in configz(istiod, "Pod", ns)

        # xDS: one sidecar stream sees the cluster, its subsets, the endpoint and the route.
        cluster = f"outbound|80||{host}"
        ads = AdsStream(istiod.grpc, f"sidecar~10.40.0.9~client.{ns}~{ns}.svc.{DOMAIN}",
                        {"NAMESPACE": ns, "ISTIO_VERSION": "1.28.0"})
        try:
            ads.subscribe(CDS)
            wait_until(lambda: {cluster, f"outbound|80|v1|{host}", f"outbound|80|v2|{host}"} <= ads.cluster_names(),
                       timeout=30, what="CDS has the service and its subsets")
            ads.subscribe(EDS, [cluster, f"outbound|80|v1|{host}", f"outbound|80|v2|{host}"])
            ads.subscribe(RDS, ["80"])
            want = [{"address": "10.40.0.5", "port": 8080, "locality": "eu-west/eu-west-1a/rack-7"}]
            wait_until(lambda: ads.endpoints(cluster) == want, timeout=30, what="EDS endpoint")
            wait_until(lambda: ads.endpoints(f"outbound|80|v1|{host}") == want, timeout=30, what="EDS v1 subset")
            assert ads.endpoints(f"outbound|80|v2|{host}") == []
            wait_until(lambda: f"outbound|80|v1|{host}".encode() in ads.raw(RDS), timeout=30,
                       what="RDS routes to the VirtualService's subset")

            # Updates follow: pod relabelled to v2, new address, node moved zone, VS to v2.
            kube_cluster.kubectl("label", "pod", "web-0", "-n", ns, "version=v2", "--overwrite")
            kube_cluster.kubectl("label", "node", node, "topology.kubernetes.io/zone=eu-west-1b", "--overwrite")
            wait_until(lambda: endpoints(istiod, host)[0]["labels"].get("version") == "v2", timeout=30,
                       what="pod label update in endpointz")
            wait_until(lambda: endpoints(istiod, host)[0]["locality"] == "eu-west/eu-west-1b/rack-7", timeout=30,
                       what="node label update in endpointz")
            want = [{"address": "10.40.0.5", "port": 8080, "locality": "eu-west/eu-west-1b/rack-7"}]
            wait_until(lambda: ads.endpoints(f"outbound|80|v2|{host}") == want, timeout=30,
                       what="EDS v2 subset after the relabel")
            kube_cluster.apply(endpoint_slice(ns, "web-abc", "web", ["10.40.0.5", "10.40.0.6"], 8080, node))
            wait_until(lambda: [e["address"] for e in ads.endpoints(cluster)] == ["10.40.0.5", "10.40.0.6"],
                       timeout=30, what="EDS follows the slice update")
            kube_cluster.apply(virtual_service(ns, "web", "v1beta1", host, "v2", timeout="7s"))
            wait_until(lambda: configz(istiod, "VirtualService", ns)["web"]["spec"]["http"][0]["timeout"] == "7s",
                       timeout=30, what="VirtualService update in configz")
            wait_until(lambda: f"outbound|80|v2|{host}".encode() in ads.raw(RDS)
                       and f"outbound|80|v1|{host}".encode() not in ads.raw(RDS),
                       timeout=30, what="RDS follows the VirtualService update")
            kube_cluster.kubectl("patch", "service", "web", "-n", ns, "--type=json", "-p", json.dumps(
                [{"op": "add", "path": "/spec/ports/-", "value": {"name": "http-admin", "port": 9090}}]))
            wait_until(lambda: f"outbound|9090||{host}" in ads.cluster_names(), timeout=30,
                       what="CDS follows a new Service port")

            # An update istiod's validation rejects keeps the last valid version.
            invalid = virtual_service(ns, "web", "v1", host, "v1", timeout="7s")
            invalid["spec"]["http"][0]["route"][0]["destination"]["host"] = ""
            kube_cluster.apply(invalid)
            line = wait_until(lambda: next((l for l in istiod.log_text().splitlines()
                                            if "skipping invalid object" in l and ns in l), None),
                              timeout=30, what="the invalid VirtualService is logged")
            assert "VirtualService" in line and "destination host is required" in line, line
            assert configz(istiod, "VirtualService", ns)["web"]["spec"]["http"][0]["route"][0]["destination"][
                "host"] == host, "the rejected update replaced the last valid version"
            assert f"outbound|80|v2|{host}".encode() in ads.raw(RDS)

            # Deletes follow.
            kube_cluster.kubectl("delete", "virtualservice", "web", "-n", ns)
            wait_until(lambda: "web" not in configz(istiod, "VirtualService", ns), timeout=30,
                       what="deleted (last invalid) VirtualService leaves configz")
            wait_until(lambda: f"outbound|80|v2|{host}".encode() not in ads.raw(RDS), timeout=30,
                       what="RDS drops the deleted VirtualService")
            kube_cluster.kubectl("delete", "endpointslice", "web-abc", "-n", ns)
            wait_until(lambda: ads.endpoints(cluster) == [], timeout=30, what="EDS drops the deleted slice")
            kube_cluster.kubectl("delete", "service", "web", "-n", ns)
            wait_until(lambda: cluster not in ads.cluster_names(), timeout=30, what="CDS drops the deleted Service")
            assert service(istiod, host) is None
            kube_cluster.kubectl("delete", "pod", "web-0", "-n", ns, "--grace-period=0", "--force")
            wait_until(lambda: "web-0" not in configz(istiod, "Pod", ns), timeout=30, what="Pod delete")
        finally:
            ads.close()
    finally:
        kube_cluster.kubectl("delete", "node", node, "--ignore-not-found")


def install_gateway_api_crd(cluster, kind: str, plural: str):
    """A Gateway API CRD (a `*.k8s.io` group: the API server wants the approval annotation)."""
    crd = minimal_crd("gateway.networking.k8s.io", kind, plural, ["v1", "v1beta1"])
    crd["metadata"]["annotations"] = {"api-approved.kubernetes.io": "unapproved, live test only"}
    cluster.apply(crd)
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd['metadata']['name']}", "--timeout=60s")


def http_route(ns: str, name: str, host: str) -> dict:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"parentRefs": [{"name": "gw"}], "hostnames": [host],
                     "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]}}


def test_crd_installed_after_start_is_picked_up(own_kube_cluster, istiod_in):
    cluster = own_kube_cluster
    istio_ns, ns = "istio-system", "app"
    create_namespace(cluster, istio_ns)
    create_namespace(cluster, ns)
    istiod = istiod_in(cluster.kubeconfig, istio_ns)
    istiod.wait_log("resource not served", timeout=10)
    assert "HTTPRoute" not in {c["kind"] for c in istiod.debug_json("/debug/configz")["configs"]}

    # Istio's kinds are served; the Gateway API's arrive later.
    install_gateway_api_crd(cluster, "HTTPRoute", "httproutes")
    cluster.apply(http_route(ns, "web", "web.example.com"))
    route = wait_until(lambda: configz(istiod, "HTTPRoute", ns).get("web"), timeout=15,
                       what="HTTPRoute in configz after its CRD was installed")
    assert route["spec"]["hostnames"] == ["web.example.com"]
    istiod.wait_log("CRD established; listing kind=HTTPRoute", timeout=5)


# --- 2. watch robustness ----------------------------------------------------------------------


def simple_service(ns: str, name: str, port: int = 80) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"ports": [{"name": "http", "port": port}], "selector": {"app": name}}}


def api_versions(cluster, kind: str, ns: str) -> dict[str, str]:
    """name → resourceVersion of a kind's objects in a namespace, as the API has them."""
    items = cluster.get_json(kind, "-n", ns)["items"]
    return {o["metadata"]["name"]: o["metadata"]["resourceVersion"] for o in items}


def istiod_versions(istiod, kind: str, ns: str) -> dict[str, str]:
    return {name: o["metadata"]["resourceVersion"] for name, o in configz(istiod, kind, ns).items()}


def converged(cluster, istiod, ns: str, kinds=(("services", "Service"), ("virtualservices", "VirtualService"))):
    """True once istiod holds exactly the API's objects, at the API's resource versions."""
    for plural, kind in kinds:
        want, have = api_versions(cluster, plural, ns), istiod_versions(istiod, kind, ns)
        if want != have:
            return False
    return True


def crash_restart_apiserver(cluster):
    """Kills the API server (no graceful shutdown: a graceful one waits ~20 s for open watches)
    and starts it again on the same port and etcd."""
    proc = cluster.apiserver
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    cluster.apiserver = None
    cluster.start_apiserver()


def test_watches_resume_after_apiserver_restart_and_relist_after_compaction(own_kube_cluster, istiod_in):
    cluster = own_kube_cluster
    istio_ns, ns = "istio-system", "app"
    create_namespace(cluster, istio_ns)
    create_namespace(cluster, ns)
    istiod = istiod_in(cluster.kubeconfig, istio_ns)
    host = lambda name: f"{name}.{ns}.svc.{DOMAIN}"  # noqa: E731
    for i in range(4):
        cluster.apply(simple_service(ns, f"svc-{i}"))
    cluster.apply(virtual_service(ns, "vs", "v1", host("svc-0"), "v1"))
    wait_until(lambda: converged(cluster, istiod, ns), timeout=30, what="initial convergence")

    # Changes right before the API server goes down and right after it is back.
    cluster.apply(simple_service(ns, "before-down"))
    cluster.apply(simple_service(ns, "svc-0", port=81))
    cluster.kubectl("delete", "service", "svc-1", "-n", ns)
    cluster.apply(virtual_service(ns, "vs", "v1", host("svc-0"), "v2"))
    cluster.restart_apiserver()
    cluster.apply(simple_service(ns, "after-up"))
    cluster.kubectl("delete", "service", "svc-2", "-n", ns)
    cluster.apply(virtual_service(ns, "vs", "v1", host("svc-0"), "v3"))
    wait_until(lambda: converged(cluster, istiod, ns), timeout=40, what="convergence after the restart")
    assert {"before-down", "after-up"} <= set(configz(istiod, "Service", ns))
    assert service(istiod, host("svc-0"))["ports"][0]["port"] == 81
    assert configz(istiod, "VirtualService", ns)["vs"]["spec"]["http"][0]["route"][0]["destination"][
        "subset"] == "v3"

    # istiod is paused while objects change, etcd is compacted past everything it saw and
    # the API server restarts: its watches resume from a compacted version (410 Gone) and
    # must relist, dropping what was deleted meanwhile.
    mark = istiod.log_size()
    os.kill(istiod.proc.pid, signal.SIGSTOP)
    try:
        for i in range(10):
            cluster.apply(simple_service(ns, f"while-paused-{i}"))
        cluster.kubectl("delete", "service", "svc-3", "before-down", "-n", ns)
        cluster.kubectl("delete", "virtualservice", "vs", "-n", ns)
        cluster.apply(virtual_service(ns, "vs-new", "v1beta1", host("svc-0"), "v1"))
        cluster.compact()
        crash_restart_apiserver(cluster)
    finally:
        os.kill(istiod.proc.pid, signal.SIGCONT)
    wait_until(lambda: converged(cluster, istiod, ns), timeout=40, what="convergence after the compaction")
    assert "svc-3" not in configz(istiod, "Service", ns) and service(istiod, host("before-down")) is None
    assert set(configz(istiod, "VirtualService", ns)) == {"vs-new"}
    for kind in ("Service", "VirtualService"):
        line = istiod.wait_log(f"relisting kind={kind} ", start=mark, timeout=10)
        assert "410 Gone" in line and "too old resource version" in line, line
        istiod.wait_log(f"synced kind={kind} ", start=mark, timeout=10)
    assert istiod.ready(), istiod.ready_status()


# --- 3. RBAC: exactly the chart's roles -------------------------------------------------------

ROOT_CM = "istio-ca-root-cert"


def without_verb(rules: list[dict], group: str, resource: str, verb: str) -> list[dict]:
    """`rules` with `verb` taken away from `resource` in `group` (and nothing else)."""
    out = []
    for rule in rules:
        if (group in rule.get("apiGroups", []) and resource in rule.get("resources", [])
                and verb in rule["verbs"]):
            rest = [r for r in rule["resources"] if r != resource]
            if rest:
                out.append(dict(rule, resources=rest))
            out.append(dict(rule, apiGroups=[group], resources=[resource],
                            verbs=[v for v in rule["verbs"] if v != verb]))
        else:
            out.append(rule)
    return out


def root_cm(cluster, ns: str) -> dict | None:
    return cluster.get_json("configmap", ROOT_CM, "-n", ns)


def test_chart_rbac_is_enough_and_a_missing_verb_disables_one_kind(kube_cluster, istiod_in, tmp_path):
    run = uid()
    istio_ns, ns = f"istio-rbac-{run}", f"app-rbac-{run}"
    create_namespace(kube_cluster, istio_ns)
    create_namespace(kube_cluster, ns)
    docs = chart_rbac(istio_ns)
    kube_cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))
    try:
        (sa,) = [d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"]
        token = kube_cluster.token(istio_ns, sa)
        kubeconfig = kube_cluster.token_kubeconfig(tmp_path / "istiod.kubeconfig", token)
        kube_cluster.apply(simple_service(ns, "web"))
        kube_cluster.apply(virtual_service(ns, "web", "v1", f"web.{ns}.svc.{DOMAIN}", "v1"))

        istiod = istiod_in(kubeconfig, istio_ns, "istiod-rbac")
        host = f"web.{ns}.svc.{DOMAIN}"
        wait_until(lambda: service(istiod, host), timeout=30, what="Service in registryz")
        assert "web" in configz(istiod, "VirtualService", ns)
        # The CA secret, the root certificate in every namespace (created, recreated, repaired)
        # and the leader lock all work with the chart's verbs.
        wait_until(lambda: kube_cluster.get_json("secret", "istio-ca-secret", "-n", istio_ns), timeout=30,
                   what="istio-ca-secret written")
        root = wait_until(lambda: root_cm(kube_cluster, ns), timeout=30,
                          what="root-cert ConfigMap written")["data"]["root-cert.pem"]
        kube_cluster.kubectl("patch", "configmap", ROOT_CM, "-n", ns, "--type=merge", "-p",
                             json.dumps({"data": {"root-cert.pem": "tampered"}}))
        wait_until(lambda: (root_cm(kube_cluster, ns) or {}).get("data", {}).get("root-cert.pem") == root,
                   timeout=30, what="tampered root-cert ConfigMap repaired")
        kube_cluster.kubectl("delete", "configmap", ROOT_CM, "-n", ns)
        wait_until(lambda: (root_cm(kube_cluster, ns) or {}).get("data", {}).get("root-cert.pem") == root,
                   timeout=30, what="deleted root-cert ConfigMap recreated")
        istiod.wait_log("became leader", timeout=30)
        denied = [line for line in istiod.log_text().splitlines() if "forbidden" in line.lower()]
        assert not denied, "\n".join(denied[:5])

        # Take `list` on services and `watch` on pods away: those two kinds are disabled with
        # an error naming the denied request; the rest keeps working and istiod is ready.
        # (The Gateway deployment controller's ClusterRole grants Services too.)
        for role in [d for d in docs if d["kind"] == "ClusterRole"]:
            rules = role["rules"]
            for resource, verb in (("services", "list"), ("pods", "watch")):
                if any(resource in r["resources"] and verb in r["verbs"] for r in rules):
                    rules = without_verb(rules, "", resource, verb)
            kube_cluster.apply(dict(role, rules=rules))
        wait_until(lambda: "no" in kube_cluster.kubectl(
            "auth", "can-i", "list", "services", f"--as=system:serviceaccount:{istio_ns}:{sa}", check=False),
            timeout=10, what="the reduced role in force")
        istiod.stop()
        reduced = istiod_in(kubeconfig, istio_ns, "istiod-reduced")
        for kind, verb, resource in (("Service", "list", "services"), ("Pod", "watch", "pods")):
            line = wait_until(lambda: next((l for l in reduced.log_text().splitlines()
                                            if f"kind={kind} " in l and "forbidden" in l), None),
                              timeout=15, what=f"the denied {verb} on {resource} logged")
            assert "ERROR" in line and "This kind is disabled" in line, line
            assert f'cannot {verb} resource \\"{resource}\\"' in line or f'cannot {verb} resource "{resource}"' in line, line
        assert reduced.ready(), reduced.ready_status()
        kube_cluster.apply(virtual_service(ns, "web-2", "v1", host, "v1"))
        wait_until(lambda: "web-2" in configz(reduced, "VirtualService", ns), timeout=30,
                   what="other kinds still watched")
        assert ns in configz(reduced, "Namespace")
        assert not configz(reduced, "Service", ns), "a kind istiod may not list is not served"
    finally:
        istiod_in.stop_all()  # before their roles go
        for d in docs:
            if d["kind"] in ("ClusterRole", "ClusterRoleBinding"):
                kube_cluster.kubectl("delete", d["kind"].lower(), d["metadata"]["name"], "--ignore-not-found")
