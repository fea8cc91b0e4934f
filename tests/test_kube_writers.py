"""istiod's writers on a real API server: the `istio-ca-root-cert` ConfigMap in every namespace,
the shared self-signed root in Secret `istio-ca-secret`, and leader election on the
`istio-namespace-controller-election` ConfigMap lock between replicas of one namespace.

Every test runs its istiods in a namespace of their own (POD_NAMESPACE) and makes fresh
application namespaces, so tests sharing the session cluster do not interfere.
"""

from __future__ import annotations

import base64
import datetime
import json
import re
import socket
import ssl
import time
import uuid

import pytest

from conftest import wait_until
from live_istiod import LiveIstiod

ROOT_CM = "istio-ca-root-cert"
ROOT_KEY = "root-cert.pem"
CONFIG_LABEL = "istio.io/config"
CA_SECRET = "istio-ca-secret"
LOCK = "istio-namespace-controller-election"
RECORD_ANNOTATION = "control-plane.alpha.kubernetes.io/leader"
# pilot/src/kube/leader.rs (as upstream): the lease, and how often a replica looks at the lock.
LEASE_S = 30.0
RETRY_S = 7.5
# Time for the new leader's request to reach the API server and our poll to see it.
MARGIN_S = 3.0


@pytest.fixture
def namespaces(kube_cluster):
    """Makes fresh namespaces (`prefix-<uuid>`); deleted (left Terminating) afterwards."""
    made = []

    def make(prefix: str) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        kube_cluster.kubectl("create", "namespace", name)
        made.append(name)
        return name

    yield make
    for ns in made:
        kube_cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


@pytest.fixture
def istiods(kube_cluster, tmp_path):
    """Starts istiods against the session cluster; any still running are killed afterwards."""
    started: list[LiveIstiod] = []

    def start(namespace: str, pod_name: str, wait_ready: bool = True, env: dict | None = None) -> LiveIstiod:
        d = LiveIstiod(tmp_path / pod_name, kube_cluster.kubeconfig, namespace, pod_name,
                       wait_ready=wait_ready, env=env)
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()


def root_cm(cluster, ns: str) -> dict | None:
    return cluster.get_json("configmap", ROOT_CM, "-n", ns)


def cm_root(cluster, ns: str) -> str | None:
    """The root in the namespace's ConfigMap when it is labelled as istiod writes it."""
    cm = root_cm(cluster, ns)
    if not cm or (cm["metadata"].get("labels") or {}).get(CONFIG_LABEL) != "true":
        return None
    return (cm.get("data") or {}).get(ROOT_KEY)


def wait_cm_root(cluster, ns: str, root: str, what: str, timeout: float = 30.0):
    wait_until(lambda: cm_root(cluster, ns) == root, timeout=timeout, what=f"{what} ({ns})")


def ca_secret(cluster, ns: str) -> dict | None:
    return cluster.get_json("secret", CA_SECRET, "-n", ns)


def secret_root(cluster, ns: str) -> str:
    secret = wait_until(lambda: ca_secret(cluster, ns), timeout=30, what=f"{CA_SECRET} in {ns}")
    return base64.b64decode(secret["data"][ROOT_KEY]).decode()


def lock_record(cluster, ns: str) -> dict | None:
    cm = cluster.get_json("configmap", LOCK, "-n", ns)
    raw = ((cm or {}).get("metadata", {}).get("annotations") or {}).get(RECORD_ANNOTATION)
    return json.loads(raw) if raw else None


def holder(cluster, ns: str) -> str | None:
    return (lock_record(cluster, ns) or {}).get("holderIdentity") or None


def serves_root(d: LiveIstiod, root: str) -> bool:
    """Whether the certificate on `d`'s secure port verifies against `root` for istiod's name."""
    ctx = ssl.create_default_context(cadata=root)
    with socket.create_connection(("127.0.0.1", d.secure), timeout=5) as sock:
        with ctx.wrap_socket(sock, server_hostname=f"istiod.{d.namespace}.svc"):
            return True


def became_leader(d: LiveIstiod) -> bool:
    return "became leader" in d.log_text()


def elect(cluster, ns: str, replicas: list[LiveIstiod]) -> tuple[LiveIstiod, LiveIstiod]:
    """Waits for one replica to hold the lock; returns (leader, follower)."""
    name = wait_until(lambda: holder(cluster, ns), timeout=30, what=f"a leader in {ns}")
    by_name = {d.pod_name: d for d in replicas}
    assert name in by_name, f"lock held by {name!r}, not one of {sorted(by_name)}"
    leader = by_name[name]
    (follower,) = [d for d in replicas if d is not leader]
    wait_until(lambda: became_leader(leader), timeout=10, what=f"{name} logs that it leads")
    return leader, follower


# --- istio-ca-root-cert ----------------------------------------------------------------------

def test_root_cert_configmap_in_every_namespace_recreated_and_repaired(kube_cluster, namespaces, istiods):
    istio_ns = namespaces("istio-rc")
    before = namespaces("app-before")
    istiods(istio_ns, "istiod-rc")
    root = secret_root(kube_cluster, istio_ns)
    assert root.startswith("-----BEGIN CERTIFICATE-----")

    # Namespaces that existed at start, istiod's own and kube-system included; kube-public never.
    for ns in (before, istio_ns, "kube-system", "default"):
        wait_cm_root(kube_cluster, ns, root, "ConfigMap in a namespace that existed at start")
    assert root_cm(kube_cluster, "kube-public") is None, "kube-public is skipped, as upstream"

    after = namespaces("app-after")
    wait_cm_root(kube_cluster, after, root, "ConfigMap in a namespace created later")

    kube_cluster.kubectl("delete", "configmap", ROOT_CM, "-n", before)
    wait_cm_root(kube_cluster, before, root, "ConfigMap recreated after delete")

    # An edit of the data and the label is repaired; a key someone else added is kept.
    kube_cluster.kubectl("patch", "configmap", ROOT_CM, "-n", after, "--type=merge", "-p", json.dumps(
        {"metadata": {"labels": {CONFIG_LABEL: None}}, "data": {ROOT_KEY: "tampered", "extra": "kept"}}))
    wait_cm_root(kube_cluster, after, root, "ConfigMap repaired after edit")
    assert root_cm(kube_cluster, after)["data"]["extra"] == "kept"

    # Only the label removed: repaired too.
    kube_cluster.kubectl("label", "configmap", ROOT_CM, "-n", before, f"{CONFIG_LABEL}-")
    wait_cm_root(kube_cluster, before, root, "label restored")


def test_terminating_namespaces_are_left_alone(kube_cluster, namespaces, istiods):
    # Without a namespace controller a deleted namespace stays Terminating, as one being emptied
    # does: nothing can be created in it, and istiod must not keep trying.
    istio_ns = namespaces("istio-term-ns")
    dying_before = namespaces("dying-before")
    kube_cluster.kubectl("delete", "namespace", dying_before, "--wait=false")
    live = namespaces("live")
    d = istiods(istio_ns, "istiod-tn")
    root = secret_root(kube_cluster, istio_ns)
    wait_cm_root(kube_cluster, live, root, "ConfigMap in a live namespace")
    dying_after = namespaces("dying-after")
    wait_cm_root(kube_cluster, dying_after, root, "ConfigMap in a namespace created later")
    kube_cluster.kubectl("delete", "namespace", dying_after, "--wait=false")
    # A change that would be reconciled in a live namespace.
    kube_cluster.kubectl("delete", "configmap", ROOT_CM, "-n", dying_after)
    kube_cluster.kubectl("delete", "configmap", ROOT_CM, "-n", live)
    wait_cm_root(kube_cluster, live, root, "ConfigMap recreated in the live namespace")
    assert root_cm(kube_cluster, dying_before) is None
    assert root_cm(kube_cluster, dying_after) is None
    failures = [line for line in d.log_text().splitlines()
                if "root certificate ConfigMap failed" in line]
    assert failures == [], "\n".join(failures)


# --- istio-ca-secret ---------------------------------------------------------------------------

def test_second_replica_adopts_the_ca_secret(kube_cluster, namespaces, istiods):
    ns = namespaces("istio-ca")
    a = istiods(ns, "istiod-a")
    secret = wait_until(lambda: ca_secret(kube_cluster, ns), timeout=30, what=CA_SECRET)
    assert secret["type"] == "istio.io/ca-root"
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert sorted(data) == ["ca-cert.pem", "ca-key.pem", "cert-chain.pem", "key.pem", "root-cert.pem"]
    assert data["root-cert.pem"] == data["ca-cert.pem"], "a self-signed root signs with itself"
    assert data["cert-chain.pem"] == "" and data["key.pem"] == ""
    assert "PRIVATE KEY" in data["ca-key.pem"]
    root = data["root-cert.pem"]
    assert serves_root(a, root)

    b = istiods(ns, "istiod-b")
    after = ca_secret(kube_cluster, ns)
    assert after["metadata"]["resourceVersion"] == secret["metadata"]["resourceVersion"], \
        "the second replica must adopt the Secret, not rewrite it"
    assert after["data"] == secret["data"]
    # Both sign with the stored root: B's serving certificate verifies against it.
    assert serves_root(b, root)
    assert serves_root(a, root)
    wait_cm_root(kube_cluster, ns, root, "the ConfigMap holds the shared root")
    assert "using the CA root stored in the Secret" in b.log_text()


def test_an_unusable_ca_secret_stops_istiod_with_a_reason(kube_cluster, namespaces, tmp_path):
    ns = namespaces("istio-badca")
    kube_cluster.apply({"apiVersion": "v1", "kind": "Secret", "type": "istio.io/ca-root",
                        "metadata": {"name": CA_SECRET, "namespace": ns},
                        "stringData": {"ca-cert.pem": "not a certificate", "ca-key.pem": "not a key",
                                       "root-cert.pem": "", "cert-chain.pem": "", "key.pem": ""}})
    d = LiveIstiod(tmp_path / "bad", kube_cluster.kubeconfig, ns, "istiod-bad", wait_ready=False)
    try:
        d.proc.wait(timeout=30)
    finally:
        d.kill()
    assert d.proc.returncode != 0
    log = d.log_text()
    # It names the Secret, and does not replace it with a root of its own.
    assert f"{ns}/{CA_SECRET}" in log and ("ca-key.pem" in log or "ca-cert.pem" in log), d.log_tail()
    secret = ca_secret(kube_cluster, ns)
    assert base64.b64decode(secret["data"]["ca-cert.pem"]) == b"not a certificate"


def test_replicas_started_together_share_one_root(kube_cluster, namespaces, istiods):
    ns = namespaces("istio-race")
    a = istiods(ns, "istiod-a", wait_ready=False)
    b = istiods(ns, "istiod-b", wait_ready=False)
    for d in (a, b):
        wait_until(d.ready, timeout=60, what=f"{d.pod_name} /ready")
    root = secret_root(kube_cluster, ns)
    assert serves_root(a, root) and serves_root(b, root), "both replicas serve the stored root"
    leader, follower = elect(kube_cluster, ns, [a, b])
    assert not became_leader(follower)


# --- leader election -------------------------------------------------------------------------

def test_one_leader_and_takeover_after_sigkill_within_the_lease(kube_cluster, namespaces, istiods):
    ns = namespaces("istio-kill")
    app = namespaces("app-kill")
    replicas = [istiods(ns, "istiod-a"), istiods(ns, "istiod-b")]
    root = secret_root(kube_cluster, ns)
    leader, follower = elect(kube_cluster, ns, replicas)
    wait_cm_root(kube_cluster, app, root, "the leader writes the ConfigMap")
    record = lock_record(kube_cluster, ns)
    assert record["leaseDurationSeconds"] == int(LEASE_S)
    assert record["holderKey"] == "default"
    transitions = record["leaderTransitions"]
    # client-go's record: RFC 3339 times in whole seconds (metav1.Time).
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", record["renewTime"]), record
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", record["acquireTime"]), record

    # The leader renews every retry period; kill it right after a renewal.
    wait_until(lambda: lock_record(kube_cluster, ns)["renewTime"] != record["renewTime"],
               timeout=RETRY_S + MARGIN_S, interval=0.1, what="a renewal")
    assert holder(kube_cluster, ns) == leader.pod_name
    assert not became_leader(follower), "only one replica leads"

    # SIGKILL: no release, the follower must wait for the lease to run out.
    killed_at = time.monotonic()
    leader.kill()
    wait_until(lambda: holder(kube_cluster, ns) == follower.pod_name, timeout=LEASE_S + RETRY_S + 10,
               interval=0.2, what="the follower takes over")
    took = time.monotonic() - killed_at
    # Not before the lease since the last renewal has run out, and at most one retry period
    # (the follower's look at the lock) after that.
    assert took >= LEASE_S - 1.5, f"the lock was taken {took:.1f} s after the kill, before the lease ran out"
    assert took <= LEASE_S + RETRY_S + MARGIN_S, f"takeover after {took:.1f} s"
    record = lock_record(kube_cluster, ns)
    assert record["leaderTransitions"] == transitions + 1

    # The new leader runs the namespace controller.
    kube_cluster.kubectl("delete", "configmap", ROOT_CM, "-n", app)
    wait_cm_root(kube_cluster, app, root, "the new leader recreates the ConfigMap")
    late = namespaces("app-late")
    wait_cm_root(kube_cluster, late, root, "the new leader writes a new namespace's ConfigMap")


def test_sigterm_releases_the_lock_and_the_follower_takes_over_at_once(kube_cluster, namespaces, istiods):
    ns = namespaces("istio-term")
    app = namespaces("app-term")
    replicas = [istiods(ns, "istiod-a"), istiods(ns, "istiod-b")]
    root = secret_root(kube_cluster, ns)
    leader, follower = elect(kube_cluster, ns, replicas)
    wait_cm_root(kube_cluster, app, root, "the leader writes the ConfigMap")

    stopped_at = time.monotonic()
    leader.proc.terminate()
    wait_until(lambda: holder(kube_cluster, ns) == follower.pod_name, timeout=RETRY_S + MARGIN_S + 5,
               interval=0.2, what="the follower takes over")
    took = time.monotonic() - stopped_at
    # Released: the follower takes it at its next look, without waiting for the lease.
    assert took <= RETRY_S + MARGIN_S, f"takeover {took:.1f} s after SIGTERM"
    # Nothing to drain: the stop is prompt and clean.
    assert leader.stop(timeout=5) == 0, f"graceful stop:\n{leader.log_tail()}"
    log = leader.log_text()
    assert "released the lock" in log, leader.log_tail()
    assert "drain deadline passed" not in log, leader.log_tail()
    assert "finished early" not in log, leader.log_tail()

    kube_cluster.kubectl("delete", "configmap", ROOT_CM, "-n", app)
    wait_cm_root(kube_cluster, app, root, "the new leader recreates the ConfigMap")


# --- root rotation -----------------------------------------------------------------------------

def near_expiry_root() -> tuple[str, str]:
    """A self-signed RSA root with 10% of its 10-day life left (below the 20% grace period)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cluster.local")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=9)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem


def issued_root(cluster, d: LiveIstiod, ns: str, sa: str, trust: str) -> str:
    """The root at the end of the chain `d`'s CA issues to a token of `ns/sa`."""
    import grpc

    from ca_support import SERVER_NAME, generated, make_csr, new_key

    gen = generated()
    channel = grpc.secure_channel(f"127.0.0.1:{d.secure}", grpc.ssl_channel_credentials(trust.encode()),
                                  options=[("grpc.ssl_target_name_override", SERVER_NAME)])
    try:
        stub = gen["ca_grpc"].IstioCertificateServiceStub(channel)
        req = gen["ca"].IstioCertificateRequest(csr=make_csr(new_key()), validity_duration=3600)
        token = cluster.token(ns, sa, audience="istio-ca")
        return stub.CreateCertificate(req, metadata=[("authorization", f"Bearer {token}")], timeout=20).cert_chain[-1]
    finally:
        channel.close()


def test_a_root_near_expiry_is_rotated_once_and_every_replica_follows(kube_cluster, namespaces, istiods):
    from cryptography import x509

    ns = namespaces("istio-rot")
    app = namespaces("app-rot")
    kube_cluster.kubectl("create", "serviceaccount", "app", "-n", app)
    old_root, key = near_expiry_root()
    kube_cluster.apply({"apiVersion": "v1", "kind": "Secret", "type": "istio.io/ca-root",
                        "metadata": {"name": CA_SECRET, "namespace": ns},
                        "stringData": {"ca-cert.pem": old_root, "ca-key.pem": key, "root-cert.pem": old_root,
                                       "cert-chain.pem": "", "key.pem": ""}})
    env = {"CITADEL_SELF_SIGNED_ROOT_CERT_CHECK_INTERVAL": "2s"}
    replicas = [istiods(ns, "istiod-a", wait_ready=False, env=env),
                istiods(ns, "istiod-b", wait_ready=False, env=env)]
    for d in replicas:
        wait_until(d.ready, timeout=60, what=f"{d.pod_name} /ready")

    def rotated():
        secret = ca_secret(kube_cluster, ns)
        data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
        return (secret, data) if data["ca-cert.pem"] != old_root else None

    secret, data = wait_until(rotated, timeout=20, what="the root rotated in the Secret")
    new_root = data["ca-cert.pem"]
    old_cert, new_cert = x509.load_pem_x509_certificate(old_root.encode()), x509.load_pem_x509_certificate(new_root.encode())
    # Upstream re-issues the root with the same key and subject, for its full lifetime.
    assert data["ca-key.pem"] == key
    assert new_cert.public_key().public_numbers() == old_cert.public_key().public_numbers()
    assert new_cert.subject == old_cert.subject
    assert new_cert.not_valid_after_utc - new_cert.not_valid_before_utc > datetime.timedelta(days=3000)
    # Workloads trust both until the old one expires: the new root first.
    bundle = data["root-cert.pem"]
    assert bundle.startswith(new_root) and old_root in bundle, bundle

    wait_cm_root(kube_cluster, app, bundle, "the ConfigMaps carry the rotated bundle", timeout=20)
    for d in replicas:
        wait_until(lambda: issued_root(kube_cluster, d, app, "app", bundle) == new_root, timeout=15,
                   what=f"{d.pod_name} signs with the rotated root")
    # Rotated once: neither replica rotates again or rewrites the Secret.
    time.sleep(5)
    assert ca_secret(kube_cluster, ns)["metadata"]["resourceVersion"] == secret["metadata"]["resourceVersion"]
    assert sum(d.log_text().count("rotated the self-signed root") for d in replicas) == 1
