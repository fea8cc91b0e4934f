"""End to end: Istio Gateway resources reach a gateway proxy (`router` node) over ADS.

istiod runs on a --configDir holding a Kubernetes Service with endpoints, a ServiceEntry,
a Gateway and VirtualServices. A raw ADS client connects as the ingress gateway's Envoy
and another as a sidecar; every resource is decoded with the `xds-protos` package, and
the names istioctl and dashboards rely on (listeners, route configs, secrets) are checked,
as is a VirtualService bound to both `mesh` and the Gateway reaching both proxies."""

from conftest import wait_until
from live_xds import CDS, EDS, LDS, RDS, AdsStream
from test_sidecar_security import by_name, decoded

ROUTER = "router~10.2.0.1~istio-ingressgateway-1.istio-system~istio-system.svc.cluster.local"
ROUTER_META = {"NAMESPACE": "istio-system", "LABELS": {"istio": "ingressgateway"}, "ISTIO_VERSION": "1.32.0"}
SIDECAR = "sidecar~10.1.0.9~productpage-1.default~default.svc.cluster.local"
SIDECAR_META = {"NAMESPACE": "default", "LABELS": {"app": "productpage"}, "ISTIO_VERSION": "1.32.0"}
HTTPS_ROUTE = "https.443.https.bookinfo-gateway.istio-system"

MESH = """
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 9080, targetPort: 9080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: reviews-1, namespace: default, labels: {kubernetes.io/service-name: reviews}}
addressType: IPv4
ports: [{name: http, port: 9080}]
endpoints: [{addresses: [10.1.0.1]}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings-external, namespace: default}
spec:
  hosts: [ratings.example.org]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{name: http, number: 80, protocol: HTTP}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bookinfo-gateway, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [bookinfo.example.com, ratings.example.org]
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [bookinfo.example.com]
    tls: {mode: SIMPLE, credentialName: bookinfo-cert}
"""


def virtual_service(gateways: str) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews, bookinfo.example.com]
  gateways: {gateways}
  http:
  - name: reviews-v2
    match: [{{uri: {{prefix: /v2}}}}]
    route: [{{destination: {{host: reviews, port: {{number: 9080}}}}}}]
  - name: reviews-all
    route: [{{destination: {{host: reviews, port: {{number: 9080}}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: ratings, namespace: default}}
spec:
  hosts: [ratings.example.org]
  gateways: [istio-system/bookinfo-gateway]
  http: [{{name: ratings, route: [{{destination: {{host: ratings.example.org}}}}]}}]
"""


def rds(listener: dict) -> list[str]:
    """The route config names of a listener's connection managers."""
    return [f["typed_config"]["rds"]["route_config_name"]
            for chain in listener["filter_chains"] for f in chain["filters"]
            if f["name"] == "envoy.filters.network.http_connection_manager"]


def route_names(config: dict, vhost: str) -> list[str]:
    return [r["name"] for r in by_name(config["virtual_hosts"])[vhost]["routes"]]


def test_gateway_and_mesh_virtual_service_reach_router_and_sidecar(tmp_path, istiod_factory):
    config = tmp_path / "config"
    config.mkdir()
    (config / "mesh.yaml").write_text(MESH)
    (config / "routes.yaml").write_text(virtual_service("[mesh, istio-system/bookinfo-gateway]"))
    istiod = istiod_factory(config)
    router = AdsStream(istiod.grpc_port, ROUTER, ROUTER_META)
    sidecar = AdsStream(istiod.grpc_port, SIDECAR, SIDECAR_META)
    try:
        router.subscribe(CDS)
        router.subscribe(LDS)
        wait_until(lambda: router.resources(CDS) and router.resources(LDS), what="router CDS and LDS")

        listeners = by_name(decoded(router, LDS))
        assert sorted(listeners) == ["0.0.0.0_443", "0.0.0.0_80"]
        assert rds(listeners["0.0.0.0_80"]) == ["http.80"]
        assert rds(listeners["0.0.0.0_443"]) == [HTTPS_ROUTE]
        [https] = listeners["0.0.0.0_443"]["filter_chains"]
        assert https["filter_chain_match"]["server_names"] == ["bookinfo.example.com"]
        tls = https["transport_socket"]["typed_config"]
        assert tls["@type"].endswith("DownstreamTlsContext")
        [cert] = tls["common_tls_context"]["tls_certificate_sds_secret_configs"]
        # The credential comes from istiod over the same ADS stream, by upstream's name.
        assert cert["name"] == "kubernetes://bookinfo-cert"
        assert "ads" in cert["sds_config"]
        assert listeners["0.0.0.0_443"]["listener_filters"][0]["name"] == "envoy.filters.listener.tls_inspector"

        clusters = by_name(decoded(router, CDS))
        assert "outbound|9080||reviews.default.svc.cluster.local" in clusters
        assert "outbound|80||ratings.example.org" in clusters
        assert "PassthroughCluster" not in clusters
        assert not any(name.startswith("inbound") for name in clusters)
        router.subscribe(EDS, ["outbound|9080||reviews.default.svc.cluster.local"])
        wait_until(lambda: router.endpoints("outbound|9080||reviews.default.svc.cluster.local"),
                   what="router EDS")

        router.subscribe(RDS, ["http.80", HTTPS_ROUTE])
        wait_until(lambda: len(router.resources(RDS)) == 2, what="router RDS")
        routes = by_name(decoded(router, RDS))
        http = routes["http.80"]
        assert sorted(v["name"] for v in http["virtual_hosts"]) == [
            "bookinfo.example.com:80", "ratings.example.org:80"]
        assert route_names(http, "bookinfo.example.com:80") == ["reviews-v2", "reviews-all"]
        assert route_names(routes[HTTPS_ROUTE], "bookinfo.example.com:443") == ["reviews-v2", "reviews-all"]
        action = by_name(http["virtual_hosts"])["ratings.example.org:80"]["routes"][0]["route"]
        assert action["cluster"] == "outbound|80||ratings.example.org"

        # The same VirtualService reaches the sidecar (bound to `mesh` too).
        sidecar.subscribe(LDS)
        wait_until(lambda: sidecar.resources(LDS), what="sidecar LDS")
        sidecar.subscribe(RDS, ["9080"])
        wait_until(lambda: sidecar.resources(RDS), what="sidecar RDS")
        [mesh_routes] = decoded(sidecar, RDS)
        assert route_names(mesh_routes, "reviews.default.svc.cluster.local:9080") == ["reviews-v2", "reviews-all"]
        assert not any(name.startswith("0.0.0.0_443") for name in by_name(decoded(sidecar, LDS)))

        # Bound to the Gateway only: the sidecar falls back to the default route, the
        # router keeps the rule.
        (config / "routes.yaml").write_text(virtual_service("[istio-system/bookinfo-gateway]"))

        def sidecar_default():
            [cfg] = decoded(sidecar, RDS)
            return route_names(cfg, "reviews.default.svc.cluster.local:9080") == ["default"]

        wait_until(sidecar_default, timeout=20, what="the sidecar's default route")
        routes = by_name(decoded(router, RDS))
        assert route_names(routes["http.80"], "bookinfo.example.com:80") == ["reviews-v2", "reviews-all"]
    finally:
        router.close()
        sidecar.close()


def test_a_router_no_gateway_selects_gets_no_listeners(tmp_path, istiod_factory):
    config = tmp_path / "config"
    config.mkdir()
    (config / "mesh.yaml").write_text(MESH)
    istiod = istiod_factory(config)
    other = AdsStream(istiod.grpc_port, ROUTER.replace("ingress", "egress"),
                      {**ROUTER_META, "LABELS": {"istio": "egressgateway"}})
    try:
        other.subscribe(CDS)
        other.subscribe(LDS)
        wait_until(lambda: other.resources(CDS), what="CDS")
        # LDS answers with no listener at all, and no sidecar listener either.
        wait_until(lambda: LDS in other.latest, what="an LDS response")
        assert other.resources(LDS) == []
        assert other.cluster_names() and "PassthroughCluster" not in other.cluster_names()
    finally:
        other.close()
