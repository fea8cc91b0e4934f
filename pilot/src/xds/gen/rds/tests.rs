use envoy_types::pb::envoy::config::route::v3::route_action::hash_policy::PolicySpecifier;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{
    fault_abort::ErrorType, HttpFault,
};

use super::*;
use crate::testing::sidecar;
use crate::xds::gen::filters::FAULT_FILTER;
use crate::xds::gen::testing::{self, named, with_ctx, MESH};

const SPLIT_WITH_FAULT: &str = r#"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - name: canary
    match: [{headers: {end-user: {exact: jason}}}]
    fault:
      delay: {fixedDelay: 5s, percentage: {value: 10}}
      abort: {httpStatus: 503, percentage: {value: 50}}
    route:
    - {destination: {host: reviews, subset: v1}, weight: 100}
    - {destination: {host: reviews, subset: v2}, weight: 0}
  - name: broken
    match: [{uri: {prefix: /broken}}]
    route:
    - {destination: {host: reviews, subset: v1}, weight: 0}
    - {destination: {host: reviews, subset: v2}, weight: 0}
  - name: split
    route:
    - {destination: {host: reviews, subset: v1}, weight: 30}
    - {destination: {host: reviews, subset: v2}, weight: 30}
"#;

const REGISTRY_ONLY: &str = r#"
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
  egress: [{hosts: ["*/*"]}]
"#;

fn config(yaml: &str, ns: &str, port: u16) -> RouteConfiguration {
    let proxy = sidecar("10.9.9.9", ns);
    with_ctx(yaml, &proxy, |ctx| {
        route_config(ctx, &port.to_string(), port)
    })
}

fn vhost<'a>(rc: &'a RouteConfiguration, name: &str) -> &'a VirtualHost {
    named(&rc.virtual_hosts, name, |v| &v.name)
}

fn route_action(r: &Route) -> &RouteAction {
    match &r.action {
        Some(Action::Route(a)) => a,
        other => panic!("route {} has no route action: {other:?}", r.name),
    }
}

#[test]
fn domains_include_short_names_from_the_proxys_namespace() {
    let host = "reviews.default.svc.cluster.local:9080";
    let cases: [(&str, &[&str], &[&str]); 2] = [
        (
            "default",
            &[
                "reviews.default.svc.cluster.local",
                "reviews.default.svc.cluster.local:9080",
                "reviews",
                "reviews:9080",
                "reviews.default.svc",
                "reviews.default.svc:9080",
                "reviews.default",
                "reviews.default:9080",
                "10.96.0.10",
                "10.96.0.10:9080",
            ],
            &[],
        ),
        (
            "other",
            &["reviews.default", "10.96.0.10:9080"],
            &["reviews", "reviews:9080"],
        ),
    ];
    for (ns, present, absent) in cases {
        let rc = config(MESH, ns, 9080);
        let domains = &vhost(&rc, host).domains;
        for d in present {
            assert!(
                domains.iter().any(|x| x == d),
                "{ns}: missing {d} in {domains:?}"
            );
        }
        for d in absent {
            assert!(!domains.iter().any(|x| x == d), "{ns}: unexpected {d}");
        }
        if ns == "default" {
            assert_eq!(domains.len(), present.len(), "{domains:?}");
        }
    }
}

#[test]
fn port_80_domains_have_no_port_suffix() {
    let svc = Service {
        hostname: "web.default.svc.cluster.local".into(),
        namespace: "default".into(),
        name: "web".into(),
        address: Some("10.96.0.1".into()),
        ports: Vec::new(),
        resolution: Resolution::ClientSideLb,
        registry: Registry::Kubernetes,
        mesh_external: false,
        export_to: crate::model::service::ExportTo::All,
        service_accounts: Vec::new(),
    };
    let d = domains(&svc, 80, "default.svc.cluster.local");
    assert_eq!(
        d,
        [
            "web.default.svc.cluster.local",
            "web",
            "web.default.svc",
            "web.default",
            "10.96.0.1"
        ]
    );
}

#[test]
fn catch_all_virtual_host_follows_outbound_policy() {
    for (case, extra, want) in [
        ("allow any", "", ALLOW_ANY_VHOST),
        ("registry only", REGISTRY_ONLY, BLOCK_ALL_VHOST),
    ] {
        let rc = config(&format!("{MESH}{extra}"), "default", 9080);
        let last = rc.virtual_hosts.last().unwrap();
        assert_eq!(last.name, want, "{case}");
        assert_eq!(last.domains, ["*"]);
        match &last.routes[0].action {
            Some(Action::Route(a)) => assert_eq!(
                a.cluster_specifier,
                Some(ClusterSpecifier::Cluster(PASSTHROUGH_CLUSTER.into()))
            ),
            Some(Action::DirectResponse(d)) => assert_eq!(d.status, 502),
            other => panic!("{case}: {other:?}"),
        }
        assert!(rc.ignore_port_in_host_matching);
        assert_eq!(rc.validate_clusters, Some(BoolValue { value: false }));
    }
}

#[test]
fn virtual_service_weights_and_fault_injection() {
    let rc = config(&format!("{MESH}{SPLIT_WITH_FAULT}"), "default", 9080);
    let vh = vhost(&rc, "reviews.default.svc.cluster.local:9080");
    let names: Vec<&str> = vh.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["canary", "split"], "all-zero rule left out");

    let canary = &vh.routes[0];
    assert_eq!(
        route_action(canary).cluster_specifier,
        Some(ClusterSpecifier::Cluster(
            "outbound|9080|v1|reviews.default.svc.cluster.local".into()
        )),
        "a single non-zero weight becomes a plain cluster"
    );
    let fault = HttpFault::decode(
        canary.typed_per_filter_config[FAULT_FILTER]
            .value
            .as_slice(),
    )
    .unwrap();
    let delay = fault.delay.unwrap();
    assert_eq!(delay.percentage.unwrap().numerator, 100_000);
    let abort = fault.abort.unwrap();
    assert_eq!(abort.error_type, Some(ErrorType::HttpStatus(503)));
    assert_eq!(abort.percentage.unwrap().numerator, 500_000);

    let split = &vh.routes[1];
    assert!(split.typed_per_filter_config.is_empty());
    match &route_action(split).cluster_specifier {
        Some(ClusterSpecifier::WeightedClusters(w)) => {
            let got: Vec<(String, u32)> = w
                .clusters
                .iter()
                .map(|c| (c.name.clone(), c.weight.unwrap().value))
                .collect();
            assert_eq!(
                got,
                [
                    (
                        "outbound|9080|v1|reviews.default.svc.cluster.local".into(),
                        30
                    ),
                    (
                        "outbound|9080|v2|reviews.default.svc.cluster.local".into(),
                        30
                    )
                ],
                "weights not summing to 100 are kept; Envoy splits over their sum"
            );
        }
        other => panic!("want weighted clusters, got {other:?}"),
    }
    // The canary goes to subset v1, whose policy hashes on a header.
    match route_action(canary)
        .hash_policy
        .first()
        .and_then(|h| h.policy_specifier.as_ref())
    {
        Some(PolicySpecifier::Header(h)) => assert_eq!(h.header_name, "x-user"),
        other => panic!("want header hash policy, got {other:?}"),
    }
    assert!(route_action(split).hash_policy.is_empty());
}

#[test]
fn route_names_and_references() {
    let proxy = sidecar("10.1.0.1", "default");
    let listeners = with_ctx(MESH, &proxy, crate::xds::gen::lds::listeners);
    let names = referenced_route_names(&listeners);
    let want: BTreeSet<String> = ["8000", "9080", "9090"].map(str::to_owned).into();
    assert_eq!(names, want, "TLS ports have no routes");
    let sub = Subscription::Names(std::sync::Arc::new(names));
    let res = with_ctx(MESH, &proxy, |ctx| route_configs(ctx, &sub));
    assert_eq!(res.len(), 3);
    let rc: Vec<RouteConfiguration> = testing::decoded(&res);
    assert_eq!(rc[0].name, res[0].name);
}
