"""Hostile and broken xDS clients on the plaintext port: none of them may freeze pushes to
healthy proxies, hold admission slots, or pin memory after it has gone.

The hostile clients speak raw HTTP/2 (tests/grpc_raw.py); the healthy proxy is grpcio's
client (tests/live_xds.py)."""

from __future__ import annotations

import re
import time
from urllib.parse import unquote

import grpc
import pytest

from ca_support import generated
from conftest import wait_until
from grpc_raw import RawConnection
from live_xds import CDS, EDS, AdsStream

import h2.exceptions
import h2.settings

NODE = "sidecar~10.1.1.1~sleep-1.default~default.svc.cluster.local"
DELTA_PATH = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"


def services_yaml(names, protocol="http"):
    docs = []
    for i, name in enumerate(names):
        a, b = divmod(i, 250)
        docs.append(f"""apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  clusterIP: 10.{a}.{b}.1
  ports: [{{name: {protocol}, port: 80, targetPort: 8080}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-1, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: {protocol}, port: 8080}}]
endpoints: [{{addresses: [10.200.{a}.{b}]}}]
""")
    return "---\n".join(docs)


def cluster(name):
    return f"outbound|80||{name}.default.svc.cluster.local"


def sotw_request(type_url=CDS, names=(), node=NODE) -> bytes:
    ads = generated()["ads"]
    return ads.DiscoveryRequest(node=ads.Node(id=node), type_url=type_url,
                                resource_names=list(names)).SerializeToString()


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    def varint(n):
        out = bytearray()
        while True:
            byte, n = n & 0x7F, n >> 7
            out.append(byte | (0x80 if n else 0))
            if not n:
                return bytes(out)
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def delta_request(type_url, subscribe=(), unsubscribe=(), node=NODE) -> bytes:
    """A DeltaDiscoveryRequest: node = 1, type_url = 2, subscribe = 3, unsubscribe = 4."""
    out = _field(1, _field(1, node.encode())) + _field(2, type_url.encode())
    out += b"".join(_field(3, n.encode()) for n in subscribe)
    out += b"".join(_field(4, n.encode()) for n in unsubscribe)
    return out


def metric(istiod, name) -> float:
    """The sum of every series of `name` on the monitoring port."""
    text = istiod.get("/metrics", port=istiod.monitoring_port)
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", line)
        if m:
            total += float(m.group(2))
    return total


def rss_kib(pid) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def start(istiod_factory, tmp_path, services, env=None):
    config = tmp_path / "config"
    config.mkdir(exist_ok=True)
    (config / "services.yaml").write_text(services_yaml(services))
    return istiod_factory(config, env=env), config


def stalled_streams(port, count, per_connection=10):
    """`count` CDS subscribers that offer a one-byte window and then never read again."""
    conns = []
    for i in range(0, count, per_connection):
        conn = RawConnection(port, window=1)
        for _ in range(min(per_connection, count - i)):
            conn.open(sotw_request(CDS))
        conn.read(0.3, acknowledge=False)
        conns.append(conn)
    return conns


def converge(client, config, names, changes):
    """Adds a service `changes` times; the client must receive each one."""
    for k in range(changes):
        extra = f"extra-{k}"
        names = names + [extra]
        (config / "services.yaml").write_text(services_yaml(names))
        wait_until(lambda: cluster(extra) in client.cluster_names(), timeout=30,
                   what=f"the healthy client receives {extra}")
    return names


def test_stalled_clients_do_not_freeze_pushes(istiod_factory, tmp_path):
    names = [f"svc-{i}" for i in range(300)]
    # Two push slots and no send timeout: only releasing the slot before waiting on a
    # client keeps pushes flowing past thirty clients that never read.
    istiod, config = start(istiod_factory, tmp_path, names,
                           env={"PILOT_PUSH_THROTTLE": "2", "PILOT_XDS_SEND_TIMEOUT": "0s"})
    stalled = stalled_streams(istiod.grpc_port, 30)
    healthy = AdsStream(istiod.grpc_port, NODE)
    try:
        healthy.subscribe(CDS)
        wait_until(lambda: cluster("svc-0") in healthy.cluster_names(), what="first CDS")
        converge(healthy, config, names, changes=5)
        assert metric(istiod, "pilot_xds") == 31, "the stalled streams are still connected"
    finally:
        healthy.close()
        for c in stalled:
            c.close()


def test_stalled_clients_are_closed_after_the_send_timeout(istiod_factory, tmp_path):
    names = [f"svc-{i}" for i in range(300)]
    istiod, config = start(istiod_factory, tmp_path, names,
                           env={"PILOT_XDS_SEND_TIMEOUT": "1s"})
    stalled = stalled_streams(istiod.grpc_port, 10)
    healthy = AdsStream(istiod.grpc_port, NODE)
    try:
        healthy.subscribe(CDS)
        wait_until(lambda: cluster("svc-0") in healthy.cluster_names(), what="first CDS")
        converge(healthy, config, names, changes=3)
        wait_until(lambda: metric(istiod, "pilot_xds_write_timeout") >= 10,
                   what="ten write timeouts counted")
        wait_until(lambda: metric(istiod, "pilot_xds") == 1,
                   what="only the healthy stream is still connected")
        assert metric(istiod, "pilot_xds_pushes") > 0
    finally:
        healthy.close()
        for c in stalled:
            c.close()


def test_aborted_streams_do_not_book_admission_slots(istiod_factory, tmp_path):
    istiod, _ = start(istiod_factory, tmp_path, ["svc-0"],
                      env={"PILOT_MAX_REQUESTS_PER_SECOND": "2"})
    # 300 streams opened and given up at once: at two admissions a second, booking a slot
    # for each would keep every new proxy out for two and a half minutes. HTTP/2's own guard
    # against rapid resets may close a flooding connection; the flood goes on over a new one.
    flooders, aborted = [], 0
    while aborted < 300:
        conn = RawConnection(istiod.grpc_port)
        flooders.append(conn)
        try:
            for _ in range(50):
                conn.cancel(conn.open(sotw_request(CDS)))
                aborted += 1
            conn.read(0.1)
        except (OSError, h2.exceptions.ProtocolError):
            continue
    healthy = AdsStream(istiod.grpc_port, NODE)
    try:
        healthy.subscribe(CDS)
        wait_until(lambda: cluster("svc-0") in healthy.cluster_names(), timeout=15,
                   what="a new proxy is admitted after the aborted flood")
    finally:
        healthy.close()
        for c in flooders:
            c.close()


def test_stream_limits(istiod_factory, tmp_path):
    istiod, _ = start(istiod_factory, tmp_path, ["svc-0"],
                      env={"PILOT_MAX_XDS_STREAMS": "3", "ISTIO_GPRC_MAXSTREAMS": "5"})
    clients = [AdsStream(istiod.grpc_port, NODE) for _ in range(3)]
    extra = RawConnection(istiod.grpc_port)
    try:
        for c in clients:
            c.subscribe(CDS)
        for c in clients:
            wait_until(lambda: cluster("svc-0") in c.cluster_names(), what="CDS")
        # The per-connection limit is advertised in the server's HTTP/2 settings.
        extra.read(0.3)
        assert extra.remote_setting(h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS) == 5
        # A fourth stream is refused with a status that says why.
        sid = extra.open(sotw_request(CDS))
        wait_until(lambda: extra.read(0.2) or sid in extra.ended, what="the fourth stream ends")
        assert extra.ended[sid]["grpc-status"] == str(grpc.StatusCode.RESOURCE_EXHAUSTED.value[0])
        assert "PILOT_MAX_XDS_STREAMS" in unquote(extra.ended[sid].get("grpc-message", ""))
        # A place freed is a place taken.
        clients.pop().close()
        again = AdsStream(istiod.grpc_port, NODE)
        clients.append(again)
        again.subscribe(CDS)
        wait_until(lambda: cluster("svc-0") in again.cluster_names(), what="CDS after a close")
    finally:
        extra.close()
        for c in clients:
            c.close()


def test_too_many_types_or_names_end_the_stream(istiod_factory, tmp_path):
    istiod, _ = start(istiod_factory, tmp_path, ["svc-0"])
    conn = RawConnection(istiod.grpc_port)
    try:
        types = conn.open(sotw_request("type.googleapis.com/made.up.T0"))
        for i in range(1, 70):
            conn.send(types, sotw_request(f"type.googleapis.com/made.up.T{i}"))
        names = conn.open(sotw_request(EDS, [f"n{i}" for i in range(100_001)]))
        wait_until(lambda: conn.read(0.2) or {types, names} <= conn.ended.keys(),
                   what="both streams end")
        exhausted = str(grpc.StatusCode.RESOURCE_EXHAUSTED.value[0])
        assert conn.ended[types]["grpc-status"] == exhausted
        assert "resource types" in unquote(conn.ended[types]["grpc-message"])
        assert conn.ended[names]["grpc-status"] == exhausted
        assert "resource names" in unquote(conn.ended[names]["grpc-message"])
        assert istiod.ready()
    finally:
        conn.close()


def made_up_endpoints(batch, count):
    return [f"outbound|80||made-up-{batch}-{i}.nowhere.svc.cluster.local" for i in range(count)]


def test_huge_requests_leave_no_memory_behind(istiod_factory, tmp_path):
    istiod, _ = start(istiod_factory, tmp_path, [f"svc-{i}" for i in range(50)])
    pid = istiod.proc.pid
    healthy = AdsStream(istiod.grpc_port, NODE)
    healthy.subscribe(CDS)
    wait_until(lambda: cluster("svc-0") in healthy.cluster_names(), what="first CDS")
    baseline = rss_kib(pid)
    peak = baseline
    # 60 short-lived streams, ten at a time, each asking EDS for 40,000 made-up names, and
    # delta streams that only unsubscribe from names they never had.
    for batch in range(6):
        conn = RawConnection(istiod.grpc_port)
        sids = [conn.open(sotw_request(EDS, made_up_endpoints(batch * 10 + k, 40_000)))
                for k in range(10)]
        wait_until(lambda: conn.read(0.5) or all(conn.messages(s) for s in sids), timeout=60,
                   what="every huge request answered")
        delta = conn.open(delta_request(EDS, subscribe=["outbound|80||svc-0.default.svc.cluster.local"]),
                          path=DELTA_PATH)
        for k in range(5):
            conn.send(delta, delta_request(EDS, unsubscribe=made_up_endpoints(1000 + k, 20_000)))
        conn.read(0.5)
        peak = max(peak, rss_kib(pid))
        conn.close()
    wait_until(lambda: metric(istiod, "pilot_xds") == 1, what="the huge streams are gone")
    # What the requests held is released and handed back to the system (jemalloc's
    # background thread purges freed pages after its decay time, ~10 s): the process ends
    # near where it started, far below the peak.
    after = wait_until(lambda: (rss := rss_kib(pid)) - baseline < 50 * 1024 and rss,
                       timeout=40, interval=1, what=f"RSS back within 50 MiB of {baseline} KiB")
    print(f"RSS KiB: baseline {baseline}, peak {peak}, after close {after}")
    assert peak - baseline > 100 * 1024, "the requests did not cost memory: the test proves nothing"
    healthy.close()
