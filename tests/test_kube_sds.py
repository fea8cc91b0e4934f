"""Gateway certificates over SDS from Secrets in a real API server: a gateway proxy that
authenticates on the TLS port (15012) with its ServiceAccount's token gets
`kubernetes://my-cert` as an Envoy `Secret` with the Secret's certificate and key inline, is
refused a Secret of another namespace (left out, reason in istiod's log), gets the CA bundle
as a validation context, and receives the new certificate when the Secret is rotated. A
ServiceAccount that may not list Secrets in its namespace (upstream's SubjectAccessReview) gets
CA bundles only, and a proxy on plaintext 15010 gets nothing. Responses are decoded with
`xds-protos` (`xds_protos_decode.py`) and the bytes checked with `cryptography`. istiod runs
with exactly the chart's RBAC (Secrets watched, SubjectAccessReviews created).
"""

from __future__ import annotations

import base64
import json
import queue
import uuid

import grpc
import pytest
from cryptography import x509

from ca_support import SERVER_NAME
from conftest import wait_until
from kube_cluster import chart_rbac
from live_istiod import LiveIstiod
from sds_support import SdsStream, certificate, inline, secrets_of, tls_secret


@pytest.fixture(scope="module")
def sds_istiod(kube_cluster, tmp_path_factory):
    """istiod with exactly the chart's RBAC: its Secret watch and SubjectAccessReviews must
    work with the verbs the chart grants."""
    ns = f"istio-sds-{uuid.uuid4().hex[:8]}"
    kube_cluster.kubectl("create", "namespace", ns)
    docs = chart_rbac(ns)
    kube_cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))
    (sa,) = [d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"]
    workdir = tmp_path_factory.mktemp("sds-istiod")
    kubeconfig = kube_cluster.token_kubeconfig(workdir / "istiod.kubeconfig", kube_cluster.token(ns, sa))
    d = LiveIstiod(workdir, kubeconfig, ns, "istiod-sds")
    try:
        secret = wait_until(lambda: kube_cluster.get_json("secret", "istio-ca-secret", "-n", ns),
                            timeout=30, what="istio-ca-secret")
        d.root = base64.b64decode(secret["data"]["root-cert.pem"])
        yield d
        # The chart's verbs were enough: no Secret watch refused, no review that failed.
        failed = [line for line in d.log_text().splitlines()
                  if "forbidden to list/watch Secrets" in line or "SubjectAccessReview for" in line]
        assert not failed, "\n".join(failed[:5])
    finally:
        d.stop()
        for doc in docs:
            if doc["kind"] in ("ClusterRole", "ClusterRoleBinding"):
                kube_cluster.kubectl("delete", doc["kind"].lower(), doc["metadata"]["name"], "--ignore-not-found")
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
