//! ProxyConfig: concurrency, selector, environment.

use super::super::common::*;
use super::super::report::{key, Report};
use super::super::Resource;

/// ProxyConfig: concurrency, selector, environment.
pub fn proxy_config(res: &Resource<'_>, r: &mut Report) {
    let spec = res.spec;
    check_selector(spec, "selector", "matchLabels", "spec", r);
    if int(spec, "concurrency").is_some_and(|n| n < 0) {
        r.error(
            "spec.concurrency",
            "concurrency must be greater than or equal to 0",
        );
    }
    if let Some(env) = obj(spec, "environmentVariables") {
        for k in env.keys() {
            if k.is_empty() || k.contains('=') {
                r.error(
                    key("spec.environmentVariables", k),
                    "invalid environment variable name",
                );
            }
        }
    }
}
