"""End to end: a stock grpcio xDS client resolves `xds:///` targets through pilot-discovery,
follows VirtualService weights, and stops calling a removed endpoint."""

import json
import os
import subprocess
import sys
import textwrap
from concurrent import futures

import grpc
import pytest

from conftest import free_port, wait_until

SERVICE = "echo.demo.svc.cluster.local"
PORT = 7070


class Backend:
    """A gRPC server on loopback answering `/echo.Echo/Call` with its name."""

    def __init__(self, name: str, host: str):
        self.name = name
        self.host = host
        self.port = free_port(host)
        self.calls = 0
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=[("grpc.so_reuseport", 0)])

        def handle(request, context):
            self.calls += 1
            return name.encode()

        handler = grpc.method_handlers_generic_handler(
            "echo.Echo", {"Call": grpc.unary_unary_rpc_method_handler(handle)}
        )
        self.server.add_generic_rpc_handlers((handler,))
        self.server.add_insecure_port(f"{host}:{self.port}")
        self.server.start()

    def stop(self):
        self.server.stop(0)


def slice_yaml(name: str, backend: Backend) -> str:
    return textwrap.dedent(f"""\
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata:
          name: {name}
          namespace: demo
          labels: {{kubernetes.io/service-name: echo}}
        addressType: IPv4
        ports: [{{name: grpc, port: {backend.port}}}]
        endpoints: [{{addresses: [{backend.host}]}}]
        """)


def mesh_yaml(b1: Backend, b2: Backend) -> str:
    return textwrap.dedent(f"""\
        apiVersion: v1
        kind: Service
        metadata: {{name: echo, namespace: demo}}
        spec:
          clusterIP: 10.96.0.10
          ports: [{{name: grpc, port: {PORT}}}]
        ---
        apiVersion: v1
        kind: Pod
        metadata: {{name: echo-1, namespace: demo, labels: {{app: echo, version: v1}}}}
        spec: {{containers: [{{name: echo, image: echo}}]}}
        status: {{podIP: {b1.host}}}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {{name: echo-2, namespace: demo, labels: {{app: echo, version: v2}}}}
        spec: {{containers: [{{name: echo, image: echo}}]}}
        status: {{podIP: {b2.host}}}
        ---
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {{name: echo, namespace: demo}}
        spec:
          host: echo
          subsets:
          - {{name: v1, labels: {{version: v1}}}}
          - {{name: v2, labels: {{version: v2}}}}
        """)


VS_ALL_TO_V2 = textwrap.dedent(f"""\
    apiVersion: networking.istio.io/v1
    kind: VirtualService
    metadata: {{name: echo, namespace: demo}}
    spec:
      hosts: [echo.demo.svc.cluster.local]
      http:
      - route:
        - destination: {{host: echo.demo.svc.cluster.local, subset: v1}}
          weight: 0
        - destination: {{host: echo.demo.svc.cluster.local, subset: v2}}
          weight: 100
    """)


class Client:
    def __init__(self, bootstrap: str, target: str, log_path, args=()):
        env = dict(os.environ, GRPC_XDS_BOOTSTRAP=bootstrap)
        self.stderr = open(log_path, "wb")
        here = os.path.dirname(os.path.abspath(__file__))
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(here, "xds_client.py"), target, *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, env=env, text=True,
        )
        assert json.loads(self.proc.stdout.readline())["ready"]

    def call(self, n: int, method: str = "Call") -> dict:
        self.proc.stdin.write(f"call {n} {method}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"xDS client died: {open(self.stderr.name).read()}")
        return json.loads(line)

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.stderr.close()


@pytest.fixture
def backends():
    b1, b2 = Backend("backend-1", "127.0.0.1"), Backend("backend-2", "127.0.0.2")
    yield b1, b2
    b1.stop()
    b2.stop()


def write_bootstrap(path, xds_port: int):
    path.write_text(json.dumps({
        "xds_servers": [{
            "server_uri": f"127.0.0.1:{xds_port}",
            "channel_creds": [{"type": "insecure"}],
            "server_features": ["xds_v3"],
        }],
        "node": {
            "id": "sidecar~127.0.0.1~client-0.demo~demo.svc.cluster.local",
            "metadata": {"GENERATOR": "grpc", "NAMESPACE": "demo", "ISTIO_VERSION": "1.32.0"},
            "locality": {"zone": "zone-a"},
        },
        "server_listener_resource_name_template": "xds.istio.io/grpc/lds/inbound/%s",
    }))


def test_grpc_client_follows_routing_and_endpoints(tmp_path, istiod_factory, backends):
    b1, b2 = backends
    config = tmp_path / "config"
    config.mkdir()
    (config / "mesh.yaml").write_text(mesh_yaml(b1, b2))
    (config / "slice-1.yaml").write_text(slice_yaml("echo-1", b1))
    (config / "slice-2.yaml").write_text(slice_yaml("echo-2", b2))
    istiod = istiod_factory(config)
    bootstrap = tmp_path / "bootstrap.json"
    write_bootstrap(bootstrap, istiod.grpc_port)

    client = Client(str(bootstrap), f"xds:///{SERVICE}:{PORT}", tmp_path / "client.log")
    try:
        # Both endpoints serve the service.
        seen = wait_until(
            lambda: (lambda c: c if c.get("backend-1") and c.get("backend-2") else None)(client.call(20)),
            timeout=60, what="calls reach both backends",
        )
        assert set(seen) == {"backend-1", "backend-2"}, seen

        # A VirtualService sends 100% to v2: the same client's calls move.
        (config / "vs.yaml").write_text(VS_ALL_TO_V2)
        wait_until(lambda: client.call(10) == {"backend-2": 10}, timeout=30, what="calls move to backend-2")
        assert client.call(50) == {"backend-2": 50}

        # Drop the routing, then remove backend-1's endpoint: no call reaches it any more.
        (config / "vs.yaml").unlink()
        wait_until(lambda: client.call(20).get("backend-1"), timeout=30, what="calls spread again")
        (config / "slice-1.yaml").unlink()
        wait_until(lambda: client.call(10) == {"backend-2": 10}, timeout=30, what="removed endpoint drained")
        before = b1.calls
        assert client.call(50) == {"backend-2": 50}
        assert b1.calls == before, "a call reached the removed endpoint"
    finally:
        client.close()

    # istiod saw the client and counted the pushes under upstream's metric names.
    metrics = istiod.get("/metrics", istiod.monitoring_port)
    for name in ("pilot_xds_pushes{", "pilot_xds_push_time_bucket", "pilot_services 1", "pilot_proxy_convergence_time"):
        assert name in metrics, name
    assert istiod.stop() == 0, "istiod exits cleanly on SIGTERM"


def test_debug_endpoints_show_connected_proxy(tmp_path, istiod_factory, backends):
    b1, b2 = backends
    config = tmp_path / "config"
    config.mkdir()
    (config / "mesh.yaml").write_text(mesh_yaml(b1, b2))
    (config / "slice-1.yaml").write_text(slice_yaml("echo-1", b1))
    (config / "broken.yaml").write_text("apiVersion: v1\nkind: Service\nmetadata: {name: [\n")
    istiod = istiod_factory(config)
    bootstrap = tmp_path / "bootstrap.json"
    write_bootstrap(bootstrap, istiod.grpc_port)
    client = Client(str(bootstrap), f"xds:///{SERVICE}:{PORT}", tmp_path / "client.log")
    try:
        wait_until(lambda: client.call(5).get("backend-1") == 5, timeout=60, what="first calls")
        syncz = json.loads(istiod.get("/debug/syncz"))
        assert [s["proxy"] for s in syncz] == ["client-0.demo"]
        assert syncz[0]["cluster_acked"] == syncz[0]["cluster_sent"] != ""
        configz = json.loads(istiod.get("/debug/configz"))
        assert any("broken.yaml" in e["source"] and "invalid YAML" in e["error"] for e in configz["errors"])
        registry = json.loads(istiod.get("/debug/registryz"))
        assert [s["hostname"] for s in registry] == [SERVICE]
        endpoints = json.loads(istiod.get("/debug/endpointz"))
        assert [e["address"] for e in endpoints[SERVICE]] == ["127.0.0.1"]
        dump = json.loads(istiod.get("/debug/config_dump?proxyID=client-0.demo"))
        types = {c["typeUrl"]: c for c in dump["configs"]}
        clusters = types["type.googleapis.com/envoy.config.cluster.v3.Cluster"]["resources"]
        assert f"outbound|{PORT}||{SERVICE}" in [r["name"] for r in clusters]
    finally:
        client.close()
