"""End to end: an HTTPS Gateway's certificate reaches the gateway proxy that serves it.

istiod runs on a --configDir holding a Service, a Gateway with a SIMPLE TLS server
(`credentialName: bookinfo-cert`) and the `kubernetes.io/tls` Secret it names, in the
gateway's namespace. The ingress gateway's Envoy is played twice over: on 15010 it asks for
its listeners, and the HTTPS chain names its certificate; on 15012, authenticated by a JWT
of its ServiceAccount, it asks for exactly that name over SDS and gets the Secret's
certificate and key, checked byte for byte — not those of the Secret of the same name in
another namespace: a gateway reads Secrets of its own namespace only."""

from __future__ import annotations

import yaml

from ca_support import Issuer, Istiod
from live_xds import LDS, AdsStream
from conftest import wait_until
from sds_support import SdsStream, certificate, inline, secrets_of, tls_secret
from test_sidecar_security import by_name, decoded

NS = "istio-system"
ROUTER = f"router~10.2.0.1~istio-ingressgateway-1.{NS}~{NS}.svc.cluster.local"
ROUTER_META = {"NAMESPACE": NS, "LABELS": {"istio": "ingressgateway"}, "ISTIO_VERSION": "1.32.0"}

CONFIG = """
apiVersion: v1
kind: Service
metadata: {name: productpage, namespace: default}
spec:
  clusterIP: 10.96.0.20
  ports: [{name: http, port: 9080, targetPort: 9080}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bookinfo-gateway, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [bookinfo.example.com]
    tls: {mode: SIMPLE, credentialName: bookinfo-cert}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: productpage, namespace: default}
spec:
  hosts: [bookinfo.example.com]
  gateways: [istio-system/bookinfo-gateway]
  http: [{route: [{destination: {host: productpage, port: {number: 9080}}}]}]
"""


def listener_secret_names(stream: AdsStream) -> list[str]:
    """The SDS secret names the router's listeners use for their certificates."""
    names = []
    for listener in by_name(decoded(stream, LDS)).values():
        for chain in listener["filter_chains"]:
            socket = chain.get("transport_socket", {}).get("typed_config", {})
            for sds in socket.get("common_tls_context", {}).get("tls_certificate_sds_secret_configs", []):
                names.append(sds["name"])
    return names


def test_https_gateway_gets_the_certificate_its_listener_names(tmp_path):
    issuer = Issuer(tmp_path)
    d = Istiod(tmp_path / "istiod", env={"JWT_RULE": issuer.rule(), "PILOT_DEBOUNCE_AFTER": "50ms"})
    cert, key = certificate("bookinfo.example.com")
    other_cert, other_key = certificate("elsewhere.example.com")
    config = d.workdir / "config"
    (config / "mesh.yaml").write_text(CONFIG)
    (config / "certs.yaml").write_text(yaml.safe_dump_all([
        tls_secret(NS, "bookinfo-cert", cert, key),
        # The same name in another namespace: never what this gateway gets.
        tls_secret("default", "bookinfo-cert", other_cert, other_key),
    ]))
    d.start()
    lds = AdsStream(d.grpc, ROUTER, ROUTER_META)
    channel = d.channel()
    sds = SdsStream(channel, NS, "istio-ingressgateway", issuer.token(ns=NS, sa="istio-ingressgateway"))
    try:
        lds.subscribe(LDS)
        wait_until(lambda: lds.resources(LDS), what="the router's listeners")
        names = listener_secret_names(lds)
        assert names == ["kubernetes://bookinfo-cert"], names

        got = secrets_of(sds.subscribe(names))
        assert list(got) == names
        tls = got["kubernetes://bookinfo-cert"]["tls_certificate"]
        assert (inline(tls["certificate_chain"]), inline(tls["private_key"])) == (cert, key)
    finally:
        sds.close()
        channel.close()
        lds.close()
        d.stop()
