use std::collections::BTreeMap;

use super::*;
use crate::testing::push_context;

fn pa(ns: &str, name: &str, created: &str, body: &str) -> String {
    format!(
        "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
         metadata: {{name: {name}, namespace: {ns}, creationTimestamp: \"{created}\"}}\nspec: {body}\n"
    )
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn effective(yaml: &str, ns: &str, l: &[(&str, &str)]) -> EffectiveMtls {
    push_context(yaml).peer_authn.inbound_mtls(ns, &labels(l))
}

const T0: &str = "2026-01-01T00:00:00Z";
const T1: &str = "2026-02-01T00:00:00Z";

#[test]
fn without_policies_every_port_is_permissive() {
    let e = effective("", "default", &[]);
    assert_eq!(e.mode, MtlsMode::Permissive);
    assert_eq!(e.for_port(8080), MtlsMode::Permissive);
    assert_eq!(push_context("").peer_authn.namespace_mode("default"), None);
}

#[test]
fn levels_override_and_unset_inherits() {
    let mesh = pa("istio-system", "mesh", T0, "{mtls: {mode: STRICT}}");
    // (extra policies, namespace, workload labels, want)
    type Case<'a> = (String, &'a str, Vec<(&'a str, &'a str)>, MtlsMode);
    let cases: Vec<Case<'_>> = vec![
        (String::new(), "default", vec![], MtlsMode::Strict),
        (
            pa("default", "ns", T0, "{mtls: {mode: DISABLE}}"),
            "default",
            vec![],
            MtlsMode::Disable,
        ),
        (
            pa("default", "ns", T0, "{mtls: {mode: UNSET}}"),
            "default",
            vec![],
            MtlsMode::Strict,
        ),
        (
            pa("default", "ns", T0, "{}"),
            "default",
            vec![],
            MtlsMode::Strict,
        ),
        (
            pa(
                "default",
                "app",
                T0,
                "{selector: {matchLabels: {app: a}}, mtls: {mode: PERMISSIVE}}",
            ),
            "default",
            vec![("app", "a")],
            MtlsMode::Permissive,
        ),
        // The selector does not match: the mesh policy holds.
        (
            pa(
                "default",
                "app",
                T0,
                "{selector: {matchLabels: {app: a}}, mtls: {mode: PERMISSIVE}}",
            ),
            "default",
            vec![("app", "b")],
            MtlsMode::Strict,
        ),
        // A policy of another namespace never applies.
        (
            pa("other", "ns", T0, "{mtls: {mode: DISABLE}}"),
            "default",
            vec![],
            MtlsMode::Strict,
        ),
        // Selector policies in the root namespace select nothing.
        (
            pa(
                "istio-system",
                "sel",
                T0,
                "{selector: {matchLabels: {app: a}}, mtls: {mode: DISABLE}}",
            ),
            "default",
            vec![("app", "a")],
            MtlsMode::Strict,
        ),
    ];
    for (extra, ns, l, want) in cases {
        let yaml = format!("{mesh}{extra}");
        assert_eq!(effective(&yaml, ns, &l).mode, want, "{extra}");
    }
}

#[test]
fn the_oldest_policy_of_a_level_wins() {
    let yaml = format!(
        "{}{}",
        pa("default", "b-new", T1, "{mtls: {mode: DISABLE}}"),
        pa("default", "z-old", T0, "{mtls: {mode: STRICT}}")
    );
    assert_eq!(effective(&yaml, "default", &[]).mode, MtlsMode::Strict);
    // Same age: by name.
    let yaml = format!(
        "{}{}",
        pa("default", "b", T0, "{mtls: {mode: DISABLE}}"),
        pa("default", "a", T0, "{mtls: {mode: STRICT}}")
    );
    assert_eq!(effective(&yaml, "default", &[]).mode, MtlsMode::Strict);
}

#[test]
fn port_level_modes_come_from_the_workload_policy() {
    let yaml = format!(
        "{}{}",
        pa("default", "ns", T0, "{mtls: {mode: STRICT}, portLevelMtls: {9000: {mode: DISABLE}}}"),
        pa(
            "default",
            "app",
            T0,
            "{selector: {matchLabels: {app: a}}, portLevelMtls: {8080: {mode: DISABLE}, 8081: {mode: UNSET}}}"
        )
    );
    let e = effective(&yaml, "default", &[("app", "a")]);
    assert_eq!(e.mode, MtlsMode::Strict);
    assert_eq!(e.for_port(8080), MtlsMode::Disable);
    // UNSET at port level inherits the workload's mode.
    assert_eq!(e.for_port(8081), MtlsMode::Strict);
    // Port-level settings of a namespace policy are ignored.
    assert_eq!(e.for_port(9000), MtlsMode::Strict);
}

#[test]
fn namespace_mode_resolves_against_the_mesh_for_clients() {
    let yaml = format!(
        "{}{}{}",
        pa("istio-system", "mesh", T0, "{mtls: {mode: STRICT}}"),
        pa("legacy", "ns", T0, "{mtls: {mode: DISABLE}}"),
        pa("inherit", "ns", T0, "{mtls: {mode: UNSET}}")
    );
    let p = push_context(&yaml).peer_authn;
    assert_eq!(p.namespace_mode("legacy"), Some(MtlsMode::Disable));
    assert_eq!(p.namespace_mode("inherit"), Some(MtlsMode::Strict));
    assert_eq!(p.namespace_mode("default"), Some(MtlsMode::Strict));
    // A mesh policy without a mode counts as PERMISSIVE.
    let p = push_context(&pa("istio-system", "mesh", T0, "{}")).peer_authn;
    assert_eq!(p.namespace_mode("default"), Some(MtlsMode::Permissive));
}

#[test]
fn applied_names_the_policies_of_each_level() {
    let yaml = format!(
        "{}{}",
        pa("istio-system", "mesh", T0, "{mtls: {mode: STRICT}}"),
        pa("default", "app", T0, "{selector: {matchLabels: {app: a}}}")
    );
    let p = push_context(&yaml).peer_authn;
    assert_eq!(
        p.applied("default", &labels(&[("app", "a")])),
        vec!["istio-system/mesh", "default/app"]
    );
}
