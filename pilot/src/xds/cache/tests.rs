use std::collections::BTreeSet;

use kube_fake::objects::{manifests, services};

use super::*;
use crate::testing::{push_context, sidecar};
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
        .get_or_generate(types::ENDPOINT, "key", &ctx, &made_up)
        .expect("eds is served");
    let again = cache
        .get_or_generate(types::ENDPOINT, "key", &ctx, &made_up)
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
        drop(cache.get_or_generate(types::ENDPOINT, "key", &ctx, &sub));
    }
    assert_eq!(cache.live_entries(), 0);
    assert!(
        cache.lock().map.len() <= 129,
        "{} keys",
        cache.lock().map.len()
    );
}
