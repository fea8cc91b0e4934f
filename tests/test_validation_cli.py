"""`pilot-discovery validate -f FILE|DIR`: exit codes and one line per finding."""

import subprocess

from conftest import ROOT, pilot_binary

VALID = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 75}
    - {destination: {host: reviews, subset: v2}, weight: 25}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec: {ports: [{port: 9080}]}
"""

INVALID_GATEWAY = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ingress, namespace: istio-system}
spec:
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["*"]
"""

INVALID_SECURITY = """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: ports, namespace: default}
spec:
  portLevelMtls:
    "8080": {mode: DISABLE}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny, namespace: default}
spec:
  action: DENY
"""

WARNING_ONLY = """\
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: ef, namespace: default}
spec:
  configPatches:
  - applyTo: CLUSTER
    patch: {operation: REMOVE}
"""


def run(*args):
    p = subprocess.run([pilot_binary(), "validate", *args], capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout.splitlines(), p.stderr


def test_valid_file_exits_zero(tmp_path):
    f = tmp_path / "valid.yaml"
    f.write_text(VALID)
    rc, lines, err = run("-f", str(f))
    assert rc == 0, (lines, err)
    assert lines == []
    assert "2 Istio resources checked, 0 invalid, 1 other documents skipped" in err


def test_folder_with_invalid_files_lists_every_finding(tmp_path):
    (tmp_path / "a-valid.yaml").write_text(VALID)
    (tmp_path / "b-gateway.yaml").write_text(INVALID_GATEWAY)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c-security.yml").write_text(INVALID_SECURITY)
    (tmp_path / "notes.txt").write_text("not a manifest")
    rc, lines, err = run("-f", str(tmp_path))
    assert rc == 1, (lines, err)
    gw, sec = tmp_path / "b-gateway.yaml", tmp_path / "sub" / "c-security.yml"
    assert lines == [
        f"{gw}: Gateway/ingress: spec.servers[0].tls: server must have TLS settings for HTTPS/TLS protocols",
        f"{sec}: PeerAuthentication/ports: spec.portLevelMtls: "
        "mesh/namespace peer authentication cannot have port level mTLS",
        f"{sec}: AuthorizationPolicy/deny: spec.rules: DENY action without `rules` is meaningless as it will "
        "never be triggered, add an empty rule `{}` if you want it be triggered for every request",
    ]
    assert "5 Istio resources checked, 3 invalid" in err


def test_repeated_files_warnings_and_errors(tmp_path):
    ok, warn, broken = tmp_path / "ok.yaml", tmp_path / "warn.yaml", tmp_path / "broken.yaml"
    ok.write_text(VALID)
    warn.write_text(WARNING_ONLY)
    rc, lines, _ = run("-f", str(ok), "-f", str(warn))
    assert rc == 0
    assert len(lines) == 1 and lines[0].startswith(f"{warn}: EnvoyFilter/ef: spec: EnvoyFilter exposes")
    assert lines[0].endswith("(warning)")

    broken.write_text("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: [\n")
    rc, lines, _ = run("-f", str(ok), "-f", str(broken))
    assert rc == 1
    assert lines[0].startswith(f"{broken}: document 0: invalid YAML")

    rc, lines, _ = run("-f", str(tmp_path / "missing.yaml"))
    assert rc == 1 and "cannot read" in lines[0]


def test_unknown_kind_and_version_are_findings(tmp_path):
    f = tmp_path / "odd.json"
    f.write_text('{"apiVersion": "networking.istio.io/v9", "kind": "Gateway", "metadata": {"name": "g"}}\n'
                 '---\n'
                 '{"apiVersion": "security.istio.io/v1", "kind": "Frobnicator", "metadata": {"name": "f"}}\n')
    rc, lines, _ = run("-f", str(f))
    assert rc == 1
    assert lines == [
        f"{f}: Gateway/g: unrecognized version v9 of networking.istio.io/Gateway; served versions are v1, v1alpha3, v1beta1",
        f"{f}: Frobnicator/f: unrecognized type Frobnicator in group security.istio.io",
    ]


def test_the_example_mesh_is_valid():
    rc, lines, err = run("-f", str(ROOT / "docs" / "examples" / "mesh"))
    assert rc == 0, (lines, err)


def test_requires_a_file():
    p = subprocess.run([pilot_binary(), "validate"], capture_output=True, text=True, timeout=30)
    assert p.returncode != 0 and "--filename" in p.stderr
