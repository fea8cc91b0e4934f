//! Single-proxy xDS generation benchmarks, after upstream's `pilot/pkg/xds/bench_test.go`.
//!
//! One sidecar (`1.1.1.1`, namespace `default`) against 10, 100 and 1000 Kubernetes
//! services of the `http` and `tcp` shapes (one endpoint each). Every case measures the
//! time of one `generate` call for a type (CDS and LDS wildcard; EDS with the clusters the
//! CDS output names; RDS with the routes the listeners reference) and reports the encoded
//! size of the response as criterion throughput (bytes) and once on stderr. A separate
//! group measures building the push context from a store snapshot at 1000 services.
//!
//! The `secure` cases put the same 1000 `http` services under mesh-wide STRICT mTLS with 100
//! namespace-wide AuthorizationPolicies, generated for a sidecar that is a workload (the
//! endpoint of `svc-0`), so inbound mTLS chains and RBAC filters are part of the output.
//!
//! The `router` cases are a gateway proxy selected by one Gateway whose HTTP (80) and HTTPS
//! (443, `credentialName`) servers list 1000 hosts, each bound by a VirtualService to one of
//! the 1000 `http` services.

use std::collections::BTreeSet;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use kube_fake::objects::{manifests, mesh_security, services};
use pilot::config::object::parse_manifests;
use pilot::config::ConfigStore;
use pilot::model::{MeshConfig, PushContext};
use pilot::testing::{push_context, router, sidecar};
use pilot::xds::gen::rds;
use pilot::xds::gen::{generate, GenContext, Resource, Subscription};
use pilot::xds::types;

const SIZES: [usize; 3] = [10, 100, 1000];
const SHAPES: [&str; 2] = ["http", "tcp"];

/// Encoded size of the resources as they travel in a `DiscoveryResponse`.
fn bytes(resources: &[Resource]) -> u64 {
    resources
        .iter()
        .map(|r| (r.body.type_url.len() + r.body.value.len()) as u64)
        .sum()
}

/// The subscriptions an Envoy sidecar holds after its initial exchange.
fn subscriptions(ctx: &GenContext<'_>) -> Vec<(&'static str, &'static str, Subscription)> {
    let clusters = generate(types::CLUSTER, ctx, &Subscription::Wildcard).unwrap_or_default();
    let listeners = generate(types::LISTENER, ctx, &Subscription::Wildcard).unwrap_or_default();
    let cluster_names: BTreeSet<String> = clusters.iter().map(|c| c.name.clone()).collect();
    let route_names = rds::referenced_route_names(&listeners);
    let mut subs = vec![
        ("cds", types::CLUSTER, Subscription::Wildcard),
        (
            "eds",
            types::ENDPOINT,
            Subscription::Names(cluster_names.into()),
        ),
        ("lds", types::LISTENER, Subscription::Wildcard),
    ];
    // Like upstream's tcp case: no RDS when no listener references a route.
    if !route_names.is_empty() {
        subs.push(("rds", types::ROUTE, Subscription::Names(route_names.into())));
    }
    subs
}

/// One criterion group per type the sidecar subscribes to, named `<type>/<shape>/<n>`, with
/// the response size as throughput (and once on stderr).
fn bench_types(c: &mut Criterion, ctx: &GenContext<'_>, shape: &str, n: usize) {
    for (short, type_url, sub) in subscriptions(ctx) {
        let out = generate(type_url, ctx, &sub).unwrap_or_default();
        let size = bytes(&out);
        eprintln!(
            "bytes: {short}/{shape}/{n}: {} resources, {size} bytes",
            out.len()
        );
        let mut group = c.benchmark_group(format!("{short}/{shape}"));
        group.throughput(Throughput::Bytes(size));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| generate(black_box(type_url), black_box(ctx), black_box(&sub)))
        });
        group.finish();
    }
}

fn generation(c: &mut Criterion) {
    let proxy = sidecar("1.1.1.1", "default");
    for shape in SHAPES {
        for n in SIZES {
            let push = push_context(&manifests(&services(n, shape)));
            let scope = push.sidecar_scope(&proxy);
            let ctx = GenContext {
                push: &push,
                proxy: &proxy,
                scope: &scope,
            };
            bench_types(c, &ctx, shape, n);
        }
    }
}

fn init_push_context(c: &mut Criterion) {
    let mut group = c.benchmark_group("push_context_init");
    group.measurement_time(Duration::from_secs(10));
    for shape in SHAPES {
        let store = ConfigStore::new();
        let parsed =
            parse_manifests(&manifests(&services(1000, shape))).expect("fixture YAML parses");
        store.replace_source("fixture", parsed.configs);
        let snapshot = store.snapshot();
        group.bench_with_input(BenchmarkId::new(shape, 1000), &snapshot, |b, snap| {
            b.iter(|| {
                PushContext::build(
                    black_box(snap),
                    MeshConfig::default(),
                    "cluster.local",
                    "bench/1".into(),
                )
            })
        });
    }
    group.finish();
}

/// CDS/EDS/LDS/RDS for a workload sidecar at 1000 services, plaintext and secured.
fn secure_generation(c: &mut Criterion) {
    // The endpoint of svc-0 (kube_fake::objects::services).
    let proxy = sidecar("10.200.0.0", "default");
    let plain = services(1000, "http");
    let secured: Vec<_> = plain.iter().cloned().chain(mesh_security(100)).collect();
    for (shape, objects) in [("plain", plain), ("secure", secured)] {
        let push = push_context(&manifests(&objects));
        let scope = push.sidecar_scope(&proxy);
        let ctx = GenContext {
            push: &push,
            proxy: &proxy,
            scope: &scope,
        };
        bench_types(c, &ctx, &format!("workload-{shape}"), 1000);
    }
}

/// One Gateway with `n` hosts on HTTP and HTTPS, and a VirtualService per host routing to
/// `svc-<i>`.
fn gateway_config(n: usize) -> String {
    let hosts: Vec<String> = (0..n).map(|i| format!("svc-{i}.example.com")).collect();
    let hosts = hosts.join(", ");
    let mut out = format!(
        "---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: ingress, namespace: istio-system}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n  - {{port: {{number: 80, name: http, protocol: HTTP}}, hosts: [{hosts}]}}\n  - {{port: {{number: 443, name: https, protocol: HTTPS}}, hosts: [{hosts}], tls: {{mode: SIMPLE, credentialName: ingress-cert}}}}\n"
    );
    for i in 0..n {
        out.push_str(&format!(
            "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: svc-{i}, namespace: default}}\nspec:\n  hosts: [svc-{i}.example.com]\n  gateways: [istio-system/ingress]\n  http: [{{route: [{{destination: {{host: svc-{i}}}}}]}}]\n"
        ));
    }
    out
}

/// CDS/EDS/LDS/RDS for a gateway proxy with 1000 hosts on one Gateway.
fn router_generation(c: &mut Criterion) {
    let proxy = router(
        "10.250.0.1",
        "istio-system",
        &[("istio", "ingressgateway")],
        &[],
    );
    let yaml = format!(
        "{}{}",
        manifests(&services(1000, "http")),
        gateway_config(1000)
    );
    let push = push_context(&yaml);
    let scope = push.sidecar_scope(&proxy);
    let ctx = GenContext {
        push: &push,
        proxy: &proxy,
        scope: &scope,
    };
    bench_types(c, &ctx, "router", 1000);
}

criterion_group!(
    benches,
    generation,
    secure_generation,
    router_generation,
    init_push_context
);
criterion_main!(benches);
