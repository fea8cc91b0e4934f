"""A real Kubernetes API server left running for benchmarks, with an audit log.

    python tests/kube_up.py check        exit 0 if an API server binary and etcd are available, else say why (exit 3)
    python tests/kube_up.py up DIR       start etcd + kube-apiserver in DIR, install the CRDs, print the
                                         admin kubeconfig's path; pids in DIR/pids, audit log DIR/audit.log
    python tests/kube_up.py down DIR     stop the processes listed in DIR/pids

The cluster is `kube_cluster.KubeCluster` (fresh certificates, loopback ports) with the API server
started through a small wrapper that adds `--audit-policy-file` and `--audit-log-path`: every request
of a user outside `system:masters` is logged at `Metadata` level (one JSON line per stage, without
`RequestReceived`), so a benchmark can count what the control plane under test asked of the server.
Besides the Istio CRDs of `kube_cluster`, the Gateway API kinds istiod watches are installed (open
schemas with a status subresource, every version current and 2022 istiod read), so they are
served and empty.
"""

from __future__ import annotations

import json
import os
import pathlib
import shlex
import shutil
import signal
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from kube_cluster import ISTIO_CRDS, KubeCluster, apiserver_binary, install_crds, minimal_crd  # noqa: E402

UNAVAILABLE = 3

AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: None
  userGroups: ["system:masters"]
- level: None
  users: ["system:apiserver"]
- level: Metadata
"""

GATEWAY_API = "gateway.networking.k8s.io"
# Gateway API kinds: (kind, plural, versions, namespaced); the first version is stored.
GATEWAY_API_CRDS = [
    ("GatewayClass", "gatewayclasses", ["v1", "v1beta1", "v1alpha2"], False),
    ("Gateway", "gateways", ["v1", "v1beta1", "v1alpha2"], True),
    ("HTTPRoute", "httproutes", ["v1", "v1beta1", "v1alpha2"], True),
    ("GRPCRoute", "grpcroutes", ["v1", "v1alpha2"], True),
    ("TCPRoute", "tcproutes", ["v1alpha2"], True),
    ("TLSRoute", "tlsroutes", ["v1alpha2"], True),
    ("ReferenceGrant", "referencegrants", ["v1beta1", "v1alpha2"], True),
    ("ReferencePolicy", "referencepolicies", ["v1alpha2"], True),
]


def _gateway_api_crds() -> list[dict]:
    docs = []
    for kind, plural, versions, namespaced in GATEWAY_API_CRDS:
        doc = minimal_crd(GATEWAY_API, kind, plural, versions)
        # A `*.k8s.io` group is protected: the server wants the approval the real CRDs carry.
        doc["metadata"]["annotations"] = {
            "api-approved.kubernetes.io": "https://github.com/kubernetes-sigs/gateway-api/pull/1538"}
        if not namespaced:
            doc["spec"]["scope"] = "Cluster"
        # Controllers write these kinds' status through the subresource.
        for version in doc["spec"]["versions"]:
            version["subresources"] = {"status": {}}
        docs.append(doc)
    return docs


def _audited_apiserver(workdir: pathlib.Path, binary: str) -> str:
    """A script that runs `binary` with the audit flags added; its path."""
    policy = workdir / "audit-policy.yaml"
    policy.write_text(AUDIT_POLICY)
    wrapper = workdir / "kube-apiserver-audited"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"exec {shlex.quote(binary)} \"$@\" --audit-policy-file={shlex.quote(str(policy))} "
        f"--audit-log-path={shlex.quote(str(workdir / 'audit.log'))}\n")
    wrapper.chmod(0o755)
    return str(wrapper)


def up(workdir: pathlib.Path) -> int:
    binary, why_not = apiserver_binary()
    if binary is None:
        print(why_not, file=sys.stderr)
        return UNAVAILABLE
    workdir.mkdir(parents=True, exist_ok=True)
    if (workdir / "pids").exists():
        print(f"{workdir}/pids exists: run `down {workdir}` first", file=sys.stderr)
        return 1
    cluster = KubeCluster(workdir, _audited_apiserver(workdir, binary))
    try:
        cluster.start()
        (workdir / "pids").write_text(f"{cluster.etcd.pid}\n{cluster.apiserver.pid}\n")
        install_crds(cluster, ISTIO_CRDS)
        crds = _gateway_api_crds()
        cluster.kubectl("apply", "-f", "-",
                        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": crds}))
        cluster.kubectl("wait", "--for=condition=Established",
                        *[f"crd/{d['metadata']['name']}" for d in crds], "--timeout=60s")
    except Exception as e:  # noqa: BLE001 - reported with the server's log, then everything stops
        print(f"the API server did not start: {e}", file=sys.stderr)
        cluster.stop()
        (workdir / "pids").unlink(missing_ok=True)
        return 1
    print(cluster.kubeconfig)
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie of ours counts as gone.
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def down(workdir: pathlib.Path) -> int:
    pids_file = workdir / "pids"
    if not pids_file.exists():
        print(f"nothing to stop: no {pids_file}", file=sys.stderr)
        return 0
    pids = [int(p) for p in pids_file.read_text().split()]
    # API server first, then etcd; each was started as the leader of its own process group.
    for pid in reversed(pids):
        for sig, wait in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if not _alive(pid):
                break
    pids_file.unlink()
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[1] == "check":
        binary, why_not = apiserver_binary()
        if binary is None:
            print(why_not, file=sys.stderr)
            return UNAVAILABLE
        if shutil.which("etcd") is None:
            print("etcd not found on PATH: install Debian's etcd-server (make deps)", file=sys.stderr)
            return UNAVAILABLE
        return 0
    if len(argv) == 3 and argv[1] in ("up", "down"):
        workdir = pathlib.Path(argv[2]).resolve()
        return up(workdir) if argv[1] == "up" else down(workdir)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
