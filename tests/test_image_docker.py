"""The images in the local Docker engine: load, run, user, no shell, /ready on loopback."""

import time
import urllib.request
from pathlib import Path

import pytest

from image_support import DEV_TAG, REPOSITORY, ROOT, VERSION, loaded, run

RUNTIME = f"{REPOSITORY}:{VERSION}"
DEV = f"{REPOSITORY}:{DEV_TAG}"


@pytest.fixture(scope="module", autouse=True)
def images():
    refs = loaded()
    yield refs
    run(["docker", "rmi", "-f", RUNTIME, DEV], check=False)


def test_loaded_images_have_the_built_config():
    p = run(["docker", "image", "inspect", "--format", "{{.Config.User}} {{json .Config.Entrypoint}} {{json .Config.Cmd}}", RUNTIME])
    assert p.stdout.strip() == '1337:1337 ["/usr/local/bin/pilot-discovery"] null'


def test_runtime_runs_version():
    p = run(["docker", "run", "--rm", "--network", "none", RUNTIME, "version"])
    assert "Version" in p.stdout + p.stderr


def test_runtime_has_no_shell():
    p = run(["docker", "run", "--rm", "--network", "none", "--entrypoint", "sh", RUNTIME, "-c", "true"], check=False)
    assert p.returncode != 0
    assert "executable file not found" in p.stderr or "no such file" in p.stderr.lower(), p.stderr


def test_dev_has_a_shell_and_runs_as_root():
    p = run(["docker", "run", "--rm", "--network", "none", "--entrypoint", "sh", DEV, "-c", "id -u; for t in apt dpkg curl ps ip; do command -v $t; done"])
    lines = p.stdout.split()
    assert lines[0] == "0"
    assert len(lines) == 6, p.stdout
    p = run(["docker", "run", "--rm", "--network", "none", DEV, "version"])
    assert "Version" in p.stdout + p.stderr


def mesh_dir(tmp_path):
    d = ROOT / "docs/examples/mesh"
    if d.is_dir() and any(d.iterdir()):
        return d
    return tmp_path  # an empty config directory is a valid (empty) mesh


def test_runtime_serves_ready_as_uid_1337(tmp_path):
    mesh = mesh_dir(tmp_path)
    cid = run([
        "docker", "run", "-d", "--rm",
        "-p", "127.0.0.1::8080",
        "-v", f"{mesh}:/some/example/dir:ro",
        RUNTIME,
        "discovery", "--configDir", "/some/example/dir", "--registries=", "--secureGRPCAddr=", "--httpsAddr=",
    ]).stdout.strip()
    try:
        port = run(["docker", "port", cid, "8080/tcp"]).stdout.split()[0]
        host, _, num = port.rpartition(":")
        assert host == "127.0.0.1", port
        deadline = time.monotonic() + 60
        status, last = None, None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{num}/ready", timeout=2) as r:
                    status = r.status
                    if status == 200:
                        break
            except Exception as e:  # not listening yet
                last = e
            state = run(["docker", "inspect", "--format", "{{.State.Running}}", cid], check=False).stdout.strip()
            if state != "true":
                break
            time.sleep(0.2)
        logs = run(["docker", "logs", cid], check=False)
        assert status == 200, f"/ready never answered 200 ({last}); logs:\n{logs.stdout}\n{logs.stderr}"
        pid = run(["docker", "inspect", "--format", "{{.State.Pid}}", cid]).stdout.strip()
        status_file = Path(f"/proc/{pid}/status").read_text()
        uid_line = next(line for line in status_file.splitlines() if line.startswith("Uid:"))
        assert uid_line.split()[1:] == ["1337"] * 4, uid_line
    finally:
        run(["docker", "rm", "-f", cid], check=False)
