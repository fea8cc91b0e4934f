"""Admission through the real API server: istiod's validation webhook, registered with a
ValidatingWebhookConfiguration as upstream's chart makes it, is called by kube-apiserver.

istiod runs outside the cluster on loopback, so the configuration's `clientConfig` is a `url`,
`https://127.0.0.1:<port>/validate`, not the chart's `service`. The API server checks the
webhook's certificate against the `caBundle` istiod patches in, for the url's host. As upstream,
`ISTIOD_CUSTOM_HOST` adds names to istiod's serving certificate and an entry that is an IP
address becomes an IP SAN, so `ISTIOD_CUSTOM_HOST=127.0.0.1` is how an istiod outside the
cluster is made reachable under its own CA (no certificate files of the test's own).

The cluster is shared with other test modules: istiod runs with a revision of its own, and the
configuration selects only objects labelled `istio.io/rev=<that revision>` (the chart's
objectSelector), so no other test's writes are sent to it; it is deleted at the end.
"""

import base64
import json
import time
import uuid

import pytest

from conftest import wait_until
from inject_support import names, pod, write_config
from live_istiod import LiveIstiod

VALIDATE_GROUPS = ["security.istio.io", "networking.istio.io", "telemetry.istio.io", "extensions.istio.io"]
INVALID_WEIGHTS = "spec.http[0].route: total destination weight = 0"


def validator(name: str, revision: str, url: str) -> dict:
    """The chart's ValidatingWebhookConfiguration (charts/istiod/templates), with a url client."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name, "labels": {"istio.io/rev": revision, "istio": "istiod"}},
        "webhooks": [{
            "name": "rev.validation.istio.io",
            "clientConfig": {"url": url},
            "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": VALIDATE_GROUPS,
                       "apiVersions": ["*"], "resources": ["*"]}],
            "failurePolicy": "Ignore",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 10,
            "objectSelector": {"matchExpressions": [
                {"key": "istio.io/rev", "operator": "In", "values": [revision]}]},
        }],
    }


def virtual_service(name: str, ns: str, revision: str | None, weights: tuple[int, int]) -> dict:
    meta = {"name": name, "namespace": ns}
    if revision:
        meta["labels"] = {"istio.io/rev": revision}
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": meta,
            "spec": {"hosts": ["reviews"], "http": [{"route": [
                {"destination": {"host": "reviews-a"}, "weight": weights[0]},
                {"destination": {"host": "reviews-b"}, "weight": weights[1]}]}]}}


def apply(cluster, obj: dict) -> tuple[bool, str]:
    """`kubectl apply`: whether it succeeded and what it printed."""
    out = cluster.kubectl("apply", "-f", "-", input=json.dumps(obj), check=False)
    stored = cluster.get_json("virtualservice", obj["metadata"]["name"], "-n", obj["metadata"]["namespace"])
    return stored is not None, out


def webhook_of(cluster, name: str) -> dict:
    vwc = cluster.get_json("validatingwebhookconfiguration", name)
    assert vwc is not None, f"{name} is gone"
    return vwc["webhooks"][0]


@pytest.fixture
def start_admission(kube_cluster, tmp_path):
    """Starts istiod (own revision, webhook on loopback, `env` and `extra_args` added) and creates
    its ValidatingWebhookConfiguration; both are removed afterwards."""
    started = []

    def start(env: dict, extra_args=(), inject: bool = False) -> dict:
        suffix = uuid.uuid4().hex[:6]
        revision, istio_ns, app_ns = f"adm{suffix}", f"istio-adm-{suffix}", f"adm-app-{suffix}"
        for ns in (istio_ns, app_ns):
            kube_cluster.kubectl("create", "namespace", ns)
        # Upstream's chart name for a revision: istio-validator-<rev>-<istio namespace>.
        name = f"istio-validator-{revision}-{istio_ns}"
        if inject:
            # The injector ConfigMap, mounted where istiod reads it.
            write_config(tmp_path / f"istiod-{suffix}")
        istiod = LiveIstiod(tmp_path / f"istiod-{suffix}", kube_cluster.kubeconfig, istio_ns, https=True,
                            env={"REVISION": revision, **env}, extra_args=extra_args)
        started.append((istiod, name))
        t0 = time.monotonic()
        kube_cluster.apply(validator(name, revision, f"https://127.0.0.1:{istiod.https}/validate"))
        return {"cluster": kube_cluster, "istiod": istiod, "name": name, "revision": revision,
                "app_ns": app_ns, "started": t0}

    yield start
    for istiod, name in started:
        istiod.stop()
        kube_cluster.kubectl("delete", "validatingwebhookconfiguration", name, "--ignore-not-found")


@pytest.fixture
def admission(start_admission):
    """istiod whose serving certificate covers 127.0.0.1, the url's host."""
    return start_admission({"ISTIOD_CUSTOM_HOST": "127.0.0.1"})


def test_api_server_refuses_invalid_config_with_istiods_message(admission):
    cluster, istiod, name = admission["cluster"], admission["istiod"], admission["name"]
    revision, ns = admission["revision"], admission["app_ns"]

    # istiod patches its CA bundle in, then proves through the API server that it rejects an
    # invalid Gateway (dry run) and only then makes the webhook fail closed.
    hook = wait_until(lambda: (h := webhook_of(cluster, name))["clientConfig"].get("caBundle") and h,
                      timeout=30, what="caBundle patched in")
    assert "BEGIN CERTIFICATE" in base64.b64decode(hook["clientConfig"]["caBundle"]).decode()
    wait_until(lambda: webhook_of(cluster, name)["failurePolicy"] == "Fail", timeout=60,
               what="failurePolicy switched to Fail after the dry-run self-check")
    flipped = time.monotonic() - admission["started"]
    istiod.wait_log("validation webhook denied the invalid Gateway; switching failurePolicy to Fail", timeout=5)
    assert cluster.get_json("gateway", "invalid-gateway", "-n", istiod.namespace) is None, \
        "the self-check Gateway was a dry run; it must not be stored"

    # Refused by the API server, with istiod's reason.
    stored, out = apply(cluster, virtual_service("bad", ns, revision, (0, 0)))
    assert not stored, out
    assert 'admission webhook "rev.validation.istio.io" denied the request' in out, out
    assert f"configuration is invalid: {INVALID_WEIGHTS}" in out, out

    # A valid one is stored, and an update to an invalid spec is refused too.
    stored, out = apply(cluster, virtual_service("good", ns, revision, (80, 20)))
    assert stored, out
    stored, out = apply(cluster, virtual_service("good", ns, revision, (0, 0)))
    assert INVALID_WEIGHTS in out, out
    kept = cluster.get_json("virtualservice", "good", "-n", ns)
    assert [r["weight"] for r in kept["spec"]["http"][0]["route"]] == [80, 20], kept

    # Objects of other revisions (or none) are not sent to this webhook.
    stored, out = apply(cluster, virtual_service("other", ns, None, (0, 0)))
    assert stored, out

    # An edit that undoes istiod's work (a chart upgrade, a person) is put right again at once:
    # the self-check has passed, so Fail comes back without another one.
    patch = [{"op": "replace", "path": "/webhooks/0/failurePolicy", "value": "Ignore"},
             {"op": "remove", "path": "/webhooks/0/clientConfig/caBundle"}]
    cluster.kubectl("patch", "validatingwebhookconfiguration", name, "--type=json", "-p", json.dumps(patch))
    wait_until(lambda: (h := webhook_of(cluster, name))["failurePolicy"] == "Fail"
               and h["clientConfig"].get("caBundle") == hook["clientConfig"]["caBundle"],
               timeout=15, what="failurePolicy and caBundle restored")
    print(f"failurePolicy Fail {flipped:.1f}s after the configuration was created")


def test_fail_closed_once_istiod_is_gone(admission):
    """With failurePolicy Fail, the API server refuses this revision's config while istiod
    does not answer: the flip is what makes validation binding."""
    cluster, istiod, name = admission["cluster"], admission["istiod"], admission["name"]
    revision, ns = admission["revision"], admission["app_ns"]
    wait_until(lambda: webhook_of(cluster, name)["failurePolicy"] == "Fail", timeout=60,
               what="failurePolicy switched to Fail")
    istiod.stop()
    stored, out = apply(cluster, virtual_service("good", ns, revision, (80, 20)))
    assert not stored, out
    assert "failed calling webhook" in out, out


def test_stays_fail_open_while_the_api_server_cannot_verify_istiod(start_admission):
    """Without 127.0.0.1 in istiod's certificate (upstream's default names are only
    istiod.<ns>.svc and the like) the API server cannot call the webhook: the self-check
    fails for that reason, failurePolicy stays Ignore and invalid config is admitted."""
    adm = start_admission({}, ["--log_output_level=default:info,kube:debug"])
    cluster, istiod, name = adm["cluster"], adm["istiod"], adm["name"]
    wait_until(lambda: webhook_of(cluster, name)["clientConfig"].get("caBundle"), timeout=30,
               what="caBundle patched in")
    # failurePolicy Ignore: the API server fails open, so istiod sees its dry run accepted;
    # the API server's log has the reason.
    line = istiod.wait_log("validation self-check not passed yet", timeout=30)
    assert "the invalid Gateway was accepted" in line, line
    url = f"https://127.0.0.1:{istiod.https}/validate"

    def tls_refused():
        log = (cluster.dir / "apiserver.log").read_text(errors="replace")
        return next((l for l in log.splitlines() if "failing open" in l and url in l), None)

    refused = wait_until(tls_refused, timeout=10, what="the API server's failed webhook call in its log")
    assert "x509: cannot validate certificate for 127.0.0.1 because it doesn't contain any IP SANs" in refused, refused
    # More rounds of the self-check (backoff from 100 ms) change nothing.
    istiod.wait_log("validation self-check not passed yet", timeout=30, start=istiod.log_size())
    assert webhook_of(cluster, name)["failurePolicy"] == "Ignore"
    stored, out = apply(cluster, virtual_service("bad", adm["app_ns"], adm["revision"], (0, 0)))
    assert stored, out


def test_injector_webhooks_are_left_alone_while_istiod_serves_no_injection(admission):
    """Without an injector config istiod answers no `/inject`, so it must not make the API server
    trust it for the injector's webhooks: upstream starts its injector CA patcher only with the
    injection webhook.
    The revision's sidecar-injector MutatingWebhookConfiguration stays exactly as written, through
    several rounds in which the validation webhook is patched, fails closed and is repaired."""
    cluster, istiod, revision = admission["cluster"], admission["istiod"], admission["revision"]
    name = f"istio-sidecar-injector-{revision}"

    def hook(hook_name):
        # Pods of this revision only: never in another test's way.
        return {"name": hook_name, "clientConfig": {"url": f"https://127.0.0.1:{istiod.https}/inject"},
                "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
                "failurePolicy": "Fail", "sideEffects": "None", "admissionReviewVersions": ["v1"],
                "objectSelector": {"matchLabels": {"istio.io/rev": revision}}}

    cluster.apply({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
                   "metadata": {"name": name, "labels": {"istio.io/rev": revision}},
                   "webhooks": [hook("rev.namespace.sidecar-injector.istio.io"),
                                hook("rev.object.sidecar-injector.istio.io")]})
    try:
        written = cluster.get_json("mutatingwebhookconfiguration", name)
        istiod.wait_log("not serving injection: injector webhook configurations are left alone", timeout=30)
        wait_until(lambda: (h := webhook_of(cluster, admission["name"]))["clientConfig"].get("caBundle")
                   and h["failurePolicy"] == "Fail", timeout=60, what="the validation webhook patched and fail closed")

        # Undo istiod's work on the validation webhook: the round that repairs it would also have
        # patched the injector (it used to, first), so it must have gone by before the check below.
        patch = [{"op": "replace", "path": "/webhooks/0/failurePolicy", "value": "Ignore"},
                 {"op": "remove", "path": "/webhooks/0/clientConfig/caBundle"}]
        cluster.kubectl("patch", "validatingwebhookconfiguration", admission["name"], "--type=json",
                        "-p", json.dumps(patch))
        wait_until(lambda: (h := webhook_of(cluster, admission["name"]))["clientConfig"].get("caBundle")
                   and h["failurePolicy"] == "Fail", timeout=15, what="the validation webhook repaired")

        kept = cluster.get_json("mutatingwebhookconfiguration", name)
        assert kept["metadata"]["resourceVersion"] == written["metadata"]["resourceVersion"], kept
        for h in kept["webhooks"]:
            assert "caBundle" not in h["clientConfig"], h
            assert h["failurePolicy"] == "Fail", h
    finally:
        cluster.kubectl("delete", "mutatingwebhookconfiguration", name, "--ignore-not-found")


def injector_webhooks(name: str, revision: str, url: str, app_ns: str) -> dict:
    """The chart's revision MutatingWebhookConfiguration (namespace and object webhooks), with a url
    client, narrowed to this test's namespace so no other test's pods are sent to it."""
    only_here = {"key": "kubernetes.io/metadata.name", "operator": "In", "values": [app_ns]}

    def hook(hook_name, namespace_selector, object_selector):
        return {"name": hook_name, "clientConfig": {"url": url},
                "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                           "resources": ["pods"]}],
                "failurePolicy": "Fail", "sideEffects": "None", "reinvocationPolicy": "Never",
                "admissionReviewVersions": ["v1"], "timeoutSeconds": 10,
                "namespaceSelector": namespace_selector, "objectSelector": object_selector}

    return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": name, "labels": {"istio.io/rev": revision}},
            "webhooks": [
                hook("rev.namespace.sidecar-injector.istio.io",
                     {"matchExpressions": [{"key": "istio-injection", "operator": "In", "values": ["enabled"]},
                                           only_here]},
                     {"matchExpressions": [{"key": "sidecar.istio.io/inject", "operator": "NotIn",
                                            "values": ["false"]}]}),
                hook("rev.object.sidecar-injector.istio.io",
                     {"matchExpressions": [{"key": "istio-injection", "operator": "DoesNotExist"},
                                           only_here]},
                     {"matchExpressions": [{"key": "sidecar.istio.io/inject", "operator": "In",
                                            "values": ["true"]}]}),
            ]}


def test_pods_are_injected_through_the_api_server(start_admission):
    """With its injector config mounted istiod serves `/inject` and patches its CA into the
    revision's injector webhooks; the API server then stores a Pod created in a namespace labelled
    `istio-injection=enabled` with istiod's sidecar, and one that opts out without."""
    adm = start_admission({"ISTIOD_CUSTOM_HOST": "127.0.0.1"}, inject=True)
    cluster, istiod, revision, ns = adm["cluster"], adm["istiod"], adm["revision"], adm["app_ns"]
    name = f"istio-sidecar-injector-{revision}"
    cluster.kubectl("label", "namespace", ns, "istio-injection=enabled")
    cluster.apply(injector_webhooks(name, revision, f"https://127.0.0.1:{istiod.https}/inject", ns))
    try:
        wait_until(lambda: all(h["clientConfig"].get("caBundle") for h in
                               cluster.get_json("mutatingwebhookconfiguration", name)["webhooks"]),
                   timeout=30, what="caBundle patched into the injector webhooks")

        def create(p):
            out = cluster.kubectl("apply", "-f", "-", input=json.dumps(p), check=False)
            stored = cluster.get_json("pod", p["metadata"]["name"], "-n", ns)
            assert stored is not None, out
            return stored

        injected = create(pod(name="web", namespace=ns))
        assert names(injected["spec"]["containers"]) == ["app", "istio-proxy"], injected["spec"]
        assert names(injected["spec"]["initContainers"]) == ["istio-init"]
        status = json.loads(injected["metadata"]["annotations"]["sidecar.istio.io/status"])
        assert status["containers"] == ["istio-proxy"] and status["revision"] == revision, status
        assert injected["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/app-health/app/readyz"

        plain = create(pod(name="plain", namespace=ns, labels={"app": "plain", "sidecar.istio.io/inject": "false"}))
        assert names(plain["spec"]["containers"]) == ["app"]
        assert "sidecar.istio.io/status" not in plain["metadata"].get("annotations", {})
    finally:
        cluster.kubectl("delete", "mutatingwebhookconfiguration", name, "--ignore-not-found")
