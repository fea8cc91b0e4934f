"""Conflicting and ineffective security policies end to end: pilot-discovery on a config
folder lists them at /debug/config_warnings and logs each once, as the config changes."""

import json

from conftest import wait_until

T0 = "2026-01-01T00:00:00Z"
T1 = "2026-02-01T00:00:00Z"


def peer_authn(ns, name, created, spec):
    return (f"apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
            f"metadata: {{name: {name}, namespace: {ns}, creationTimestamp: '{created}'}}\n"
            f"spec: {json.dumps(spec)}\n")


def authz(ns, name, app):
    return (f"apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
            f"metadata: {{name: {name}, namespace: {ns}}}\n"
            f"spec: {{selector: {{matchLabels: {{app: {app}}}}}, rules: [{{}}]}}\n")


POD = ("apiVersion: v1\nkind: Pod\nmetadata: {name: a-1, namespace: demo, labels: {app: a}}\n"
       "spec: {containers: [{name: app, image: app}]}\nstatus: {podIP: 10.0.0.7}\n")


def warnings(istiod):
    body = json.loads(istiod.get("/debug/config_warnings"))
    return {(r["kind"], r["namespace"], r["name"]): r["warnings"] for r in body["resources"]}


def test_conflicts_and_unmatched_selectors_are_listed_and_logged(tmp_path, istiod_factory):
    config = tmp_path / "config"
    config.mkdir()
    (config / "mesh.yaml").write_text(
        peer_authn("istio-system", "mesh-new", T1, {"mtls": {"mode": "DISABLE"}}) + "---\n"
        + peer_authn("istio-system", "mesh-old", T0, {"mtls": {"mode": "STRICT"}}))
    (config / "pod.yaml").write_text(POD)
    (config / "authz.yaml").write_text(authz("demo", "allow-b", "b"))
    istiod = istiod_factory(config)
    assert "/debug/config_warnings" in json.loads(istiod.get("/debug/list"))

    found = wait_until(lambda: (w := warnings(istiod)) and len(w) == 3 and w,
                       what="three resources with warnings")
    loser = found[("PeerAuthentication", "istio-system", "mesh-new")]
    assert loser == [f"ignored: mesh-wide PeerAuthentication istio-system/mesh-old (created {T0}) "
                     "is older and applies; only one mesh-wide policy may exist per namespace"]
    assert "mesh-new" in found[("PeerAuthentication", "istio-system", "mesh-old")][0]
    assert found[("AuthorizationPolicy", "demo", "allow-b")] == [
        "no matching workloads: no Pod or WorkloadEntry in namespace demo has the labels app=b"]

    # The selector now matches the pod: its warning goes; the others stay, logged once.
    (config / "authz.yaml").write_text(authz("demo", "allow-b", "a"))
    wait_until(lambda: ("AuthorizationPolicy", "demo", "allow-b") not in warnings(istiod),
               what="the AuthorizationPolicy's warning cleared")
    assert len(warnings(istiod)) == 2
    log = istiod.log_path.read_text()
    assert log.count("ignored: mesh-wide PeerAuthentication istio-system/mesh-old") == 1, log
    assert log.count("no matching workloads") == 1, log
