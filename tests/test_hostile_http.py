"""Hostile clients against istiod's listeners: label values they choose (AdmissionReview
fields, xDS type URLs, ISTIO_VERSION) never reach /metrics and do not grow it; clients that
never finish their headers or TLS handshakes are cut off without holding up others; oversized
webhook bodies are refused with 413. The exposition is read with the Prometheus client's own
parser."""

import json
import queue
import re
import socket
import threading
import time
import urllib.request

import grpc
import pytest
from google.protobuf import struct_pb2
from prometheus_client.parser import text_string_to_metric_families

from ca_support import generated
from conftest import wait_until
from test_validation_webhook import GATEWAY, SERVER_NAME, Webhook, answer, review

CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
HOSTILE = [
    'a"b',
    'x"} 1\nforged_metric{a="b"} 99\n# HELP forged_metric forged\n# TYPE forged_metric counter',
    "back\\slash",
    "}",
    "# HELP pilot_xds forged",
    "tab\there",
    "\u00e9\u2028",
]
# Label values istiod may write: fixed names, releases, status codes, and histogram bounds.
SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.:/+-]*$")
GUARD = 60  # seconds to wait for anything the server should do long before


def hostile(i: int) -> str:
    return f"{HOSTILE[i % len(HOSTILE)]}{i}"


@pytest.fixture(scope="module")
def istiod(tmp_path_factory):
    w = Webhook(tmp_path_factory.mktemp("hostile"))
    yield w
    w.stop()


def series(text: str) -> set:
    """Every sample of the exposition as (name, labels), parsed as Prometheus does."""
    out = set()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.add((s.name, tuple(sorted(s.labels.items()))))
    return out


def assert_clean(text: str):
    got = series(text)
    for name, labels in got:
        assert "forged" not in name, name
        for key, value in labels:
            assert SAFE_VALUE.match(value), (name, key, value)
    assert "forged" not in text
    return got


# --- label values a caller chooses -----------------------------------------------------------


def hostile_reviews(istiod, start: int, count: int):
    """AdmissionReviews whose group, version, resource, kind and operation are hostile text,
    each value distinct."""
    conn = istiod.connection()
    for i in range(start, start + count):
        body = review(GATEWAY)
        request = body["request"]
        request["resource"] = {"group": hostile(i), "version": hostile(i + 1), "resource": hostile(i + 2)}
        request["kind"] = {"group": hostile(i), "version": hostile(i + 1), "kind": hostile(i + 3)}
        if i % 2:
            request["operation"] = hostile(i)
        obj = dict(GATEWAY, kind=hostile(i), apiVersion=f"{hostile(i)}/{hostile(i + 1)}")
        if i % 3 == 0:
            request["object"] = obj
        status, text = istiod.post(body, conn=conn)
        assert status == 200, text


class Stream:
    """One ADS stream on the plaintext port, driven request by request."""

    def __init__(self, port: int, istio_version: str):
        gen = generated()
        self.ads = gen["ads"]
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        meta = struct_pb2.Struct()
        meta.update({"ISTIO_VERSION": istio_version})
        self.node = self.ads.Node(id="sidecar~10.1.1.1~sleep-1.default~default.svc.cluster.local",
                                  metadata=meta)
        self.requests = queue.Queue()
        stub = gen["ads_grpc"].AggregatedDiscoveryServiceStub(self.channel)
        self.call = stub.StreamAggregatedResources(iter(self.requests.get, None))
        self.responses = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        try:
            for r in self.call:
                self.responses.put(r)
        except grpc.RpcError:
            pass

    def send(self, type_url: str, nonce: str = "", error: str | None = None):
        req = self.ads.DiscoveryRequest(node=self.node, type_url=type_url, response_nonce=nonce)
        if error is not None:
            req.error_detail.code = 3
            req.error_detail.message = error
        self.requests.put(req)

    def response(self, type_url: str):
        deadline = time.monotonic() + GUARD
        while time.monotonic() < deadline:
            r = self.responses.get(timeout=GUARD)
            if r.type_url == type_url:
                return r
        raise AssertionError(f"no response for {type_url!r}")

    def close(self):
        self.requests.put(None)
        self.call.cancel()
        self.channel.close()


def hostile_streams(istiod, start: int, count: int) -> list:
    """ADS streams whose ISTIO_VERSION (a release or hostile text) and type URLs are distinct:
    each asks for an odd type, NACKs its response, and answers with a stale nonce."""
    streams = []
    for i in range(start, start + count):
        version = f"1.{i}.0" if i % 2 else hostile(i)
        s = Stream(istiod.grpc, version)
        streams.append(s)
        s.send(CLUSTER)
        cds = s.response(CLUSTER)
        s.send(CLUSTER, nonce=cds.nonce)
        for j in range(3):
            odd = hostile(i * 3 + j)
            s.send(odd)
            first = s.response(odd)
            s.send(odd, nonce=first.nonce, error=hostile(i))
            s.send(odd, nonce=f"stale-{hostile(j)}")
        # The stream has handled every request once it answers a later one.
        s.send(f"sync-{i}")
        s.response(f"sync-{i}")
    return streams


def test_caller_chosen_label_values_never_reach_metrics_and_series_stay_bounded(istiod):
    # 20 releases in each half: more than the 16 istiod counts apart.
    first = hostile_streams(istiod, 0, 40)
    hostile_reviews(istiod, 0, 1000)
    before = assert_clean(istiod.metrics())

    def has(name, **labels):
        # The parser names counter samples `<name>_total`, whatever the exposition says.
        return any(n in (name, f"{name}_total") and set(labels.items()) <= set(ls) for n, ls in before)

    # What the load was counted as.
    other = {"group": "other", "version": "other", "resource": "other"}
    assert has("galley_validation_passed", **other)
    assert has("galley_validation_failed", reason="unsupported_operation", **other)
    assert has("galley_validation_failed", reason="unknown_type", **other)
    assert has("pilot_xds_pushes", type="other") and has("pilot_xds_pushes", type="cds")
    assert has("pilot_total_xds_rejects", type="other")
    assert has("pilot_xds_expired_nonce", type="other")
    assert has("pilot_xds_config_size_bytes_bucket", type="other")
    assert has("pilot_xds_config_size_bytes_bucket", type=CLUSTER)
    assert has("pilot_xds", version="1.1.0") and has("pilot_xds", version="other")
    assert has("pilot_xds_write_timeout")

    # Twice the distinct values: not one more series.
    second = hostile_streams(istiod, 40, 40)
    hostile_reviews(istiod, 1000, 1000)
    after = assert_clean(istiod.metrics())
    assert after == before, sorted(after ^ before)
    releases = [labels for name, labels in after if name == "pilot_xds"]
    assert len(releases) <= 17, releases

    # A release leaves the gauge with its last proxy.
    for s in first + second:
        s.close()
    wait_until(lambda: "pilot_xds{" not in istiod.metrics(), timeout=GUARD,
               what="pilot_xds series removed once their proxies left")


# --- clients that never finish ---------------------------------------------------------------


def partial_request(sock):
    sock.sendall(b"POST /validate HTTP/1.1\r\nHost: istiod\r\nContent-Type: application/json\r\nX-Slow: ")


class Trickle:
    """Sockets that each send a byte of a header that never ends, every half second."""

    def __init__(self, socks):
        self.socks = socks
        self.closed = [False] * len(socks)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            for i, s in enumerate(self.socks):
                if self.closed[i]:
                    continue
                try:
                    s.sendall(b"a")
                except OSError:
                    self.closed[i] = True
            self.stop.wait(0.5)

    def close(self):
        self.stop.set()
        self.thread.join()
        for s in self.socks:
            s.close()


def closed_by_server(sock) -> bool:
    """True once the server has closed `sock` (end of stream or a reset), within GUARD."""
    sock.settimeout(GUARD)
    try:
        while True:
            if not sock.recv(4096):
                return True
    except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError):
        return True
    except (socket.timeout, TimeoutError):
        return False
    except OSError:
        return True


def test_slow_and_silent_clients_are_cut_off_without_holding_up_others(istiod):
    plain, tls_partial, handshakes = [], [], []
    for port in (istiod.http, istiod.mon):
        for _ in range(40):
            s = socket.create_connection(("127.0.0.1", port), timeout=GUARD)
            partial_request(s)
            plain.append(s)
    ctx = istiod.context()
    for _ in range(40):
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", istiod.https), timeout=GUARD),
                            server_hostname=SERVER_NAME)
        partial_request(s)
        tls_partial.append(s)
    for i in range(60):
        s = socket.create_connection(("127.0.0.1", istiod.https), timeout=GUARD)
        if i % 2:
            # The first bytes of a ClientHello, and no more.
            s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        handshakes.append(s)
    trickle = Trickle(plain + tls_partial)
    try:
        # Everyone else is served meanwhile.
        with urllib.request.urlopen(f"http://127.0.0.1:{istiod.http}/ready", timeout=GUARD) as r:
            assert r.status == 200
        assert "pilot_xds" in istiod.metrics()
        assert answer(istiod, review(GATEWAY), "v1")["allowed"] is True
        # And the server closes every one of them after the header or handshake deadline.
        for s in handshakes:
            assert closed_by_server(s), "a handshake that never completes is cut off"
        wait_until(lambda: all(trickle.closed), timeout=GUARD,
                   what="slow headers cut off on 8080, 15014 and 15017")
    finally:
        trickle.close()
        for s in handshakes:
            s.close()
    with urllib.request.urlopen(f"http://127.0.0.1:{istiod.http}/ready", timeout=GUARD) as r:
        assert r.status == 200


# --- oversized bodies ------------------------------------------------------------------------


def raw_https(istiod, head: bytes) -> bytes:
    """Sends `head` on a new TLS connection and reads until the server closes it."""
    s = istiod.context().wrap_socket(socket.create_connection(("127.0.0.1", istiod.https), timeout=GUARD),
                                     server_hostname=SERVER_NAME)
    try:
        s.sendall(head)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk
    finally:
        s.close()


def test_an_oversized_review_gets_413_and_the_server_keeps_serving(istiod):
    size = 7 * 1024 * 1024
    out = raw_https(istiod, (
        "POST /validate HTTP/1.1\r\nHost: istiod\r\nContent-Type: application/json\r\n"
        f"Content-Length: {size}\r\nConnection: close\r\n\r\n").encode())
    assert out.startswith(b"HTTP/1.1 413"), out[:200]
    # Within the limit: answered.
    body = json.dumps(review(GATEWAY)).encode()
    body += b" " * (6 * 1024 * 1024 - len(body))
    status, text = istiod.post(body)
    assert status == 200 and json.loads(text)["response"]["allowed"] is True, text[:200]
    assert answer(istiod, review(GATEWAY), "v1")["allowed"] is True
