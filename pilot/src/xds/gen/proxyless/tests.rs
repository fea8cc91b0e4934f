use envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier;
use prost::Message;

use super::*;
use crate::testing::grpc_client;
use crate::xds::gen::testing::{echo_mesh, with_ctx};

fn mesh() -> String {
    echo_mesh(&[])
}

const SPLIT: &str = r#"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo, namespace: demo}
spec:
  hosts: [echo]
  http:
  - route:
    - {destination: {host: echo, subset: v1}, weight: 20}
    - {destination: {host: echo, subset: v2}, weight: 80}
"#;

fn names(n: &[&str]) -> Subscription {
    Subscription::of(n.iter().copied())
}

#[test]
fn api_listener_points_at_route_named_like_the_cluster() {
    let asked = names(&[
        "echo.demo.svc.cluster.local:7070",
        "echo.demo:7070",
        "nope.demo:1",
    ]);
    let res = with_ctx(&mesh(), &grpc_client("demo"), |ctx| listeners(ctx, &asked));
    assert_eq!(res.len(), 2, "unknown hosts get no listener");
    let l = Listener::decode(res[0].body.value.as_slice()).unwrap();
    let hcm = HttpConnectionManager::decode(
        l.api_listener
            .unwrap()
            .api_listener
            .unwrap()
            .value
            .as_slice(),
    )
    .unwrap();
    match hcm.route_specifier {
        Some(RouteSpecifier::Rds(rds)) => assert_eq!(
            rds.route_config_name,
            "outbound|7070||echo.demo.svc.cluster.local"
        ),
        other => panic!("want RDS, got {other:?}"),
    }
    assert_eq!(
        hcm.http_filters.last().unwrap().name,
        "envoy.filters.http.router"
    );
}

#[test]
fn routes_follow_virtual_service_weights() {
    let asked = names(&["outbound|7070||echo.demo.svc.cluster.local"]);
    let mesh = format!("{}{SPLIT}", mesh());
    let res = with_ctx(&mesh, &grpc_client("demo"), |ctx| routes(ctx, &asked));
    let rc = RouteConfiguration::decode(res[0].body.value.as_slice()).unwrap();
    let route = &rc.virtual_hosts[0].routes[0];
    let Some(Action::Route(action)) = &route.action else {
        panic!("want route action")
    };
    let Some(ClusterSpecifier::WeightedClusters(wc)) = &action.cluster_specifier else {
        panic!("want weighted clusters")
    };
    let got: Vec<(&str, u32)> = wc
        .clusters
        .iter()
        .map(|c| (c.name.as_str(), c.weight.as_ref().unwrap().value))
        .collect();
    assert_eq!(
        got,
        [
            ("outbound|7070|v1|echo.demo.svc.cluster.local", 20),
            ("outbound|7070|v2|echo.demo.svc.cluster.local", 80)
        ]
    );
}

#[test]
fn wildcard_clusters_include_subsets() {
    let got: Vec<String> = with_ctx(&mesh(), &grpc_client("demo"), |ctx| {
        clusters(ctx, &Subscription::Wildcard)
    })
    .into_iter()
    .map(|r| r.name)
    .collect();
    assert_eq!(
        got,
        [
            "outbound|7070||echo.demo.svc.cluster.local",
            "outbound|7070|v1|echo.demo.svc.cluster.local",
            "outbound|7070|v2|echo.demo.svc.cluster.local"
        ]
    );
}

#[test]
fn server_listener_for_inbound_names() {
    let name = "xds.istio.io/grpc/lds/inbound/0.0.0.0:7070";
    let res = with_ctx(&mesh(), &grpc_client("demo"), |ctx| {
        listeners(ctx, &names(&[name]))
    });
    let l = Listener::decode(res[0].body.value.as_slice()).unwrap();
    assert_eq!(l.name, name);
    assert!(l.address.is_some() && l.filter_chains.len() == 1);
}
