"""imagebuilder push against Debian's docker-registry on loopback, with and without auth."""

import base64
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from image_support import DEV_TAG, VERSION, build, docker_available, image, imagebuilder, run

NS = "mirror"
REPO = f"{NS}/dhi-istio-pilot"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Registry:
    def __init__(self, root: Path, user=None, password=None):
        self.root = root
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.user, self.password = user, password
        cfg = [
            "version: 0.1",
            "log: {level: warn}",
            f"storage: {{filesystem: {{rootdirectory: {root / 'data'}}}}}",
            f"http: {{addr: '{self.host}'}}",
        ]
        if user:
            htpasswd = root / "htpasswd"
            run(["htpasswd", "-Bbc", htpasswd, user, password])
            cfg.append(f"auth: {{htpasswd: {{realm: test, path: {htpasswd}}}}}")
        (root / "config.yml").write_text("\n".join(cfg) + "\n")
        self.log = open(root / "registry.log", "w")
        self.proc = subprocess.Popen(["docker-registry", "serve", str(root / "config.yml")], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                self.get("/v2/")
                return
            except urllib.error.HTTPError:
                return  # 401 means it is up
            except OSError:
                if self.proc.poll() is not None:
                    raise AssertionError(f"registry exited: {(root / 'registry.log').read_text()}")
                time.sleep(0.05)
        raise AssertionError("registry did not start")

    def get(self, path, accept=None):
        req = urllib.request.Request(f"http://{self.host}{path}")
        if self.user:
            tok = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            req.add_header("Authorization", f"Basic {tok}")
        if accept:
            req.add_header("Accept", accept)
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.read()

    def tags(self):
        try:
            return json.loads(self.get(f"/v2/{REPO}/tags/list")).get("tags") or []
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return []
            raise

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.log.close()


@pytest.fixture
def registry(tmp_path):
    r = Registry(tmp_path)
    yield r
    r.stop()


@pytest.fixture
def auth_registry(tmp_path):
    r = Registry(tmp_path, "pusher", "correct-horse")
    yield r
    r.stop()


def push(reg, *extra, env=None, check=True):
    out, _ = build()
    args = [imagebuilder(), "push", "--out", out, "--registry", reg.host, "--namespace", NS, "--plain-http", *extra]
    return run(args, check=check, env={**os.environ, **(env or {})})


def skopeo_digest(reg, tag, creds=None):
    args = ["skopeo", "inspect", "--tls-verify=false", "--format", "{{.Digest}}"]
    if creds:
        args += ["--creds", creds]
    return run(args + [f"docker://{reg.host}/{REPO}:{tag}"]).stdout.strip()


def check_sbom_referrer(reg, variant):
    out, refs = build()
    subject = image(refs, variant)["manifest"]
    fallback = json.loads(reg.get(f"/v2/{REPO}/manifests/{subject.replace(':', '-')}", "application/vnd.oci.image.index.v1+json"))
    sboms = [m for m in fallback["manifests"] if m.get("artifactType") == "application/vnd.cyclonedx+json"]
    assert len(sboms) == 1, fallback
    art = json.loads(reg.get(f"/v2/{REPO}/manifests/{sboms[0]['digest']}", "application/vnd.oci.image.manifest.v1+json"))
    assert art["subject"]["digest"] == subject
    assert art["artifactType"] == "application/vnd.cyclonedx+json"
    blob = reg.get(f"/v2/{REPO}/blobs/{art['layers'][0]['digest']}")
    assert blob == (out / "sbom" / f"{variant}.cdx.json").read_bytes()


def docker_pull(reg, tag, config=None):
    docker_available()
    ref = f"{reg.host}/{REPO}:{tag}"
    base = ["docker"] + (["--config", config] if config else [])
    try:
        run(base + ["pull", ref])
        return run(["docker", "image", "inspect", "--format", "{{.Config.User}}", ref]).stdout.strip()
    finally:
        run(["docker", "rmi", "-f", ref], check=False)


def test_push_without_auth(registry):
    _, refs = build()
    p = push(registry, "--tag", "stable")
    pushed = json.loads(p.stdout)
    assert {x["digest"] for x in pushed} == {image(refs, "runtime")["manifest"], image(refs, "dev")["manifest"]}
    assert not any(x["referrers_api"] for x in pushed), "docker-registry 2.8 has no referrers API"
    assert skopeo_digest(registry, VERSION) == image(refs, "runtime")["manifest"]
    assert skopeo_digest(registry, DEV_TAG) == image(refs, "dev")["manifest"]
    assert skopeo_digest(registry, "stable") == image(refs, "runtime")["manifest"]
    assert skopeo_digest(registry, "stable-dev") == image(refs, "dev")["manifest"]
    for v in ("runtime", "dev"):
        check_sbom_referrer(registry, v)
    # A second push finds every blob and leaves one referrer per image.
    push(registry)
    check_sbom_referrer(registry, "runtime")
    assert docker_pull(registry, VERSION) == "1337:1337"


def test_push_second_namespace_mounts_blobs(registry):
    out, _ = build()
    p = run([imagebuilder(), "push", "--out", out, "--registry", registry.host, "--namespace", "first", "--namespace", "second", "--plain-http"])
    assert "mounted=5" in p.stderr, p.stderr
    assert "uploaded=0" in p.stderr.split("second/dhi-istio-pilot")[1]


def test_push_with_htpasswd_auth_from_docker_login(auth_registry, tmp_path):
    _, refs = build()
    cfg = tmp_path / "docker-config"
    cfg.mkdir()
    run(["docker", "--config", cfg, "login", auth_registry.host, "-u", "pusher", "--password-stdin"], input="correct-horse")
    assert auth_registry.host in json.loads((cfg / "config.json").read_text())["auths"]
    push(auth_registry, env={"DOCKER_CONFIG": str(cfg)})
    creds = "pusher:correct-horse"
    assert skopeo_digest(auth_registry, VERSION, creds) == image(refs, "runtime")["manifest"]
    assert skopeo_digest(auth_registry, DEV_TAG, creds) == image(refs, "dev")["manifest"]
    check_sbom_referrer(auth_registry, "runtime")
    assert docker_pull(auth_registry, DEV_TAG, config=cfg) in ("0:0", "root", "")


def test_wrong_password_is_a_clear_error_and_pushes_nothing(auth_registry, tmp_path):
    cfg = tmp_path / "docker-config"
    cfg.mkdir()
    bad = base64.b64encode(b"pusher:wrong").decode()
    (cfg / "config.json").write_text(json.dumps({"auths": {auth_registry.host: {"auth": bad}}}))
    p = push(auth_registry, env={"DOCKER_CONFIG": str(cfg)}, check=False)
    assert p.returncode != 0
    assert f"authentication to {auth_registry.host} failed" in p.stderr, p.stderr
    assert json.loads(auth_registry.get("/v2/_catalog"))["repositories"] == []
    assert not list((auth_registry.root / "data").rglob("data")), "no blob was stored"


def test_push_killed_midway_leaves_no_partial_tag_and_rerun_completes(registry):
    out, refs = build()
    blobs = registry.root / "data" / "docker/registry/v2/blobs"
    args = [imagebuilder(), "push", "--out", out, "--registry", registry.host, "--namespace", NS, "--plain-http"]
    proc = subprocess.Popen([str(a) for a in args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if blobs.exists() and any(blobs.rglob("data")):
            break
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "push finished before it could be killed"
    # Any tag that exists points at a manifest whose blobs are all there.
    for tag in registry.tags():
        m = json.loads(registry.get(f"/v2/{REPO}/manifests/{tag}", "application/vnd.oci.image.manifest.v1+json"))
        for d in [m["config"]["digest"]] + [layer["digest"] for layer in m["layers"]]:
            registry.get(f"/v2/{REPO}/blobs/{d}")
    assert VERSION not in registry.tags() or DEV_TAG not in registry.tags()
    push(registry)
    assert skopeo_digest(registry, VERSION) == image(refs, "runtime")["manifest"]
    assert skopeo_digest(registry, DEV_TAG) == image(refs, "dev")["manifest"]
    check_sbom_referrer(registry, "dev")


def test_policy_is_checked_again_before_pushing(registry):
    p = push(registry, "--size-budget-mib", "1", check=False)
    assert p.returncode != 0
    assert "image policy violated" in p.stderr and "over the budget" in p.stderr, p.stderr
    assert registry.tags() == []
