"""Gateway certificates over SDS from Secrets in a real API server: a gateway proxy that
authenticates on the TLS port (15012) with its ServiceAccount's token gets
`kubernetes://my-cert` as an Envoy `Secret` with the Secret's certificate and key inline, is
refused a Secret of another namespace (left out, reason in istiod's log), gets the CA bundle
as a validation context, and receives the new certificate when the Secret is rotated. A
ServiceAccount that may not list Secrets in its namespace (upstream's SubjectAccessReview) gets
CA bundles only, and a proxy on plaintext 15010 gets nothing. Responses are decoded with
`xds-protos` (`xds_protos_decode.py`) and the bytes checked with `cryptography`.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import queue
import struct
import subprocess
import sys
import tempfile
import threading
import uuid

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ca_support import SERVER_NAME, generated
from conftest import wait_until
from live_istiod import LiveIstiod

SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
HERE = os.path.dirname(os.path.abspath(__file__))


def certificate(host: str) -> tuple[bytes, bytes]:
    """A self-signed certificate for `host` and its key, PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def tls_secret(ns: str, name: str, cert: bytes, key: bytes, ca: bytes | None = None) -> dict:
    data = {"tls.crt": base64.b64encode(cert).decode(), "tls.key": base64.b64encode(key).decode()}
    if ca:
        data["ca.crt"] = base64.b64encode(ca).decode()
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": name, "namespace": ns}, "data": data}


def decode(responses: list) -> list[dict]:
    """The responses as xds-protos reads them (JSON), checked for unknown fields."""
    with tempfile.NamedTemporaryFile(suffix=".bin", delete=False) as f:
        for r in responses:
            raw = r.SerializeToString()
            f.write(struct.pack(">I", len(raw)) + raw)
    try:
        out = subprocess.run([sys.executable, os.path.join(HERE, "xds_protos_decode.py"), f.name],
                             capture_output=True, text=True, timeout=60)
    finally:
        os.unlink(f.name)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["responses"]


class SdsStream:
    """One ADS stream of a gateway proxy asking for Secrets; responses are read in a thread."""

    def __init__(self, channel, ns: str, sa: str, token: str | None):
        gen = generated()
        self.gen = gen
        self.node = gen["ads"].Node(id=f"router~10.0.0.1~ingress-1.{ns}~{ns}.svc.cluster.local")
        self.node.metadata.update({"NAMESPACE": ns, "SERVICE_ACCOUNT": sa})
        self.requests: queue.Queue = queue.Queue()
        self.responses: queue.Queue = queue.Queue()
        stub = gen["ads_grpc"].AggregatedDiscoveryServiceStub(channel)
        md = [("authorization", f"Bearer {token}")] if token else []
        self.call = stub.StreamAggregatedResources(iter(self.requests.get, None), metadata=md)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        try:
            for r in self.call:
                self.responses.put(r)
        except grpc.RpcError as e:
            self.responses.put(e)

    def ask(self, names: list[str], nonce: str = "", version: str = ""):
        self.requests.put(self.gen["ads"].DiscoveryRequest(
            node=self.node, type_url=SECRET, resource_names=names, response_nonce=nonce,
            version_info=version))

    def next(self, timeout: float = 20):
        r = self.responses.get(timeout=timeout)
        if isinstance(r, grpc.RpcError):
            raise AssertionError(f"stream ended: {r.code()} {r.details()}")
        assert r.type_url == SECRET
        return r

    def ack(self, r):
        self.ask(list(self.names), nonce=r.nonce, version=r.version_info)

    def subscribe(self, names: list[str]):
        self.names = names
        self.ask(names)
        return self.next()

    def close(self):
        self.requests.put(None)
        self.call.cancel()


def secrets_of(response) -> dict[str, dict]:
    """The Secrets of a response by name, decoded by xds-protos."""
    decoded = decode([response])[0]
    return {s["name"]: s for s in decoded.get("resources", [])}


def inline(data_source: dict) -> bytes:
    return base64.b64decode(data_source["inline_bytes"])


@pytest.fixture(scope="module")
def sds_istiod(kube_cluster, tmp_path_factory):
    ns = f"istio-sds-{uuid.uuid4().hex[:8]}"
    kube_cluster.kubectl("create", "namespace", ns)
    d = LiveIstiod(tmp_path_factory.mktemp("sds-istiod"), kube_cluster.kubeconfig, ns, "istiod-sds")
    try:
        secret = wait_until(lambda: kube_cluster.get_json("secret", "istio-ca-secret", "-n", ns),
                            timeout=30, what="istio-ca-secret")
        d.root = base64.b64decode(secret["data"]["root-cert.pem"])
        yield d
    finally:
        d.stop()
        kube_cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


@pytest.fixture
def gateway_ns(kube_cluster):
    """A gateway namespace whose ServiceAccount `ingress` may read its Secrets (as upstream's
    gateway chart grants) and whose `other` may not; and a second namespace with a Secret."""
    ns, other = f"gw-{uuid.uuid4().hex[:8]}", f"other-{uuid.uuid4().hex[:8]}"
    for n in (ns, other):
        kube_cluster.kubectl("create", "namespace", n)
    for sa in ("ingress", "other"):
        kube_cluster.kubectl("create", "serviceaccount", sa, "-n", ns)
    kube_cluster.kubectl("create", "role", "secret-reader", "-n", ns, "--verb=get,watch,list",
                         "--resource=secrets")
    kube_cluster.kubectl("create", "rolebinding", "secret-reader", "-n", ns, "--role=secret-reader",
                         f"--serviceaccount={ns}:ingress")
    yield ns, other
    for n in (ns, other):
        kube_cluster.kubectl("delete", "namespace", n, "--wait=false", check=False)


def secure_channel(d: LiveIstiod):
    return grpc.secure_channel(f"127.0.0.1:{d.secure}",
                               grpc.ssl_channel_credentials(root_certificates=d.root),
                               options=[("grpc.ssl_target_name_override", SERVER_NAME)])


def test_gateway_gets_its_certificate_not_another_namespaces_and_the_rotated_one(
        kube_cluster, sds_istiod, gateway_ns):
    ns, other = gateway_ns
    cert, key = certificate("gw.example.com")
    ca, _ = certificate("ca.example.com")
    kube_cluster.apply(tls_secret(ns, "my-cert", cert, key, ca=ca))
    kube_cluster.apply(tls_secret(other, "their-cert", *certificate("theirs.example.com")))
    channel = secure_channel(sds_istiod)
    stream = SdsStream(channel, ns, "ingress",
                       kube_cluster.token(ns, "ingress", audience="istio-ca"))
    try:
        mark = sds_istiod.log_size()
        names = ["kubernetes://my-cert", "kubernetes://my-cert-cacert",
                 f"kubernetes://{other}/their-cert"]

        # The Secret may reach istiod's watch after the request: wait for it to be served.
        def served():
            r = stream.subscribe(names)
            got = secrets_of(r)
            if "kubernetes://my-cert" in got:
                return r, got
            stream.ack(r)
            return None
        first, got = wait_until(served, timeout=30, what="kubernetes://my-cert served")
        assert set(got) == {"kubernetes://my-cert", "kubernetes://my-cert-cacert"}, got
        tls = got["kubernetes://my-cert"]["tls_certificate"]
        assert inline(tls["certificate_chain"]) == cert
        assert inline(tls["private_key"]) == key
        served_cert = x509.load_pem_x509_certificate(inline(tls["certificate_chain"]))
        assert served_cert.subject.rfc4514_string() == "CN=gw.example.com"
        trusted = got["kubernetes://my-cert-cacert"]["validation_context"]["trusted_ca"]
        assert inline(trusted) == ca
        # The other namespace's Secret is left out, with the reason in the log.
        line = sds_istiod.wait_log(f"unauthorized certificates kubernetes://{other}/their-cert",
                                   timeout=10, start=mark)
        assert "ReferenceGrant" in line, line
        assert sds_istiod.alive()
        stream.ack(first)

        # Rotation: the new certificate is pushed without asking.
        new_cert, new_key = certificate("gw-rotated.example.com")
        kube_cluster.apply(tls_secret(ns, "my-cert", new_cert, new_key, ca=ca))

        def rotated():
            r = stream.next(timeout=30)
            stream.ack(r)
            got = secrets_of(r)
            tls = got.get("kubernetes://my-cert", {}).get("tls_certificate")
            return (r, got) if tls and inline(tls["certificate_chain"]) == new_cert else None
        _, got = wait_until(rotated, timeout=40, what="the rotated certificate pushed")
        tls = got["kubernetes://my-cert"]["tls_certificate"]
        assert inline(tls["private_key"]) == new_key
        served_cert = x509.load_pem_x509_certificate(inline(tls["certificate_chain"]))
        assert served_cert.subject.rfc4514_string() == "CN=gw-rotated.example.com"
        # Still the whole subscription, minus what is refused.
        assert set(got) == {"kubernetes://my-cert", "kubernetes://my-cert-cacert"}, got
        metrics = sds_istiod.debug("/metrics")
        errors = [l for l in metrics.splitlines() if l.startswith("pilot_sds_certificate_errors_total")]
        assert errors and float(errors[0].split()[-1]) >= 1, errors
    finally:
        stream.close()
        channel.close()


def test_a_secret_change_pushes_only_to_streams_subscribed_to_it(kube_cluster, sds_istiod, gateway_ns):
    ns, _ = gateway_ns
    kube_cluster.apply(tls_secret(ns, "a", *certificate("a.example.com")))
    kube_cluster.apply(tls_secret(ns, "b", *certificate("b.example.com")))
    channel = secure_channel(sds_istiod)
    token = kube_cluster.token(ns, "ingress", audience="istio-ca")
    streams = {name: SdsStream(channel, ns, "ingress", token) for name in ("a", "b")}
    try:
        for name, s in streams.items():
            def served(s=s, name=name):
                r = s.subscribe([f"kubernetes://{name}"])
                s.ack(r)
                return r if secrets_of(r) else None
            wait_until(served, timeout=30, what=f"kubernetes://{name} served")
        new_cert, new_key = certificate("a2.example.com")
        kube_cluster.apply(tls_secret(ns, "a", new_cert, new_key))
        r = streams["a"].next(timeout=30)
        assert inline(secrets_of(r)["kubernetes://a"]["tls_certificate"]["certificate_chain"]) == new_cert
        with pytest.raises(queue.Empty):
            streams["b"].next(timeout=3)
    finally:
        for s in streams.values():
            s.close()
        channel.close()


def test_keys_need_the_right_to_list_secrets_and_plaintext_gets_nothing(
        kube_cluster, sds_istiod, gateway_ns):
    ns, _ = gateway_ns
    cert, key = certificate("gw.example.com")
    kube_cluster.apply(tls_secret(ns, "my-cert", cert, key, ca=cert))
    channel = secure_channel(sds_istiod)
    stream = SdsStream(channel, ns, "other", kube_cluster.token(ns, "other", audience="istio-ca"))
    try:
        mark = sds_istiod.log_size()

        def served():
            r = stream.subscribe(["kubernetes://my-cert", "kubernetes://my-cert-cacert"])
            stream.ack(r)
            return secrets_of(r) or None
        got = wait_until(served, timeout=30, what="kubernetes://my-cert-cacert served")
        # CA bundles are public within the namespace; the key is not.
        assert set(got) == {"kubernetes://my-cert-cacert"}, got
        line = sds_istiod.wait_log("unauthorized certificates kubernetes://my-cert", timeout=10, start=mark)
        assert f"other/{ns} is not authorized to read secrets" in line, line
    finally:
        stream.close()
        channel.close()

    plaintext = grpc.insecure_channel(f"127.0.0.1:{sds_istiod.grpc}")
    stream = SdsStream(plaintext, ns, "ingress", None)
    try:
        mark = sds_istiod.log_size()
        r = stream.subscribe(["kubernetes://my-cert", "kubernetes://my-cert-cacert"])
        assert list(r.resources) == []
        sds_istiod.wait_log("proxy is not authorized to receive secrets", timeout=10, start=mark)
    finally:
        stream.close()
        plaintext.close()
