"""`imagebuilder migrate` over upstream-style IstioOperator, Helm values and Deployment
fixtures (tests/fixtures/migrate): the migrated documents, byte for byte, and the
hardening findings; plus --check, --output diff, --in-place and the live cluster."""

import os
import pathlib
import shlex
import subprocess

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


@pytest.mark.skipif(not os.environ.get("PILOT_TEST_KUBECONFIG"),
                    reason="PILOT_TEST_KUBECONFIG is not set: no cluster to read a live istiod Deployment from")
def test_live_deployment(imagebuilder):
    ns = os.environ.get("PILOT_TEST_ISTIO_NAMESPACE", "istio-system")
    res = migrate(imagebuilder, "--kubeconfig", os.environ["PILOT_TEST_KUBECONFIG"], "--istio-namespace", ns,
                  "--tag", "1.28.0", cwd=ROOT)
    assert res.returncode == 0, res.stderr
    dep = yaml.safe_load(res.stdout)
    images = [c["image"] for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "discovery"]
    assert images == ["dhi.io/istio-pilot:1.28.0"]
