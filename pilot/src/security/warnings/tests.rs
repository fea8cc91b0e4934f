use crate::security::peer_authn::MtlsMode;
use crate::testing::push_context;

const T0: &str = "2026-01-01T00:00:00Z";
const T1: &str = "2026-02-01T00:00:00Z";

fn pa(ns: &str, name: &str, created: &str, body: &str) -> String {
    format!(
        "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
         metadata: {{name: {name}, namespace: {ns}, creationTimestamp: \"{created}\"}}\nspec: {body}\n"
    )
}

fn policy(kind: &str, ns: &str, name: &str, body: &str) -> String {
    format!(
        "---\napiVersion: security.istio.io/v1\nkind: {kind}\n\
         metadata: {{name: {name}, namespace: {ns}}}\nspec: {body}\n"
    )
}

fn pod(ns: &str, name: &str, app: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{app: {app}}}}}\n\
         spec: {{containers: [{{name: app, image: app}}]}}\n"
    )
}

fn workload_entry(ns: &str, name: &str, app: &str) -> String {
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n\
         metadata: {{name: {name}, namespace: {ns}}}\nspec: {{address: 10.1.0.1, labels: {{app: {app}}}}}\n"
    )
}

/// `(kind, namespace/name, message)` of every warning.
fn warnings(yaml: &str) -> Vec<(String, String, String)> {
    push_context(yaml)
        .warnings
        .iter()
        .map(|w| {
            (
                w.kind.to_string(),
                format!("{}/{}", w.namespace, w.name),
                w.message.clone(),
            )
        })
        .collect()
}

fn on<'a>(all: &'a [(String, String, String)], resource: &str) -> Vec<&'a str> {
    all.iter()
        .filter(|(_, r, _)| r == resource)
        .map(|(_, _, m)| m.as_str())
        .collect()
}

#[test]
fn consistent_config_has_no_warnings() {
    let yaml = [
        pa("istio-system", "mesh", T0, "{mtls: {mode: STRICT}}"),
        pa("demo", "ns", T0, "{mtls: {mode: PERMISSIVE}}"),
        pa(
            "demo",
            "a",
            T0,
            "{selector: {matchLabels: {app: a}}, mtls: {mode: DISABLE}}",
        ),
        pod("demo", "a-1", "a"),
        workload_entry("demo", "vm", "vm"),
        // Metadata labels count too.
        "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n\
         metadata: {name: vm2, namespace: demo, labels: {app: vm2}}\nspec: {address: 10.1.0.2}\n"
            .to_owned(),
        policy(
            "AuthorizationPolicy",
            "demo",
            "allow-vm2",
            "{selector: {matchLabels: {app: vm2}}}",
        ),
        policy(
            "AuthorizationPolicy",
            "demo",
            "allow-vm",
            "{selector: {matchLabels: {app: vm}}}",
        ),
        policy(
            "RequestAuthentication",
            "istio-system",
            "jwt-a",
            "{selector: {matchLabels: {app: a}}}",
        ),
        policy(
            "AuthorizationPolicy",
            "demo",
            "gateway",
            "{targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}]}",
        ),
    ]
    .concat();
    assert_eq!(warnings(&yaml), vec![]);
}

#[test]
fn second_mesh_and_namespace_policies_are_ignored() {
    let yaml = [
        pa("istio-system", "mesh-new", T1, "{mtls: {mode: DISABLE}}"),
        pa("istio-system", "mesh-old", T0, "{mtls: {mode: STRICT}}"),
        pa("demo", "b", T0, "{mtls: {mode: PERMISSIVE}}"),
        pa("demo", "a", T0, "{mtls: {mode: DISABLE}}"),
    ]
    .concat();
    let push = push_context(&yaml);
    // As upstream: the oldest applies, then the first by name.
    assert_eq!(
        push.peer_authn.namespace_mode("other"),
        Some(MtlsMode::Strict)
    );
    assert_eq!(
        push.peer_authn.namespace_mode("demo"),
        Some(MtlsMode::Disable)
    );
    let all = warnings(&yaml);
    assert_eq!(all.len(), 4, "{all:#?}");
    let loser = on(&all, "istio-system/mesh-new");
    assert_eq!(loser.len(), 1);
    assert!(
        loser[0].starts_with("ignored: mesh-wide PeerAuthentication istio-system/mesh-old"),
        "{loser:?}"
    );
    assert!(loser[0].contains(T0));
    let winner = on(&all, "istio-system/mesh-old");
    assert!(winner[0].contains("istio-system/mesh-new"), "{winner:?}");
    assert!(on(&all, "demo/b")[0].starts_with("ignored: namespace-wide PeerAuthentication demo/a"));
    assert!(on(&all, "demo/a")[0].contains("demo/b"));
}

#[test]
fn overlapping_workload_policies_name_the_winner_once_per_pair() {
    let yaml = [
        pa(
            "demo",
            "new",
            T1,
            "{selector: {matchLabels: {app: a}}, mtls: {mode: DISABLE}}",
        ),
        pa(
            "demo",
            "old",
            T0,
            "{selector: {matchLabels: {app: a}}, mtls: {mode: STRICT}}",
        ),
        pod("demo", "a-1", "a"),
        pod("demo", "a-2", "a"),
        pod("demo", "b-1", "b"),
    ]
    .concat();
    let push = push_context(&yaml);
    let labels = [("app".to_owned(), "a".to_owned())].into();
    assert_eq!(
        push.peer_authn.inbound_mtls("demo", &labels).mode,
        MtlsMode::Strict
    );
    let all = warnings(&yaml);
    assert_eq!(
        on(&all, "demo/new"),
        vec![format!(
            "ignored for 2 workloads, such as Pod demo/a-1: PeerAuthentication demo/old (created {T0}) selects those workloads too and, being older, applies"
        )]
    );
    assert_eq!(on(&all, "demo/old").len(), 1);
    assert!(on(&all, "demo/old")[0].starts_with("PeerAuthentication demo/new"));
}

#[test]
fn root_namespace_selector_peer_authentication_is_ignored() {
    let yaml = [
        pa(
            "istio-system",
            "selected",
            T0,
            "{selector: {matchLabels: {app: a}}, mtls: {mode: STRICT}}",
        ),
        pod("demo", "a-1", "a"),
    ]
    .concat();
    let push = push_context(&yaml);
    let labels = [("app".to_owned(), "a".to_owned())].into();
    assert_eq!(
        push.peer_authn.inbound_mtls("demo", &labels).mode,
        MtlsMode::Permissive
    );
    let all = warnings(&yaml);
    assert_eq!(all.len(), 1, "{all:#?}");
    assert!(all[0]
        .2
        .contains("root namespace istio-system applies to no workload"));
}

#[test]
fn selectors_matching_no_workload() {
    let yaml = [
        pod("demo", "a-1", "a"),
        pod("other", "b-1", "b"),
        // Namespace scope: b runs elsewhere only.
        policy(
            "AuthorizationPolicy",
            "demo",
            "authz-b",
            "{selector: {matchLabels: {app: b}}}",
        ),
        policy(
            "RequestAuthentication",
            "demo",
            "jwt-c",
            "{selector: {matchLabels: {app: c}}}",
        ),
        pa(
            "demo",
            "pa-c",
            T0,
            "{selector: {matchLabels: {app: c, tier: x}}, mtls: {mode: STRICT}}",
        ),
        // Root namespace: any namespace counts.
        policy(
            "AuthorizationPolicy",
            "istio-system",
            "mesh-b",
            "{selector: {matchLabels: {app: b}}}",
        ),
        policy(
            "AuthorizationPolicy",
            "istio-system",
            "mesh-z",
            "{selector: {matchLabels: {app: z}}}",
        ),
        // Empty selectors select everything (validation warns about them).
        policy("AuthorizationPolicy", "demo", "all", "{selector: {}}"),
    ]
    .concat();
    let all = warnings(&yaml);
    let kinds: Vec<(&str, &str)> = all
        .iter()
        .map(|(k, r, _)| (k.as_str(), r.as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("PeerAuthentication", "demo/pa-c"),
            ("AuthorizationPolicy", "demo/authz-b"),
            ("AuthorizationPolicy", "istio-system/mesh-z"),
            ("RequestAuthentication", "demo/jwt-c"),
        ]
    );
    assert_eq!(
        on(&all, "demo/pa-c"),
        vec!["no matching workloads: no Pod or WorkloadEntry in namespace demo has the labels app=c,tier=x"]
    );
    assert!(on(&all, "istio-system/mesh-z")[0].contains("in any namespace"));
}

#[test]
fn new_since_and_grouping() {
    let one = pa(
        "demo",
        "pa-c",
        T0,
        "{selector: {matchLabels: {app: c}}, mtls: {mode: STRICT}}",
    );
    let two = [
        one.clone(),
        policy(
            "AuthorizationPolicy",
            "demo",
            "authz-c",
            "{selector: {matchLabels: {app: c}}}",
        ),
        pa("demo", "x", T1, "{}"),
        pa("demo", "y", T1, "{}"),
    ]
    .concat();
    let before = push_context(&one).warnings;
    let after = push_context(&two).warnings;
    let new: Vec<&str> = after.new_since(&before).map(|w| w.name.as_str()).collect();
    assert_eq!(new, vec!["x", "y", "authz-c"]);
    assert_eq!(after.new_since(&after).count(), 0);
    let grouped = serde_json::to_value(after.by_resource()).unwrap();
    let names: Vec<&str> = grouped
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["pa-c", "x", "y", "authz-c"]);
    assert_eq!(grouped[0]["kind"], "PeerAuthentication");
    assert_eq!(grouped[0]["warnings"].as_array().unwrap().len(), 1);
}
