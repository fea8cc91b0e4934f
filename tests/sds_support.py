"""Helpers of the SDS tests: certificates made with `cryptography`, Secrets as manifests, an
ADS stream asking for the Secret type (state of the world or delta), and responses decoded by
`xds-protos` in a process of its own (`xds_protos_decode.py`)."""

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

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ca_support import generated

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


class DeltaSdsStream:
    """One delta ADS stream asking for Secrets; responses are read in a thread."""

    def __init__(self, channel, ns: str, sa: str, token: str | None):
        gen = generated()
        self.gen = gen
        self.node = gen["ads"].Node(id=f"router~10.0.0.1~ingress-1.{ns}~{ns}.svc.cluster.local")
        self.node.metadata.update({"NAMESPACE": ns, "SERVICE_ACCOUNT": sa})
        self.requests: queue.Queue = queue.Queue()
        self.responses: queue.Queue = queue.Queue()
        stub = gen["ads_grpc"].AggregatedDiscoveryServiceStub(channel)
        md = [("authorization", f"Bearer {token}")] if token else []
        self.call = stub.DeltaAggregatedResources(iter(self.requests.get, None), metadata=md)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        try:
            for r in self.call:
                self.responses.put(r)
        except grpc.RpcError as e:
            self.responses.put(e)

    def subscribe(self, names: list[str]):
        self.requests.put(self.gen["ads"].DeltaDiscoveryRequest(
            node=self.node, type_url=SECRET, resource_names_subscribe=names))
        return self.next()

    def next(self, timeout: float = 20):
        r = self.responses.get(timeout=timeout)
        if isinstance(r, grpc.RpcError):
            raise AssertionError(f"stream ended: {r.code()} {r.details()}")
        assert r.type_url == SECRET
        self.requests.put(self.gen["ads"].DeltaDiscoveryRequest(type_url=SECRET, response_nonce=r.nonce))
        return r

    def secrets(self, r) -> dict[str, dict]:
        """The Secrets of a delta response by name, decoded by xds-protos."""
        sotw = self.gen["ads"].DiscoveryResponse(type_url=SECRET,
                                                 resources=[x.resource for x in r.resources])
        return secrets_of(sotw)

    def close(self):
        self.requests.put(None)
        self.call.cancel()
