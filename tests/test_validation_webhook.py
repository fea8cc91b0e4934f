"""The validation webhook end to end: pilot-discovery with its CA serves AdmissionReviews on
--httpsAddr over TLS with istiod's certificate, verified against the published root."""

import http.client
import json
import os
import socket
import ssl
import subprocess
import urllib.request

import pytest

from conftest import ROOT, free_port, pilot_binary, wait_until

SERVER_NAME = "istiod.istio-system.svc"
UID = "9ad9b5a2-2d35-4d4c-a3c5-3f1e0c8c1e57"


class Webhook:
    """pilot-discovery with the CA, the secure port and the webhook on loopback ports."""

    def __init__(self, workdir):
        self.workdir = workdir
        (workdir / "config").mkdir(parents=True, exist_ok=True)
        self.root_file = workdir / "published" / "root-cert.pem"
        self.http, self.mon, self.secure, self.https, self.grpc = (free_port() for _ in range(5))
        env = dict(os.environ)
        env.update({"PILOT_SELF_SIGNED_CA_DIR": str(workdir / "ca-state"),
                    "PILOT_ROOT_CERT_FILE": str(self.root_file), "RUST_BACKTRACE": "1"})
        self.log_path = workdir / "istiod.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [pilot_binary(), "discovery", "--registries=", "--configDir", str(workdir / "config"),
             "--grpcAddr", f"127.0.0.1:{self.grpc}", "--httpAddr", f"127.0.0.1:{self.http}",
             "--monitoringAddr", f"127.0.0.1:{self.mon}",
             "--secureGRPCAddr", f"127.0.0.1:{self.secure}", "--httpsAddr", f"127.0.0.1:{self.https}"],
            cwd=workdir, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        wait_until(self.ready, timeout=60, what="istiod ready with a published root")

    def ready(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"pilot-discovery exited:\n{self.log_path.read_text()}")
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/ready", timeout=1) as r:
            return r.status == 200 and self.root_file.exists()

    def context(self, root=None):
        ctx = ssl.create_default_context(cadata=(root or self.root_file.read_text()))
        return ctx

    def connection(self, root=None):
        webhook, ctx = self, self.context(root)

        class Conn(http.client.HTTPSConnection):
            def connect(self):
                sock = socket.create_connection(("127.0.0.1", webhook.https), timeout=10)
                # Headers and body go out in separate writes; without this each request
                # waits for the server's delayed ACK.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.sock = ctx.wrap_socket(sock, server_hostname=SERVER_NAME)

        return Conn(SERVER_NAME, self.https, timeout=10)

    def post(self, body, content_type="application/json", path="/validate", conn=None):
        conn = conn or self.connection()
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        conn.request("POST", path, body=data, headers={"Content-Type": content_type})
        resp = conn.getresponse()
        text = resp.read().decode()
        return resp.status, text

    def metrics(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.mon}/metrics", timeout=5) as r:
            return r.read().decode()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def webhook(tmp_path_factory):
    w = Webhook(tmp_path_factory.mktemp("webhook"))
    yield w
    w.stop()


def review(obj, operation="CREATE", version="v1", dry_run=False):
    group, _, api = obj["apiVersion"].rpartition("/")
    return {
        "apiVersion": f"admission.k8s.io/{version}",
        "kind": "AdmissionReview",
        "request": {
            "uid": UID,
            "kind": {"group": group, "version": api, "kind": obj["kind"]},
            "resource": {"group": group, "version": api, "resource": obj["kind"].lower() + "s"},
            "operation": operation,
            "dryRun": dry_run,
            "object": obj,
        },
    }


def resource(kind, spec, api="networking.istio.io/v1", name="r", annotations=None):
    meta = {"name": name, "namespace": "default"}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": api, "kind": kind, "metadata": meta, "spec": spec}


GATEWAY = resource("Gateway", {"selector": {"istio": "ingressgateway"}, "servers": [
    {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]})
VS_BAD_WEIGHTS = resource("VirtualService", {"hosts": ["reviews"], "http": [{"route": [
    {"destination": {"host": "a"}}, {"destination": {"host": "b"}}]}]})


def answer(webhook, body, version):
    status, text = webhook.post(body)
    assert status == 200, text
    out = json.loads(text)
    assert out["apiVersion"] == f"admission.k8s.io/{version}"
    assert out["kind"] == "AdmissionReview"
    assert out["response"]["uid"] == UID
    return out["response"]


@pytest.mark.parametrize("version", ["v1", "v1beta1"])
@pytest.mark.parametrize("obj,allowed,message", [
    (GATEWAY, True, None),
    (resource("Gateway", {"servers": []}), False, "spec.servers: gateway must have at least one server"),
    (VS_BAD_WEIGHTS, False, "spec.http[0].route: total destination weight = 0"),
    (resource("DestinationRule", {"host": "reviews", "subsets": [{"name": "v1"}, {"name": "v1"}]}),
     False, "duplicate subset names: v1"),
    (resource("PeerAuthentication", {"mtls": {"mode": "SOMETIMES"}}, api="security.istio.io/v1beta1"),
     False, 'spec.mtls.mode: unsupported value "SOMETIMES"'),
    (resource("AuthorizationPolicy", {"action": "DENY"}, api="security.istio.io/v1"),
     False, "DENY action without `rules`"),
    (resource("Telemetry", {"tracing": [{"randomSamplingPercentage": 10}]}, api="telemetry.istio.io/v1alpha1"),
     True, None),
    (resource("WasmPlugin", {"url": "ftp://x/y"}, api="extensions.istio.io/v1alpha1"),
     False, "unsupported scheme"),
    (resource("ServiceEntry", {"hosts": ["a.com"], "ports": [{"number": 80, "name": "http"}], "bogus": 1},
              api="networking.istio.io/v1alpha3"), False, "spec.bogus: unknown field"),
    (resource("Frobnicator", {}), False, "unrecognized type Frobnicator"),
])
def test_reviews_are_answered_in_the_requests_version(webhook, version, obj, allowed, message):
    resp = answer(webhook, review(obj, version=version), version)
    assert resp["allowed"] is allowed, resp
    if message:
        assert message in resp["status"]["message"], resp
        if "unrecognized" not in message:
            assert resp["status"]["message"].startswith("configuration is invalid: ")
    else:
        assert "status" not in resp


def test_delete_is_allowed_and_warnings_are_returned(webhook):
    resp = answer(webhook, review(VS_BAD_WEIGHTS, operation="DELETE"), "v1")
    assert resp["allowed"] is True
    ef = resource("EnvoyFilter", {"configPatches": [{"applyTo": "CLUSTER", "patch": {"operation": "REMOVE"}}]},
                  api="networking.istio.io/v1alpha3")
    resp = answer(webhook, review(ef), "v1")
    assert resp["allowed"] is True
    assert any("EnvoyFilter exposes internal implementation details" in w for w in resp["warnings"])


@pytest.mark.parametrize("obj,warning", [
    (resource("AuthorizationPolicy", {"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin"]}}]}]},
              api="security.istio.io/v1"),
     "spec.rules[0]: configured AuthorizationPolicy will deny all traffic to TCP ports under its scope"),
    (resource("PeerAuthentication", {"selector": {}, "mtls": {"mode": "STRICT"}}, api="security.istio.io/v1"),
     "spec.selector: workload selector specified without labels"),
    (resource("RequestAuthentication",
              {"jwtRules": [{"issuer": "a", "jwks": '{"keys": [{"kty": "RSA", "n": "x", "e": "AQAB", "d": "y"}]}'}]},
              api="security.istio.io/v1"),
     "jwks key at index 0 contains private key material"),
])
def test_security_warnings_are_returned_with_the_resource_admitted(webhook, obj, warning):
    resp = answer(webhook, review(obj), "v1")
    assert resp["allowed"] is True, resp
    assert any(warning in w for w in resp.get("warnings", [])), resp


def test_readiness_dry_run_of_an_invalid_gateway_is_denied(webhook):
    """What upstream's controller sends before switching the failure policy to Fail."""
    gw = resource("Gateway", {}, name="invalid-gateway",
                  annotations={"internal.istio.io/webhook-always-reject": "true"})
    gw["metadata"]["namespace"] = "istio-system"
    resp = answer(webhook, review(gw, dry_run=True), "v1")
    assert resp["allowed"] is False
    assert "webhook-always-reject" in resp["status"]["message"]


def test_malformed_bodies_get_400_and_the_server_keeps_serving(webhook):
    """Oversized bodies (413) are in test_hostile_http."""
    conn = webhook.connection()
    cases = [
        (b"{not json", "application/json", 400, "not JSON"),
        (b"", "application/json", 400, "no body found"),
        (json.dumps({"kind": "Pod"}).encode(), "application/json", 400, "not an AdmissionReview"),
        (json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).encode(),
         "application/json", 400, "no request"),
        (json.dumps(review(GATEWAY)).encode(), "text/plain", 415, "expect application/json"),
    ]
    for body, ctype, status, needle in cases:
        got, text = webhook.post(body, content_type=ctype, conn=conn)
        assert got == status, text
        assert needle in text
    # Still serving, on a fresh connection and on the same path family.
    resp = answer(webhook, review(GATEWAY), "v1")
    assert resp["allowed"] is True
    status, text = webhook.post(review(GATEWAY), path="/validate/networking.istio.io/v1/gateways")
    assert status == 200 and json.loads(text)["response"]["allowed"] is True


def test_ready_over_https_and_certificate_checks(webhook, tmp_path):
    conn = webhook.connection()
    conn.request("GET", "/ready")
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()
    # A client trusting another root refuses the server.
    other = tmp_path / "other.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", str(tmp_path / "k.pem"), "-out", str(other), "-subj", "/CN=other",
                    "-days", "1"], check=True, capture_output=True)
    with pytest.raises(ssl.SSLCertVerificationError):
        webhook.post(review(GATEWAY), conn=webhook.connection(root=other.read_text()))


def test_metrics_count_passes_failures_and_http_errors(webhook):
    answer(webhook, review(GATEWAY), "v1")
    answer(webhook, review(resource("Gateway", {"servers": []})), "v1")
    webhook.post(b"junk")
    text = webhook.metrics()
    assert 'galley_validation_passed{group="networking.istio.io",version="v1",resource="gateways"}' in text
    assert ('galley_validation_failed{group="networking.istio.io",version="v1",resource="gateways",'
            'reason="invalid_resource"}') in text
    assert 'reason="unsupported_operation"' in text
    assert 'galley_validation_http_error{status="400"}' in text


def test_invalid_resource_in_config_dir_is_rejected(webhook):
    (webhook.workdir / "config" / "rules.yaml").write_text("""\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: good, namespace: default}
spec: {host: good}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: broken, namespace: default}
spec: {host: broken, trafficPolicy: {loadBalancer: {simple: FASTEST}}}
""")

    def configz():
        with urllib.request.urlopen(f"http://127.0.0.1:{webhook.mon}/debug/configz", timeout=5) as r:
            text = r.read().decode()
        return text if "configuration is invalid" in text else None

    text = wait_until(configz, timeout=20, what="configz shows the rejected resource")
    assert 'unsupported value \\"FASTEST\\"' in text or 'unsupported value "FASTEST"' in text
    assert "broken" in text and '"good"' in text
    log = webhook.log_path.read_text()
    assert "rejecting invalid resource" in log
