"""pilot-discovery against a real Kubernetes API server.

Runs only when PILOT_TEST_KUBECONFIG names a kubeconfig for a disposable cluster (kind,
k3d, ...); skipped otherwise. Needs `kubectl` on PATH. Everything is created in fresh
namespaces (istiod itself runs in `istio-live-<id>`) and removed afterwards; CRDs are
created from our own minimal definitions only when missing, and then removed.
"""

import base64
import json
import os
import pathlib
import shutil
import subprocess
import time
import urllib.request
import uuid

import pytest

from ca_support import SERVER_NAME, generated, make_csr, new_key, uri_sans, split_certs
from conftest import free_port, pilot_binary, wait_until

KUBECONFIG = os.environ.get("PILOT_TEST_KUBECONFIG", "")

pytestmark = pytest.mark.skipif(
    not KUBECONFIG or not os.path.exists(KUBECONFIG) or shutil.which("kubectl") is None,
    reason="no Kubernetes API server: set PILOT_TEST_KUBECONFIG to a kubeconfig of a disposable "
    "cluster (and put kubectl on PATH) to run the live Kubernetes suite",
)

ROOT_CM = "istio-ca-root-cert"
LOCK = "istio-namespace-controller-election"
LEADER_ANNOTATION = "control-plane.alpha.kubernetes.io/leader"


def kubectl(*args, input=None, check=True) -> str:
    p = subprocess.run(["kubectl", "--kubeconfig", KUBECONFIG, *args], input=input,
                       capture_output=True, text=True, timeout=60)
    if check and p.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {p.stderr}")
    return p.stdout


def apply(obj: dict):
    kubectl("apply", "-f", "-", input=json.dumps(obj))


def get_json(*args):
    out = kubectl("get", *args, "-o", "json", check=False)
    return json.loads(out) if out.strip() else None


def minimal_crd(group, kind, plural, version):
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.{group}"},
            "spec": {"group": group, "scope": "Namespaced",
                     "names": {"kind": kind, "plural": plural, "singular": kind.lower(),
                               "listKind": f"{kind}List"},
                     "versions": [{"name": version, "served": True, "storage": True,
                                   "schema": {"openAPIV3Schema": {
                                       "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]}}


@pytest.fixture(scope="module")
def cluster():
    run_id = uuid.uuid4().hex[:6]
    istio_ns, app_ns = f"istio-live-{run_id}", f"app-live-{run_id}"
    created_crds = []
    for group, kind, plural, version in [("networking.istio.io", "VirtualService", "virtualservices", "v1"),
                                         ("networking.istio.io", "Gateway", "gateways", "v1")]:
        if get_json("crd", f"{plural}.{group}") is None:
            apply(minimal_crd(group, kind, plural, version))
            created_crds.append(f"{plural}.{group}")
    for crd in created_crds:
        kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
    for ns in (istio_ns, app_ns):
        kubectl("create", "namespace", ns)
    yield {"istio_ns": istio_ns, "app_ns": app_ns, "id": run_id}
    for ns in (istio_ns, app_ns):
        kubectl("delete", "namespace", ns, "--wait=false", check=False)
    for crd in created_crds:
        kubectl("delete", "crd", crd, "--wait=false", check=False)


class LiveIstiod:
    """pilot-discovery with --registries Kubernetes against the cluster, on loopback ports."""

    def __init__(self, workdir: pathlib.Path, namespace: str, pod_name: str):
        workdir.mkdir(parents=True, exist_ok=True)
        self.http, self.grpc, self.mon, self.secure = (free_port() for _ in range(4))
        self.pod_name = pod_name
        self.log_path = workdir / f"{pod_name}.log"
        self.log = open(self.log_path, "wb")
        env = dict(os.environ)
        env.update({"POD_NAMESPACE": namespace, "POD_NAME": pod_name, "KUBECONFIG": KUBECONFIG,
                    "PILOT_SELF_SIGNED_CA_DIR": str(workdir / f"{pod_name}-ca"),
                    "RUST_LOG": env.get("RUST_LOG", "info")})
        self.proc = subprocess.Popen(
            [pilot_binary(), "discovery", "--kubeconfig", KUBECONFIG, "--registries", "Kubernetes",
             "--grpcAddr", f"127.0.0.1:{self.grpc}", "--httpAddr", f"127.0.0.1:{self.http}",
             "--monitoringAddr", f"127.0.0.1:{self.mon}", "--secureGRPCAddr", f"127.0.0.1:{self.secure}",
             "--httpsAddr="],
            cwd=workdir, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        wait_until(self.ready, timeout=60, what=f"{pod_name} /ready")

    def ready(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"pilot-discovery exited:\n{self.log_path.read_text(errors='replace')[-4000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/ready", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def debug(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.mon}{path}", timeout=5) as r:
            return r.read().decode()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def istiod(cluster, tmp_path_factory):
    d = LiveIstiod(tmp_path_factory.mktemp("istiod"), cluster["istio_ns"], "istiod-a")
    yield d
    d.stop()


def root_cm(ns):
    return get_json("configmap", ROOT_CM, "-n", ns)


def test_registry_reads_services_slices_and_istio_config(cluster, istiod):
    ns = cluster["app_ns"]
    apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": ns},
           "spec": {"ports": [{"name": "http", "port": 80}], "selector": {"app": "web"}}})
    apply({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": "web-manual", "namespace": ns, "labels": {"kubernetes.io/service-name": "web"}},
           "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}],
           "endpoints": [{"addresses": ["10.1.2.3"], "conditions": {"ready": True}}]})
    apply({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
           "metadata": {"name": "web", "namespace": ns},
           "spec": {"hosts": ["web"], "http": [{"route": [{"destination": {"host": "web"}}]}]}})
    host = f"web.{ns}.svc.cluster.local"
    wait_until(lambda: host in istiod.debug("/debug/registryz"), timeout=30, what="service in registryz")
    wait_until(lambda: "10.1.2.3" in istiod.debug("/debug/endpointz"), timeout=30, what="slice endpoint")
    wait_until(lambda: '"web"' in istiod.debug("/debug/configz"), timeout=30, what="VirtualService in configz")


def test_root_cert_configmap_in_every_namespace_recreated_and_repaired(cluster, istiod):
    ns = cluster["app_ns"]
    cm = wait_until(lambda: root_cm(ns), timeout=60, what="istio-ca-root-cert created")
    assert cm["metadata"]["labels"]["istio.io/config"] == "true"
    root = cm["data"]["root-cert.pem"]
    assert root.startswith("-----BEGIN CERTIFICATE-----")
    kubectl("delete", "configmap", ROOT_CM, "-n", ns)
    wait_until(lambda: (root_cm(ns) or {}).get("data", {}).get("root-cert.pem") == root, timeout=60,
               what="recreated after delete")
    kubectl("patch", "configmap", ROOT_CM, "-n", ns, "--type=merge", "-p",
            json.dumps({"data": {"root-cert.pem": "tampered"}}))
    wait_until(lambda: (root_cm(ns) or {}).get("data", {}).get("root-cert.pem") == root, timeout=60,
               what="repaired after edit")


def test_istio_ca_secret_holds_the_five_keys(cluster, istiod):
    s = wait_until(lambda: get_json("secret", "istio-ca-secret", "-n", cluster["istio_ns"]), timeout=60,
                   what="istio-ca-secret")
    assert s["type"] == "istio.io/ca-root"
    assert sorted(s["data"]) == ["ca-cert.pem", "ca-key.pem", "cert-chain.pem", "key.pem", "root-cert.pem"]
    root = base64.b64decode(s["data"]["root-cert.pem"]).decode()
    assert root == root_cm(cluster["app_ns"])["data"]["root-cert.pem"]


def test_service_account_token_gets_a_certificate(cluster, istiod):
    ns = cluster["app_ns"]
    kubectl("create", "serviceaccount", "sleep", "-n", ns)
    token = kubectl("create", "token", "sleep", "-n", ns, "--audience", "istio-ca").strip()
    root = wait_until(lambda: root_cm(ns), timeout=60, what="root ConfigMap")["data"]["root-cert.pem"]
    import grpc
    gen = generated()
    channel = grpc.secure_channel(f"127.0.0.1:{istiod.secure}",
                                  grpc.ssl_channel_credentials(root_certificates=root.encode()),
                                  options=[("grpc.ssl_target_name_override", SERVER_NAME)])
    try:
        stub = gen["ca_grpc"].IstioCertificateServiceStub(channel)
        csr = make_csr(new_key(), san=f"spiffe://cluster.local/ns/{ns}/sa/sleep")
        chain = list(stub.CreateCertificate(gen["ca"].IstioCertificateRequest(csr=csr, validity_duration=3600),
                                            metadata=[("authorization", f"Bearer {token}")], timeout=20).cert_chain)
    finally:
        channel.close()
    leaf = split_certs(chain)[0]
    assert uri_sans(leaf) == [f"spiffe://cluster.local/ns/{ns}/sa/sleep"]


def lock_holder(ns):
    cm = get_json("configmap", LOCK, "-n", ns)
    if not cm:
        return None
    raw = (cm["metadata"].get("annotations") or {}).get(LEADER_ANNOTATION)
    return json.loads(raw).get("holderIdentity") if raw else None


def test_two_istiods_elect_one_leader_and_hand_over(cluster, tmp_path):
    ns = f"istio-elect-{cluster['id']}"
    kubectl("create", "namespace", ns)
    a = b = None
    try:
        a = LiveIstiod(tmp_path / "a", ns, "istiod-elect-a")
        b = LiveIstiod(tmp_path / "b", ns, "istiod-elect-b")
        first = wait_until(lambda: lock_holder(ns), timeout=60, what="a leader")
        assert first in ("istiod-elect-a", "istiod-elect-b")
        leader, other = (a, b) if first == a.pod_name else (b, a)
        leader.stop()
        wait_until(lambda: lock_holder(ns) == other.pod_name, timeout=60, what="handover to the other istiod")
    finally:
        for d in (a, b):
            if d:
                d.stop()
        kubectl("delete", "namespace", ns, "--wait=false", check=False)
