//! `extensions.istio.io`: WasmPlugin and TrafficExtension.

use std::collections::BTreeSet;

use serde_json::Value;

use super::common::*;
use super::report::{field, index, Report};
use super::Resource;

/// Largest inline Lua code accepted.
const MAX_LUA: usize = 64 * 1024;

/// WasmPlugin semantic rules.
pub fn wasm_plugin(res: &Resource<'_>, r: &mut Report) {
    let spec = res.spec;
    check_selector(spec, "selector", "matchLabels", "spec", r);
    check_target_refs(spec, r);
    wasm_source(spec, "spec", r);
    if let Some(vm) = get(spec, "vmConfig") {
        let mut names = BTreeSet::new();
        for (i, e) in list(vm, "env").iter().enumerate() {
            let p = index("spec.vmConfig.env", i);
            let name = text(e, "name");
            if name.is_empty() {
                r.error(field(&p, "name"), "env name must be set");
            } else if name.len() > 255 {
                r.error(
                    field(&p, "name"),
                    "env.name field must be less than 255 characters long",
                );
            } else if !names.insert(name) {
                r.error(field(&p, "name"), format!("duplicate env {name}"));
            }
            if text(e, "valueFrom") == "HOST" && has(e, "value") {
                r.error(
                    field(&p, "value"),
                    "value may only be set when valueFrom is INLINE",
                );
            }
        }
    }
    traffic_match(spec, r);
}

fn wasm_source(v: &Value, p: &str, r: &mut Report) {
    let url = text(v, "url");
    if url.is_empty() {
        r.error(field(p, "url"), "url field needs to be set");
    } else if let Some((scheme, rest)) = url.split_once("://") {
        if !matches!(scheme, "http" | "https" | "oci" | "file") {
            r.error(
                field(p, "url"),
                format!("url contains unsupported scheme: {scheme}"),
            );
        } else if rest.is_empty() {
            r.error(
                field(p, "url"),
                format!("failed to parse url {url:?}: no host or path"),
            );
        }
    } else if url.contains(char::is_whitespace) {
        r.error(field(p, "url"), format!("failed to parse url {url:?}"));
    }
    let sha = text(v, "sha256");
    if !sha.is_empty() {
        if sha.len() != 64 {
            r.error(
                field(p, "sha256"),
                "sha256 field must be 64 characters long",
            );
        } else if !sha
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        {
            r.error(
                field(p, "sha256"),
                "sha256 field must match [a-f0-9]{64} pattern",
            );
        }
    }
    if text(v, "imagePullSecret").len() > 253 {
        r.error(
            field(p, "imagePullSecret"),
            "imagePullSecret field must be less than 253 characters long",
        );
    }
    if text(v, "pluginName").len() > 255 {
        r.error(
            field(p, "pluginName"),
            "pluginName field must be less than 255 characters long",
        );
    }
}

fn traffic_match(spec: &Value, r: &mut Report) {
    for (i, m) in list(spec, "match").iter().enumerate() {
        for (j, port) in list(m, "ports").iter().enumerate() {
            let p = index(&field(&index("spec.match", i), "ports"), j);
            match int(port, "number") {
                Some(n) if validate_port(n).is_ok() => {}
                Some(n) => r.error(
                    field(&p, "number"),
                    format!("spec.match[{i}].ports[{j}] is out of range: {n}"),
                ),
                None => r.error(field(&p, "number"), "port number is required"),
            }
        }
    }
}

/// TrafficExtension: exactly one of Wasm or Lua.
pub fn traffic_extension(res: &Resource<'_>, r: &mut Report) {
    let spec = res.spec;
    check_selector(spec, "selector", "matchLabels", "spec", r);
    check_target_refs(spec, r);
    let (wasm, lua) = (get(spec, "wasm"), get(spec, "lua"));
    if wasm.is_some() == lua.is_some() {
        r.error("spec", "exactly one of wasm or lua must be set");
    }
    if let Some(w) = wasm {
        wasm_source(w, "spec.wasm", r);
    }
    if let Some(l) = lua {
        let code = text(l, "inlineCode");
        if code.is_empty() {
            r.error("spec.lua.inlineCode", "lua.inlineCode cannot be empty");
        } else if code.len() > MAX_LUA {
            r.error(
                "spec.lua.inlineCode",
                "lua.inlineCode exceeds maximum size of 64KB",
            );
        }
    }
    traffic_match(spec, r);
}
