//! Manifests into configs, and property tests of the YAML front end: random and cut
//! texts are parsed or refused with an error, never a panic.

use super::*;

#[test]
fn parses_multi_document_files() {
    let text = r#"
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: demo}
spec:
  ports: [{name: grpc, port: 7070}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo}
spec:
  hosts: [echo.demo.svc.cluster.local]
  http:
  - route:
    - destination: {host: echo.demo.svc.cluster.local, subset: v2}
      weight: 100
---
apiVersion: v1
kind: ConfigMap
metadata: {name: ignored}
---
"#;
    let parsed = parse_manifests(text).unwrap();
    assert_eq!(parsed.configs.len(), 2);
    assert_eq!(parsed.skipped, vec!["v1/ConfigMap"]);
    assert_eq!(parsed.configs[1].key.namespace, "default");
    let Spec::VirtualService(vs) = &parsed.configs[1].spec else {
        panic!("not a VirtualService")
    };
    assert_eq!(vs.http[0].route[0].destination.subset, "v2");
}

#[test]
fn errors_name_the_problem() {
    let cases = [
        ("kind: Service\nmetadata: {name: a}\n", "missing apiVersion"),
        ("apiVersion: v1\nkind: Service\n", "missing metadata"),
        ("apiVersion: v1\nkind: Service\nmetadata: {}\n", "missing metadata.name"),
        ("a: [\n", "invalid YAML"),
        (
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: x}\nspec: {hosts: 3}\n",
            "VirtualService x: invalid spec",
        ),
    ];
    for (text, want) in cases {
        let err = parse_manifests(text).unwrap_err().to_string();
        assert!(err.contains(want), "{text:?}: {err}");
    }
}

#[test]
fn core_kinds_keep_only_their_typed_form() {
    let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: demo}\nspec: {containers: [{name: app}]}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d, namespace: demo}\nspec: {host: echo}\n";
    let parsed = parse_manifests(text).unwrap();
    let (pod, rule) = (&parsed.configs[0], &parsed.configs[1]);
    assert!(pod.raw.is_none());
    let manifest = pod.manifest();
    assert_eq!(
        (&manifest["kind"], &manifest["apiVersion"]),
        (&serde_json::json!("Pod"), &serde_json::json!("v1"))
    );
    assert_eq!(manifest["spec"]["containers"][0]["name"], "app");
    assert_eq!(rule.manifest()["spec"]["host"], "echo");
    assert_eq!(rule.raw.as_ref(), Some(&rule.manifest()));

    let key = |ns| ConfigKey::from_metadata(Kind::Node, ns, Some("n")).unwrap();
    assert_eq!(key(Some("demo")).namespace, "", "cluster-scoped");
    let vs = ConfigKey::from_metadata(Kind::VirtualService, None, Some("v")).unwrap();
    assert_eq!(vs.to_string(), "VirtualService/default/v");
    assert!(ConfigKey::from_metadata(Kind::VirtualService, None, Some("")).is_none());
}

mod properties {
    use proptest::prelude::*;
    use proptest::sample::Index;

    use super::*;
    use crate::arbitrary::{self, manifest, truncated, word};

    /// Text made of YAML's syntax and words istiod looks for.
    fn yamlish() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            prop::sample::select(
                &[
                    ":",
                    " ",
                    "\n",
                    "- ",
                    "---\n",
                    "{",
                    "}",
                    "[",
                    "]",
                    ",",
                    "&a ",
                    "*a",
                    "!!str ",
                    "? ",
                    "|\n",
                    ">\n",
                    "'",
                    "\"",
                    "#",
                    "\t",
                    "<<: ",
                    "~",
                    "  ",
                    "apiVersion: ",
                    "kind: ",
                    "metadata: ",
                    "spec: ",
                    "name: ",
                ][..]
            )
            .prop_map(str::to_owned),
            word(),
        ];
        prop::collection::vec(piece, 0..60).prop_map(|p| p.concat())
    }

    fn text_of(manifests: &[serde_json::Value]) -> String {
        manifests
            .iter()
            .map(|m| serde_yaml::to_string(m).expect("yaml"))
            .collect::<Vec<_>>()
            .join("---\n")
    }

    proptest! {
        #![proptest_config(arbitrary::config())]

        #[test]
        fn random_text_is_parsed_or_refused(text in yamlish()) {
            match parse_manifests(&text) {
                Ok(parsed) => prop_assert!(parsed.configs.iter().all(|c| !c.key.name.is_empty())),
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }

        #[test]
        fn random_bytes_are_parsed_or_refused(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
            let text = String::from_utf8_lossy(&bytes);
            let _ = parse_manifests(&text);
        }

        #[test]
        fn cut_manifests_are_parsed_or_refused(
            manifests in prop::collection::vec(manifest(), 1..4),
            at in any::<Index>(),
        ) {
            let text = text_of(&manifests);
            let whole = parse_manifests(&text);
            let cut = String::from_utf8_lossy(&truncated(text.clone().into_bytes(), at)).into_owned();
            match parse_manifests(&cut) {
                Ok(parsed) => prop_assert!(parsed.configs.len() <= manifests.len() * 64),
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
            // The whole text parses as its documents: each becomes a config, is skipped, or
            // fails with a reason about its content, never about the YAML.
            if let Err(e) = whole {
                prop_assert!(!matches!(e, ParseError::Yaml { .. }), "{}", e);
            }
        }
    }
}

#[test]
fn secrets_are_kept_apart_from_config() {
    let text = "apiVersion: v1\nkind: Secret\nmetadata: {name: my-cert, namespace: gw}\ntype: kubernetes.io/tls\ndata: {tls.crt: Y2VydA==}\nstringData: {tls.key: key}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: token, namespace: gw}\ntype: kubernetes.io/service-account-token\n";
    let parsed = parse_manifests(text).unwrap();
    assert!(parsed.configs.is_empty());
    assert_eq!(
        parsed.skipped,
        vec!["v1/Secret"],
        "service-account tokens are skipped"
    );
    let [(key, data)] = parsed.secrets.as_slice() else {
        panic!("one Secret: {:?}", parsed.secrets)
    };
    assert_eq!(key.to_string(), "gw/my-cert");
    assert_eq!(data.data["tls.crt"], b"cert");
    assert_eq!(data.data["tls.key"], b"key");
    let err = parse_manifests("apiVersion: v1\nkind: Secret\nmetadata: {name: a}\ndata: {x: 1}\n")
        .unwrap_err();
    assert!(
        err.to_string().starts_with("document 0: invalid Secret"),
        "{err}"
    );
}
