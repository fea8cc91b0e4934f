"""imagebuilder push against Debian's docker-registry on loopback, with and without auth."""

import base64
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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
    def __init__(self, root: Path, user=None, password=None, tls=None, token_realm=None):
        """docker-registry on loopback: htpasswd auth with `user`; TLS with `tls` (cert, key);
        token auth pointing clients at `token_realm` (tokens checked against the TLS cert)."""
        self.root = root
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.scheme = "https" if tls else "http"
        self.user, self.password = user, password
        http = f"addr: '{self.host}'"
        if tls:
            http += f", tls: {{certificate: {tls[0]}, key: {tls[1]}}}"
        cfg = [
            "version: 0.1",
            "log: {level: warn}",
            f"storage: {{filesystem: {{rootdirectory: {root / 'data'}}}}}",
            f"http: {{{http}}}",
        ]
        if user:
            htpasswd = root / "htpasswd"
            run(["htpasswd", "-Bbc", htpasswd, user, password])
            cfg.append(f"auth: {{htpasswd: {{realm: test, path: {htpasswd}}}}}")
        if token_realm:
            cfg.append(f"auth: {{token: {{realm: '{token_realm}', service: test, issuer: test, rootcertbundle: {tls[0]}}}}}")
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
        req = urllib.request.Request(f"{self.scheme}://{self.host}{path}")
        if self.user:
            tok = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            req.add_header("Authorization", f"Basic {tok}")
        if accept:
            req.add_header("Accept", accept)
        # The test registry's certificate is self-signed.
        insecure = ssl._create_unverified_context() if self.scheme == "https" else None
        with urllib.request.urlopen(req, timeout=10, context=insecure) as r:
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


class Recorder:
    """A TCP relay on loopback to `port` that keeps every byte clients sent through it."""

    def __init__(self, port):
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.lock = threading.Lock()
        self.chunks = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src, dst, record):
        try:
            while data := src.recv(65536):
                if record:
                    with self.lock:
                        self.chunks.append(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def sent(self):
        with self.lock:
            return b"".join(self.chunks)

    def close(self):
        self.listener.close()


def docker_config(tmp_path, host, user, password):
    cfg = tmp_path / "docker-config"
    cfg.mkdir()
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (cfg / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return {"DOCKER_CONFIG": str(cfg)}


def test_credentials_are_not_sent_to_a_plain_http_registry_without_the_flag(auth_registry, tmp_path):
    out, refs = build()
    relay = Recorder(auth_registry.port)
    env = {**os.environ, **docker_config(tmp_path, relay.host, "pusher", "correct-horse")}
    secret = base64.b64encode(b"pusher:correct-horse")
    try:
        args = [imagebuilder(), "push", "--out", out, "--registry", relay.host, "--namespace", NS]
        p = run(args, check=False, env=env)
        assert p.returncode != 0
        assert "needs --plain-http" in p.stderr, p.stderr
        sent = relay.sent()
        assert sent[:1] == b"\x16", "only a TLS handshake went out"
        assert secret not in sent and b"correct-horse" not in sent and b"authorization" not in sent.lower()
        assert json.loads(auth_registry.get("/v2/_catalog"))["repositories"] == []
        # With the flag, the same push through the same relay sends them, and succeeds.
        run(args + ["--plain-http"], env=env)
        assert re.search(rb"(?im)^authorization: basic " + re.escape(secret) + rb"\r$", relay.sent())
        assert skopeo_digest(auth_registry, VERSION, "pusher:correct-horse") == image(refs, "runtime")["manifest"]
    finally:
        relay.close()


class TokenRealm:
    """A plain-HTTP token endpoint that records every request it gets."""

    def __init__(self):
        self.requests = []
        realm = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                realm.requests.append((self.path, dict(self.headers)))
                body = b'{"token":"t"}'
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_credentials_are_not_sent_to_a_plain_http_token_realm(tmp_path):
    out, _ = build()
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"])
    realm = TokenRealm()
    (tmp_path / "registry").mkdir()
    reg = Registry(tmp_path / "registry", tls=(cert, key), token_realm=realm.url)
    try:
        env = {**os.environ, **docker_config(tmp_path, reg.host, "pusher", "correct-horse")}
        p = run([imagebuilder(), "push", "--out", out, "--registry", reg.host, "--namespace", NS, "--insecure"],
                check=False, env=env)
        assert p.returncode != 0
        assert f"refusing to send the credentials for {reg.host} over plain HTTP to {realm.url}" in p.stderr, p.stderr
        assert realm.requests == []
    finally:
        reg.stop()
        realm.close()
