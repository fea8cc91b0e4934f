//! Bounded YAML: the same values as serde_json's own `Value`, and aliases that expand
//! too far refused.

use serde::Deserialize;

use super::*;

/// Nine levels of ten aliases each: a billion values from a few hundred bytes.
pub(crate) const BILLION_LAUGHS: &str =
    "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: ns}\n\
a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n\
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n\
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n\
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n\
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n\
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n\
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\n\
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]\n\
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h, *h]\n";

/// What serde_json's `Value` makes of `text` through serde_yaml, unbounded.
fn reference(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|de| Value::deserialize(de).expect("reference parse"))
        .collect()
}

fn bounded(text: &str) -> Vec<Value> {
    documents(text)
        .collect::<Result<_, _>>()
        .expect("bounded parse")
}

#[test]
fn values_are_those_serde_json_makes() {
    let texts = [
        "a: 1\nb: -2\nc: 1.5\nd: true\ne: ~\nf: [x, 'y', \"z\"]\ng: {h: {}}\n",
        "big: 18446744073709551615\nneg: -9223372036854775808\n",
        "nan: .nan\ninf: .inf\nempty:\n",
        "1: int key\n~: null key\ntrue: bool key\n",
        "base: &b {x: 1, y: [1, 2]}\ncopy: *b\nlist: [*b, *b]\n",
        "---\nfirst: 1\n---\n---\nthird: 3\n",
        "{\"json\": [1, 2.5, null, {\"k\": \"v\"}]}",
        "",
    ];
    for text in texts {
        assert_eq!(bounded(text), reference(text), "{text:?}");
    }
    // Beyond 64 bits: both refuse, as JSON numbers cannot hold it.
    let huge = "huge: 340282366920938463463374607431768211455\n";
    assert!(single(huge).is_err());
    assert!(serde_yaml::from_str::<Value>(huge).is_err());
    assert_eq!(
        single("a: [1]").expect("one"),
        serde_json::json!({"a": [1]})
    );
    assert_eq!(single("").expect("empty"), Value::Null);
}

#[test]
fn more_than_one_document_is_not_a_single_one() {
    let err = single("a: 1\n---\nb: 2\n").expect_err("two documents");
    assert!(err.to_string().contains("more than one document"), "{err}");
}

#[test]
fn errors_stop_the_stream() {
    let mut docs = documents("a: 1\n---\nb: [\n---\nc: 3\n");
    assert!(docs.next().is_some_and(|d| d.is_ok()));
    assert!(matches!(docs.next(), Some(Err(YamlError::Syntax(_)))));
    assert!(docs.next().is_none());
}

#[test]
fn the_billion_laughs_are_refused() {
    let err = single(BILLION_LAUGHS).expect_err("refused");
    assert!(
        err.to_string().contains("repetition limit exceeded"),
        "{err}"
    );
}

#[test]
fn a_wide_alias_expansion_is_refused_by_the_budget() {
    // 3,000 values named 3,000 times: 9 million values from 21 kB, within serde_yaml's
    // own limit on alias jumps.
    let text = format!(
        "x: &x [{}]\ny: [{}]\n",
        vec!["1"; 3000].join(","),
        vec!["*x"; 3000].join(",")
    );
    match single(&text) {
        Err(YamlError::TooLarge { limit }) => assert_eq!(limit, text.len() + ALIAS_ALLOWANCE),
        other => panic!("want TooLarge, got {other:?}"),
    }
    // The budget is for the whole text: many documents do not each get their own.
    let per_doc = format!(
        "x: &x [{}]\ny: [{}]\n",
        vec!["1"; 300].join(","),
        vec!["*x"; 300].join(",")
    );
    let stream = [per_doc.as_str(); 10].join("---\n");
    let results: Vec<_> = documents(&stream).collect();
    assert!(
        matches!(results.last(), Some(Err(YamlError::TooLarge { .. }))),
        "{:?}",
        results
            .iter()
            .map(|r| r.as_ref().map(|_| ()))
            .collect::<Vec<_>>()
    );
    assert!(
        results.len() < 10,
        "stopped at the document that spent the budget"
    );
}

#[test]
fn moderate_aliasing_and_large_plain_texts_are_read() {
    // An anchor reused a few hundred times expands well within the allowance.
    let text = format!(
        "x: &x {{a: 1, b: [1, 2, 3]}}\ny: [{}]\n",
        vec!["*x"; 500].join(",")
    );
    assert_eq!(bounded(&text), reference(&text));
    // A text without aliases never reaches the budget, however large: here more values
    // than the allowance.
    let plain = format!("items: [{}]\n", vec!["7"; 450_000].join(","));
    const { assert!(450_000 > ALIAS_ALLOWANCE) };
    let value = single(&plain).expect("plain text");
    assert_eq!(value["items"].as_array().map(Vec::len), Some(450_000));
}
