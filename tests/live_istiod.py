"""pilot-discovery against a live Kubernetes API server (tests/kube_cluster.py), on loopback ports.

`LiveIstiod(workdir, kubeconfig, namespace)` starts `pilot-discovery discovery --kubeconfig ...
--registries Kubernetes` with every listener on an ephemeral 127.0.0.1 port (the HTTPS webhook
port only when asked for), waits for `/ready` and offers the debug endpoints, the log, and a
way to stop or kill it.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import urllib.error
import urllib.request

from conftest import free_port, pilot_binary, wait_until


class LiveIstiod:
    """One pilot-discovery process reading a real cluster.

    - `kubeconfig`: the kubeconfig it uses (admin or a ServiceAccount token's).
    - `namespace`, `pod_name`: POD_NAMESPACE / POD_NAME (its own namespace: CA secret, mesh
      ConfigMap, leader locks).
    - `https`: also serve the webhook HTTPS port (`self.https`); off by default.
    - `secure_grpc`: serve the CA / xDS TLS port (`self.secure`); on by default.
    - `extra_args`, `env`: appended to the command line / merged over the environment.
    - `wait_ready`: wait for `/ready` (up to `ready_timeout` seconds) before returning.
    """

    def __init__(self, workdir: pathlib.Path, kubeconfig: pathlib.Path | str, namespace: str,
                 pod_name: str = "istiod-live", *, https: bool = False, secure_grpc: bool = True,
                 extra_args=(), env: dict | None = None, wait_ready: bool = True,
                 ready_timeout: float = 60.0):
        self.workdir = pathlib.Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.kubeconfig = str(kubeconfig)
        self.namespace = namespace
        self.pod_name = pod_name
        self.http, self.grpc, self.mon = free_port(), free_port(), free_port()
        self.secure = free_port() if secure_grpc else None
        self.https = free_port() if https else None
        self.log_path = self.workdir / f"{pod_name}.log"
        self._log = open(self.log_path, "ab")
        full_env = dict(os.environ)
        full_env.update({
            "POD_NAMESPACE": namespace, "POD_NAME": pod_name, "KUBECONFIG": self.kubeconfig,
            "PILOT_SELF_SIGNED_CA_DIR": str(self.workdir / f"{pod_name}-ca"),
            "PILOT_DEBOUNCE_AFTER": "50ms", "RUST_LOG": os.environ.get("RUST_LOG", "info"),
            "RUST_BACKTRACE": "1",
        })
        full_env.update(env or {})
        self.args = [
            pilot_binary(), "discovery", "--kubeconfig", self.kubeconfig, "--registries", "Kubernetes",
            "--grpcAddr", f"127.0.0.1:{self.grpc}", "--httpAddr", f"127.0.0.1:{self.http}",
            "--monitoringAddr", f"127.0.0.1:{self.mon}",
            f"--secureGRPCAddr={'127.0.0.1:%d' % self.secure if self.secure else ''}",
            f"--httpsAddr={'127.0.0.1:%d' % self.https if self.https else ''}",
            *extra_args,
        ]
        self.proc = subprocess.Popen(self.args, cwd=self.workdir, env=full_env, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        if wait_ready:
            try:
                wait_until(self.ready, timeout=ready_timeout, what=f"{pod_name} /ready")
            except BaseException:
                self.kill()
                raise

    # --- state ------------------------------------------------------------------------------

    def alive(self) -> bool:
        return self.proc.poll() is None

    def ready(self) -> bool:
        """True when `/ready` answers 200; raises with the log tail when the process exited."""
        if not self.alive():
            raise AssertionError(f"pilot-discovery exited with {self.proc.returncode}:\n{self.log_tail(60)}")
        return self.ready_status()[0] == 200

    def ready_status(self) -> tuple[int, str]:
        """`/ready`'s status and body (0 and the error when it does not answer)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/ready", timeout=2) as r:
                return r.status, r.read().decode(errors="replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")
        except OSError as e:
            return 0, str(e)

    # --- debug ------------------------------------------------------------------------------

    def debug(self, path: str, timeout: float = 5.0) -> str:
        """GET on the monitoring port (`/debug/...`, `/metrics`)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.mon}{path}", timeout=timeout) as r:
            return r.read().decode()

    def debug_json(self, path: str):
        return json.loads(self.debug(path))

    def get(self, path: str, timeout: float = 5.0) -> str:
        """GET on the plain HTTP port (`/ready`, `/debug/...` where served there)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}{path}", timeout=timeout) as r:
            return r.read().decode()

    # --- log --------------------------------------------------------------------------------

    def log_text(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait_log(self, needle: str, timeout: float = 30.0, start: int = 0) -> str:
        """Waits until `needle` appears in the log after character `start`; returns that line."""
        def find():
            text = self.log_text()[start:]
            for line in text.splitlines():
                if needle in line:
                    return line
            return None
        return wait_until(find, timeout=timeout, what=f"{needle!r} in {self.pod_name}'s log")

    def log_size(self) -> int:
        """The log's length so far: pass to `wait_log(start=...)` to look only at later lines."""
        return len(self.log_text())

    # --- lifecycle --------------------------------------------------------------------------

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code."""
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def kill(self) -> int:
        """SIGKILL (no drain, no lock release)."""
        if self.alive():
            self.proc.kill()
            self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
