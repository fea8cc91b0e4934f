"""istiod's CA over TLS on the secure port: issuing, authentication, refusals, metrics, and
ADS on the same port."""

import datetime

import grpc
import pytest

from ca_support import (Issuer, Istiod, generated, key_pem, lifetime, make_csr, new_key,
                        openssl_verify, split_certs, uri_sans)

SLEEP = "spiffe://cluster.local/ns/default/sa/sleep"


@pytest.fixture(scope="module")
def issuer(tmp_path_factory):
    return Issuer(tmp_path_factory.mktemp("issuer"))


@pytest.fixture(scope="module")
def istiod(tmp_path_factory, issuer):
    d = Istiod(tmp_path_factory.mktemp("istiod"), env={"JWT_RULE": issuer.rule()}).start()
    yield d
    d.stop()


@pytest.mark.parametrize("kind", ["ec", "rsa2048"])
def test_issues_a_chain_openssl_verifies(istiod, issuer, tmp_path, kind):
    chain = istiod.create_certificate(make_csr(new_key(kind)), issuer.token(), ttl=3600)
    assert len(chain) == 2, "leaf and root"
    assert chain[-1].encode() in istiod.root_pem()
    ok, out = openssl_verify(tmp_path, istiod.root_pem(), chain)
    assert ok, out
    leaf = split_certs(chain)[0]
    assert uri_sans(leaf) == [SLEEP]
    assert lifetime(leaf) == datetime.timedelta(seconds=3600)


def test_default_ttl_is_24h(istiod, issuer):
    leaf = split_certs(istiod.create_certificate(make_csr(new_key()), issuer.token()))[0]
    assert lifetime(leaf) == datetime.timedelta(hours=24)


def test_san_comes_from_the_token_not_the_csr(istiod, issuer):
    csr = make_csr(new_key(), san="spiffe://cluster.local/ns/istio-system/sa/istiod")
    chain = istiod.create_certificate(csr, issuer.token(ns="other", sa="app"))
    assert uri_sans(split_certs(chain)[0]) == ["spiffe://cluster.local/ns/other/sa/app"]


def test_renewal_with_client_certificate(istiod, issuer):
    key = new_key()
    chain = istiod.create_certificate(make_csr(key), issuer.token(ns="renew", sa="web"))
    ch = istiod.channel(client_cert="".join(chain[:-1]).encode(), client_key=key_pem(key))
    try:
        renewed = istiod.create_certificate(make_csr(new_key()), token=None, channel=ch)
    finally:
        ch.close()
    assert uri_sans(split_certs(renewed)[0]) == ["spiffe://cluster.local/ns/renew/sa/web"]


def refusal_cases(issuer):
    stranger = new_key()
    good = make_csr(new_key())
    tampered = bytearray(good.encode())
    # Flip a character inside the base64 body near the end (the signature).
    pos = good.rindex("-----END") - 10
    tampered[pos] = ord("A") if tampered[pos] != ord("A") else ord("B")
    return {
        "no token": (good, None, 0, grpc.StatusCode.UNAUTHENTICATED),
        "expired token": (good, issuer.token(exp_in=-120), 0, grpc.StatusCode.UNAUTHENTICATED),
        "wrong audience": (good, issuer.token(aud="other"), 0, grpc.StatusCode.UNAUTHENTICATED),
        "foreign signer": (good, issuer.token(key=stranger), 0, grpc.StatusCode.UNAUTHENTICATED),
        "bad csr signature": (tampered.decode(), issuer.token(), 0,
                              grpc.StatusCode.INVALID_ARGUMENT),
        "garbage pem": ("hello, world", issuer.token(), 0, grpc.StatusCode.INVALID_ARGUMENT),
        "1 MB csr": ("A" * (1 << 20), issuer.token(), 0, grpc.StatusCode.INVALID_ARGUMENT),
        "rsa 1024": (make_csr(new_key("rsa1024")), issuer.token(), 0,
                     grpc.StatusCode.INVALID_ARGUMENT),
        "ttl above max": (good, issuer.token(), 91 * 24 * 3600, grpc.StatusCode.INVALID_ARGUMENT),
    }


@pytest.mark.parametrize("case", ["no token", "expired token", "wrong audience", "foreign signer",
                                  "bad csr signature", "garbage pem", "1 MB csr", "rsa 1024",
                                  "ttl above max"])
def test_refusals(istiod, issuer, case):
    csr, token, ttl, code = refusal_cases(issuer)[case]
    with pytest.raises(grpc.RpcError) as err:
        istiod.create_certificate(csr, token, ttl=ttl)
    assert err.value.code() == code, err.value.details()
    if code == grpc.StatusCode.UNAUTHENTICATED:
        # As upstream, a caller is not told why it was not authenticated; the log says.
        assert err.value.details() == "request authenticate failure: authentication failed"
    else:
        assert err.value.details(), "the refusal says why"
    # The server keeps serving.
    assert istiod.proc.poll() is None
    assert istiod.create_certificate(make_csr(new_key()), issuer.token())


def test_metrics_count_requests_and_errors(istiod, issuer):
    with pytest.raises(grpc.RpcError):
        istiod.create_certificate(make_csr(new_key()), None)
    with pytest.raises(grpc.RpcError):
        istiod.create_certificate("garbage", issuer.token())
    istiod.create_certificate(make_csr(new_key()), issuer.token())
    text = istiod.metrics()
    values = {}
    for line in text.splitlines():
        if line.startswith("citadel_server_"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    for name in ["citadel_server_csr_count", "citadel_server_authentication_failure_count",
                 "citadel_server_csr_parsing_err_count",
                 "citadel_server_success_cert_issuance_count"]:
        assert values.get(name, 0) >= 1, f"{name} in\n{text}"
    assert values["citadel_server_root_cert_expiry_timestamp"] > 0
    assert values["citadel_server_cert_chain_expiry_seconds"] > 0


def ads_first_response(istiod, node_id, token):
    gen = generated()
    ads = gen["ads"]
    ch = istiod.channel()
    try:
        stub = gen["ads_grpc"].AggregatedDiscoveryServiceStub(ch)
        req = ads.DiscoveryRequest(node=ads.Node(id=node_id),
                                   type_url="type.googleapis.com/envoy.config.cluster.v3.Cluster")
        md = [("authorization", f"Bearer {token}")] if token else []
        stream = stub.StreamAggregatedResources(iter([req]), metadata=md, timeout=10)
        return next(stream)
    finally:
        ch.close()


def test_ads_over_tls_checks_the_callers_namespace(istiod, issuer):
    node = "sidecar~10.1.1.1~sleep-1.default~default.svc.cluster.local"
    resp = ads_first_response(istiod, node, issuer.token(ns="default"))
    assert resp.type_url.endswith("envoy.config.cluster.v3.Cluster")
    with pytest.raises(grpc.RpcError) as err:
        ads_first_response(istiod, node, issuer.token(ns="other"))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        ads_first_response(istiod, node, None)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, err.value.details()
