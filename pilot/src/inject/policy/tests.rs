//! The injection decision, one row per rule and per clash between rules.

use std::collections::BTreeMap;

use super::*;

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn config(policy: &str) -> Config {
    Config::parse(&format!(
        "policy: {policy}\nneverInjectSelector:\n- matchLabels: {{never: \"yes\"}}\nalwaysInjectSelector:\n- matchLabels: {{always: \"yes\"}}\n"
    ))
    .expect("config")
}

struct Case {
    name: &'static str,
    policy: &'static str,
    namespace: &'static str,
    host_network: bool,
    labels: &'static [(&'static str, &'static str)],
    annotations: &'static [(&'static str, &'static str)],
    want: Decision,
}

const fn case(
    name: &'static str,
    policy: &'static str,
    labels: &'static [(&'static str, &'static str)],
    annotations: &'static [(&'static str, &'static str)],
    want: Decision,
) -> Case {
    Case {
        name,
        policy,
        namespace: "default",
        host_network: false,
        labels,
        annotations,
        want,
    }
}

const CASES: &[Case] = &[
    case(
        "enabled by default",
        "enabled",
        &[],
        &[],
        Decision::PolicyEnabled,
    ),
    case(
        "disabled by default",
        "disabled",
        &[],
        &[],
        Decision::PolicyDisabled,
    ),
    case(
        "annotation opts in",
        "disabled",
        &[],
        &[(INJECT_KEY, "true")],
        Decision::PodOptIn,
    ),
    case(
        "label opts in",
        "disabled",
        &[(INJECT_KEY, "true")],
        &[],
        Decision::PodOptIn,
    ),
    case(
        "annotation opts out",
        "enabled",
        &[],
        &[(INJECT_KEY, "false")],
        Decision::PodOptOut,
    ),
    case(
        "label opts out",
        "enabled",
        &[(INJECT_KEY, "false")],
        &[],
        Decision::PodOptOut,
    ),
    case(
        "label wins over annotation",
        "enabled",
        &[(INJECT_KEY, "false")],
        &[(INJECT_KEY, "true")],
        Decision::PodOptOut,
    ),
    case(
        "invalid value falls back to the policy",
        "disabled",
        &[(INJECT_KEY, "yes")],
        &[],
        Decision::PolicyDisabled,
    ),
    case(
        "never selector",
        "enabled",
        &[("never", "yes")],
        &[],
        Decision::NeverSelector,
    ),
    case(
        "always selector",
        "disabled",
        &[("always", "yes")],
        &[],
        Decision::AlwaysSelector,
    ),
    case(
        "never wins over always",
        "disabled",
        &[("never", "yes"), ("always", "yes")],
        &[],
        Decision::NeverSelector,
    ),
    case(
        "the pod's word wins over never",
        "enabled",
        &[("never", "yes")],
        &[(INJECT_KEY, "true")],
        Decision::PodOptIn,
    ),
    case(
        "the pod's word wins over always",
        "disabled",
        &[("always", "yes")],
        &[(INJECT_KEY, "false")],
        Decision::PodOptOut,
    ),
    case(
        "an invalid policy injects nothing, even when asked",
        "sometimes",
        &[(INJECT_KEY, "true")],
        &[],
        Decision::PolicyInvalid,
    ),
    Case {
        name: "host network is never injected",
        policy: "enabled",
        namespace: "default",
        host_network: true,
        labels: &[(INJECT_KEY, "true")],
        annotations: &[],
        want: Decision::HostNetwork,
    },
    Case {
        name: "system namespaces are never injected",
        policy: "enabled",
        namespace: "kube-system",
        host_network: false,
        labels: &[(INJECT_KEY, "true")],
        annotations: &[],
        want: Decision::IgnoredNamespace,
    },
];

#[test]
fn precedence_as_upstream() {
    for c in CASES {
        let (labels, annotations) = (map(c.labels), map(c.annotations));
        let got = decide(
            &config(c.policy),
            PodFacts {
                namespace: c.namespace,
                host_network: c.host_network,
                labels: &labels,
                annotations: &annotations,
            },
        );
        assert_eq!(got, c.want, "{}", c.name);
    }
}

#[test]
fn only_the_positive_decisions_inject() {
    let injecting: Vec<Decision> = [
        Decision::PodOptIn,
        Decision::AlwaysSelector,
        Decision::PolicyEnabled,
        Decision::HostNetwork,
        Decision::IgnoredNamespace,
        Decision::PodOptOut,
        Decision::NeverSelector,
        Decision::PolicyDisabled,
        Decision::PolicyInvalid,
    ]
    .into_iter()
    .filter(|d| d.inject())
    .collect();
    assert_eq!(
        injecting,
        [
            Decision::PodOptIn,
            Decision::AlwaysSelector,
            Decision::PolicyEnabled
        ]
    );
}
