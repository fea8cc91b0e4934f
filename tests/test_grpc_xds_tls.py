"""The stock grpcio xDS client over the secure port (15012): TLS verified against the mesh
root, authenticated with a workload certificate issued by istiod's own CA."""

import json


from ca_support import Issuer, Istiod, key_pem, make_csr, new_key
from conftest import wait_until
from test_grpc_xds import PORT, SERVICE, Backend, Client, mesh_yaml, slice_yaml


def test_grpc_client_over_tls_with_workload_certificate(tmp_path):
    b1, b2 = Backend("backend-1", "127.0.0.1"), Backend("backend-2", "127.0.0.2")
    issuer = Issuer(tmp_path)
    # The client dials `localhost`; istiod adds it to its serving certificate's names.
    istiod = Istiod(tmp_path / "istiod", env={"JWT_RULE": issuer.rule(), "ISTIOD_CUSTOM_HOST": "localhost"})
    config = istiod.workdir / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "mesh.yaml").write_text(mesh_yaml(b1, b2))
    (config / "slice-1.yaml").write_text(slice_yaml("echo-1", b1))
    (config / "slice-2.yaml").write_text(slice_yaml("echo-2", b2))
    istiod.start()
    client = None
    try:
        key = new_key()
        chain = istiod.create_certificate(make_csr(key), issuer.token(ns="demo", sa="client"))
        (tmp_path / "cert.pem").write_text("".join(chain[:-1]))
        (tmp_path / "key.pem").write_bytes(key_pem(key))
        (tmp_path / "root.pem").write_bytes(istiod.root_pem())
        bootstrap = tmp_path / "bootstrap.json"
        bootstrap.write_text(json.dumps({
            "xds_servers": [{
                "server_uri": f"localhost:{istiod.secure}",
                "channel_creds": [{"type": "tls", "config": {
                    "ca_certificate_file": str(tmp_path / "root.pem"),
                    "certificate_file": str(tmp_path / "cert.pem"),
                    "private_key_file": str(tmp_path / "key.pem"),
                }}],
                "server_features": ["xds_v3"],
            }],
            "node": {
                "id": "sidecar~127.0.0.1~client-0.demo~demo.svc.cluster.local",
                "metadata": {"GENERATOR": "grpc", "NAMESPACE": "demo", "SERVICE_ACCOUNT": "client"},
            },
        }))
        client = Client(str(bootstrap), f"xds:///{SERVICE}:{PORT}", tmp_path / "client.log")
        seen = wait_until(
            lambda: (lambda c: c if c.get("backend-1") and c.get("backend-2") else None)(client.call(20)),
            timeout=60, what="calls over xDS-over-TLS reach both backends",
        )
        assert set(seen) == {"backend-1", "backend-2"}
        # istiod recorded the caller's identity for the connection.
        adsz = json.loads(urllib_get(f"http://127.0.0.1:{istiod.http}/debug/adsz"))
        assert [c["identity"] for c in adsz["clients"]] == ["spiffe://cluster.local/ns/demo/sa/client"]
    finally:
        if client:
            client.close()
        istiod.stop()
        b1.stop()
        b2.stop()


def urllib_get(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


