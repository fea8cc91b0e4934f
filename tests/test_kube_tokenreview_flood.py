"""A flood of CSRs with junk bearer tokens on the secure port (15012) against a real API server,
while istiod leads its election: TokenReviews have a client and a request budget of their own,
so the leader keeps renewing its lock at the retry period although the main budget
(`--kubernetesApiQPS`) is made small enough that the flood's reviews would hold renewals past
the renew deadline if they shared it; and a good token still gets a certificate during the flood.

Three kinds of junk: one fixed `Bearer junk`, distinct random strings, and distinct random
tokens shaped like JWTs (the only kind that reaches the API server). The run has an API server
of its own, so that no other test's namespaces add to the leader's writes.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
import uuid

import grpc
import pytest

from ca_support import SERVER_NAME, generated, make_csr, new_key, split_certs, uri_sans
from conftest import wait_until
from live_istiod import LiveIstiod

AUDIENCE = "istio-ca"
LOCK = "istio-namespace-controller-election"
RECORD_ANNOTATION = "control-plane.alpha.kubernetes.io/leader"
# pilot/src/kube/leader.rs (as upstream).
LEASE_S = 30.0
RETRY_S = 7.5
# The main budget: 5 requests a second. Sharing it, CONCURRENCY reviews queued ahead of a
# renewal would hold it for CONCURRENCY / QPS = 25 s, past the 15 s renew deadline.
QPS = 5
CONCURRENCY = 128
FLOOD_S = 45.0


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def junk_token(i: int) -> str:
    kind = i % 3
    if kind == 0:
        return "junk"
    if kind == 1:
        return uuid.uuid4().hex + uuid.uuid4().hex
    header = b64(json.dumps({"alg": "RS256", "kid": uuid.uuid4().hex}).encode())
    claims = b64(json.dumps({"iss": "https://kubernetes.default.svc", "sub": uuid.uuid4().hex,
                             "aud": [AUDIENCE], "exp": int(time.time()) + 3600}).encode())
    return f"{header}.{claims}.{b64(os.urandom(64))}"


class Flood:
    """Keeps CONCURRENCY CreateCertificate calls with junk tokens in flight until stopped."""

    def __init__(self, port: int, root: bytes):
        gen = generated()
        self.req = gen["ca"].IstioCertificateRequest(csr=make_csr(new_key()), validity_duration=3600)
        self.channels = [grpc.secure_channel(f"127.0.0.1:{port}",
                                             grpc.ssl_channel_credentials(root_certificates=root),
                                             options=[("grpc.ssl_target_name_override", SERVER_NAME)])
                         for _ in range(4)]
        self.stubs = [gen["ca_grpc"].IstioCertificateServiceStub(c) for c in self.channels]
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.sent = 0
        self.codes: dict[str, int] = {}
        self.slots = threading.Semaphore(CONCURRENCY)
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        i = 0
        while not self.stop.is_set():
            if not self.slots.acquire(timeout=0.5):
                continue
            stub = self.stubs[i % len(self.stubs)]
            md = [("authorization", f"Bearer {junk_token(i)}")]
            fut = stub.CreateCertificate.future(self.req, metadata=md, timeout=60)
            fut.add_done_callback(self.done)
            with self.lock:
                self.sent += 1
            i += 1

    def done(self, fut):
        try:
            fut.result()
            code = "OK"
        except grpc.RpcError as e:
            code = e.code().name
        with self.lock:
            self.codes[code] = self.codes.get(code, 0) + 1
        self.slots.release()

    def close(self):
        self.stop.set()
        self.thread.join(timeout=10)
        # Let the calls still in flight finish before their channels go.
        for _ in range(CONCURRENCY):
            if not self.slots.acquire(timeout=60):
                break
        for c in self.channels:
            c.close()


def lock_record(cluster, ns: str) -> dict | None:
    cm = cluster.get_json("configmap", LOCK, "-n", ns)
    raw = ((cm or {}).get("metadata", {}).get("annotations") or {}).get(RECORD_ANNOTATION)
    return json.loads(raw) if raw else None


def create_certificate(d: LiveIstiod, token: str) -> list[str]:
    gen = generated()
    channel = grpc.secure_channel(f"127.0.0.1:{d.secure}",
                                  grpc.ssl_channel_credentials(root_certificates=d.root),
                                  options=[("grpc.ssl_target_name_override", SERVER_NAME)])
    try:
        stub = gen["ca_grpc"].IstioCertificateServiceStub(channel)
        req = gen["ca"].IstioCertificateRequest(csr=make_csr(new_key()), validity_duration=3600)
        return list(stub.CreateCertificate(req, metadata=[("authorization", f"Bearer {token}")],
                                           timeout=30).cert_chain)
    finally:
        channel.close()


def test_a_junk_token_flood_starves_neither_the_leader_nor_good_tokens(own_kube_cluster, tmp_path):
    cluster = own_kube_cluster
    ns = "istio-flood"
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("create", "namespace", "app")
    cluster.kubectl("create", "serviceaccount", "web", "-n", "app")
    d = LiveIstiod(tmp_path / "istiod", cluster.kubeconfig, ns, "istiod-flood",
                   extra_args=["--kubernetesApiQPS", str(QPS), "--kubernetesApiBurst", "50"],
                   ready_timeout=120)
    try:
        secret = wait_until(lambda: cluster.get_json("secret", "istio-ca-secret", "-n", ns),
                            timeout=60, what="istio-ca-secret")
        d.root = base64.b64decode(secret["data"]["root-cert.pem"])
        wait_until(lambda: (lock_record(cluster, ns) or {}).get("holderIdentity") == d.pod_name,
                   timeout=60, what="istiod leads")
        d.wait_log("became leader", timeout=30)
        mark = d.log_size()

        flood = Flood(d.secure, d.root)
        flood.thread.start()
        renewals: list[tuple[float, str]] = []
        holders = set()
        good_took = None
        try:
            start = time.monotonic()
            wait_until(lambda: flood.sent >= CONCURRENCY, timeout=60, what="the flood is under way")
            while time.monotonic() - start < FLOOD_S:
                record = lock_record(cluster, ns) or {}
                holders.add(record.get("holderIdentity"))
                renew = record.get("renewTime")
                if renew and (not renewals or renewals[-1][1] != renew):
                    renewals.append((time.monotonic(), renew))
                if good_took is None and time.monotonic() - start > 10:
                    # A good token, in the middle of the flood.
                    asked = time.monotonic()
                    chain = create_certificate(d, cluster.token("app", "web", audience=AUDIENCE))
                    good_took = time.monotonic() - asked
                    assert uri_sans(split_certs(chain)[0]) == ["spiffe://cluster.local/ns/app/sa/web"]
                time.sleep(0.5)
        finally:
            flood.close()
        print(f"\nflood: {flood.sent} CSRs sent in {FLOOD_S:.0f} s, outcomes {flood.codes}; "
              f"{len(renewals)} renewals seen; good token answered in {good_took:.2f} s")

        assert d.alive(), d.log_tail()
        assert holders == {d.pod_name}, holders
        log = d.log_text()[mark:]
        assert "stopped leading" not in log and "renewing the lock timed out" not in log, d.log_tail()
        # Renewed at every retry period: never near the lease's end.
        gaps = [b[0] - a[0] for a, b in zip(renewals, renewals[1:])]
        assert len(renewals) >= FLOOD_S / RETRY_S - 2, (renewals, flood.codes)
        assert max(gaps) < LEASE_S / 2, (gaps, flood.codes)
        assert good_took is not None
        assert flood.codes.get("UNAUTHENTICATED", 0) > CONCURRENCY, flood.codes
        assert set(flood.codes) == {"UNAUTHENTICATED"}, flood.codes
    finally:
        d.stop()
