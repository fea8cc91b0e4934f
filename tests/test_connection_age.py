"""`--keepaliveMaxServerConnectionAge` on both gRPC ports (15010 plaintext, 15012 TLS): at the
maximum age the server sends GOAWAY, a stream still open is closed once the grace period
(10 s, as upstream) has passed, and the client reconnects and resumes on a new connection."""

import queue
import threading
import time

import grpc
import pytest

from ca_support import Issuer, Istiod, generated

CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
NODE = "sidecar~10.1.1.1~sleep-1.default~default.svc.cluster.local"
MAX_AGE = 2.0
GRACE = 10.0


@pytest.fixture(scope="module")
def aged(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("aged")
    issuer = Issuer(tmp)
    d = Istiod(tmp / "istiod", env={"JWT_RULE": issuer.rule()},
               args=["--keepaliveMaxServerConnectionAge", f"{MAX_AGE:g}s"]).start()
    yield d, issuer
    d.stop()


class Stream:
    """One ADS stream kept open: the first CDS request is sent, then nothing more."""

    def __init__(self, channel, token=None):
        gen = generated()
        self.requests = queue.Queue()
        self.requests.put(gen["ads"].DiscoveryRequest(node=gen["ads"].Node(id=NODE), type_url=CLUSTER))
        stub = gen["ads_grpc"].AggregatedDiscoveryServiceStub(channel)
        md = [("authorization", f"Bearer {token}")] if token else []
        self.call = stub.StreamAggregatedResources(iter(self.requests.get, None), metadata=md)

    def first(self):
        return next(self.call)

    def wait_end(self, timeout):
        """Seconds until the server ended the stream, and the status it ended with."""
        started = time.monotonic()
        ended = {}

        def drain():
            try:
                for _ in self.call:
                    pass
                ended["code"] = grpc.StatusCode.OK
            except grpc.RpcError as e:
                ended["code"] = e.code()

        t = threading.Thread(target=drain, daemon=True)
        t.start()
        t.join(timeout)
        if t.is_alive():
            self.call.cancel()
            raise AssertionError(f"the stream was still open after {timeout} s")
        return time.monotonic() - started, ended["code"]


def check_port(channel, token):
    stream = Stream(channel, token)
    assert stream.first().type_url == CLUSTER
    opened = time.monotonic()
    _, code = stream.wait_end(timeout=MAX_AGE + GRACE + 15)
    lived = time.monotonic() - opened
    # Closed by the server: not before the maximum age, and within age + grace (+ margin).
    assert code != grpc.StatusCode.OK, code
    assert lived >= MAX_AGE * 0.8, lived
    # The same channel reconnects; a new stream is served from the start.
    again = Stream(channel, token)
    assert again.first().type_url == CLUSTER
    again.call.cancel()
    return lived


def test_both_grpc_ports_close_aged_connections_and_clients_resume(aged):
    istiod, issuer = aged
    plaintext = grpc.insecure_channel(f"127.0.0.1:{istiod.grpc}")
    secure = istiod.channel()
    results = {}

    def run(name, channel, token):
        try:
            results[name] = check_port(channel, token)
        except BaseException as e:  # noqa: BLE001 - re-raised below with the port's name
            results[name] = e

    threads = [threading.Thread(target=run, args=("15010", plaintext, None)),
               threading.Thread(target=run, args=("15012", secure, issuer.token(ns="default")))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        plaintext.close()
        secure.close()
    for name, outcome in results.items():
        if isinstance(outcome, BaseException):
            raise AssertionError(f"port {name}: {outcome}") from outcome
    assert set(results) == {"15010", "15012"}, results
