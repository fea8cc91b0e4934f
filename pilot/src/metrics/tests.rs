use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::*;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    kind: Label,
}

#[test]
fn only_characters_that_need_no_escaping_are_safe() {
    for ok in [
        "",
        "cds",
        "cds_senderr",
        "networking.istio.io",
        "v1alpha3",
        "type.googleapis.com/envoy.config.cluster.v3.Cluster",
        "1.22.0",
        "a-b:c",
    ] {
        assert!(is_safe(ok), "{ok:?}");
    }
    for bad in [
        "a\"b", "a\\b", "a\nb", "a\rb", "a}b", "a{b", "a b", "a,b", "a=b", "# HELP", "é", "a\0b",
    ] {
        assert!(!is_safe(bad), "{bad:?}");
    }
}

#[test]
fn unsafe_static_values_become_other() {
    assert_eq!(Label::from_static("ttl_error").as_str(), "ttl_error");
    assert_eq!(Label::from_static("x\"}\n# HELP"), Label::OTHER);
}

#[test]
#[should_panic(expected = "label values")]
fn a_constant_with_a_quote_is_refused() {
    let value = std::hint::black_box("a\"b");
    let _ = Label::new(value);
}

#[test]
fn caller_text_maps_onto_the_set() {
    const SET: [Label; 2] = [Label::new("cds"), Label::new("eds")];
    assert_eq!(Label::pick("eds", &SET).as_str(), "eds");
    assert_eq!(Label::pick("eds\"} 1\nforged 2", &SET), Label::OTHER);
    assert_eq!(Label::pick("", &SET), Label::OTHER);
}

#[test]
fn encodes_as_the_plain_string() {
    let mut registry = Registry::default();
    let family = Family::<Labels, Counter>::default();
    registry.register("things", "Things.", family.clone());
    family
        .get_or_create(&Labels {
            kind: Label::new("networking.istio.io"),
        })
        .inc();
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
    assert!(
        out.contains("things_total{kind=\"networking.istio.io\"} 1\n"),
        "{out}"
    );
}
