//! `telemetry.istio.io`: Telemetry (tracing, metrics, access logging).

use serde_json::Value;

use super::common::*;
use super::report::{field, index, key, Report};
use super::Resource;

/// Telemetry semantic rules.
pub fn telemetry(res: &Resource<'_>, r: &mut Report) {
    let spec = res.spec;
    check_selector(spec, "selector", "matchLabels", "spec", r);
    check_target_refs(spec, r);
    for (i, t) in list(spec, "tracing").iter().enumerate() {
        let p = index("spec.tracing", i);
        let providers = list(t, "providers");
        providers_check(providers, &field(&p, "providers"), r);
        if providers.len() > 1 {
            r.error(
                field(&p, "providers"),
                "multiple providers is not currently supported",
            );
        }
        if let Some(v) = num(t, "randomSamplingPercentage") {
            if !(0.0..=100.0).contains(&v) {
                r.error(
                    field(&p, "randomSamplingPercentage"),
                    format!("randomSamplingPercentage must be in range [0.0, 100.0], got {v}"),
                );
            }
        }
        if let Some(tags) = obj(t, "customTags") {
            for (name, tag) in tags {
                let tp = key(&field(&p, "customTags"), name);
                let kinds = ["literal", "environment", "header"]
                    .iter()
                    .filter(|k| has(tag, k))
                    .count();
                if kinds != 1 {
                    r.error(
                        &tp,
                        "exactly one of literal, environment or header must be set",
                    );
                }
                if let Some(l) = get(tag, "literal") {
                    if text(l, "value").is_empty() {
                        r.error(field(&tp, "literal.value"), "literal value must be set");
                    }
                }
                if let Some(e) = get(tag, "environment") {
                    if text(e, "name").is_empty() {
                        r.error(
                            field(&tp, "environment.name"),
                            "environment name must be set",
                        );
                    }
                }
                if let Some(h) = get(tag, "header") {
                    if let Err(e) = validate_header_name(text(h, "name")) {
                        r.error(field(&tp, "header.name"), e);
                    }
                }
            }
        }
    }
    for (i, m) in list(spec, "metrics").iter().enumerate() {
        let p = index("spec.metrics", i);
        providers_check(list(m, "providers"), &field(&p, "providers"), r);
        for (j, o) in list(m, "overrides").iter().enumerate() {
            let op = index(&field(&p, "overrides"), j);
            if let Some(mm) = get(o, "match") {
                if has(mm, "customMetric") && has(mm, "metric") {
                    r.error(
                        field(&op, "match"),
                        "only one of metric or customMetric may be set",
                    );
                }
            }
            if let Some(tags) = obj(o, "tagOverrides") {
                for (name, t) in tags {
                    let tp = key(&field(&op, "tagOverrides"), name);
                    let operation = str_of(t, "operation").unwrap_or("UPSERT");
                    match operation {
                        "REMOVE" if has(t, "value") => {
                            r.error(&tp, "value must not be set when operation is REMOVE")
                        }
                        "UPSERT" if text(t, "value").is_empty() => {
                            r.error(&tp, "value must be set when operation is UPSERT")
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    for (i, a) in list(spec, "accessLogging").iter().enumerate() {
        let p = index("spec.accessLogging", i);
        providers_check(list(a, "providers"), &field(&p, "providers"), r);
        if let Some(f) = get(a, "filter") {
            if text(f, "expression").trim().is_empty() {
                r.error(
                    field(&p, "filter.expression"),
                    "filter expression must not be empty",
                );
            }
        }
    }
}

fn providers_check(providers: &[Value], p: &str, r: &mut Report) {
    for (i, pr) in providers.iter().enumerate() {
        if text(pr, "name").is_empty() {
            r.error(index(p, i), "providers.name may not be empty");
        }
    }
}
