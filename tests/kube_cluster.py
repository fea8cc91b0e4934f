"""A real Kubernetes API server for the live tests: etcd and kube-apiserver on loopback.

The API server binary comes from `KUBE_APISERVER` or, decompressed once into `target/`, from
`../shared/bin/kube-apiserver-*.xz` beside the project. etcd comes from Debian's `etcd-server`
(`scripts/install-deps.sh`). Certificates are made fresh for each cluster: a CA, the serving
certificate, an admin client certificate in `system:masters` and an ECDSA service-account
signing key. `--api-audiences` is the API server's own issuer only, so a token must ask for
`istio-ca` explicitly to be accepted by istiod's CA.

There is no kubelet, scheduler or controller-manager: Pods are stored, never run; namespaces
are never emptied; service accounts are not created per namespace (the `ServiceAccount`
admission plugin is off so Pods can be stored without one).

Where no binary can be found, `available()` says why and the live tests skip with that
message. Where one exists but the cluster cannot start, the fixture fails: a test that did
not run must never be counted as passed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import lzma
import os
import pathlib
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED_BIN = ROOT.parent / "shared" / "bin"
ISSUER = "https://kubernetes.default.svc.cluster.local"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def apiserver_binary() -> tuple[str | None, str]:
    """The kube-apiserver to run, or None and the reason there is none."""
    explicit = os.environ.get("KUBE_APISERVER")
    if explicit:
        if os.access(explicit, os.X_OK):
            return explicit, ""
        return None, f"KUBE_APISERVER={explicit} is not an executable file"
    archives = sorted(SHARED_BIN.glob("kube-apiserver-*.xz"))
    if not archives:
        return None, (f"no kube-apiserver: set KUBE_APISERVER or provide {SHARED_BIN}/kube-apiserver-*.xz "
                      "to run the live Kubernetes tests")
    archive = archives[-1]
    target = ROOT / "target" / archive.name.removesuffix(".xz")
    stamp = target.with_suffix(".source")
    source_id = f"{archive} {archive.stat().st_size} {archive.stat().st_mtime_ns}"
    if not (target.exists() and stamp.exists() and stamp.read_text() == source_id):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        with lzma.open(archive) as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        tmp.chmod(0o755)
        tmp.replace(target)
        stamp.write_text(source_id)
    return str(target), ""


def shared_binary_present() -> bool:
    """True where the project sits beside a `shared/bin` with an API server: then live tests must run."""
    return bool(os.environ.get("KUBE_APISERVER")) or any(SHARED_BIN.glob("kube-apiserver-*.xz"))


def _openssl(*args: str, cwd: pathlib.Path):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_certs(d: pathlib.Path):
    """CA, serving cert (loopback SANs), admin client cert (system:masters), SA signing key."""
    if (d / "admin.crt").exists():
        return
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "30",
             "-subj", "/CN=live-test-kube-ca", cwd=d)
    (d / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
        "DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n"
        "extendedKeyUsage=serverAuth\n")
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name, subj, ext in [("server", "/CN=kube-apiserver", "server.ext"),
                            ("admin", "/O=system:masters/CN=live-test-admin", "client.ext")]:
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subj, cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.crt", "-days", "30", "-extfile", ext, cwd=d)
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "sa.key", cwd=d)
    _openssl("ec", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)


class KubeCluster:
    """etcd plus kube-apiserver in `workdir`; `kubeconfig` is an admin kubeconfig."""

    def __init__(self, workdir: pathlib.Path, apiserver: str):
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.apiserver_bin = apiserver
        etcd = shutil.which("etcd")
        if etcd is None:
            raise RuntimeError("etcd not found on PATH: install Debian's etcd-server (scripts/install-deps.sh)")
        self.etcd_bin = etcd
        _make_certs(self.dir)
        self.etcd_port = _free_port()
        self.api_port = _free_port()
        self.etcd: subprocess.Popen | None = None
        self.apiserver: subprocess.Popen | None = None
        self.kubeconfig = self.dir / "kubeconfig"
        self.server = f"https://127.0.0.1:{self.api_port}"
        self._write_kubeconfig(self.kubeconfig, {"client-certificate": str(self.dir / "admin.crt"),
                                                 "client-key": str(self.dir / "admin.key")})
        self._ssl = ssl.create_default_context(cafile=str(self.dir / "ca.crt"))
        self._ssl.load_cert_chain(str(self.dir / "admin.crt"), str(self.dir / "admin.key"))

    # --- lifecycle -------------------------------------------------------------------------

    def start(self):
        self.start_etcd()
        self.start_apiserver()
        return self

    def start_etcd(self):
        peer = _free_port()
        log = open(self.dir / "etcd.log", "ab")
        self.etcd = subprocess.Popen(
            [self.etcd_bin, "--name", "live", "--data-dir", str(self.dir / "etcd"),
             "--listen-client-urls", f"http://127.0.0.1:{self.etcd_port}",
             "--advertise-client-urls", f"http://127.0.0.1:{self.etcd_port}",
             "--listen-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-cluster", f"live=http://127.0.0.1:{peer}",
             "--unsafe-no-fsync", "--logger", "zap", "--log-outputs", "stderr"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def start_apiserver(self):
        log = open(self.dir / "apiserver.log", "ab")
        d = self.dir
        self.apiserver = subprocess.Popen(
            [self.apiserver_bin, "--bind-address=127.0.0.1", f"--secure-port={self.api_port}",
             "--advertise-address=127.0.0.1", "--endpoint-reconciler-type=none",
             f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
             f"--tls-cert-file={d / 'server.crt'}", f"--tls-private-key-file={d / 'server.key'}",
             f"--client-ca-file={d / 'ca.crt'}",
             f"--service-account-issuer={ISSUER}", f"--service-account-key-file={d / 'sa.pub'}",
             f"--service-account-signing-key-file={d / 'sa.key'}", f"--api-audiences={ISSUER}",
             "--service-cluster-ip-range=10.96.0.0/16", "--authorization-mode=Node,RBAC",
             "--disable-admission-plugins=ServiceAccount", f"--cert-dir={d / 'certs'}"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.wait_ready()

    def wait_ready(self, timeout: float = 90.0):
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for name, proc in (("etcd", self.etcd), ("kube-apiserver", self.apiserver)):
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}: {self.log_tail(name)}")
            try:
                status, body = self.request("GET", "/readyz")
                if status == 200:
                    return
                last = body.decode(errors="replace")[-300:]
            except OSError as e:
                last = str(e)
            time.sleep(0.2)
        raise RuntimeError(f"kube-apiserver not ready in {timeout:.0f} s (last: {last}): "
                           f"{self.log_tail('kube-apiserver')}")

    def stop_apiserver(self):
        # With watches open the API server waits for them before it exits; a short grace
        # is enough, it keeps nothing that etcd does not.
        _stop(self.apiserver, grace=5)
        self.apiserver = None

    def restart_apiserver(self):
        """Stops the API server and starts it again on the same port and etcd."""
        self.stop_apiserver()
        self.start_apiserver()

    def stop(self):
        self.stop_apiserver()
        _stop(self.etcd)
        self.etcd = None

    def log_tail(self, name: str, lines: int = 15) -> str:
        path = self.dir / ("apiserver.log" if name == "kube-apiserver" else "etcd.log")
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # --- etcd -------------------------------------------------------------------------------

    def etcdctl(self, *args: str) -> str:
        env = dict(os.environ, ETCDCTL_API="3")
        p = subprocess.run(["etcdctl", f"--endpoints=http://127.0.0.1:{self.etcd_port}", *args],
                           capture_output=True, text=True, env=env, timeout=60)
        if p.returncode != 0:
            raise AssertionError(f"etcdctl {' '.join(args)} failed: {p.stderr}")
        return p.stdout

    def compact(self) -> int:
        """Compacts etcd to its current revision, so older watch resumes get 410 Gone."""
        status = json.loads(self.etcdctl("endpoint", "status", "-w", "json"))
        revision = int(status[0]["Status"]["header"]["revision"])
        self.etcdctl("compact", str(revision), "--physical")
        return revision

    # --- clients ----------------------------------------------------------------------------

    def request(self, method: str, path: str, body=None, content_type="application/json",
                token: str | None = None) -> tuple[int, bytes]:
        """One raw API request as the admin (or with a bearer token); returns status and body."""
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        req = urllib.request.Request(self.server + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", content_type)
        ctx = self._ssl
        if token is not None:
            req.add_header("Authorization", f"Bearer {token}")
            ctx = ssl.create_default_context(cafile=str(self.dir / "ca.crt"))
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                kubeconfig: pathlib.Path | None = None) -> str:
        kubectl = shutil.which("kubectl")
        if kubectl is None:
            raise AssertionError("kubectl not found on PATH (scripts/install-deps.sh installs it)")
        p = subprocess.run([kubectl, "--kubeconfig", str(kubeconfig or self.kubeconfig), *args],
                           input=input, capture_output=True, text=True, timeout=90)
        if check and p.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {p.stderr}")
        return p.stdout if check else p.stdout + p.stderr

    def apply(self, obj: dict):
        self.kubectl("apply", "-f", "-", input=json.dumps(obj))

    def get_json(self, *args: str):
        out = self.kubectl("get", *args, "-o", "json", "--ignore-not-found")
        return json.loads(out) if out.strip() else None

    def token(self, namespace: str, service_account: str, audience: str | None = None,
              seconds: int = 3600) -> str:
        """A TokenRequest token for a ServiceAccount."""
        spec = {"expirationSeconds": seconds}
        if audience:
            spec["audiences"] = [audience]
        status, body = self.request(
            "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec})
        if status != 201:
            raise AssertionError(f"TokenRequest for {namespace}/{service_account}: {status} {body!r}")
        return json.loads(body)["status"]["token"]

    def sign_token(self, claims: dict) -> str:
        """A JWT signed with the cluster's service-account key: for tokens TokenRequest will not
        make (already expired, say)."""
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        key = serialization.load_pem_private_key((self.dir / "sa.key").read_bytes(), None)
        pub_der = key.public_key().public_bytes(serialization.Encoding.DER,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
        digest = hashlib.sha256(pub_der).digest()
        kid = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

        def b64(raw: bytes) -> str:
            return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

        header = b64(json.dumps({"alg": "ES256", "kid": kid, "typ": "JWT"}).encode())
        payload = b64(json.dumps(claims).encode())
        der = key.sign(f"{header}.{payload}".encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return f"{header}.{payload}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def token_kubeconfig(self, path: pathlib.Path, token: str) -> pathlib.Path:
        """A kubeconfig that authenticates with a bearer token (a ServiceAccount's, say)."""
        self._write_kubeconfig(path, {"token": token})
        return path

    def _write_kubeconfig(self, path: pathlib.Path, user: dict):
        config = {
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "live", "cluster": {"server": self.server,
                                                       "certificate-authority": str(self.dir / "ca.crt")}}],
            "users": [{"name": "user", "user": user}],
            "contexts": [{"name": "live", "context": {"cluster": "live", "user": "user"}}],
            "current-context": "live",
        }
        path.write_text(json.dumps(config, indent=1))


def _stop(proc: subprocess.Popen | None, grace: float = 20):
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def minimal_crd(group: str, kind: str, plural: str, versions: list[str]) -> dict:
    """A CustomResourceDefinition with an open schema, served at every given version
    (the first is the storage version)."""
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.{group}"},
            "spec": {"group": group, "scope": "Namespaced",
                     "names": {"kind": kind, "plural": plural, "singular": kind.lower(),
                               "listKind": f"{kind}List"},
                     "versions": [{"name": v, "served": True, "storage": i == 0,
                                   "schema": {"openAPIV3Schema": {
                                       "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}
                                  for i, v in enumerate(versions)]}}


# The Istio kinds istiod watches, with the versions upstream serves (the first is stored).
ISTIO_CRDS = [
    ("networking.istio.io", "VirtualService", "virtualservices", ["v1", "v1beta1", "v1alpha3"]),
    ("networking.istio.io", "DestinationRule", "destinationrules", ["v1", "v1beta1", "v1alpha3"]),
    ("networking.istio.io", "Gateway", "gateways", ["v1", "v1beta1", "v1alpha3"]),
    ("networking.istio.io", "ServiceEntry", "serviceentries", ["v1", "v1beta1", "v1alpha3"]),
    ("networking.istio.io", "Sidecar", "sidecars", ["v1", "v1beta1", "v1alpha3"]),
    ("networking.istio.io", "WorkloadEntry", "workloadentries", ["v1", "v1beta1", "v1alpha3"]),
    ("networking.istio.io", "WorkloadGroup", "workloadgroups", ["v1", "v1beta1", "v1alpha3"]),
    ("networking.istio.io", "EnvoyFilter", "envoyfilters", ["v1alpha3"]),
    ("networking.istio.io", "ProxyConfig", "proxyconfigs", ["v1beta1"]),
    ("security.istio.io", "PeerAuthentication", "peerauthentications", ["v1", "v1beta1"]),
    ("security.istio.io", "AuthorizationPolicy", "authorizationpolicies", ["v1", "v1beta1"]),
    ("security.istio.io", "RequestAuthentication", "requestauthentications", ["v1", "v1beta1"]),
    ("telemetry.istio.io", "Telemetry", "telemetries", ["v1", "v1alpha1"]),
    ("extensions.istio.io", "WasmPlugin", "wasmplugins", ["v1alpha1"]),
]


def install_crds(cluster: KubeCluster, crds=None):
    """Creates the given CRDs (default: every Istio kind) and waits until they are served."""
    crds = ISTIO_CRDS if crds is None else crds
    docs = [minimal_crd(*c) for c in crds]
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))
    names = [f"crd/{d['metadata']['name']}" for d in docs]
    cluster.kubectl("wait", "--for=condition=Established", *names, "--timeout=60s")


def chart_rbac(namespace: str) -> list[dict]:
    """The ServiceAccount, (Cluster)Roles and their bindings the chart renders for `namespace`
    (skips the test without helm-python-sdk)."""
    import pytest
    import yaml

    helm = pytest.importorskip("helm_python", reason="helm-python-sdk is not installed (tests/requirements.txt)")
    with helm.Chart.load(ROOT / "charts" / "istiod") as chart:
        out = chart.render({}, name="istiod", namespace=namespace, is_install=True)
    kinds = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
    docs = [d for text in out.values() for d in yaml.safe_load_all(text) if d and d["kind"] in kinds]
    for d in docs:
        if d["kind"] in ("ServiceAccount", "Role", "RoleBinding"):
            d["metadata"]["namespace"] = namespace
    assert {d["kind"] for d in docs} == kinds, sorted((d["kind"], d["metadata"]["name"]) for d in docs)
    return docs
