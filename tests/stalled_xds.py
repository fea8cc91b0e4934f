"""Do clients that stop reading freeze pushes to everyone else? The scenario of
test_hostile_xds.py::test_stalled_clients_do_not_freeze_pushes, run against any
`pilot-discovery` — ours or upstream's Go istiod — and measured instead of asserted.

    python tests/stalled_xds.py --binary target/release/pilot-discovery
    python tests/stalled_xds.py --binary target/istiod-go-1.14 --upstream

The server starts in file mode (`--configDir`) with `--services` hosts, then `--stalled` CDS
streams open on raw HTTP/2 connections that offer a one-byte flow-control window and never
read (tests/grpc_raw.py), 10 per connection, with `PILOT_PUSH_THROTTLE` (2) push slots and
`PILOT_XDS_SEND_TIMEOUT=0s` (never close a stream that does not read: upstream's default).
A healthy client (grpcio, CDS wildcard) then waits for each of `--changes` config changes,
one more host each; the report says how long each took to reach it, or that it did not
within `--timeout` seconds.

As in the test, the stalled connections process nothing after they open: not even the
server's HTTP/2 keepalive PINGs, so a server with keepalive (both binaries: every 30 s, 10 s
to answer) closes them after about 40 s. With `--answer-pings` they keep processing frames —
answering PINGs — but still never reopen a window: a client whose connection is alive and
whose streams do not read, which keepalive does not end.

The hosts are ServiceEntries (STATIC, one endpoint), which both binaries read from a folder;
upstream's file mode reads no Kubernetes Services, and it stops syncing with many
ServiceEntry objects in one folder, so they are few objects with many hosts each."""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from conftest import free_port  # noqa: E402
from live_xds import CDS, AdsStream  # noqa: E402
from test_hostile_xds import NODE, stalled_streams  # noqa: E402

HOSTS_PER_ENTRY = 100


def service_entry(name: str, hosts: list[str], first_ip: int) -> str:
    """One ServiceEntry: `hosts` on HTTP port 80, one static endpoint."""
    a, b = divmod(first_ip, 250)
    return f"""apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: [{", ".join(hosts)}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 10.200.{a}.{b + 1}}}]
"""


def host(name: str) -> str:
    return f"{name}.example.internal"


def cluster(name: str) -> str:
    return f"outbound|80||{host(name)}"


def write(path: pathlib.Path, text: str):
    """Replaces `path` atomically."""
    tmp = path.parent.parent / f".{path.name}.tmp"
    tmp.write_text(text)
    os.replace(tmp, path)


class Server:
    """The binary under test on loopback ports, in file mode."""

    def __init__(self, binary: str, upstream: bool, config: pathlib.Path, work: pathlib.Path,
                 env: dict[str, str]):
        self.grpc_port, self.http_port, self.monitoring_port = free_port(), free_port(), free_port()
        args = [binary, "discovery", "--configDir", str(config), "--registries=",
                "--meshConfig", "/nonexistent",
                "--grpcAddr", f"127.0.0.1:{self.grpc_port}",
                "--httpAddr", f"127.0.0.1:{self.http_port}",
                "--monitoringAddr", f"127.0.0.1:{self.monitoring_port}",
                "--secureGRPCAddr=", "--httpsAddr="]
        full_env = {"PATH": "/usr/bin:/bin", "POD_NAMESPACE": "istio-system", "POD_NAME": "istiod-0"}
        if upstream:
            args += ["--kubeconfig=", "--networksConfig", "/nonexistent", "--federationAddr=",
                     "--ctrlz_address", "127.0.0.1", "--ctrlz_port", "0"]
            full_env.update({"ENABLE_CA_SERVER": "false", "PILOT_ENABLE_FEDERATION": "false"})
        full_env.update(env)
        self.log_path = work / "server.log"
        self.log = open(self.log_path, "wb")
        # Upstream writes files below its working directory: an empty one of its own.
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=full_env, cwd=work)
        started = time.monotonic()
        while not self.ready():
            if time.monotonic() - started > 60:
                raise SystemExit(f"not ready after 60 s; log: {self.log_path}")
            time.sleep(0.1)

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise SystemExit(f"the server exited ({self.proc.returncode}); log: {self.log_path}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def metric(self, name: str) -> float | None:
        """The sum of the samples of `name` on /metrics, None if there is none."""
        try:
            with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.monitoring_port}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return None
        values = [float(m.group(2)) for m in
                  (re.match(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)", line)
                   for line in text.splitlines()) if m]
        return sum(values) if values else None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class Pinger:
    """Processes the frames of `conns` (answering PINGs) without acknowledging data, until
    stopped."""

    def __init__(self, conns):
        self.conns, self.stop = conns, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.is_set():
            for c in self.conns:
                c.read(0.05, acknowledge=False)

    def close(self):
        self.stop.set()
        self.thread.join(timeout=5)


def wait_for(predicate, timeout: float) -> float | None:
    """Seconds until `predicate()` held, or None after `timeout`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.05)
    return None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--binary", required=True)
    p.add_argument("--upstream", action="store_true", help="the binary is upstream's Go istiod")
    p.add_argument("--services", type=int, default=300)
    p.add_argument("--stalled", type=int, default=30)
    p.add_argument("--throttle", default="2", help="PILOT_PUSH_THROTTLE ('' for the default)")
    p.add_argument("--send-timeout", default="0s", help="PILOT_XDS_SEND_TIMEOUT ('' for the default)")
    p.add_argument("--changes", type=int, default=5)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each change")
    p.add_argument("--answer-pings", action="store_true",
                   help="the stalled connections answer PINGs (but still never read)")
    args = p.parse_args()

    env = {}
    if args.throttle:
        env["PILOT_PUSH_THROTTLE"] = args.throttle
    if args.send_timeout:
        env["PILOT_XDS_SEND_TIMEOUT"] = args.send_timeout
    work = pathlib.Path(tempfile.mkdtemp(prefix="stalled-xds-"))
    config = work / "config"
    config.mkdir()
    names = [f"svc-{i}" for i in range(args.services)]
    for start in range(0, len(names), HOSTS_PER_ENTRY):
        chunk = names[start:start + HOSTS_PER_ENTRY]
        (config / f"entries-{start}.yaml").write_text(
            service_entry(f"entries-{start}", [host(n) for n in chunk], start))
    (work / "server").mkdir()
    binary = os.path.abspath(args.binary)
    server = Server(binary, args.upstream, config, work / "server", env)
    stalled, healthy, pinger = [], None, None
    results = []
    try:
        stalled = stalled_streams(server.grpc_port, args.stalled)
        if args.answer_pings:
            pinger = Pinger(stalled)
        healthy = AdsStream(server.grpc_port, NODE)
        healthy.subscribe(CDS)
        first = wait_for(lambda: cluster("svc-0") in healthy.cluster_names(), args.timeout)
        if first is None:
            raise SystemExit("the healthy client got no first CDS response")
        streams_before = server.metric("pilot_xds")
        for k in range(args.changes):
            extra = f"extra-{k}"
            write(config / f"{extra}.yaml",
                  service_entry(extra, [host(extra)], args.services + k))
            results.append((extra, wait_for(lambda: cluster(extra) in healthy.cluster_names(),
                                            args.timeout)))
        streams_after = server.metric("pilot_xds")
        still_ready = server.ready()
    finally:
        if pinger is not None:
            pinger.close()
        if healthy is not None:
            healthy.close()
        for c in stalled:
            c.close()
        server.stop()

    print("stalled_xds report")
    print(f"  binary:          {args.binary}{' (upstream)' if args.upstream else ''}")
    print(f"  config:          {args.services} hosts in ServiceEntries (--configDir)")
    print(f"  environment:     {' '.join(f'{k}={v}' for k, v in env.items()) or 'defaults'}")
    print(f"  stalled streams: {args.stalled} CDS streams, window 1 byte, never read "
          f"({(args.stalled + 9) // 10} connections), "
          f"{'answering PINGs' if args.answer_pings else 'not answering PINGs'}")
    print(f"  healthy client:  first CDS after {first:.2f} s")
    for name, took in results:
        got = f"{took:.2f} s" if took is not None else f"NOT received within {args.timeout:.0f} s"
        print(f"  change {name}: {got}")
    print(f"  pilot_xds:       {streams_before} before the changes, {streams_after} after")
    print(f"  still ready:     {still_ready}")
    print(f"  server log:      {server.log_path}")
    return 0 if all(t is not None for _, t in results) else 1


if __name__ == "__main__":
    sys.exit(main())
