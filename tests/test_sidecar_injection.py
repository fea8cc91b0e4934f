"""The sidecar injection webhook end to end: pilot-discovery with an injector config mounted where
upstream's istiod reads it (./var/lib/istio/inject/{config,values} under its working folder) serves
POST /inject over TLS on --httpsAddr; the JSON patch it answers with is applied by Python's own
RFC 6902 implementation and the result checked."""

import json
import subprocess

import pytest

from conftest import free_port, pilot_binary, wait_until
from inject_support import apply_patch, env_of, names, pod, review, write_config, VALUES
from test_validation_webhook import Webhook


@pytest.fixture(scope="module")
def injector(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("inject")
    write_config(workdir)
    w = Webhook(workdir)
    yield w
    w.stop()


def answer(webhook, body, path="/inject"):
    status, text = webhook.post(body, path=path)
    assert status == 200, text
    return json.loads(text)


def counter(metrics: str, name: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in metrics:\n{metrics}")


@pytest.mark.parametrize("version", ["v1", "v1beta1"])
def test_a_pod_is_injected(injector, version):
    original = pod()
    out = answer(injector, review(original, version))
    assert out["apiVersion"] == f"admission.k8s.io/{version}" and out["kind"] == "AdmissionReview"
    response = out["response"]
    assert response["uid"] == review(original)["request"]["uid"] and response["allowed"] is True
    injected = apply_patch(original, response)

    spec = injected["spec"]
    assert names(spec["containers"]) == ["app", "istio-proxy"]
    assert names(spec["initContainers"]) == ["istio-init"]
    assert names(spec["volumes"]) == ["istio-envoy", "istio-podinfo"]
    proxy, init = spec["containers"][1], spec["initContainers"][0]
    assert proxy["image"] == init["image"] == "docker.io/istio/proxyv2:1.28.0"
    assert init["args"][init["args"].index("-u") + 1] == "1337"
    assert "15090,15021,15020" in init["args"]
    env = env_of(proxy)
    assert env["ISTIO_META_APP_CONTAINERS"] == "app"
    assert env["ISTIO_META_WORKLOAD_NAME"] == "web"
    assert env["ISTIO_META_OWNER"] == "kubernetes://apis/v1/namespaces/shop/pods/web"
    assert env["ISTIO_META_MESH_ID"] == "cluster.local"
    assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert "--proxyLogLevel=warning" in proxy["args"]

    # The application's probe goes through the agent; the original is handed to the agent.
    assert spec["containers"][0]["readinessProbe"] == {
        "httpGet": {"path": "/app-health/app/readyz", "port": 15020}}
    assert json.loads(env["ISTIO_KUBE_APP_PROBERS"]) == {
        "/app-health/app/readyz": {"httpGet": {"path": "/ready", "port": 8080}}}

    meta = injected["metadata"]
    status = json.loads(meta["annotations"]["sidecar.istio.io/status"])
    assert status == {"initContainers": ["istio-init"], "containers": ["istio-proxy"],
                      "volumes": ["istio-envoy", "istio-podinfo"], "imagePullSecrets": None,
                      "revision": "default"}
    assert meta["annotations"]["kubectl.kubernetes.io/default-container"] == "app"
    assert meta["annotations"]["prometheus.io/port"] == "15020"
    assert meta["labels"]["security.istio.io/tlsMode"] == "istio"
    assert meta["labels"]["service.istio.io/canonical-name"] == "web"


def test_the_path_names_cluster_and_network(injector):
    original = pod(name="east-web")
    response = answer(injector, review(original), path="/inject/cluster/east/net/network1")["response"]
    injected = apply_patch(original, response)
    env = env_of(injected["spec"]["containers"][1])
    assert env["ISTIO_META_CLUSTER_ID"] == "east" and env["ISTIO_META_NETWORK"] == "network1"
    assert injected["metadata"]["labels"]["topology.istio.io/network"] == "network1"


def test_a_pod_that_opts_out_is_allowed_without_a_patch(injector):
    before = counter(injector.metrics(), "sidecar_injection_skip_total")
    for opted_out in (pod(annotations={"sidecar.istio.io/inject": "false"}),
                      pod(labels={"app": "web", "sidecar.istio.io/inject": "false"}),
                      pod(hostNetwork=True)):
        response = answer(injector, review(opted_out))["response"]
        assert response["allowed"] is True and "patch" not in response, response
    assert counter(injector.metrics(), "sidecar_injection_skip_total") == before + 3


def test_an_injected_pod_is_injected_again_to_the_same_pod(injector):
    once = apply_patch(pod(), answer(injector, review(pod()))["response"])
    again = answer(injector, review(once))["response"]
    assert apply_patch(once, again) == once


def test_malformed_reviews_get_clear_errors_and_the_server_keeps_serving(injector):
    before = counter(injector.metrics(), "sidecar_injection_failure_total")
    cases = [
        (b"{not json", "application/json", 400, "not JSON"),
        ({"kind": "Pod"}, "application/json", 400, "not an AdmissionReview"),
        (review(pod()), "text/plain", 415, "expect application/json"),
        (b"", "application/json", 400, "no body found"),
    ]
    for body, content_type, want, reason in cases:
        status, text = injector.post(body, content_type=content_type, path="/inject")
        assert status == want and reason in text, (status, text)
    # A review whose pod cannot be decoded is refused in the review, with the reason.
    broken = review(pod())
    broken["request"]["object"] = "not a pod"
    response = answer(injector, broken)["response"]
    assert response["allowed"] is False and "could not decode the pod" in response["status"]["message"]
    # Still serving.
    status, text = injector.post(review(pod()), path="/inject")
    assert status == 200 and json.loads(text)["response"]["allowed"] is True
    assert counter(injector.metrics(), "sidecar_injection_failure_total") == before + 5
    assert counter(injector.metrics(), "sidecar_injection_requests_total") >= 6


def test_validation_is_still_served_beside_injection(injector):
    status, text = injector.post({"kind": "nope"}, path="/validate")
    assert status == 400 and "not an AdmissionReview" in text


def test_a_changed_config_is_picked_up_and_a_broken_one_keeps_the_last_good(tmp_path):
    d = write_config(tmp_path)
    w = Webhook(tmp_path)
    try:
        def image():
            response = answer(w, review(pod()))["response"]
            return apply_patch(pod(), response)["spec"]["containers"][1]["image"]

        assert image() == "docker.io/istio/proxyv2:1.28.0"
        (d / "values").write_text(VALUES.replace("tag: 1.28.0", "tag: 1.29.0"))
        wait_until(lambda: image() == "docker.io/istio/proxyv2:1.29.0", timeout=15,
                   what="the new values used")
        (d / "config").write_text("templates:\n  sidecar: '{{ if }}'\n")
        wait_until(lambda: "rejecting the changed injection config" in w.log_path.read_text(),
                   timeout=15, what="the broken config logged")
        assert "sidecar:1" in w.log_path.read_text()
        assert image() == "docker.io/istio/proxyv2:1.29.0"
    finally:
        w.stop()


def test_without_an_injector_config_inject_is_not_served(tmp_path):
    w = Webhook(tmp_path)
    try:
        status, _ = w.post(review(pod()), path="/inject")
        assert status == 404
        assert "no injection config: not serving /inject" in w.log_path.read_text()
    finally:
        w.stop()


def test_a_broken_config_at_start_stops_istiod(tmp_path):
    """With no last good config to keep, a broken one at start is an error, as upstream."""
    write_config(tmp_path, config="templates:\n  sidecar: '{{ end }}'\n")
    (tmp_path / "config").mkdir()
    addrs = [f"127.0.0.1:{free_port()}" for _ in range(5)]
    proc = subprocess.run(
        [pilot_binary(), "discovery", "--registries=", "--configDir", str(tmp_path / "config"),
         "--grpcAddr", addrs[0], "--httpAddr", addrs[1], "--monitoringAddr", addrs[2],
         "--secureGRPCAddr", addrs[3], "--httpsAddr", addrs[4]],
        cwd=tmp_path, capture_output=True, text=True, timeout=60)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "loading the injection config" in out and "sidecar:1" in out, out
