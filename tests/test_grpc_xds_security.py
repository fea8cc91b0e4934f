"""End to end: xDS security for proxyless gRPC with stock grpcio on both sides.

An xDS server (`grpc.server(..., xds=True)` with `xds_server_credentials`) and xDS clients
(`xds_channel_credentials`) take their TLS and RBAC from istiod; their certificates come
from istiod's own CA (`CreateCertificate`) through the bootstrap's `file_watcher`
certificate provider `default`. Every ADS response istiod sends them passes through a
relay here and is decoded with `xds-protos`, a second protobuf implementation, in a
process of its own (`xds_protos_decode.py`).

The tests share one mesh and run in file order, each leaving the config as it found it."""

import json
import os
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
from concurrent import futures

import grpc
import pytest

from ca_support import Issuer, Istiod, key_pem, make_csr, new_key
from conftest import free_port, wait_until
from test_grpc_xds import Client

NS = "demo"
SERVICE = f"echo.{NS}.svc.cluster.local"
PORT = 7070
SERVER_IP = "127.0.0.5"
TRUST_DOMAIN = "cluster.local"
ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"


def spiffe(sa: str) -> str:
    return f"spiffe://{TRUST_DOMAIN}/ns/{NS}/sa/{sa}"


class AdsRecorder:
    """An ADS relay in front of istiod that keeps every response it passes on."""

    def __init__(self, upstream: str):
        self.lock = threading.Lock()
        self.responses: list[bytes] = []
        self.channel = grpc.insecure_channel(upstream)
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
        handlers = {
            method: grpc.stream_stream_rpc_method_handler(self._relay(method))
            for method in ("StreamAggregatedResources", "DeltaAggregatedResources")
        }
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(ADS_SERVICE, handlers),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def _relay(self, method: str):
        forward = self.channel.stream_stream(f"/{ADS_SERVICE}/{method}")

        def handle(requests, context):
            call = forward(requests)
            context.add_callback(call.cancel)
            try:
                for response in call:
                    with self.lock:
                        self.responses.append(response)
                    yield response
            except grpc.RpcError as e:
                # The peer went away (CANCELLED) or istiod ended the stream: pass it on.
                context.set_code(e.code())
                context.set_details(e.details() or "")

        return handle

    def decoded(self) -> dict:
        """Every response so far, decoded by xds-protos in a process of its own:
        `{"responses": [...], "types": {message name: count}}`."""
        with self.lock:
            raw = list(self.responses)
        with tempfile.NamedTemporaryFile(suffix=".ads") as f:
            for r in raw:
                f.write(struct.pack(">I", len(r)) + r)
            f.flush()
            here = os.path.dirname(os.path.abspath(__file__))
            out = subprocess.run([sys.executable, os.path.join(here, "xds_protos_decode.py"), f.name],
                                 capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, f"xds-protos refused a response istiod sent:\n{out.stderr}"
        return json.loads(out.stdout)

    def stop(self):
        self.server.stop(0)
        self.channel.close()


def upstream_sans(cluster: dict) -> list[str] | None:
    """The exact SANs a cluster's UpstreamTlsContext checks; None without TLS."""
    tls = cluster.get("transport_socket", {}).get("typed_config")
    if tls is None:
        return None
    validation = tls["common_tls_context"]["combined_validation_context"]["default_validation_context"]
    return [m["exact"] for m in validation.get("match_subject_alt_names", [])]


def requires_client_certificates(listener: dict) -> bool:
    """Whether a server listener's filter chain takes only mTLS."""
    return any(
        c.get("transport_socket", {}).get("typed_config", {}).get("require_client_certificate") is True
        for c in listener.get("filter_chains", [])
    )


def mesh_yaml(server_port: int) -> str:
    return textwrap.dedent(f"""\
        apiVersion: v1
        kind: Service
        metadata: {{name: echo, namespace: {NS}}}
        spec:
          clusterIP: 10.96.0.10
          selector: {{app: echo}}
          ports: [{{name: grpc, port: {PORT}, targetPort: {server_port}}}]
        ---
        apiVersion: v1
        kind: Pod
        metadata: {{name: echo-1, namespace: {NS}, labels: {{app: echo}}}}
        spec: {{serviceAccountName: echo, containers: [{{name: echo, image: echo}}]}}
        status: {{podIP: {SERVER_IP}}}
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata:
          name: echo-1
          namespace: {NS}
          labels: {{kubernetes.io/service-name: echo}}
        addressType: IPv4
        ports: [{{name: grpc, port: {server_port}}}]
        endpoints: [{{addresses: [{SERVER_IP}]}}]
        """)


STRICT = textwrap.dedent(f"""\
    apiVersion: security.istio.io/v1
    kind: PeerAuthentication
    metadata: {{name: default, namespace: {NS}}}
    spec: {{mtls: {{mode: STRICT}}}}
    """)


def destination_rule(sans=()) -> str:
    extra = f", subjectAltNames: {json.dumps(list(sans))}" if sans else ""
    return textwrap.dedent(f"""\
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {{name: echo, namespace: {NS}}}
        spec:
          host: {SERVICE}
          trafficPolicy: {{tls: {{mode: ISTIO_MUTUAL{extra}}}}}
        """)


ALLOW_A = textwrap.dedent(f"""\
    apiVersion: security.istio.io/v1
    kind: AuthorizationPolicy
    metadata: {{name: allow-a, namespace: {NS}}}
    spec:
      selector: {{matchLabels: {{app: echo}}}}
      action: ALLOW
      rules: [{{from: [{{source: {{principals: [{TRUST_DOMAIN}/ns/{NS}/sa/client-a]}}}}]}}]
    """)

DENY_ADMIN = textwrap.dedent(f"""\
    apiVersion: security.istio.io/v1
    kind: AuthorizationPolicy
    metadata: {{name: deny-admin, namespace: {NS}}}
    spec:
      selector: {{matchLabels: {{app: echo}}}}
      action: DENY
      rules: [{{to: [{{operation: {{paths: [/echo.Echo/Admin]}}}}]}}]
    """)


class Mesh:
    """istiod with its CA, the ADS relay, the xDS server and what the clients need."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.issuer = Issuer(tmp)
        self.istiod = Istiod(tmp / "istiod", env={"JWT_RULE": self.issuer.rule(), "PILOT_DEBOUNCE_AFTER": "50ms"})
        self.config = self.istiod.workdir / "config"
        self.server_port = free_port(SERVER_IP)
        (self.config / "mesh.yaml").write_text(mesh_yaml(self.server_port))
        self.istiod.start()
        self.recorder = AdsRecorder(f"127.0.0.1:{self.istiod.grpc}")
        self.clients: list[Client] = []
        self.server = None
        self.server_log = None

    def identity(self, sa: str):
        """Certificate, key and root files of service account `sa`, from istiod's CA."""
        d = self.tmp / f"id-{sa}"
        if not d.exists():
            d.mkdir()
            key = new_key()
            chain = self.istiod.create_certificate(make_csr(key, san=spiffe(sa)), self.issuer.token(ns=NS, sa=sa))
            (d / "cert.pem").write_text("".join(chain[:-1]))
            (d / "key.pem").write_bytes(key_pem(key))
            (d / "root.pem").write_bytes(self.istiod.root_pem())
        return d

    def bootstrap(self, name: str, ip: str, sa: str) -> str:
        d = self.identity(sa)
        path = self.tmp / f"bootstrap-{name}.json"
        path.write_text(json.dumps({
            "xds_servers": [{
                "server_uri": f"127.0.0.1:{self.recorder.port}",
                "channel_creds": [{"type": "insecure"}],
                "server_features": ["xds_v3"],
            }],
            "node": {
                "id": f"sidecar~{ip}~{name}.{NS}~{NS}.svc.cluster.local",
                "metadata": {"GENERATOR": "grpc", "NAMESPACE": NS, "SERVICE_ACCOUNT": sa},
            },
            "certificate_providers": {"default": {"plugin_name": "file_watcher", "config": {
                "certificate_file": str(d / "cert.pem"),
                "private_key_file": str(d / "key.pem"),
                "ca_certificate_file": str(d / "root.pem"),
                "refresh_interval": "900s",
            }}},
            "server_listener_resource_name_template": "xds.istio.io/grpc/lds/inbound/%s",
        }))
        return str(path)

    def start_server(self):
        self.server_log = open(self.tmp / "server.log", "wb")
        here = os.path.dirname(os.path.abspath(__file__))
        env = dict(os.environ, GRPC_XDS_BOOTSTRAP=self.bootstrap("echo-1", SERVER_IP, "echo"))
        self.server = subprocess.Popen(
            [sys.executable, os.path.join(here, "xds_server.py"), f"{SERVER_IP}:{self.server_port}", "echo-1"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.server_log, env=env, text=True,
        )
        assert json.loads(self.server.stdout.readline())["ready"]

    def client(self, name: str, ip: str, sa: str, xds_creds=True) -> Client:
        c = Client(self.bootstrap(name, ip, sa), f"xds:///{SERVICE}:{PORT}", self.tmp / f"{name}.log",
                   args=["--xds-creds"] if xds_creds else [])
        self.clients.append(c)
        return c

    def apply(self, name: str, yaml: str | None):
        path = self.config / f"{name}.yaml"
        if yaml is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(yaml)

    def sent(self, type_url: str, predicate, since: int = 0) -> bool:
        """Whether some response of `type_url` istiod sent (from the `since`-th on) has a
        resource matching."""
        responses = self.recorder.decoded()["responses"][since:]
        return any(predicate(r) for resp in responses if resp["type_url"] == type_url
                   for r in resp.get("resources", []))

    def close(self):
        for c in self.clients:
            c.close()
        if self.server and self.server.poll() is None:
            self.server.stdin.close()
            try:
                self.server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.server.kill()
        if self.server_log:
            self.server_log.close()
        self.recorder.stop()
        self.istiod.stop()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    m = Mesh(tmp_path_factory.mktemp("grpc-sec"))
    m.apply("peer-authn", STRICT)
    m.apply("dr", destination_rule())
    m.start_server()
    yield m
    m.close()


def ok(counts: dict, n: int) -> bool:
    return counts == {"echo-1": n}


def only_errors(counts: dict, code: str, n: int) -> bool:
    return counts == {f"error:{code}": n}


def test_strict_refuses_plaintext_and_admits_mtls(mesh):
    a = mesh.client("client-a", "127.0.0.11", "client-a")
    wait_until(lambda: ok(a.call(5), 5), timeout=60, what="the mTLS client reaches the STRICT server")
    assert ok(a.call(20), 20)
    assert mesh.sent(LISTENER_TYPE, requires_client_certificates), "the server listener takes plaintext"

    plain = mesh.client("plain", "127.0.0.13", "client-a", xds_creds=False)
    assert only_errors(plain.call(5), "UNAVAILABLE", 5), "a plaintext client got through a STRICT server"


def test_client_checks_the_server_identity(mesh):
    wrong = spiffe("not-echo")
    mesh.apply("dr", destination_rule([wrong]))
    wait_until(lambda: mesh.sent(CLUSTER_TYPE, lambda c: upstream_sans(c) == [wrong]), timeout=30,
               what="the wrong SAN is pushed")
    c = mesh.client("client-a-wrong-san", "127.0.0.14", "client-a")
    counts = c.call(5)
    assert only_errors(counts, "UNAVAILABLE", 5), f"the client accepted a server that is not {wrong}: {counts}"

    # The service's own identity, named explicitly, is accepted.
    mesh.apply("dr", destination_rule([spiffe("echo")]))
    mark = len(mesh.recorder.decoded()["responses"])
    wait_until(lambda: mesh.sent(CLUSTER_TYPE, lambda c: upstream_sans(c) == [spiffe("echo")], since=mark),
               timeout=30, what="the right SAN is pushed")
    c = mesh.client("client-a-right-san", "127.0.0.15", "client-a")
    wait_until(lambda: ok(c.call(5), 5), timeout=60, what="the client accepts the server's identity")
    mesh.apply("dr", destination_rule())


def test_permissive_serves_plaintext(mesh):
    # gRPC cannot take both on one port: PERMISSIVE is plaintext, as upstream serves it.
    mesh.apply("peer-authn", STRICT.replace("STRICT", "PERMISSIVE"))
    mesh.apply("dr", None)
    plain = mesh.client("plain-permissive", "127.0.0.19", "client-a", xds_creds=False)
    wait_until(lambda: ok(plain.call(5), 5), timeout=60, what="a plaintext client reaches the PERMISSIVE server")
    assert ok(plain.call(20), 20)

    mesh.apply("peer-authn", STRICT)
    mesh.apply("dr", destination_rule())
    a = mesh.client("client-a-strict-again", "127.0.0.20", "client-a")
    wait_until(lambda: ok(a.call(5), 5), timeout=60, what="mTLS again once STRICT is back")
    wait_until(lambda: only_errors(plain.call(5), "UNAVAILABLE", 5), timeout=60,
               what="the plaintext client refused once STRICT is back")


def test_allow_policy_admits_only_its_principal(mesh):
    mesh.apply("allow-a", ALLOW_A)
    a = mesh.client("client-a-allow", "127.0.0.16", "client-a")
    b = mesh.client("client-b-allow", "127.0.0.17", "client-b")
    wait_until(lambda: only_errors(b.call(5), "PERMISSION_DENIED", 5), timeout=60, what="B refused")
    assert ok(a.call(10), 10), "A is allowed"
    assert only_errors(b.call(10), "PERMISSION_DENIED", 10)
    mesh.apply("allow-a", None)
    wait_until(lambda: ok(b.call(5), 5), timeout=60, what="B allowed again once the policy is gone")


def test_deny_policy_refuses_only_its_method(mesh):
    mesh.apply("deny-admin", DENY_ADMIN)
    a = mesh.client("client-a-deny", "127.0.0.18", "client-a")
    wait_until(lambda: only_errors(a.call(5, "Admin"), "PERMISSION_DENIED", 5), timeout=60, what="Admin denied")
    assert ok(a.call(10), 10), "other methods still answer"
    mesh.apply("deny-admin", None)
    wait_until(lambda: ok(a.call(5, "Admin"), 5), timeout=60, what="Admin allowed again once the policy is gone")


def test_every_response_decodes_with_xds_protos(mesh):
    decoded = mesh.recorder.decoded()
    assert decoded["responses"], "the relay saw no response"
    for name in (
        "envoy.config.listener.v3.Listener",
        "envoy.config.cluster.v3.Cluster",
        "envoy.config.route.v3.RouteConfiguration",
        "envoy.config.endpoint.v3.ClusterLoadAssignment",
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "envoy.extensions.filters.http.rbac.v3.RBAC",
    ):
        assert decoded["types"].get(name), f"no {name} among {sorted(decoded['types'])}"
