"""Shared fixtures for end-to-end tests: the pilot-discovery binary, free ports, a running istiod."""

import os
import pathlib
import socket
import subprocess
import time
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def pilot_binary() -> str:
    path = os.environ.get("PILOT_DISCOVERY") or str(ROOT / "target" / "debug" / "pilot-discovery")
    if not os.path.exists(path):
        pytest.fail(f"pilot-discovery binary not found at {path}; run `cargo build -p pilot` or set PILOT_DISCOVERY")
    return path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - surfaced in the failure message below
            last = e
        time.sleep(interval)
    raise AssertionError(f"{what} not met within {timeout}s (last: {last!r})")


class Istiod:
    """A pilot-discovery process on ephemeral loopback ports."""

    def __init__(self, config_dir: pathlib.Path, log_path: pathlib.Path, extra_args=(), env=None,
                 mesh: str | None = None):
        """`mesh`: mesh config YAML, written beside the config folder; none: defaults."""
        mesh_path = config_dir / ".." / "mesh-does-not-exist"
        if mesh is not None:
            mesh_path = log_path.with_suffix(".mesh.yaml")
            mesh_path.write_text(mesh)
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.monitoring_port = free_port()
        args = [
            pilot_binary(), "discovery",
            "--registries=",
            "--configDir", str(config_dir),
            "--meshConfig", str(mesh_path),
            "--grpcAddr", f"127.0.0.1:{self.grpc_port}",
            "--httpAddr", f"127.0.0.1:{self.http_port}",
            "--monitoringAddr", f"127.0.0.1:{self.monitoring_port}",
            "--secureGRPCAddr=", "--httpsAddr=",
            *extra_args,
        ]
        full_env = dict(os.environ)
        full_env.update({"PILOT_DEBOUNCE_AFTER": "50ms", "RUST_BACKTRACE": "1"})
        full_env.update(env or {})
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=full_env)
        wait_until(self.ready, timeout=30, what="istiod /ready")

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"pilot-discovery exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/ready", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def get(self, path: str, port: int | None = None) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port or self.http_port}{path}", timeout=5) as r:
            return r.read().decode()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


@pytest.fixture
def istiod_factory(tmp_path):
    started = []

    def start(config_dir, **kw):
        d = Istiod(config_dir, tmp_path / f"istiod-{len(started)}.log", **kw)
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()


def _start_kube_cluster(workdir: pathlib.Path):
    """A started KubeCluster, or a skip (no API server binary here) or failure (one is, but
    the cluster did not start)."""
    from kube_cluster import KubeCluster, apiserver_binary

    binary, why_not = apiserver_binary()
    if binary is None:
        pytest.skip(why_not)
    cluster = KubeCluster(workdir, binary)
    try:
        return cluster.start()
    except Exception as e:  # noqa: BLE001 - reported as a failure with the server's log
        cluster.stop()
        pytest.fail(f"the live Kubernetes API server did not start: {e}", pytrace=False)


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory):
    """One real API server (etcd + kube-apiserver on loopback) shared by the session's live tests;
    the Istio CRDs are installed."""
    from kube_cluster import install_crds

    cluster = _start_kube_cluster(tmp_path_factory.mktemp("kube"))
    try:
        install_crds(cluster)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def own_kube_cluster(tmp_path_factory):
    """A real API server of the test's own, for tests that restart it or compact its etcd."""
    from kube_cluster import install_crds

    cluster = _start_kube_cluster(tmp_path_factory.mktemp("kube-own"))
    try:
        install_crds(cluster)
        yield cluster
    finally:
        cluster.stop()


# --- live tests must run where an API server is available -------------------------------------

_LIVE_FIXTURES = {"kube_cluster", "own_kube_cluster"}
_skipped_live: list[str] = []


def pytest_configure(config):
    config.addinivalue_line("markers", "live: needs the real Kubernetes API server (tests/kube_cluster.py)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _LIVE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.live)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and item.get_closest_marker("live") is not None:
        _skipped_live.append(item.nodeid)


def pytest_sessionfinish(session, exitstatus):
    """With an API server binary present (CI has one), a skipped live test fails the run."""
    from kube_cluster import shared_binary_present

    if _skipped_live and shared_binary_present():
        session.config.get_terminal_writer().line(
            f"error: {len(_skipped_live)} live Kubernetes test(s) skipped although an API server "
            f"binary is available: {', '.join(_skipped_live[:5])}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
