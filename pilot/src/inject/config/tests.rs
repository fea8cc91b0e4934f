//! The injector ConfigMap's `config` and `values` keys, as the chart writes them.

use serde_json::json;

use super::*;

const CONFIG: &str = r#"
policy: enabled
alwaysInjectSelector:
  - matchLabels: {force: "yes"}
neverInjectSelector:
  - matchExpressions:
    - {key: openshift.io/build.name, operator: Exists}
  - {}
  - matchExpressions:
    - {key: broken, operator: In, values: []}
injectedAnnotations:
  container.apparmor.security.beta.kubernetes.io/istio-proxy: unconfined
defaultTemplates: [sidecar]
aliases:
  both: [sidecar, extra]
template: "legacy field, ignored"
templates:
  sidecar: |
    {{- define "image" }}{{ .Values.global.hub }}/proxy{{ end -}}
    spec:
      containers:
      - name: istio-proxy
        image: {{ template "image" . }}
  extra: |
    metadata:
      annotations:
        seen: {{ .ObjectMeta.name | quote }}
"#;

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn config_as_the_chart_writes_it() {
    let config = Config::parse(CONFIG).expect("config");
    assert_eq!(config.policy, Policy::Enabled);
    assert_eq!(config.default_templates, ["sidecar"]);
    assert_eq!(
        config.injected_annotations,
        map(&[(
            "container.apparmor.security.beta.kubernetes.io/istio-proxy",
            "unconfined"
        )])
    );
    assert_eq!(config.aliases["both"], ["sidecar", "extra"]);
    assert_eq!(
        config.templates.keys().collect::<Vec<_>>(),
        ["extra", "sidecar"]
    );

    // Each template is its own set; their data is the template data.
    let data =
        json!({"Values": {"global": {"hub": "docker.io/istio"}}, "ObjectMeta": {"name": "web-1"}});
    let sidecar = config.templates["sidecar"]
        .execute("sidecar", &data)
        .expect("render");
    assert_eq!(
        sidecar,
        "spec:\n  containers:\n  - name: istio-proxy\n    image: docker.io/istio/proxy\n"
    );
    let extra = config.templates["extra"]
        .execute("extra", &data)
        .expect("render");
    assert!(extra.contains("seen: \"web-1\""), "{extra}");
    assert!(
        !config.templates["extra"].contains("image"),
        "defines stay in their template"
    );
}

#[test]
fn selectors_force_or_refuse_and_empty_or_invalid_ones_do_nothing() {
    let config = Config::parse(CONFIG).expect("config");
    // The invalid entry was skipped; the empty one is kept but selects nothing.
    assert_eq!(config.never_inject_selector.len(), 2);
    assert!(config.never_inject(&map(&[("openshift.io/build.name", "b1")])));
    assert!(!config.never_inject(&map(&[("app", "web")])));
    assert!(config.always_inject(&map(&[("force", "yes")])));
    assert!(!config.always_inject(&map(&[("force", "no")])));
}

#[test]
fn templates_come_from_the_annotation_or_the_defaults_with_aliases_expanded() {
    let config = Config::parse(CONFIG).expect("config");
    assert_eq!(config.select_templates(&BTreeMap::new()), ["sidecar"]);
    let annotated = map(&[(TEMPLATES_ANNOTATION, "both, grpc-agent")]);
    assert_eq!(
        config.select_templates(&annotated),
        ["sidecar", "extra", "grpc-agent"]
    );
}

#[test]
fn missing_fields_take_upstreams_defaults() {
    for text in [
        "",
        "policy: disabled\ntemplates: null\ndefaultTemplates: []",
    ] {
        let config = Config::parse(text).expect(text);
        assert_eq!(config.default_templates, [SIDECAR_TEMPLATE], "{text:?}");
        assert!(config.templates.is_empty() && config.aliases.is_empty());
    }
    assert_eq!(
        Config::parse("policy: disabled").expect("disabled").policy,
        Policy::Disabled
    );
    assert_eq!(
        Config::parse("policy: sometimes").expect("kept").policy,
        Policy::Invalid("sometimes".to_owned())
    );
}

#[test]
fn errors_name_the_key_or_the_template_and_line() {
    let error =
        Config::parse("templates:\n  broken: |\n    ok\n    {{ if }}\n").expect_err("bad template");
    let message = error.to_string();
    assert!(
        message
            .starts_with("injection template \"broken\": template: broken:2: missing value for if"),
        "{message}"
    );
    assert!(matches!(
        Config::parse("policy: [a"),
        Err(ConfigError::Yaml { key: "config", .. })
    ));
    assert!(matches!(
        Config::parse("templates: [a]"),
        Err(ConfigError::Shape { key: "config", .. })
    ));
}

#[test]
fn values_are_a_map_read_by_path() {
    let values = Values::parse("global:\n  proxy:\n    image: proxyv2\n  hub: docker.io/istio\n")
        .expect("values");
    assert_eq!(values.get("global.proxy.image"), Some(&json!("proxyv2")));
    assert_eq!(values.get("global.missing.x"), None);
    assert_eq!(values.to_value()["global"]["hub"], "docker.io/istio");
    // JSON is YAML too: the chart writes `values` as JSON.
    assert_eq!(
        Values::parse("{\"a\": 1}").expect("json").get("a"),
        Some(&json!(1))
    );
    assert_eq!(Values::parse("").expect("empty"), Values::default());
    assert!(matches!(
        Values::parse("[1]"),
        Err(ConfigError::ValuesNotAMap("a list"))
    ));
    assert!(matches!(
        Values::parse("3"),
        Err(ConfigError::ValuesNotAMap("a scalar"))
    ));
}
