"""The istiod Helm chart (charts/istiod) through Helm's own Go SDK: lint, render over a
matrix of values, strict Kubernetes types for every object, the values schema, and
pilot-discovery started with the rendered Deployment's args and env."""

import os
import pathlib
import subprocess
import tempfile
import urllib.request
import uuid

import pytest
import yaml

from conftest import ROOT, free_port, pilot_binary, wait_until

helm = pytest.importorskip("helm_python", reason="helm-python-sdk is not installed (tests/requirements.txt)")

CHART = ROOT / "charts" / "istiod"
NAMESPACE = "istio-system"
APP_VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]


def cargo_example(name: str) -> pathlib.Path:
    """Builds an imagebuilder example once and returns its path."""
    subprocess.run(
        ["cargo", "build", "--quiet", "-p", "imagebuilder", "--example", name],
        cwd=ROOT, check=True,
    )
    return ROOT / "target" / "debug" / "examples" / name


@pytest.fixture(scope="module")
def chart():
    with helm.Chart.load(CHART) as c:
        yield c


@pytest.fixture(scope="module")
def kube_strict():
    return cargo_example("kube_strict")


def render(chart, values=None, *, upgrade=False):
    """Renders the chart and returns its objects keyed by (kind, name)."""
    out = chart.render(values or {}, name="istiod", namespace=NAMESPACE,
                       is_install=not upgrade, is_upgrade=upgrade)
    objects = {}
    for text in out.values():
        for doc in yaml.safe_load_all(text):
            if doc:
                key = (doc["kind"], doc["metadata"]["name"])
                assert key not in objects, f"{key} rendered twice"
                objects[key] = doc
    return objects


def render_text(chart, values=None):
    out = chart.render(values or {}, name="istiod", namespace=NAMESPACE, is_install=True)
    return "\n---\n".join(out[k] for k in sorted(out))


def container(objects, name="istiod"):
    dep = objects[("Deployment", name)]
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["name"] == "discovery"
    return c


def env_of(c):
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}


def test_lint_passes():
    report = helm.lint(CHART, strict=True, namespace=NAMESPACE)
    errors = [m for m in report["messages"] if m["severity"] >= 2]
    assert not errors and not report["errors"], report


def test_default_render(chart):
    objects = render(chart)
    kinds = sorted(k for k, _ in objects)
    assert kinds == sorted([
        "ClusterRole", "ClusterRole", "ClusterRoleBinding", "ClusterRoleBinding", "ConfigMap",
        "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Role", "RoleBinding",
        "Service", "ServiceAccount", "ValidatingWebhookConfiguration",
    ])
    c = container(objects)
    assert c["image"] == f"dhi.io/istio-pilot:{APP_VERSION}"
    assert "command" not in c, "the image's entry point runs pilot-discovery; no shell"
    assert c["args"] == [
        "discovery", "--monitoringAddr=:15014", "--log_output_level=default:info",
        "--domain", "cluster.local", "--keepaliveMaxServerConnectionAge", "30m",
    ]
    env = env_of(c)
    assert env["REVISION"] == "default"
    assert env["PILOT_CERT_PROVIDER"] == "istiod"
    assert env["CLUSTER_ID"] == "Kubernetes"
    assert env["POD_NAME"] == {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}
    assert env["POD_NAMESPACE"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["SERVICE_ACCOUNT"]["fieldRef"]["fieldPath"] == "spec.serviceAccountName"
    assert {p["containerPort"]: p["name"] for p in c["ports"]} == {
        8080: "http-debug", 15010: "grpc-xds", 15012: "tls-xds", 15017: "https-webhooks",
        15014: "http-monitoring",
    }
    assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 8080}
    assert "livenessProbe" not in c and "startupProbe" not in c
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "runAsUser" not in sc, "the UID comes from the image"

    pod = objects[("Deployment", "istiod")]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    token = volumes["istio-token"]["projected"]["sources"][0]["serviceAccountToken"]
    assert token == {"audience": "istio-ca", "expirationSeconds": 43200, "path": "istio-token"}
    assert volumes["local-certs"]["emptyDir"] == {"medium": "Memory"}
    assert volumes["cacerts"]["secret"] == {"secretName": "cacerts", "optional": True}
    assert volumes["istio-kubeconfig"]["secret"]["optional"] is True
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert mounts["/var/run/secrets/tokens"] == "istio-token"
    assert mounts["/etc/cacerts"] == "cacerts"
    assert "imagePullSecrets" not in pod

    svc = objects[("Service", "istiod")]
    assert [(p["name"], p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [
        ("grpc-xds", 15010, 15010), ("https-dns", 15012, 15012),
        ("https-webhook", 443, 15017), ("http-monitoring", 15014, 15014),
    ]

    vwc = objects[("ValidatingWebhookConfiguration", f"istio-validator-{NAMESPACE}")]
    (hook,) = vwc["webhooks"]
    assert vwc["metadata"]["labels"]["istio.io/rev"] == "default"
    assert hook["failurePolicy"] == "Ignore"
    assert hook["clientConfig"]["service"]["path"] == "/validate"
    assert hook["objectSelector"]["matchExpressions"][0]["values"] == ["default"]
    assert hook["sideEffects"] == "None" and hook["admissionReviewVersions"] == ["v1"]

    mesh = yaml.safe_load(objects[("ConfigMap", "istio")]["data"]["mesh"])
    assert mesh["enablePrometheusMerge"] is True and mesh["rootNamespace"] == NAMESPACE

    hpa = objects[("HorizontalPodAutoscaler", "istiod")]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (1, 5)
    assert hpa["metrics"][0]["resource"]["target"]["averageUtilization"] == 80
    assert objects[("PodDisruptionBudget", "istiod")]["spec"]["minAvailable"] == 1
    assert "replicas" not in objects[("Deployment", "istiod")]["spec"], "the HPA owns replicas"


def test_rbac_matches_upstream_rules(chart):
    objects = render(chart)
    role = objects[("Role", "istiod")]["rules"]
    assert {(tuple(r["apiGroups"]), tuple(r["resources"])): r["verbs"] for r in role} == {
        (("networking.istio.io",), ("gateways",)): ["create"],
        (("",), ("secrets",)): ["create", "get", "watch", "list", "update", "delete"],
        (("",), ("configmaps",)): ["delete"],
        (("coordination.k8s.io",), ("leases",)): ["get", "update", "patch", "create"],
    }
    cluster = objects[("ClusterRole", f"istiod-clusterrole-{NAMESPACE}")]["rules"]
    grants = {(g, res, v) for r in cluster for g in r["apiGroups"] for res in r["resources"] for v in r["verbs"]}
    for needed in [
        ("admissionregistration.k8s.io", "validatingwebhookconfigurations", "update"),
        ("admissionregistration.k8s.io", "mutatingwebhookconfigurations", "patch"),
        ("networking.istio.io", "*", "watch"),
        ("discovery.k8s.io", "endpointslices", "list"),
        ("authentication.k8s.io", "tokenreviews", "create"),
        ("authorization.k8s.io", "subjectaccessreviews", "create"),
        ("", "configmaps", "update"),
        ("", "secrets", "watch"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
        ("gateway.networking.k8s.io", "httproutes/status", "patch"),
    ]:
        assert needed in grants, needed
    assert not any(v == "*" and res == "*" for _, res, v in grants), "no wildcard grants"
    binding = objects[("ClusterRoleBinding", f"istiod-clusterrole-{NAMESPACE}")]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "istiod", "namespace": NAMESPACE}]


MATRIX = {
    "mirror-namespace": (
        {"pilot": {"hub": "registry.example.com/platform", "image": "dhi-istio-pilot", "tag": "1.28.0"}},
        lambda o: container(o)["image"] == "registry.example.com/platform/dhi-istio-pilot:1.28.0",
    ),
    "global-hub-and-numeric-tag": (
        {"global": {"hub": "mirror.local:5000/team", "tag": 1.28}, "image": "dhi-istio-pilot"},
        lambda o: container(o)["image"] == "mirror.local:5000/team/dhi-istio-pilot:1.28",
    ),
    "full-image-verbatim": (
        {"pilot": {"image": "dhi.io/istio-pilot:1.28.0-dev", "hub": "ignored", "tag": "ignored"}},
        lambda o: container(o)["image"] == "dhi.io/istio-pilot:1.28.0-dev",
    ),
    "variant": (
        {"global": {"tag": "1.28.0", "variant": "dev"}},
        lambda o: container(o)["image"] == "dhi.io/istio-pilot:1.28.0-dev",
    ),
    "pull-secrets": (
        {"global": {"imagePullSecrets": ["mirror-creds", {"name": "other"}]}},
        lambda o: (
            o[("ServiceAccount", "istiod")]["imagePullSecrets"] == [{"name": "mirror-creds"}, {"name": "other"}]
            and o[("Deployment", "istiod")]["spec"]["template"]["spec"]["imagePullSecrets"]
            == [{"name": "mirror-creds"}, {"name": "other"}]
        ),
    ),
    "revision-canary": (
        {"revision": "canary"},
        lambda o: (
            ("Deployment", "istiod-canary") in o
            and ("ConfigMap", "istio-canary") in o
            and ("ValidatingWebhookConfiguration", f"istio-validator-canary-{NAMESPACE}") in o
            and env_of(container(o, "istiod-canary"))["REVISION"] == "canary"
            and o[("ValidatingWebhookConfiguration", f"istio-validator-canary-{NAMESPACE}")]["webhooks"][0]
            ["objectSelector"]["matchExpressions"][0]["values"] == ["canary"]
            and o[("Deployment", "istiod-canary")]["spec"]["selector"]["matchLabels"]
            == {"app": "istiod", "istio.io/rev": "canary"}
            and o[("Service", "istiod-canary")]["spec"]["selector"] == {"app": "istiod", "istio.io/rev": "canary"}
            and o[("RoleBinding", "istiod-canary")]["subjects"][0]["name"] == "istiod-canary"
        ),
    ),
    "autoscale-off": (
        {"pilot": {"autoscaleEnabled": False, "replicaCount": 3}},
        lambda o: (
            not any(k == "HorizontalPodAutoscaler" for k, _ in o)
            and o[("Deployment", "istiod")]["spec"]["replicas"] == 3
        ),
    ),
    "autoscale-on-custom": (
        {"autoscaleMin": 2, "autoscaleMax": 7, "cpu": {"targetAverageUtilization": 60}},
        lambda o: o[("HorizontalPodAutoscaler", "istiod")]["spec"]["minReplicas"] == 2
        and o[("HorizontalPodAutoscaler", "istiod")]["spec"]["maxReplicas"] == 7
        and o[("HorizontalPodAutoscaler", "istiod")]["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 60,
    ),
    "custom-mesh-config": (
        {"meshConfig": {"accessLogFile": "/dev/stdout", "trustDomain": "example.org",
                        "defaultConfig": {"holdApplicationUntilProxyStarts": True}}},
        lambda o: yaml.safe_load(o[("ConfigMap", "istio")]["data"]["mesh"]) == {
            "accessLogFile": "/dev/stdout", "trustDomain": "example.org", "rootNamespace": NAMESPACE,
            "enablePrometheusMerge": True,
            "defaultConfig": {"holdApplicationUntilProxyStarts": True},
        },
    ),
    "env-resources-scheduling": (
        {"pilot": {"env": {"PILOT_ENABLE_AMBIENT": True, "PILOT_PUSH_THROTTLE": 50},
                   "resources": {"requests": {"cpu": "1"}, "limits": {"memory": "4Gi"}},
                   "nodeSelector": {"kubernetes.io/os": "linux"},
                   "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "mesh", "effect": "NoSchedule"}]}},
        lambda o: env_of(container(o))["PILOT_ENABLE_AMBIENT"] == "true"
        and env_of(container(o))["PILOT_PUSH_THROTTLE"] == "50"
        and container(o)["resources"]["limits"] == {"memory": "4Gi"}
        and o[("Deployment", "istiod")]["spec"]["template"]["spec"]["nodeSelector"] == {"kubernetes.io/os": "linux"}
        and len(o[("Deployment", "istiod")]["spec"]["template"]["spec"]["tolerations"]) == 2,
    ),
    "network-policy": (
        {"global": {"networkPolicy": {"enabled": True}}},
        lambda o: sorted(p["port"] for p in o[("NetworkPolicy", "istiod")]["spec"]["ingress"][0]["ports"])
        == [8080, 15010, 15011, 15012, 15014, 15017],
    ),
    "no-pdb-no-validation": (
        {"global": {"defaultPodDisruptionBudget": {"enabled": False}, "configValidation": False}},
        lambda o: not any(k in ("PodDisruptionBudget", "ValidatingWebhookConfiguration") for k, _ in o),
    ),
}


@pytest.mark.parametrize("case", sorted(MATRIX))
def test_render_matrix(chart, kube_strict, tmp_path, case):
    values, expect = MATRIX[case]
    chart.validate_schema(values)
    objects = render(chart, values)
    assert expect(objects), f"{case}: unexpected render"
    manifest = tmp_path / f"{case}.yaml"
    manifest.write_text(render_text(chart, values))
    res = subprocess.run([str(kube_strict), str(manifest)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert len([l for l in res.stdout.splitlines() if l.startswith("ok ")]) == len(objects)


def test_default_render_parses_strictly(chart, kube_strict, tmp_path):
    manifest = tmp_path / "default.yaml"
    manifest.write_text(render_text(chart))
    res = subprocess.run([str(kube_strict), str(manifest)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_strict_parser_rejects_unknown_fields(kube_strict, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n"
        "spec:\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n"
        "    spec:\n      containers:\n        - name: c\n          image: i\n          readOnlyRootFilesystem: true\n"
    )
    res = subprocess.run([str(kube_strict), str(bad)], capture_output=True, text=True)
    assert res.returncode == 1
    assert "readOnlyRootFilesystem" in res.stderr, res.stderr


def test_upgrade_leaves_failure_policy_to_istiod(chart):
    hook = render(chart, upgrade=True)[("ValidatingWebhookConfiguration", f"istio-validator-{NAMESPACE}")]["webhooks"][0]
    assert "failurePolicy" not in hook


@pytest.mark.parametrize("values, path", [
    ({"pilot": {"autoscaleMin": "two"}}, "/pilot/autoscaleMin"),
    ({"replicaCount": -1}, "/replicaCount"),
    ({"global": {"imagePullSecrets": "mirror-creds"}}, "/global/imagePullSecrets"),
    ({"revision": "Canary_1"}, "/revision"),
    ({"pilot": {"env": {"A": {"nested": 1}}}}, "/pilot/env/A"),
])
def test_schema_rejects_wrong_types(chart, values, path):
    with pytest.raises(helm.HelmError) as err:
        chart.render(values, name="istiod", namespace=NAMESPACE)
    assert path in str(err.value), str(err.value)


def test_schema_rejects_a_wrong_values_file(chart, tmp_path):
    """A values file as a user would pass it with -f: the schema names the key."""
    f = tmp_path / "values.yaml"
    f.write_text("pilot:\n  autoscaleEnabled: \"yes please\"\nglobal:\n  hub: dhi.io\n")
    values = helm.values_from_yaml(f.read_text())
    with pytest.raises(helm.HelmValuesError) as err:
        chart.validate_schema(values)
    assert "/pilot/autoscaleEnabled" in str(err.value) and "boolean" in str(err.value)


def test_upstream_values_file_still_renders(chart):
    """Keys the chart does not use (upstream's injector, telemetry) are accepted."""
    values = {
        "pilot": {"image": "dhi.io/istio-pilot:1.28.0"},
        "sidecarInjectorWebhook": {"rewriteAppHTTPProbe": True},
        "telemetry": {"enabled": True},
        "global": {"proxy": {"image": "proxyv2", "clusterDomain": "cluster.local"}, "logging": {"level": "default:debug"}},
    }
    c = container(render(chart, values))
    assert c["image"] == "dhi.io/istio-pilot:1.28.0"
    assert "--log_output_level=default:debug" in c["args"]


def test_package(tmp_path):
    archive = helm.package(CHART, destination=tmp_path)
    assert pathlib.Path(archive).name == f"istiod-{yaml.safe_load((CHART / 'Chart.yaml').read_text())['version']}.tgz"
    with helm.Chart.load(archive) as packaged:
        assert packaged.schema is not None
        assert container(render(packaged))["image"] == f"dhi.io/istio-pilot:{APP_VERSION}"


def _resolve_env(entries, pod_name, namespace, service_account):
    field = {"metadata.name": pod_name, "metadata.namespace": namespace,
             "spec.serviceAccountName": service_account}
    env = {}
    for e in entries:
        if "value" in e:
            env[e["name"]] = e["value"]
        else:
            env[e["name"]] = field[e["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


@pytest.mark.parametrize("values", [{}, {"revision": "canary", "pilot": {"env": {"PILOT_DEBOUNCE_AFTER": "50ms"}}}],
                         ids=["default", "canary"])
def test_pilot_discovery_runs_with_rendered_args_and_env(chart, tmp_path, values):
    objects = render(chart, values)
    name = "istiod-canary" if values.get("revision") else "istiod"
    c = container(objects, name)
    pod = objects[("Deployment", name)]["spec"]["template"]["spec"]
    env = _resolve_env(c["env"], f"{name}-0", NAMESPACE, pod["serviceAccountName"])
    http_port, grpc_port, mon_port = free_port(), free_port(), free_port()
    # The container's arguments as rendered, with listeners moved onto loopback ports;
    # the image's entry point is pilot-discovery itself.
    args = [a.replace("--monitoringAddr=:15014", f"--monitoringAddr=127.0.0.1:{mon_port}") for a in c["args"]]
    assert args[0] == "discovery"
    args += [
        "--registries=", "--configDir", str(ROOT / "docs" / "examples" / "mesh"),
        "--meshConfig", str(tmp_path / "no-mesh-file"),
        "--httpAddr", f"127.0.0.1:{http_port}", "--grpcAddr", f"127.0.0.1:{grpc_port}",
        "--secureGRPCAddr=", "--httpsAddr=",
    ]
    full_env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    full_env.update(env)
    log = tmp_path / "istiod.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([pilot_binary(), *args], stdout=out, stderr=subprocess.STDOUT, env=full_env)
        try:
            def ready():
                if proc.poll() is not None:
                    raise AssertionError(f"pilot-discovery exited {proc.returncode}:\n{log.read_text()}")
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/ready", timeout=1) as r:
                        return r.status == 200
                except OSError:
                    return False
            wait_until(ready, timeout=60, what="pilot-discovery /ready with the chart's args")
            with urllib.request.urlopen(f"http://127.0.0.1:{mon_port}/metrics", timeout=5) as r:
                assert r.status == 200
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_chart_applies_with_server_side_dry_run(chart, kube_cluster, tmp_path):
    """The API server (kube_cluster) accepts every rendered object, defaults and validation
    included, in a fresh namespace; nothing is stored (server dry run)."""
    ns = f"istio-chart-{uuid.uuid4().hex[:6]}"
    kube_cluster.kubectl("create", "namespace", ns)
    out = chart.render({}, name="istiod", namespace=ns, is_install=True)
    docs = [d for k in sorted(out) for d in yaml.safe_load_all(out[k]) if d]
    manifest = tmp_path / "istiod.yaml"
    manifest.write_text(yaml.safe_dump_all(docs))
    applied = kube_cluster.kubectl("apply", "--dry-run=server", "--server-side", "-n", ns, "-f", str(manifest))
    # Lines like `deployment.apps/istiod serverside-applied (server dry run)`.
    lines = applied.splitlines()
    assert all(line.endswith(" serverside-applied (server dry run)") for line in lines), applied
    got = sorted((line.split("/", 1)[0].split(".", 1)[0], line.split(" ", 1)[0].split("/", 1)[1]) for line in lines)
    assert got == sorted((d["kind"].lower(), d["metadata"]["name"]) for d in docs), applied
    assert kube_cluster.get_json("deployment", "istiod", "-n", ns) is None, "a dry run stores nothing"
