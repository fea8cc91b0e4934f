"""End to end: a RequestAuthentication in --configDir whose jwksUri is served on loopback.
istiod fetches the keys and inlines them in the sidecar's inbound JWT filter, pushes new
keys when the server's change, inlines a key set nothing verifies against while the
server cannot be reached, and retries it until it can."""

import http.server
import json
import textwrap
import threading

import pytest

from conftest import free_port, wait_until
from live_xds import LDS, AdsStream

NODE = "sidecar~10.1.0.1~app.default~default.svc.cluster.local"
KEY_A = "a" * 40
KEY_B = "b" * 40
KEY_C = "c" * 40
# The modulus of the key set istiod inlines when it has no keys (security/jwks.rs).
REJECT_ALL = b"w_z0tiLIGRuum9uD7y1ybebxmo0w67KU5EE4DoQyeuKCOY593uii9Sat38u"


def jwks(n: str) -> bytes:
    return json.dumps({"keys": [{"kty": "RSA", "kid": n[:4], "e": "AQAB", "n": n}]}).encode()


class KeyServer:
    """An HTTP server on loopback answering `/jwks` with `body`."""

    def __init__(self, body: bytes, port: int = 0):
        self.body = body
        self.hits = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                outer.hits += 1
                self.send_response(200 if self.path == "/jwks" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def key_server():
    s = KeyServer(jwks(KEY_A))
    yield s
    s.close()


def request_authentication(name: str, issuer: str, uri: str) -> str:
    return textwrap.dedent(f"""\
        apiVersion: security.istio.io/v1
        kind: RequestAuthentication
        metadata: {{name: {name}, namespace: default}}
        spec:
          jwtRules:
          - issuer: {issuer}
            jwksUri: {uri}
            timeout: 2s
        """)


def test_jwks_uri_keys_reach_the_inbound_listener_and_follow_changes(tmp_path, istiod_factory, key_server):
    config = tmp_path / "config"
    config.mkdir()
    (config / "jwt.yaml").write_text(
        request_authentication("jwt", "https://issuer.example", f"http://127.0.0.1:{key_server.port}/jwks"))
    istiod = istiod_factory(config, env={"PILOT_JWT_PUB_KEY_REFRESH_INTERVAL": "1s"})
    ads = AdsStream(istiod.grpc_port, NODE, {"NAMESPACE": "default"})
    try:
        ads.subscribe(LDS)
        wait_until(lambda: KEY_A.encode() in ads.raw(LDS), timeout=30, what="fetched keys inlined")
        assert b"envoy.filters.http.jwt_authn" in ads.raw(LDS)
        assert REJECT_ALL not in ads.raw(LDS)

        # The refresh finds new keys and pushes them.
        key_server.body = jwks(KEY_B)
        wait_until(lambda: KEY_B.encode() in ads.raw(LDS), timeout=30, what="refreshed keys pushed")
        assert KEY_A.encode() not in ads.raw(LDS)

        # A source that cannot be reached: its tokens are rejected, the other's still verify.
        closed = free_port()
        (config / "broken.yaml").write_text(
            request_authentication("broken", "https://down.example", f"http://127.0.0.1:{closed}/jwks"))
        wait_until(lambda: REJECT_ALL in ads.raw(LDS), timeout=30, what="reject-all keys for the unreachable URI")
        assert KEY_B.encode() in ads.raw(LDS)

        # Once the server comes up, the retry finds its keys and pushes them.
        late = KeyServer(jwks(KEY_C), port=closed)
        try:
            wait_until(lambda: KEY_C.encode() in ads.raw(LDS), timeout=30, what="keys of the late server")
            assert REJECT_ALL not in ads.raw(LDS)
        finally:
            late.close()

        # Removing the policies removes the filter.
        (config / "jwt.yaml").unlink()
        (config / "broken.yaml").unlink()
        wait_until(lambda: b"envoy.filters.http.jwt_authn" not in ads.raw(LDS), timeout=30,
                   what="the filter gone with its policies")
    finally:
        ads.close()
    assert istiod.stop() == 0
