"""tests/kube_up.py: an audited API server that outlives the command, and its teardown."""

import json
import os
import pathlib
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
import uuid

import pytest

from conftest import wait_until
import kube_cluster

KUBE_UP = pathlib.Path(__file__).resolve().parent / "kube_up.py"


def kube_up(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(KUBE_UP), *args], capture_output=True, text=True,
                          timeout=240)


def kubectl(kubeconfig: pathlib.Path, *args: str) -> str:
    p = subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), *args], capture_output=True,
                       text=True, timeout=90)
    assert p.returncode == 0, f"kubectl {' '.join(args)}: {p.stderr}"
    return p.stdout


def running(pid: int) -> bool:
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def audit_events(path: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_up_audits_other_users_installs_gateway_api_and_down_stops_it(tmp_path):
    binary, why_not = kube_cluster.apiserver_binary()
    if binary is None:
        pytest.skip(why_not)
    assert kube_up("check").returncode == 0
    workdir = tmp_path / "kube"
    up = kube_up("up", str(workdir))
    pids = []
    try:
        assert up.returncode == 0, up.stderr
        kubeconfig = pathlib.Path(up.stdout.strip())
        assert kubeconfig == workdir / "kubeconfig"
        pids = [int(p) for p in (workdir / "pids").read_text().split()]
        assert len(pids) == 2 and all(running(p) for p in pids)

        # The Gateway API kinds are served; GatewayClass is cluster-scoped, as upstream's.
        crd = json.loads(kubectl(kubeconfig, "get", "crd", "gatewayclasses.gateway.networking.k8s.io",
                                 "-o", "json"))
        assert crd["spec"]["scope"] == "Cluster"
        assert "v1alpha2" in [v["name"] for v in crd["spec"]["versions"]]
        kubectl(kubeconfig, "get", "httproutes.gateway.networking.k8s.io", "-A")

        # A ServiceAccount's request is audited (even when RBAC refuses it); the admin's are not.
        ns = f"kube-up-{uuid.uuid4().hex[:8]}"
        kubectl(kubeconfig, "create", "namespace", ns)
        kubectl(kubeconfig, "-n", ns, "create", "serviceaccount", "reader")
        token = kubectl(kubeconfig, "-n", ns, "create", "token", "reader").strip()
        server = json.loads(kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
        req = urllib.request.Request(f"{server}/api/v1/namespaces/{ns}/configmaps",
                                     headers={"Authorization": f"Bearer {token}"})
        ctx = ssl.create_default_context(cafile=str(workdir / "ca.crt"))
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, context=ctx, timeout=10)
        assert refused.value.code == 403
        user = f"system:serviceaccount:{ns}:reader"
        audit_log = workdir / "audit.log"

        def audited():
            return [e for e in audit_events(audit_log)
                    if e["user"]["username"] == user and e["verb"] == "list"
                    and e.get("objectRef", {}).get("resource") == "configmaps"]

        events = wait_until(audited, timeout=10, what="the ServiceAccount's list in the audit log")
        assert {e["stage"] for e in events} == {"ResponseComplete"}
        assert events[0]["responseStatus"]["code"] == 403
        assert not [e for e in audit_events(audit_log)
                    if "system:masters" in e["user"].get("groups", [])]
    finally:
        down = kube_up("down", str(workdir))
    assert down.returncode == 0, down.stderr
    assert not [p for p in pids if running(p)]
    assert not (workdir / "pids").exists()
    assert kube_up("down", str(workdir)).returncode == 0


def test_up_refuses_a_folder_still_in_use(tmp_path):
    if kube_cluster.apiserver_binary()[0] is None:
        pytest.skip("no kube-apiserver binary")
    workdir = tmp_path / "kube"
    workdir.mkdir()
    (workdir / "pids").write_text(f"{os.getpid()}\n")
    up = kube_up("up", str(workdir))
    assert up.returncode == 1
    assert "down" in up.stderr
