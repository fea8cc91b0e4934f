"""`imagebuilder migrate` over upstream-style IstioOperator, Helm values and Deployment
fixtures (tests/fixtures/migrate): the migrated documents, byte for byte, and the
hardening findings; plus --check, --output diff, --in-place and the live cluster."""

import os
import pathlib
import shlex
import subprocess
import uuid

import pytest
import yaml

from conftest import ROOT

FIXTURES = ROOT / "tests" / "fixtures" / "migrate"
INPUTS = sorted(p for p in FIXTURES.glob("*.yaml") if not p.name.endswith(".expected.yaml"))


@pytest.fixture(scope="module")
def imagebuilder():
    path = os.environ.get("IMAGEBUILDER")
    if path:
        return pathlib.Path(path)
    subprocess.run(["cargo", "build", "--quiet", "-p", "imagebuilder"], cwd=ROOT, check=True)
    return ROOT / "target" / "debug" / "imagebuilder"


def migrate(imagebuilder, *args, cwd=FIXTURES):
    return subprocess.run([str(imagebuilder), "migrate", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def fixture_args(src: pathlib.Path):
    args_file = src.with_suffix(".args")
    return shlex.split(args_file.read_text()) if args_file.exists() else []


@pytest.mark.parametrize("src", INPUTS, ids=[p.stem for p in INPUTS])
def test_fixture_migrates_to_expected_document_and_findings(imagebuilder, src):
    res = migrate(imagebuilder, src.name, *fixture_args(src))
    assert res.returncode == 0, res.stderr
    assert res.stdout == src.with_name(src.stem + ".expected.yaml").read_text()
    assert res.stderr == src.with_name(src.stem + ".findings.txt").read_text()


@pytest.mark.parametrize("src", INPUTS, ids=[p.stem for p in INPUTS])
def test_diff_is_minimal_and_comments_survive(imagebuilder, src):
    before = src.read_text()
    after = migrate(imagebuilder, src.name, *fixture_args(src)).stdout
    removed = [l for l in before.splitlines() if l not in after.splitlines()]
    # Only the image and pull-secret lines may change; every comment line is kept.
    assert len(removed) <= 2, removed
    assert all("image:" in l or "imagePullSecrets:" in l for l in removed), removed
    assert [l for l in before.splitlines() if l.lstrip().startswith("#")] == \
        [l for l in after.splitlines() if l.lstrip().startswith("#")]
    yaml.safe_load_all(after)  # still YAML


def test_image_lands_where_upstream_reads_it(imagebuilder):
    iop = yaml.safe_load(migrate(imagebuilder, "operator-upstream.yaml", "--pull-secret", "mirror-creds").stdout)
    assert iop["spec"]["values"]["pilot"]["image"] == "dhi.io/istio-pilot:1.24.2"
    assert iop["spec"]["values"]["global"]["imagePullSecrets"] == ["mirror-creds"]
    assert iop["spec"]["hub"] == "docker.io/istio", "proxies keep their hub"
    values = yaml.safe_load(migrate(imagebuilder, "values-upstream.yaml", "--registry", "registry.example.com",
                                    "--namespace", "platform").stdout)
    assert values["pilot"]["image"] == "registry.example.com/platform/dhi-istio-pilot:1.28.0"
    dep = yaml.safe_load(migrate(imagebuilder, "deployment-debug-sidecar.yaml", "--image",
                                 "mirror.local/dhi-istio-pilot:1.24.2").stdout)
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "mirror.local/dhi-istio-pilot:1.24.2"


def test_shell_command_is_a_blocker_and_check_fails(imagebuilder):
    res = migrate(imagebuilder, "operator-shell.yaml", "--check")
    assert res.returncode == 2, res.stderr
    assert ("blocker: spec.components.pilot.k8s.overlays[0].patches[0].value: runs "
            "`/bin/sh -c exec pilot-discovery discovery`, but the image has no shell") in res.stderr
    assert "blocker: spec.components.pilot.k8s.securityContext.runAsUser" in res.stderr
    assert "blocker: spec.values.pilot.extraContainerArgs[0]: --httpsAddr listens on port 443" in res.stderr
    clean = migrate(imagebuilder, "operator-upstream.yaml", "--check")
    assert clean.returncode == 0 and clean.stderr == ""


def test_output_diff(imagebuilder):
    res = migrate(imagebuilder, "values-upstream.yaml", "--output", "diff", "--registry", "registry.example.com",
                  "--namespace", "platform")
    assert res.returncode == 0
    assert res.stdout.startswith("--- a/values-upstream.yaml\n+++ b/values-upstream.yaml\n@@ ")
    changed = [l for l in res.stdout.splitlines()[2:] if l[:1] in "+-"]
    assert changed == ["+  image: registry.example.com/platform/dhi-istio-pilot:1.28.0"]


def test_in_place_and_idempotent(imagebuilder, tmp_path):
    f = tmp_path / "values.yaml"
    f.write_text((FIXTURES / "values-upstream.yaml").read_text())
    assert migrate(imagebuilder, f, "--in-place", "--pull-secret", "mirror-creds").returncode == 0
    once = f.read_text()
    assert migrate(imagebuilder, f, "--in-place", "--pull-secret", "mirror-creds").returncode == 0
    assert f.read_text() == once


def test_errors_name_the_file_and_problem(imagebuilder, tmp_path):
    f = tmp_path / "v.yaml"
    f.write_text("global:\n  hub: x\n")
    res = migrate(imagebuilder, f)
    assert res.returncode == 1
    assert res.stderr.startswith(f"error: {f}: no image tag found (looked at pilot.image, pilot.tag, tag, global.tag)")
    f.write_text("pilot: [unclosed\n")
    res = migrate(imagebuilder, f)
    assert res.returncode == 1 and f"error: {f}: not YAML" in res.stderr
    res = migrate(imagebuilder, tmp_path / "missing.yaml")
    assert res.returncode == 1 and "missing.yaml" in res.stderr


def upstream_deployment(ns: str) -> dict:
    """istiod's Deployment as upstream's istiod chart (1.28, default values) renders it."""
    labels = {"app": "istiod", "istio.io/rev": "default", "istio": "pilot",
              "operator.istio.io/component": "Pilot", "release": "istiod"}
    field = lambda path: {"valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}  # noqa: E731
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "istiod", "namespace": ns, "labels": labels},
        "spec": {
            "strategy": {"rollingUpdate": {"maxSurge": "100%", "maxUnavailable": "25%"}},
            "selector": {"matchLabels": {"istio": "pilot"}},
            "template": {
                "metadata": {"labels": {**labels, "sidecar.istio.io/inject": "false"},
                             "annotations": {"prometheus.io/port": "15014", "prometheus.io/scrape": "true",
                                             "sidecar.istio.io/inject": "false"}},
                "spec": {
                    "serviceAccountName": "istiod",
                    "tolerations": [{"key": "cni.istio.io/not-ready", "operator": "Exists"}],
                    "containers": [{
                        "name": "discovery",
                        "image": "docker.io/istio/pilot:1.28.0",
                        "args": ["discovery", "--monitoringAddr=:15014", "--log_output_level=default:info",
                                 "--domain", "cluster.local", "--keepaliveMaxServerConnectionAge", "30m"],
                        "ports": [{"containerPort": p, "protocol": "TCP", "name": n} for p, n in
                                  [(8080, "http-debug"), (15010, "grpc-xds"), (15012, "tls-xds"),
                                   (15017, "https-webhooks"), (15014, "http-monitoring")]],
                        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080},
                                           "initialDelaySeconds": 1, "periodSeconds": 3, "timeoutSeconds": 5},
                        "env": [{"name": "REVISION", "value": "default"},
                                {"name": "PILOT_CERT_PROVIDER", "value": "istiod"},
                                {"name": "POD_NAME", **field("metadata.name")},
                                {"name": "POD_NAMESPACE", **field("metadata.namespace")},
                                {"name": "SERVICE_ACCOUNT", **field("spec.serviceAccountName")},
                                {"name": "KUBECONFIG", "value": "/var/run/secrets/remote/config"},
                                {"name": "CLUSTER_ID", "value": "Kubernetes"}],
                        "resources": {"requests": {"cpu": "500m", "memory": "2048Mi"}},
                        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "runAsUser": 1337, "runAsGroup": 1337, "runAsNonRoot": True,
                                            "capabilities": {"drop": ["ALL"]}},
                        "volumeMounts": [
                            {"name": "istio-token", "mountPath": "/var/run/secrets/tokens", "readOnly": True},
                            {"name": "local-certs", "mountPath": "/var/run/secrets/istio-dns"},
                            {"name": "cacerts", "mountPath": "/etc/cacerts", "readOnly": True},
                            {"name": "istio-kubeconfig", "mountPath": "/var/run/secrets/remote", "readOnly": True}],
                    }],
                    "volumes": [
                        {"name": "local-certs", "emptyDir": {"medium": "Memory"}},
                        {"name": "istio-token", "projected": {"sources": [{"serviceAccountToken": {
                            "audience": "istio-ca", "expirationSeconds": 43200, "path": "istio-token"}}]}},
                        {"name": "cacerts", "secret": {"secretName": "cacerts", "optional": True}},
                        {"name": "istio-kubeconfig", "secret": {"secretName": "istio-kubeconfig", "optional": True}}],
                },
            },
        },
    }


def test_live_deployment(imagebuilder, kube_cluster, tmp_path):
    """`--kubeconfig` reads the istiod Deployment from a real API server (stored only: no
    controllers run), with a kubeconfig allowed nothing but `get` on Deployments there."""
    ns = f"istio-migrate-{uuid.uuid4().hex[:6]}"
    kube_cluster.kubectl("create", "namespace", ns)
    kube_cluster.apply(upstream_deployment(ns))
    kube_cluster.kubectl("create", "serviceaccount", "migrator", "-n", ns)
    kube_cluster.kubectl("create", "role", "read-deployments", "--verb=get", "--resource=deployments", "-n", ns)
    kube_cluster.kubectl("create", "rolebinding", "migrator", "--role=read-deployments",
                         f"--serviceaccount={ns}:migrator", "-n", ns)
    reader = kube_cluster.token_kubeconfig(tmp_path / "reader.kubeconfig", kube_cluster.token(ns, "migrator"))

    res = migrate(imagebuilder, "--kubeconfig", reader, "--istio-namespace", ns, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    dep = yaml.safe_load(res.stdout)
    live = kube_cluster.get_json("deployment", "istiod", "-n", ns)
    # The tag comes from the live image; only the image changes.
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["image"] == "dhi.io/istio-pilot:1.28.0"
    (want,) = live["spec"]["template"]["spec"]["containers"]
    assert {**c, "image": want["image"]} == want
    # Server-managed fields are dropped, so the output can be applied as it is.
    assert "status" not in dep
    assert not {"managedFields", "resourceVersion", "uid", "generation", "creationTimestamp"} & set(dep["metadata"])
    assert dep["metadata"]["labels"] == live["metadata"]["labels"]
    # Upstream's default render needs no change beyond the image: no blockers.
    assert "blocker" not in res.stderr, res.stderr

    # Findings are named after the live object; --check turns blockers into exit code 2.
    kube_cluster.kubectl("patch", "deployment", "istiod", "-n", ns, "--type=json", "-p",
                         '[{"op": "replace", "path": "/spec/template/spec/containers/0/securityContext/runAsNonRoot", '
                         '"value": false}]')
    res = migrate(imagebuilder, "--kubeconfig", reader, "--istio-namespace", ns, "--check", cwd=ROOT)
    assert res.returncode == 2, res.stderr
    assert (f"deployment/{ns}/istiod: blocker: spec.template.spec.containers[name=discovery]"
            ".securityContext.runAsNonRoot: runAsNonRoot is false") in res.stderr, res.stderr

    # A Deployment that is not there, and one the reader may not get: the API's answer, named.
    res = migrate(imagebuilder, "--kubeconfig", reader, "--istio-namespace", ns, "--deployment", "istiod-canary",
                  cwd=ROOT)
    assert res.returncode == 1
    assert f"getting Deployment {ns}/istiod-canary" in res.stderr and "not found" in res.stderr, res.stderr
    res = migrate(imagebuilder, "--kubeconfig", reader, "--istio-namespace", "default", cwd=ROOT)
    assert res.returncode == 1
    assert "getting Deployment default/istiod" in res.stderr and "forbidden" in res.stderr, res.stderr
