"""`imagebuilder debug` on the local Docker engine: a toolbox from the dev image in the
runtime container's PID and network namespaces, its filesystem at /proc/1/root, exit codes,
clear errors, and no toolbox left behind (also after Ctrl-C)."""

import fcntl
import json
import os
import pty
import select
import signal
import struct
import subprocess
import termios
import time
import urllib.request
import uuid

import pytest

from image_support import DEV_TAG, REPOSITORY, ROOT, VERSION, build, docker_available, imagebuilder, run

RUNTIME = f"{REPOSITORY}:{VERSION}"
DEV = f"{REPOSITORY}:{DEV_TAG}"
LABEL = "io.hardened-mesh.debug.target"


@pytest.fixture(scope="module")
def images():
    docker_available()
    _, refs = build()
    for i in refs["images"]:
        p = run(["docker", "load", "-i", i["archive"]])
        assert i["reference"] in p.stdout, p.stdout
    yield
    run(["docker", "rmi", "-f", RUNTIME, DEV], check=False)


@pytest.fixture(scope="module")
def target(images):
    """The runtime image serving the example mesh; yields (name, id)."""
    name = f"debug-test-istiod-{os.getpid()}"
    mesh = ROOT / "docs/examples/mesh"
    cid = run([
        "docker", "run", "-d", "--name", name,
        "-p", "127.0.0.1::8080",
        "-v", f"{mesh}:/etc/istio/mesh:ro",
        RUNTIME,
        "discovery", "--registries=", "--configDir", "/etc/istio/mesh", "--secureGRPCAddr=", "--httpsAddr=",
    ]).stdout.strip()
    try:
        port = run(["docker", "port", cid, "8080/tcp"]).stdout.split()[0].rpartition(":")[2]
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                logs = run(["docker", "logs", cid], check=False)
                raise AssertionError(f"/ready never answered; logs:\n{logs.stdout}{logs.stderr}")
            time.sleep(0.2)
        yield name, cid
    finally:
        run(["docker", "rm", "-f", cid], check=False)


def toolboxes(cid):
    return run(["docker", "ps", "-aq", "--filter", f"label={LABEL}={cid}"]).stdout.split()


def debug(target, *cmd, check=True, image=DEV):
    name, cid = target
    p = run([imagebuilder(), "debug", name, "--image", image, "--", *cmd], check=check, timeout=120)
    assert toolboxes(cid) == [], "a toolbox container was left behind"
    return p


def test_ps_lists_the_targets_processes(target):
    p = debug(target, "ps")
    assert "pilot-discovery" in p.stdout, p.stdout
    # PID 1 of the shared namespace is the target, run as its own user.
    first = p.stdout.splitlines()[1].split()
    assert first[1] == "1" and "pilot-discovery" in first[7], p.stdout


def test_target_filesystem_at_proc_1_root_and_the_convenience_link(target):
    p = debug(target, "ls", "/proc/1/root/usr/local/bin")
    assert p.stdout.split() == ["pilot-discovery"], p.stdout
    p = debug(target, "cat", "/root/target/etc/os-release")
    assert "Debian" in p.stdout


def test_curl_reaches_the_target_on_localhost(target):
    p = debug(target, "curl", "-s", "localhost:8080/ready")
    assert p.stdout.strip() == "ready", p.stdout


def test_exit_code_and_stderr_of_the_command(target):
    p = debug(target, "sh", "-c", "echo out; echo err >&2; exit 7", check=False)
    assert p.returncode == 7
    assert p.stdout == "out\n" and p.stderr == "err\n", (p.stdout, p.stderr)


def test_unknown_container_is_a_clear_error(images):
    p = run([imagebuilder(), "debug", "no-such-container-here", "--image", DEV, "--", "ps"], check=False)
    assert p.returncode == 1
    assert "no such container: no-such-container-here" in p.stderr, p.stderr
    assert "docker ps" in p.stderr, p.stderr


def test_missing_image_says_how_to_load_it(target):
    p = debug(target, "ps", check=False, image="imagetest.local/not-loaded:1")
    assert p.returncode == 1
    assert "not present locally" in p.stderr and "docker load -i" in p.stderr, p.stderr


def test_stopped_container_is_a_clear_error(images):
    name = f"debug-test-stopped-{os.getpid()}"
    cid = run(["docker", "create", "--name", name, RUNTIME, "version"]).stdout.strip()
    try:
        p = run([imagebuilder(), "debug", name, "--image", DEV, "--", "ps"], check=False)
        assert p.returncode == 1
        assert f"container {name} is not running (created)" in p.stderr, p.stderr
        assert f"docker start {name}" in p.stderr, p.stderr
    finally:
        run(["docker", "rm", "-f", cid], check=False)


def test_daemon_unreachable_is_a_clear_error(tmp_path):
    env = dict(os.environ, DOCKER_HOST=f"unix://{tmp_path}/no.sock")
    p = run([imagebuilder(), "debug", "istiod", "--", "ps"], check=False, env=env)
    assert p.returncode == 1
    assert "cannot reach the Docker daemon" in p.stderr and "DOCKER_HOST" in p.stderr, p.stderr


def test_ctrl_c_removes_the_toolbox(target):
    name, cid = target
    proc = subprocess.Popen(
        [str(imagebuilder()), "debug", name, "--image", DEV, "--", "sleep", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not run(["docker", "ps", "-q", "--filter", f"label={LABEL}={cid}"]).stdout.strip():
            assert time.monotonic() < deadline, "toolbox never started"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert toolboxes(cid) == []


def read_until(fd, needle, timeout=30.0):
    buf = b""
    deadline = time.monotonic() + timeout
    while needle not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{needle!r} not seen; got:\n{buf.decode(errors='replace')}")
        r, _, _ = select.select([fd], [], [], left)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                chunk = b""
            if not chunk:
                raise AssertionError(f"EOF before {needle!r}; got:\n{buf.decode(errors='replace')}")
            buf += chunk
    return buf


def test_interactive_session_on_a_tty(target):
    """A real terminal: banner, the terminal's size, Ctrl-C interrupts a command, Ctrl-D ends."""
    name, cid = target
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 37, 111, 0, 0))
    proc = subprocess.Popen(
        [str(imagebuilder()), "debug", name, "--image", DEV],
        stdin=terminal, stdout=terminal, stderr=terminal, start_new_session=True,
    )
    os.close(terminal)
    try:
        read_until(controller, b"linked as /root/target")
        os.write(controller, b"stty size; echo size-$((1+1))\r")
        out = read_until(controller, b"size-2\r\n")
        assert b"37 111" in out, out
        # Ctrl-C reaches the toolbox's terminal: it interrupts the command, not the session.
        os.write(controller, b"sleep 30\r")
        time.sleep(0.5)
        os.write(controller, b"\x03")
        os.write(controller, b"echo alive-$((20+1))\r")
        read_until(controller, b"alive-21", timeout=10)
        os.write(controller, b"\x04")
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(controller)
    assert toolboxes(cid) == []


def test_kubernetes_ephemeral_container_on_a_live_cluster(kube_cluster, tmp_path):
    """`debug pod/NAME` adds the toolbox as an ephemeral container through a real API server
    (kube_cluster), with a kubeconfig allowed only what it needs (get pods, patch
    pods/ephemeralcontainers, watch pods). No kubelet runs there, so the toolbox never starts:
    the command waits its --timeout and says so; attaching and the session are not tested here
    (the Docker tests above cover the session)."""
    ns = f"debug-{uuid.uuid4().hex[:6]}"
    kube_cluster.kubectl("create", "namespace", ns)
    kube_cluster.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "istiod-0", "namespace": ns},
                        "spec": {"containers": [{"name": "discovery", "image": RUNTIME},
                                                {"name": "sidecar", "image": "example/sidecar"}]}})
    kube_cluster.kubectl("create", "serviceaccount", "debugger", "-n", ns)
    kube_cluster.kubectl("create", "role", "debug-pods", "--verb=get,list,watch", "--resource=pods", "-n", ns)
    kube_cluster.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                        "metadata": {"name": "debug-ephemeral", "namespace": ns},
                        "rules": [{"apiGroups": [""], "resources": ["pods/ephemeralcontainers"], "verbs": ["patch"]}]})
    for role in ("debug-pods", "debug-ephemeral"):
        kube_cluster.kubectl("create", "rolebinding", role, f"--role={role}", f"--serviceaccount={ns}:debugger",
                             "-n", ns)
    kubeconfig = kube_cluster.token_kubeconfig(tmp_path / "debugger.kubeconfig", kube_cluster.token(ns, "debugger"))

    binary = imagebuilder()
    started = time.monotonic()
    p = run([binary, "debug", "pod/istiod-0", "-n", ns, "-c", "sidecar", "--kubeconfig", kubeconfig,
             "--image", DEV, "--timeout", "3s", "--", "ps"], check=False, timeout=60)
    took = time.monotonic() - started
    assert p.returncode != 0, p.stdout + p.stderr
    assert f"added to pod {ns}/istiod-0 (target sidecar); waiting for it to start" in p.stderr, p.stderr
    assert "did not start within 3s" in p.stderr and "kubectl describe pod istiod-0" in p.stderr, p.stderr
    assert took < 30, f"the start wait is bounded by --timeout, took {took:.1f}s"
    name = p.stderr.split("Toolbox ", 1)[1].split(" ", 1)[0]

    pod = kube_cluster.get_json("pod", "istiod-0", "-n", ns)
    (ec,) = pod["spec"]["ephemeralContainers"]
    assert ec["name"] == name and name.startswith("debugger-"), (name, ec)
    assert ec["image"] == DEV and ec["targetContainerName"] == "sidecar", ec
    assert ec["args"][-1:] == ["ps"] and not ec.get("tty"), ec
    sc = ec["securityContext"]
    assert sc["runAsUser"] == 0 and sc["capabilities"]["add"] == ["SYS_PTRACE"], sc
    # The pod itself is unchanged: an ephemeral container is all the subresource may add.
    assert [c["name"] for c in pod["spec"]["containers"]] == ["discovery", "sidecar"], json.dumps(pod["spec"])

    # Without the subresource permission the API's refusal is explained, not a stack trace.
    kube_cluster.kubectl("delete", "rolebinding", "debug-ephemeral", "-n", ns)
    p = run([binary, "debug", "pod/istiod-0", "-n", ns, "--kubeconfig", kubeconfig, "--image", DEV,
             "--timeout", "3s", "--", "ps"], check=False, timeout=60)
    assert p.returncode != 0
    assert f"forbidden to patch pods/ephemeralcontainers in namespace {ns}" in p.stderr, p.stderr
    assert len(kube_cluster.get_json("pod", "istiod-0", "-n", ns)["spec"]["ephemeralContainers"]) == 1
