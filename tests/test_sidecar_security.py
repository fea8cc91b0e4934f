"""End to end: PeerAuthentication and auto mTLS reach an Envoy sidecar's config.

A raw ADS client connects as the sidecar of a `reviews` pod; every resource it receives is
decoded with the `xds-protos` package (Envoy's own protos compiled by another protobuf
implementation), nested typed configs included, and the TLS config is read from those."""

import json
import pathlib
import struct
import subprocess
import sys
import tempfile

from ca_support import generated
from conftest import wait_until
from live_xds import CDS, EDS, LDS, AdsStream

HERE = pathlib.Path(__file__).resolve().parent

NODE = "sidecar~10.1.0.1~reviews-1.default~default.svc.cluster.local"
META = {"NAMESPACE": "default", "LABELS": {"app": "reviews"}, "ISTIO_VERSION": "1.32.0"}
REVIEWS = "outbound|9080||reviews.default.svc.cluster.local"

MESH = """
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  clusterIP: 10.96.0.10
  selector: {app: reviews}
  ports: [{name: http, port: 9080, targetPort: 9080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: reviews-1, namespace: default, labels: {kubernetes.io/service-name: reviews}}
addressType: IPv4
ports: [{name: http, port: 9080}]
endpoints:
- {addresses: [10.1.0.1], targetRef: {kind: Pod, name: reviews-1, namespace: default}}
- {addresses: [10.1.0.2], targetRef: {kind: Pod, name: legacy-1, namespace: default}}
---
apiVersion: v1
kind: Pod
metadata:
  name: reviews-1
  namespace: default
  labels: {app: reviews, security.istio.io/tlsMode: istio}
spec: {serviceAccountName: reviews, containers: [{name: app, image: app}]}
status: {phase: Running, podIP: 10.1.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: legacy-1, namespace: default, labels: {app: reviews}}
spec: {serviceAccountName: legacy, containers: [{name: app, image: app}]}
status: {phase: Running, podIP: 10.1.0.2}
"""


def policy(mode: str) -> str:
    return f"""
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: istio-system}}
spec: {{mtls: {{mode: {mode}}}}}
"""


def decoded(ads: AdsStream, type_url: str) -> list[dict]:
    """The latest resources of a type, decoded by `xds_protos_decode.py` in a process of its
    own (xds-protos and the tests' small proto subsets cannot share a descriptor pool)."""
    response = generated()["ads"].DiscoveryResponse(type_url=type_url, resources=ads.resources(type_url))
    raw = response.SerializeToString()
    with tempfile.NamedTemporaryFile(suffix=".bin") as f:
        f.write(struct.pack(">I", len(raw)) + raw)
        f.flush()
        out = subprocess.run([sys.executable, str(HERE / "xds_protos_decode.py"), f.name],
                             capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"xds-protos refused what istiod sent:\n{out.stderr}"
    return json.loads(out.stdout)["responses"][0].get("resources", [])


def by_name(resources: list[dict], key: str = "name") -> dict:
    return {r[key]: r for r in resources}


def test_strict_mtls_and_auto_mtls_reach_the_sidecar(tmp_path, istiod_factory):
    config = tmp_path / "config"
    config.mkdir()
    (config / "mesh.yaml").write_text(MESH)
    (config / "policy.yaml").write_text(policy("STRICT"))
    istiod = istiod_factory(config)
    ads = AdsStream(istiod.grpc_port, NODE, META)
    try:
        ads.subscribe(CDS)
        ads.subscribe(LDS)
        wait_until(lambda: ads.resources(CDS) and ads.resources(LDS), what="CDS and LDS")
        ads.subscribe(EDS, [REVIEWS])
        wait_until(lambda: ads.resources(EDS), what="EDS")

        inbound = by_name(decoded(ads, LDS))["virtualInbound"]
        chains = inbound["filter_chains"]
        port_chains = [c for c in chains if c.get("filter_chain_match", {}).get("destination_port") == 9080]
        assert [c["filter_chain_match"]["transport_protocol"] for c in port_chains] == ["tls"]
        tls = port_chains[0]["transport_socket"]["typed_config"]
        assert tls["@type"].endswith("DownstreamTlsContext")
        assert tls["require_client_certificate"] is True
        certs = tls["common_tls_context"]["tls_certificate_sds_secret_configs"]
        assert [c["name"] for c in certs] == ["default"]
        grpc = certs[0]["sds_config"]["api_config_source"]["grpc_services"][0]
        assert grpc["envoy_grpc"]["cluster_name"] == "sds-grpc"
        combined = tls["common_tls_context"]["combined_validation_context"]
        assert combined["validation_context_sds_secret_config"]["name"] == "ROOTCA"
        # Nothing plaintext is accepted on the inbound side.
        assert all(c.get("transport_socket", {}).get("name") == "envoy.transport_sockets.tls"
                   for c in chains if c["name"] != "virtualInbound-blackhole")

        reviews = by_name(decoded(ads, CDS))[REVIEWS]
        matches = reviews["transport_socket_matches"]
        assert [m["name"] for m in matches] == ["tlsMode-istio", "tlsMode-disabled"]
        assert matches[0]["match"] == {"tlsMode": "istio"}
        upstream = matches[0]["transport_socket"]["typed_config"]
        assert upstream["sni"] == "outbound_.9080_._.reviews.default.svc.cluster.local"
        sans = upstream["common_tls_context"]["combined_validation_context"]["default_validation_context"]
        assert sorted(m["exact"] for m in sans["match_subject_alt_names"]) == [
            "spiffe://cluster.local/ns/default/sa/legacy",
            "spiffe://cluster.local/ns/default/sa/reviews",
        ]
        assert matches[1]["transport_socket"]["name"] == "envoy.transport_sockets.raw_buffer"

        [cla] = decoded(ads, EDS)
        modes = {}
        for group in cla["endpoints"]:
            for lb in group["lb_endpoints"]:
                md = lb.get("metadata", {}).get("filter_metadata", {}).get("envoy.transport_socket_match")
                modes[lb["endpoint"]["address"]["socket_address"]["address"]] = md and md["tlsMode"]
        assert modes == {"10.1.0.1": "istio", "10.1.0.2": None}

        # DISABLE mesh-wide: the next push drops the TLS chains and auto mTLS.
        (config / "policy.yaml").write_text(policy("DISABLE"))

        def plaintext():
            chains = by_name(decoded(ads, LDS))["virtualInbound"]["filter_chains"]
            cluster = by_name(decoded(ads, CDS))[REVIEWS]
            return all("transport_socket" not in c for c in chains) and "transport_socket_matches" not in cluster

        wait_until(plaintext, timeout=20, what="a plaintext push after DISABLE")
    finally:
        ads.close()


MESH_TLS = """
trustDomain: cluster.local
trustDomainAliases: [old.example]
meshMTLS: {minProtocolVersion: TLSV1_3}
tlsDefaults: {ecdhCurves: [X25519, P-256]}
"""

SIMPLE_TLS = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews.default.svc.cluster.local
  trafficPolicy: {tls: {mode: SIMPLE}}
"""


def test_mesh_tls_settings_and_auto_sni_reach_the_sidecar(tmp_path, istiod_factory):
    """meshMTLS and trust domain aliases on the inbound mTLS chains; tlsDefaults and auto
    SNI on a DestinationRule SIMPLE cluster without `sni`."""
    config = tmp_path / "config"
    config.mkdir()
    (config / "mesh.yaml").write_text(MESH)
    (config / "policy.yaml").write_text(policy("STRICT"))
    (config / "dr.yaml").write_text(SIMPLE_TLS)
    istiod = istiod_factory(config, mesh=MESH_TLS)
    ads = AdsStream(istiod.grpc_port, NODE, META)
    try:
        ads.subscribe(CDS)
        ads.subscribe(LDS)
        wait_until(lambda: ads.resources(CDS) and ads.resources(LDS), what="CDS and LDS")

        chains = by_name(decoded(ads, LDS))["virtualInbound"]["filter_chains"]
        tls_chains = [c for c in chains if "transport_socket" in c]
        assert len(tls_chains) == 3, [c["name"] for c in chains]
        for chain in tls_chains:
            common = chain["transport_socket"]["typed_config"]["common_tls_context"]
            params = common["tls_params"]
            assert params["tls_minimum_protocol_version"] == "TLSv1_3", chain["name"]
            assert params["tls_maximum_protocol_version"] == "TLSv1_3", chain["name"]
            sans = common["combined_validation_context"]["default_validation_context"]
            assert [m["prefix"] for m in sans["match_subject_alt_names"]] == [
                "spiffe://cluster.local/", "spiffe://old.example/"], chain["name"]

        reviews = by_name(decoded(ads, CDS))[REVIEWS]
        upstream = reviews["transport_socket"]["typed_config"]
        assert upstream.get("sni", "") == ""
        assert upstream["common_tls_context"]["tls_params"]["ecdh_curves"] == ["X25519", "P-256"]
        options = reviews["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
        assert options["upstream_http_protocol_options"] == {"auto_sni": True, "auto_san_validation": True}
        assert "http_protocol_options" in options["explicit_http_config"]
    finally:
        ads.close()


def test_skipping_trust_domain_validation_drops_the_san_check(tmp_path, istiod_factory):
    """PILOT_SKIP_VALIDATE_TRUST_DOMAIN=true, as upstream: inbound mTLS still requires a client
    certificate signed by the mesh roots, but no longer checks its trust domain."""
    config = tmp_path / "config"
    config.mkdir()
    (config / "mesh.yaml").write_text(MESH)
    (config / "policy.yaml").write_text(policy("STRICT"))
    istiod = istiod_factory(config, mesh=MESH_TLS, env={"PILOT_SKIP_VALIDATE_TRUST_DOMAIN": "true"})
    ads = AdsStream(istiod.grpc_port, NODE, META)
    try:
        ads.subscribe(LDS)
        wait_until(lambda: ads.resources(LDS), what="LDS")
        chains = by_name(decoded(ads, LDS))["virtualInbound"]["filter_chains"]
        tls_chains = [c for c in chains if "transport_socket" in c]
        assert tls_chains, [c["name"] for c in chains]
        for chain in tls_chains:
            tls = chain["transport_socket"]["typed_config"]
            assert tls["require_client_certificate"] is True, chain["name"]
            validation = tls["common_tls_context"]["combined_validation_context"]
            assert validation["validation_context_sds_secret_config"]["name"] == "ROOTCA"
            assert "match_subject_alt_names" not in validation.get("default_validation_context", {}), chain["name"]
    finally:
        ads.close()
