use envoy_types::pb::envoy::extensions::filters::common::fault::v3::fault_delay::FaultDelaySecifier;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::fault_abort::ErrorType;

use super::fault::{grpc_code, http_fault};
use super::*;
use crate::config::istio::{FaultAbort, FaultDelay, HttpFaultInjection, Percent};
use crate::testing::push_context;

static NO_LABELS: Labels = Labels::new();

/// A sidecar in `default` without labels.
fn mesh() -> RouteSource<'static> {
    RouteSource {
        gateways: &["mesh"],
        labels: &NO_LABELS,
        namespace: "default",
    }
}

fn pct(value: f64) -> Option<Percent> {
    Some(Percent { value })
}

#[test]
fn fault_translation() {
    // (case, fault, delay seconds and per-million, abort error and per-million)
    type Want = (Option<(i64, Option<u32>)>, Option<(ErrorType, Option<u32>)>);
    let cases: Vec<(&str, HttpFaultInjection, Option<Want>)> = vec![
        (
            "fixed delay",
            HttpFaultInjection {
                delay: Some(FaultDelay {
                    fixed_delay: Some("2s".into()),
                    percentage: pct(0.5),
                    ..Default::default()
                }),
                abort: None,
            },
            Some((Some((2, Some(5_000))), None)),
        ),
        (
            "deprecated integer percent",
            HttpFaultInjection {
                delay: Some(FaultDelay {
                    fixed_delay: Some("1s".into()),
                    percent: Some(20),
                    ..Default::default()
                }),
                abort: None,
            },
            Some((Some((1, Some(200_000))), None)),
        ),
        (
            "exponential delay is unsupported",
            HttpFaultInjection {
                delay: Some(FaultDelay {
                    exponential_delay: Some("1s".into()),
                    ..Default::default()
                }),
                abort: None,
            },
            None,
        ),
        (
            "grpc abort",
            HttpFaultInjection {
                delay: None,
                abort: Some(FaultAbort {
                    grpc_status: Some("UNAVAILABLE".into()),
                    percentage: pct(100.0),
                    ..Default::default()
                }),
            },
            Some((None, Some((ErrorType::GrpcStatus(14), Some(1_000_000))))),
        ),
        (
            "unknown grpc status",
            HttpFaultInjection {
                delay: None,
                abort: Some(FaultAbort {
                    grpc_status: Some("NOPE".into()),
                    ..Default::default()
                }),
            },
            None,
        ),
    ];
    for (case, input, want) in cases {
        let got = http_fault(&input).map(|f| {
            (
                f.delay.map(|d| {
                    let Some(FaultDelaySecifier::FixedDelay(fixed)) = d.fault_delay_secifier else {
                        panic!("{case}: fixed delay expected");
                    };
                    (fixed.seconds, d.percentage.map(|p| p.numerator))
                }),
                f.abort.map(|a| {
                    (
                        a.error_type.expect("error type"),
                        a.percentage.map(|p| p.numerator),
                    )
                }),
            )
        });
        assert_eq!(got, want, "{case}");
    }
    assert_eq!(grpc_code("ok"), Some(0));
    assert_eq!(grpc_code("UNAUTHENTICATED"), Some(16));
}

#[test]
fn proxyless_routes_keep_fault_but_no_default_retries() {
    let push = push_context("");
    let rule: HttpRoute = serde_json::from_value(serde_json::json!({
        "fault": {"abort": {"httpStatus": 500, "percentage": {"value": 1}}},
        "route": [{"destination": {"host": "a.b.svc.cluster.local"}}]
    }))
    .expect("rule parses");
    for (proxyless, retries) in [(true, false), (false, true)] {
        let routes = http_routes(&push, std::slice::from_ref(&rule), 80, proxyless, &mesh());
        assert_eq!(routes.len(), 1);
        assert!(routes[0].typed_per_filter_config.contains_key(FAULT_FILTER));
        let Some(Action::Route(a)) = &routes[0].action else {
            panic!("route action expected");
        };
        assert_eq!(a.retry_policy.is_some(), retries, "proxyless={proxyless}");
    }
}

#[test]
fn matches_apply_to_the_gateways_they_name_else_to_source_labels() {
    let push = push_context("");
    let rules: Vec<HttpRoute> = serde_json::from_value(serde_json::json!([
        {"name": "edge", "match": [{"gateways": ["istio-system/gw"]}], "route": [{"destination": {"host": "a"}}]},
        {"name": "both", "match": [{"gateways": ["mesh", "istio-system/gw"]}], "route": [{"destination": {"host": "a"}}]},
        {"name": "v2-clients", "match": [{"sourceLabels": {"version": "v2"}}], "route": [{"destination": {"host": "a"}}]},
        {"name": "ns", "match": [{"sourceNamespace": "other"}], "route": [{"destination": {"host": "a"}}]},
        {"name": "rest", "route": [{"destination": {"host": "a"}}]},
    ]))
    .expect("rules parse");
    let names = |source: &RouteSource<'_>| -> Vec<String> {
        http_routes(&push, &rules, 80, false, source)
            .into_iter()
            .map(|r| r.name)
            .collect()
    };
    assert_eq!(names(&mesh()), ["both", "rest"]);
    let v2: Labels = [("version".to_owned(), "v2".to_owned())].into();
    let sidecar_v2 = RouteSource {
        labels: &v2,
        ..mesh()
    };
    assert_eq!(names(&sidecar_v2), ["both", "v2-clients", "rest"]);
    let router = RouteSource {
        gateways: &["istio-system/gw"],
        ..mesh()
    };
    assert_eq!(names(&router), ["edge", "both", "rest"]);
}
