//! Table-driven validator tests: each case is a kind, a spec in YAML flow style and the
//! expectation — `""` valid, `"!words"` rejected with a message containing `words`,
//! `"~words"` accepted with a warning containing `words`.

use serde_json::{json, Value};

use super::*;

fn api_version(kind: &str) -> &'static str {
    match kind {
        "VirtualService" | "DestinationRule" | "Gateway" | "ServiceEntry" | "Sidecar"
        | "WorkloadEntry" | "WorkloadGroup" => "networking.istio.io/v1",
        "EnvoyFilter" => "networking.istio.io/v1alpha3",
        "ProxyConfig" => "networking.istio.io/v1beta1",
        "AuthorizationPolicy" | "PeerAuthentication" | "RequestAuthentication" => {
            "security.istio.io/v1"
        }
        "Telemetry" => "telemetry.istio.io/v1",
        _ => "extensions.istio.io/v1alpha1",
    }
}

fn manifest(kind: &str, spec: &str) -> Result<Value, String> {
    let spec: Value = serde_yaml::from_str(spec).map_err(|e| format!("{spec}: not YAML: {e}"))?;
    Ok(json!({
        "apiVersion": api_version(kind),
        "kind": kind,
        "metadata": {"name": "test", "namespace": "default"},
        "spec": spec,
    }))
}

fn check(kind: &str, spec: &str, expect: &str) -> Result<(), String> {
    let outcome = validate(&manifest(kind, spec)?).map_err(|e| format!("error: {e}"))?;
    let report = &outcome.report;
    let errors = report.error_message();
    let warnings = report.warning_messages().join("; ");
    let ok = match expect.chars().next() {
        None => report.is_valid(),
        Some('!') => !report.is_valid() && errors.contains(&expect[1..]),
        Some('~') => report.is_valid() && warnings.contains(&expect[1..]),
        Some(_) => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{kind} {spec}: expected {expect:?}, got errors [{errors}] warnings [{warnings}]"
        ))
    }
}

fn run(cases: &[(&str, &str, &str)]) {
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|(k, s, e)| check(k, s, e).err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

const VS: &str = "VirtualService";
const DR: &str = "DestinationRule";
const GW: &str = "Gateway";
const SE: &str = "ServiceEntry";
const SC: &str = "Sidecar";
const WE: &str = "WorkloadEntry";
const WG: &str = "WorkloadGroup";
const EF: &str = "EnvoyFilter";
const PC: &str = "ProxyConfig";
const AP: &str = "AuthorizationPolicy";
const PA: &str = "PeerAuthentication";
const RA: &str = "RequestAuthentication";
const TE: &str = "Telemetry";
const WP: &str = "WasmPlugin";
const TX: &str = "TrafficExtension";

mod cases;

#[test]
fn every_served_version_of_every_kind() {
    let minimal = [
        (
            "networking.istio.io",
            VS,
            "{hosts: [a], http: [{route: [{destination: {host: a}}]}]}",
        ),
        ("networking.istio.io", DR, "{host: a}"),
        (
            "networking.istio.io",
            GW,
            "{servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]}",
        ),
        (
            "networking.istio.io",
            SE,
            "{hosts: [a.com], ports: [{number: 80, name: http, protocol: HTTP}]}",
        ),
        ("networking.istio.io", SC, "{egress: [{hosts: ['./*']}]}"),
        ("networking.istio.io", WE, "{address: 1.1.1.1}"),
        ("networking.istio.io", WG, "{template: {}}"),
        ("networking.istio.io", EF, "{}"),
        ("networking.istio.io", PC, "{}"),
        ("security.istio.io", AP, "{}"),
        ("security.istio.io", PA, "{}"),
        ("security.istio.io", RA, "{}"),
        ("telemetry.istio.io", TE, "{}"),
        ("extensions.istio.io", WP, "{url: 'oci://a/b'}"),
        ("extensions.istio.io", TX, "{lua: {inlineCode: x}}"),
    ];
    let schemas = schema::schemas();
    assert_eq!(schemas.len(), minimal.len(), "a schema per kind");
    for (group, kind, spec) in minimal {
        let versions = &schemas[&format!("{group}/{kind}")].versions;
        assert!(!versions.is_empty());
        for v in versions {
            let mut m = manifest(kind, spec).unwrap();
            m["apiVersion"] = json!(format!("{group}/{v}"));
            let out = validate(&m).unwrap();
            assert!(
                out.report.is_valid(),
                "{group}/{v} {kind}: {}",
                out.report.summary()
            );
            m["spec"]["bogusField"] = json!(1);
            assert!(
                !validate(&m).unwrap().report.is_valid(),
                "{group}/{v} {kind}"
            );
        }
    }
}

#[test]
fn resource_level_checks() {
    let gw = |extra: Value| {
        let mut m = manifest(
            GW,
            "{servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]}",
        )
        .unwrap();
        if let (Some(m), Some(e)) = (m.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                m.insert(k.clone(), v.clone());
            }
        }
        validate(&m)
    };
    assert!(gw(json!({})).unwrap().report.is_valid());
    let rejected = gw(json!({"metadata": {"name": "g", "annotations": {ALWAYS_REJECT: "true"}}}))
        .unwrap()
        .report;
    assert!(rejected
        .error_message()
        .contains("webhook-always-reject\" annotation found, rejecting"));
    let internal = gw(
        json!({"metadata": {"name": "g", "annotations": {"internal.istio.io/parent-names": "x"}}}),
    )
    .unwrap()
    .report;
    assert!(internal.error_message().contains("may not be set by users"));
    let extra = gw(json!({"extra": 1})).unwrap().report;
    assert_eq!(extra.error_message(), "extra: unknown field");
    let dotted = gw(json!({"metadata": {"name": "a.b"}})).unwrap().report;
    assert!(dotted.error_message().contains("invalid gateway name"));
    let labels = gw(json!({"metadata": {"name": "g", "labels": {"a": "b c"}}}))
        .unwrap()
        .report;
    assert!(labels.error_message().contains("invalid label value"));

    assert_eq!(validate(&json!([])), Err(Error::NotAnObject));
    assert_eq!(
        validate(&json!({"kind": "Gateway"})),
        Err(Error::Missing("apiVersion"))
    );
    assert_eq!(
        validate(&json!({"apiVersion": "networking.istio.io/v1"})),
        Err(Error::Missing("kind"))
    );
    let unknown = validate(&json!({"apiVersion": "networking.istio.io/v1", "kind": "Frobnicator"}));
    assert!(matches!(unknown, Err(Error::UnknownKind { .. })));
    assert!(unknown
        .unwrap_err()
        .to_string()
        .contains("unrecognized type Frobnicator"));
    let version = validate(&json!({"apiVersion": "networking.istio.io/v9", "kind": "Gateway"}));
    assert!(version
        .unwrap_err()
        .to_string()
        .contains("served versions are v1"));
    let gateway_api = validate(
        &json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "spec": {"anything": 1}}),
    );
    assert!(gateway_api.unwrap().report.is_valid());
    // No spec at all is an empty spec.
    let empty = validate(
        &json!({"apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": {"name": "g"}}),
    );
    assert!(empty
        .unwrap()
        .report
        .error_message()
        .contains("at least one server"));
}

#[test]
fn durations_and_hosts() {
    use common::*;
    use std::time::Duration;
    for (s, d) in [
        ("1s", Some(Duration::from_secs(1))),
        ("1.5s", Some(Duration::from_millis(1500))),
        ("100ms", Some(Duration::from_millis(100))),
        ("1h30m", Some(Duration::from_secs(5400))),
        ("0", Some(Duration::ZERO)),
        ("-1s", None),
        ("1", None),
        ("s", None),
        ("1d", None),
        ("", None),
    ] {
        assert_eq!(parse_duration(s), d, "{s}");
    }
    for (h, ok) in [
        ("a.com", true),
        ("*.a.com", true),
        ("*", true),
        ("*a.com", true),
        ("a.*.com", false),
        ("a..com", false),
        ("-a.com", false),
        ("a.com.", true),
        ("", false),
    ] {
        assert_eq!(validate_wildcard_domain(h).is_ok(), ok, "{h}");
    }
    for (k, ok) in [
        ("app", true),
        ("app.kubernetes.io/name", true),
        ("a/b/c", false),
        ("-a", false),
        (&"x".repeat(64) as &str, false),
    ] {
        assert_eq!(validate_label_key(k).is_ok(), ok, "{k}");
    }
}

/// Random documents, seeded and bounded: the validator never panics and stays fast.
#[test]
fn random_documents_never_panic() {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn random_value(rng: &mut StdRng, depth: u32) -> Value {
        let words = [
            "hosts",
            "http",
            "route",
            "destination",
            "host",
            "port",
            "number",
            "name",
            "tls",
            "mode",
            "match",
            "uri",
            "regex",
            "*",
            "a.b",
            "10.0.0.0/8",
            "unix:///x",
            "1s",
            "selector",
            "matchLabels",
            "rules",
            "from",
            "source",
            "when",
            "key",
            "values",
            "servers",
            "subsets",
            "portLevelMtls",
            "jwtRules",
            "issuer",
            "(",
            "",
            "ISTIO_MUTUAL",
        ];
        match if depth == 0 {
            rng.gen_range(0..4)
        } else {
            rng.gen_range(0..7)
        } {
            0 => Value::Null,
            1 => json!(rng.gen_range(-70000i64..70000)),
            2 => json!(words[rng.gen_range(0..words.len())]),
            3 => json!(rng.gen_bool(0.5)),
            4 | 5 => {
                let mut m = serde_json::Map::new();
                for _ in 0..rng.gen_range(0..5) {
                    let k = words[rng.gen_range(0..words.len())];
                    m.insert(k.to_owned(), random_value(rng, depth - 1));
                }
                Value::Object(m)
            }
            _ => Value::Array(
                (0..rng.gen_range(0..4))
                    .map(|_| random_value(rng, depth - 1))
                    .collect(),
            ),
        }
    }

    let kinds: Vec<(String, String)> = schema::schemas()
        .iter()
        .map(|(k, s)| {
            let (g, kind) = k.split_once('/').unwrap();
            (format!("{g}/{}", s.versions[0]), kind.to_owned())
        })
        .collect();
    let mut rng = StdRng::seed_from_u64(0x15017);
    let start = std::time::Instant::now();
    for i in 0..3000 {
        let (api, kind) = &kinds[i % kinds.len()];
        let doc = json!({
            "apiVersion": api,
            "kind": kind,
            "metadata": random_value(&mut rng, 2),
            "spec": random_value(&mut rng, 5),
        });
        let _ = validate(&doc);
        // Also arbitrary text through the YAML front end.
        let text: String = (0..rng.gen_range(0..60))
            .map(|_| {
                "{}[]:,- \n'\"ab1*"
                    .chars()
                    .nth(rng.gen_range(0..16))
                    .unwrap_or('a')
            })
            .collect();
        if let Ok(v) = serde_yaml::from_str::<Value>(&text) {
            let _ = validate(&v);
        }
    }
    assert!(
        start.elapsed() < std::time::Duration::from_secs(60),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn config_dir_rejects_invalid_resources_and_keeps_the_rest() {
    use crate::config::file::{DirSource, Metrics};
    use crate::config::kind::Kind;
    use crate::config::ConfigStore;

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mesh.yaml"),
        "\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: good, namespace: ns}
spec: {host: a}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: bad, namespace: ns}
spec: {host: a, trafficPolicy: {loadBalancer: {simple: FASTEST}}}
",
    )
    .unwrap();
    let store = ConfigStore::new();
    DirSource::new(dir.path(), store.clone(), Metrics::default())
        .sync()
        .unwrap();
    let snap = store.snapshot();
    let names: Vec<&str> = snap
        .of_kind(Kind::DestinationRule)
        .map(|c| c.key.name.as_str())
        .collect();
    assert_eq!(names, vec!["good"]);
    assert_eq!(snap.errors.len(), 1);
    let error = &snap.errors[0].error;
    assert!(error.contains("bad") && error.contains("configuration is invalid: spec.trafficPolicy.loadBalancer.simple: unsupported value \"FASTEST\""), "{error}");
}

#[test]
fn validate_refuses_an_alias_bomb_with_a_clear_finding() {
    let mut summary = files::Summary::default();
    files::validate_text(
        "bomb.yaml",
        crate::config::yaml::tests::BILLION_LAUGHS,
        &mut summary,
    );
    assert!(!summary.is_valid());
    let finding = summary.findings[0].to_string();
    assert!(
        finding.contains("bomb.yaml: document 0: invalid YAML")
            && finding.contains("repetition limit exceeded"),
        "{finding}"
    );
}
