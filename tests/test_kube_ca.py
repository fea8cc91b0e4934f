"""istiod's CA on the secure port, authenticating callers with Kubernetes service-account tokens
checked by a TokenReview on a real API server: a token for audience `istio-ca` gets a
certificate for exactly its SPIFFE identity; other audiences, expired tokens and tokens of
deleted service accounts are refused with UNAUTHENTICATED and a message that says nothing of
why (as upstream: the API server's words stay in istiod's log, which names the reason), and
istiod keeps serving.

One istiod for the module, in a namespace of its own; every test makes fresh application
namespaces and service accounts.
"""

from __future__ import annotations

import base64
import socket
import ssl
import time
import uuid

import grpc
import pytest
from cryptography import x509
from google.protobuf import struct_pb2

from ca_support import SERVER_NAME, generated, make_csr, new_key, openssl_verify, split_certs, uri_sans
from conftest import wait_until
from kube_cluster import ISSUER
from live_istiod import LiveIstiod

AUDIENCE = "istio-ca"
# All a refused caller is told.
REFUSED = "request authenticate failure: authentication failed"


@pytest.fixture(scope="module")
def ca_istiod(kube_cluster, tmp_path_factory):
    ns = f"istio-ca-{uuid.uuid4().hex[:8]}"
    kube_cluster.kubectl("create", "namespace", ns)
    d = LiveIstiod(tmp_path_factory.mktemp("ca-istiod"), kube_cluster.kubeconfig, ns, "istiod-ca")
    try:
        secret = wait_until(lambda: kube_cluster.get_json("secret", "istio-ca-secret", "-n", ns),
                            timeout=30, what="istio-ca-secret")
        d.root = base64.b64decode(secret["data"]["root-cert.pem"])
        yield d
    finally:
        d.stop()
        kube_cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


@pytest.fixture
def workload(kube_cluster):
    """A fresh namespace with ServiceAccount `app`: (namespace, service account, SPIFFE id)."""
    ns = f"ca-app-{uuid.uuid4().hex[:8]}"
    kube_cluster.kubectl("create", "namespace", ns)
    kube_cluster.kubectl("create", "serviceaccount", "app", "-n", ns)
    yield ns, "app", f"spiffe://cluster.local/ns/{ns}/sa/app"
    kube_cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def create_certificate(d: LiveIstiod, token: str | None, csr: str | None = None, ttl: int = 3600,
                       metadata: dict | None = None, cluster_id: str | None = None) -> list[str]:
    gen = generated()
    channel = grpc.secure_channel(f"127.0.0.1:{d.secure}",
                                  grpc.ssl_channel_credentials(root_certificates=d.root),
                                  options=[("grpc.ssl_target_name_override", SERVER_NAME)])
    try:
        stub = gen["ca_grpc"].IstioCertificateServiceStub(channel)
        req = gen["ca"].IstioCertificateRequest(csr=csr or make_csr(new_key()), validity_duration=ttl)
        if metadata:
            s = struct_pb2.Struct()
            s.update(metadata)
            req.metadata.CopyFrom(s)
        md = [("authorization", f"Bearer {token}")] if token else []
        if cluster_id is not None:
            md.append(("clusterid", cluster_id))
        return list(stub.CreateCertificate(req, metadata=md, timeout=20).cert_chain)
    finally:
        channel.close()


def refused(d: LiveIstiod, token: str | None, **kw) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        create_certificate(d, token, **kw)
    return err.value


def refused_for(d: LiveIstiod, token: str | None, reason: str, **kw) -> str:
    """Asserts a refusal with only the generic message and `reason` in istiod's log; returns
    the log line."""
    mark = d.log_size()
    err = refused(d, token, **kw)
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED, err.details()
    assert err.details() == REFUSED, err.details()
    line = d.wait_log("refusing a CSR from an unauthenticated caller", timeout=10, start=mark)
    assert reason in line, line
    return line


def still_serving(d: LiveIstiod, cluster, ns: str, sa: str):
    """istiod is alive and issues to a good token after a refusal."""
    assert d.alive(), d.log_tail()
    chain = create_certificate(d, cluster.token(ns, sa, audience=AUDIENCE))
    assert uri_sans(split_certs(chain)[0]) == [f"spiffe://cluster.local/ns/{ns}/sa/{sa}"]


def bound_claims(cluster, ns: str, sa: str, exp_in: int) -> dict:
    """Claims shaped like a TokenRequest token of `ns/sa`, expiring `exp_in` seconds from now."""
    uid = cluster.get_json("serviceaccount", sa, "-n", ns)["metadata"]["uid"]
    now = int(time.time())
    return {"iss": ISSUER, "sub": f"system:serviceaccount:{ns}:{sa}", "aud": [AUDIENCE],
            "iat": now - 3600, "nbf": now - 3600, "exp": now + exp_in, "jti": str(uuid.uuid4()),
            "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": sa, "uid": uid}}}


def test_istio_ca_token_gets_exactly_its_spiffe_identity(kube_cluster, ca_istiod, workload, tmp_path):
    ns, sa, spiffe = workload
    chain = create_certificate(ca_istiod, kube_cluster.token(ns, sa, audience=AUDIENCE),
                               csr=make_csr(new_key(), san=spiffe))
    certs = split_certs(chain)
    leaf = certs[0]
    assert uri_sans(leaf) == [spiffe]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [], "only the SPIFFE identity"
    assert chain[-1].encode() == ca_istiod.root, "the chain ends with the stored root"
    ok, out = openssl_verify(tmp_path, ca_istiod.root, chain)
    assert ok, out
    # The root every namespace gets is the one that signed.
    cm = wait_until(lambda: kube_cluster.get_json("configmap", "istio-ca-root-cert", "-n", ns),
                    timeout=30, what="istio-ca-root-cert")
    assert cm["data"]["root-cert.pem"].encode() == ca_istiod.root


def test_serving_certificate_names_istiod_and_the_discovery_address(ca_istiod):
    ctx = ssl.create_default_context(cadata=ca_istiod.root.decode())
    ctx.check_hostname = False
    with socket.create_connection(("127.0.0.1", ca_istiod.secure), timeout=5) as sock:
        with ctx.wrap_socket(sock) as tls:
            der = tls.getpeercert(binary_form=True)
    cert = x509.load_der_x509_certificate(der)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
        .get_values_for_type(x509.DNSName)
    ns = ca_istiod.namespace
    # As upstream: istiod's service names in its namespace, and the host of the mesh's
    # discoveryAddress (default istiod.istio-system.svc:15012), which proxies dial and verify.
    assert sorted(names) == sorted([f"istiod.{ns}.svc", f"istiod-remote.{ns}.svc",
                                    f"istio-pilot.{ns}.svc", SERVER_NAME]), names


def test_csr_for_another_identity_gets_only_the_callers(kube_cluster, ca_istiod, workload):
    ns, sa, spiffe = workload
    token = kube_cluster.token(ns, sa, audience=AUDIENCE)
    other = "spiffe://cluster.local/ns/istio-system/sa/istiod"
    # As upstream, the identity comes from the token, never from the CSR.
    chain = create_certificate(ca_istiod, token, csr=make_csr(new_key(), san=other))
    assert uri_sans(split_certs(chain)[0]) == [spiffe]
    # Asking for another identity explicitly is refused.
    err = refused(ca_istiod, token, metadata={"ImpersonatedIdentity": other})
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED, err.details()
    assert "ImpersonatedIdentity" in err.details(), err.details()
    still_serving(ca_istiod, kube_cluster, ns, sa)


def test_token_for_another_audience_is_refused(kube_cluster, ca_istiod, workload):
    ns, sa, _ = workload
    line = refused_for(ca_istiod, kube_cluster.token(ns, sa), "audiences")
    assert AUDIENCE in line, line
    still_serving(ca_istiod, kube_cluster, ns, sa)


def test_expired_token_is_refused(kube_cluster, ca_istiod, workload):
    ns, sa, spiffe = workload
    # The same claims, not yet expired, are accepted: only the expiry differs.
    fresh = kube_cluster.sign_token(bound_claims(kube_cluster, ns, sa, exp_in=600))
    assert uri_sans(split_certs(create_certificate(ca_istiod, fresh))[0]) == [spiffe]
    expired = kube_cluster.sign_token(bound_claims(kube_cluster, ns, sa, exp_in=-600))
    refused_for(ca_istiod, expired, "expired")
    still_serving(ca_istiod, kube_cluster, ns, sa)


def test_token_of_a_deleted_service_account_is_refused(kube_cluster, ca_istiod, workload):
    ns, sa, _ = workload
    kube_cluster.kubectl("create", "serviceaccount", "gone", "-n", ns)
    used = kube_cluster.token(ns, "gone", audience=AUDIENCE)
    unused = kube_cluster.token(ns, "gone", audience=AUDIENCE)
    gone = f"spiffe://cluster.local/ns/{ns}/sa/gone"
    assert uri_sans(split_certs(create_certificate(ca_istiod, used))[0]) == [gone]
    kube_cluster.kubectl("delete", "serviceaccount", "gone", "-n", ns)

    def refusal(token, reason):
        """The refusal's log line when `token` is refused for `reason`."""
        mark = ca_istiod.log_size()
        try:
            create_certificate(ca_istiod, token)
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAUTHENTICATED, e.details()
            assert e.details() == REFUSED, e.details()
            line = ca_istiod.wait_log("refusing a CSR from an unauthenticated caller", timeout=10, start=mark)
            return line if reason in line else None
        return None

    # A token istiod never reviewed is refused at once (allowing for the API server's own
    # view of the deletion to catch up).
    wait_until(lambda: refusal(unused, "not found"), timeout=5, interval=0.2,
               what="the deleted account's token is refused")
    # The API server remembers a token it authenticated for 10 s (its token cache), and so
    # does istiod; after that the one used before the deletion is refused too.
    wait_until(lambda: refusal(used, "not found"), timeout=15, interval=0.5, what="the used token is refused")
    # A new account of the same name is another account: the old tokens stay refused (once
    # istiod's memory of the last refusal, 5 s, has passed, for the new reason).
    kube_cluster.kubectl("create", "serviceaccount", "gone", "-n", ns)
    wait_until(lambda: refusal(unused, "does not match"), timeout=15, interval=0.5,
               what="the old token is refused for the new account")
    still_serving(ca_istiod, kube_cluster, ns, sa)


def test_token_claiming_another_cluster_is_refused(kube_cluster, ca_istiod, workload):
    ns, sa, spiffe = workload
    token = kube_cluster.token(ns, sa, audience=AUDIENCE)
    # istio-agent sends its cluster's id; this istiod's is the default, Kubernetes.
    chain = create_certificate(ca_istiod, token, cluster_id="Kubernetes")
    assert uri_sans(split_certs(chain)[0]) == [spiffe]
    refused_for(ca_istiod, token, "remote-1", cluster_id="remote-1")
    still_serving(ca_istiod, kube_cluster, ns, sa)


@pytest.mark.parametrize("token,reason", [(None, "no Kubernetes token presented"),
                                          ("not-a-jwt", "not a JWT")])
def test_missing_or_garbage_token_is_refused(kube_cluster, ca_istiod, workload, token, reason):
    ns, sa, _ = workload
    refused_for(ca_istiod, token, reason)
    still_serving(ca_istiod, kube_cluster, ns, sa)
