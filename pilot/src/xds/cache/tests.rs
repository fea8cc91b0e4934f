use std::collections::BTreeSet;

use kube_fake::objects::{manifests, services};

use super::*;
use crate::model::{Proxy, PushContext};
use crate::testing::{push_context, sidecar};
use crate::xds::stream::ConfigKeys;
use crate::xds::types;

fn names(n: &[&str]) -> Subscription {
    Subscription::Names(Arc::new(
        n.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>(),
    ))
}

#[test]
fn held_sets_are_shared_and_released_ones_are_not_kept() {
    let push = push_context(&manifests(&services(3, "http")));
    let proxy = sidecar("10.0.0.1", "default");
    let scope = push.sidecar_scope(&proxy);
    let ctx = GenContext {
        push: &push,
        proxy: &proxy,
        scope: &scope,
    };
    let cache = GenCache::default();
    let made_up = names(&["outbound|80||nobody.example", "outbound|81||nobody.example"]);
    let first = cache
        .get_or_generate(types::ENDPOINT, Part::Shared, "key", &ctx, &made_up)
        .expect("eds is served");
    let again = cache
        .get_or_generate(types::ENDPOINT, Part::Shared, "key", &ctx, &made_up)
        .expect("eds is served");
    assert!(Arc::ptr_eq(&first, &again), "a held set is shared");
    assert_eq!(cache.live_entries(), 1);

    drop((first, again));
    assert_eq!(
        cache.live_entries(),
        0,
        "nobody holds it: the cache keeps nothing"
    );

    // A flood of one-off subscriptions leaves only a bounded number of dead keys.
    for i in 0..1000 {
        let sub = names(&[&format!("outbound|80||made-up-{i}.example")]);
        drop(cache.get_or_generate(types::ENDPOINT, Part::Shared, "key", &ctx, &sub));
    }
    assert_eq!(cache.live_entries(), 0);
    assert!(
        cache.lock().map.len() <= 129,
        "{} keys",
        cache.lock().map.len()
    );
}

/// Two HTTP services in `default` and a TCP one in `other`, each with one endpoint: `a`
/// serves 8080 at 10.1.0.1, `b` 9090 at 10.1.0.2, `c` 7070 at 10.2.0.1.
fn mesh(extra: &str) -> PushContext {
    let mut yaml = String::new();
    for (ns, name, ip, port, protocol) in [
        ("default", "a", "10.1.0.1", 8080, "http"),
        ("default", "b", "10.1.0.2", 9090, "http"),
        ("other", "c", "10.2.0.1", 7070, "tcp"),
    ] {
        yaml.push_str(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\n\
             spec:\n  clusterIP: 10.0.0.{port}\n  ports: [{{name: {protocol}, port: 80, targetPort: {port}}}]\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: {name}-1, namespace: {ns}, labels: {{kubernetes.io/service-name: {name}}}}}\n\
             addressType: IPv4\nports: [{{name: {protocol}, port: {port}}}]\nendpoints: [{{addresses: [{ip}]}}]\n---\n"
        ));
    }
    yaml.push_str(extra);
    push_context(&yaml)
}

fn workload(ip: &str, namespace: &str, app: &str) -> Proxy {
    let mut p = sidecar(ip, namespace);
    p.labels = [("app".to_owned(), app.to_owned())].into();
    p
}

/// A proxy's resources of `type_url` through `cache`, as its stream gets them.
fn resources(
    cache: &GenCache,
    push: &PushContext,
    proxy: &Proxy,
    type_url: &str,
) -> ProxyResources {
    let scope = push.sidecar_scope(proxy);
    let keys = ConfigKeys::of(push, proxy, &scope);
    let ctx = GenContext {
        push,
        proxy,
        scope: &scope,
    };
    let parts = Part::of(type_url, proxy)
        .iter()
        .map(|part| {
            cache
                .get_or_generate(
                    type_url,
                    *part,
                    keys.for_part(*part),
                    &ctx,
                    &Subscription::Wildcard,
                )
                .expect("served type")
        })
        .collect();
    ProxyResources::new(parts)
}

fn names_of(r: &ProxyResources) -> BTreeSet<String> {
    r.resources().map(|r| r.name.clone()).collect()
}

#[test]
fn workloads_share_outbound_config_and_keep_their_own_inbound() {
    let sidecar_for_a = "apiVersion: networking.istio.io/v1\nkind: Sidecar\n\
        metadata: {name: only-b, namespace: default}\n\
        spec:\n  workloadSelector: {labels: {app: a}}\n  egress: [{hosts: [./b.default.svc.cluster.local]}]\n---\n";
    let source_rule = "apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
        metadata: {name: by-client, namespace: default}\n\
        spec:\n  hosts: [c.other.svc.cluster.local]\n  tcp:\n  - match: [{sourceLabels: {app: a}}]\n    route: [{destination: {host: b.default.svc.cluster.local}}]\n  - route: [{destination: {host: c.other.svc.cluster.local}}]\n---\n";
    let a = workload("10.1.0.1", "default", "a");
    let b = workload("10.1.0.2", "default", "b");
    let mut a_relabelled = a.clone();
    a_relabelled.labels.insert("version".into(), "v2".into());
    let a_elsewhere = workload("10.1.0.1", "other", "a");
    // (what differs, extra config, first proxy, second proxy, share outbound?, the types
    // whose outbound content differs)
    type Case<'a> = (&'a str, &'a str, &'a Proxy, &'a Proxy, bool, &'a [&'a str]);
    let cases: [Case<'_>; 5] = [
        ("own endpoints and labels", "", &a, &b, true, &[]),
        (
            "a label no rule matches on",
            "",
            &a,
            &a_relabelled,
            true,
            &[],
        ),
        // Not shared (what a namespace sees may differ), equal here (nothing does).
        ("namespace", "", &a, &a_elsewhere, false, &[]),
        (
            "a Sidecar selecting one",
            sidecar_for_a,
            &a,
            &b,
            false,
            &[types::CLUSTER, types::LISTENER],
        ),
        (
            "a routing rule matching on a label",
            source_rule,
            &a,
            &b,
            false,
            &[types::LISTENER],
        ),
    ];
    for (what, extra, first, second, shared, differs) in cases {
        let push = mesh(extra);
        let cache = GenCache::default();
        for type_url in [types::CLUSTER, types::LISTENER] {
            let one = resources(&cache, &push, first, type_url);
            let two = resources(&cache, &push, second, type_url);
            let (one_out, two_out) = (&one.parts()[0], &two.parts()[0]);
            let short = types::short_name(type_url);
            assert_eq!(
                Arc::ptr_eq(one_out, two_out),
                shared,
                "{what}: outbound {short} shared?"
            );
            assert_eq!(
                one_out.resources != two_out.resources,
                differs.contains(&type_url),
                "{what}: outbound {short} differs?"
            );
        }
    }
}

#[test]
fn a_proxy_never_receives_another_proxys_inbound_config() {
    let push = mesh("");
    let cache = GenCache::default();
    let a = resources(
        &cache,
        &push,
        &workload("10.1.0.1", "default", "a"),
        types::CLUSTER,
    );
    let b = resources(
        &cache,
        &push,
        &workload("10.1.0.2", "default", "b"),
        types::CLUSTER,
    );
    assert!(!Arc::ptr_eq(&a.parts()[1], &b.parts()[1]));
    assert!(names_of(&a).contains("inbound|8080||"));
    assert!(!names_of(&a).contains("inbound|9090||"));
    assert!(names_of(&b).contains("inbound|9090||"));
    assert!(!names_of(&b).contains("inbound|8080||"));
    for r in [&a, &b] {
        let outbound: Vec<_> = r.parts()[0].resources.iter().map(|r| &r.name).collect();
        assert!(
            outbound.iter().all(|n| !n.starts_with("inbound|")),
            "the shared part holds no inbound cluster: {outbound:?}"
        );
    }
    let la = resources(
        &cache,
        &push,
        &workload("10.1.0.1", "default", "a"),
        types::LISTENER,
    );
    let lb = resources(
        &cache,
        &push,
        &workload("10.1.0.2", "default", "b"),
        types::LISTENER,
    );
    assert!(Arc::ptr_eq(&la.parts()[0], &lb.parts()[0]));
    assert!(la.parts()[1].resources != lb.parts()[1].resources);
}

#[test]
fn endpoints_and_routes_are_one_shared_part() {
    let push = mesh("");
    let cache = GenCache::default();
    let a = workload("10.1.0.1", "default", "a");
    let b = workload("10.1.0.2", "default", "b");
    let sub = names(&["outbound|80||a.default.svc.cluster.local"]);
    for (type_url, sub) in [(types::ENDPOINT, sub), (types::ROUTE, names(&["80"]))] {
        assert_eq!(Part::of(type_url, &a), [Part::Shared]);
        let get = |p: &Proxy| {
            let scope = push.sidecar_scope(p);
            let keys = ConfigKeys::of(&push, p, &scope);
            let ctx = GenContext {
                push: &push,
                proxy: p,
                scope: &scope,
            };
            cache
                .get_or_generate(type_url, Part::Shared, &keys.shared, &ctx, &sub)
                .expect("served")
        };
        let (one, two) = (get(&a), get(&b));
        assert!(Arc::ptr_eq(&one, &two), "{}", types::short_name(type_url));
        assert_eq!(one.resources.len(), 1);
    }
}
