//! The engine against Go's documented `text/template` behaviour, case by case, and the
//! functions against what Sprig's and Istio's do.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::*;

fn render(text: &str, data: Value) -> Result<String, Error> {
    let mut set = Templates::new().with_env(BTreeMap::from([(
        "ISTIO_META_X".to_owned(),
        "from-env".to_owned(),
    )]));
    set.parse("t", text)?;
    set.execute("t", &data)
}

fn data() -> Value {
    json!({
        "s": "str", "n": 3, "f": 1.5, "yes": true, "no": false, "zero": 0, "nil": null,
        "list": ["a", "b", "c"], "empty": [], "m": {"b": 2, "a": 1, "c": 3}, "none": {},
        "nested": {"inner": {"leaf": "deep"}},
        "spec": {"containers": [
            {"name": "app", "ports": [{"containerPort": 8080}, {"containerPort": 53, "protocol": "UDP"}]},
            {"name": "istio-proxy", "ports": [{"containerPort": 15090}]},
            {"name": "side", "ports": [{"containerPort": 9090, "protocol": "TCP"}]}
        ]},
        "meta": {"annotations": {"a/b": "set", "empty": ""}, "labels": {"app": "x"}},
        "TypeMeta": {"apiVersion": "v1", "kind": "Pod"},
        "proxy": {"holdApplicationUntilProxyStarts": true, "interceptionMode": "REDIRECT"}
    })
}

/// (template, expected output)
const CASES: &[(&str, &str)] = &[
    // Text and trimming: `{{- ` eats the whitespace before, ` -}}` after.
    ("plain text", "plain text"),
    ("{{23 -}} < {{- 45}}", "23<45"),
    ("a \n\t {{- .s -}} \n b", "astrb"),
    ("a {{- /* comment */ -}} b", "ab"),
    ("x{{/* a\nmultiline comment */}}y", "xy"),
    ("{{-3}}", "-3"),
    // Values as Go prints them.
    ("{{.s}} {{.n}} {{.f}} {{.yes}} {{.nil}} {{.list}} {{.m}}", "str 3 1.5 true <nil> [a b c] map[a:1 b:2 c:3]"),
    ("{{1e6}} {{100000.0}} {{0.0001}} {{0.00001}} {{1234567.0}}", "1e+06 100000 0.0001 1e-05 1.234567e+06"),
    ("{{0x1F}} {{'a'}} {{1_000}} {{-2}}", "31 97 1000 -2"),
    ("{{\"esc\\t\\\"q\\\"\"}} {{`raw\\n`}}", "esc\t\"q\" raw\\n"),
    // Missing keys print `<no value>`; nil passed to a function is nil.
    ("{{.missing}}|{{.nested.missing.deeper}}|{{index .m \"zz\"}}|{{print .missing}}", "<no value>|<no value>|<nil>|<nil>"),
    ("{{.missing | default \"d\"}} {{.s | default \"d\"}} {{\"\" | default \"d\"}}", "d str d"),
    // Fields, chains, variables.
    ("{{.nested.inner.leaf}} {{(.nested).inner.leaf}} {{$.nested.inner.leaf}}", "deep deep deep"),
    ("{{$x := .nested}}{{$x.inner.leaf}}", "deep"),
    ("{{$x := 1}}{{if true}}{{$x = 2}}{{end}}{{$x}}", "2"),
    ("{{$x := 1}}{{if true}}{{$x := 2}}{{$x}}{{end}}{{$x}}", "21"),
    ("{{with $x := .s}}{{$x}}{{end}}", "str"),
    // Pipelines: the value goes last.
    ("{{\"x\" | printf \"%s-%s\" \"a\"}}", "a-x"),
    ("{{.list | len | printf \"%d items\"}}", "3 items"),
    // if / else if / else; Go truth.
    ("{{if .no}}1{{else if .zero}}2{{else if .s}}3{{else}}4{{end}}", "3"),
    ("{{if .empty}}y{{else}}n{{end}}{{if .none}}y{{else}}n{{end}}{{if \"0\"}}y{{end}}{{if .missing}}y{{else}}n{{end}}", "nnyn"),
    ("{{if and .s .n}}A{{end}}{{if or .no .zero}}B{{else}}C{{end}}{{and .s .n}} {{or .no .s}} {{and .s .no}}", "AC3 str false"),
    // `and`/`or` stop at the first argument that decides.
    ("{{or .s (len .n)}} {{and .no (len .n)}}", "str false"),
    ("{{not .no}} {{not .s}} {{not .missing}}", "true false true"),
    // with / else / else with.
    ("{{with .nested.inner}}{{.leaf}}{{end}}{{with .missing}}x{{else}}none{{end}}", "deepnone"),
    ("{{with .no}}a{{else with .s}}{{.}}{{end}}", "str"),
    // range over lists, maps in key order, ints; else; break and continue.
    ("{{range .list}}{{.}}{{end}}", "abc"),
    ("{{range $i, $v := .list}}{{$i}}={{$v}};{{end}}", "0=a;1=b;2=c;"),
    ("{{range $k, $v := .m}}{{$k}}{{$v}}{{end}}", "a1b2c3"),
    ("{{range $v := .m}}{{$v}}{{end}}", "123"),
    ("{{range .empty}}x{{else}}empty{{end}}{{range .missing}}x{{else}}missing{{end}}", "emptymissing"),
    ("{{range .n}}{{.}}{{end}}", "012"),
    ("{{range .list}}{{if eq . \"b\"}}{{continue}}{{end}}{{if eq . \"c\"}}{{break}}{{end}}{{.}}{{end}}", "a"),
    ("{{range .list}}{{$.s}}{{end}}", "strstrstr"),
    ("{{$l := list}}{{range .list}}{{$l = append $l .}}{{end}}{{len $l}}", "3"),
    // define / template / block / include.
    ("{{define \"x\"}}[{{.}}]{{end}}{{template \"x\" .s}}{{template \"x\"}}", "[str][<no value>]"),
    ("{{block \"b\" .s}}<{{.}}>{{end}}", "<str>"),
    ("{{define \"x\"}}{{.}}\nline{{end}}{{include \"x\" .s | nindent 2}}", "\n  str\n  line"),
    // Comparisons.
    ("{{eq .s \"str\"}} {{eq .n 1 2 3}} {{ne .n 3}} {{eq .nil .nil}} {{eq .missing \"x\"}}", "true true false true false"),
    ("{{lt 1 2}} {{le 2 2}} {{gt \"b\" \"a\"}} {{ge 1.5 2}} {{eq 3 3.0}}", "true true true false true"),
    // len, index, print.
    ("{{len .s}} {{len .list}} {{len .m}} {{index .list 1}} {{index .m \"b\"}} {{index .nested \"inner\" \"leaf\"}}", "3 3 3 b 2 deep"),
    ("{{print 1 2 \"a\" \"b\" 3}} {{println \"x\" 1}}", "1 2ab3 x 1\n"),
    // printf verbs.
    ("{{printf \"%s|%d|%v|%q|%t|%%\" \"a\" 7 .list \"q\\\"\" true}}", "a|7|[a b c]|\"q\\\"\"|true|%"),
    ("{{printf \"%5s|%-5s|%05d|%x|%.2f\" \"a\" \"b\" 42 255 3.14159}}", "    a|b    |00042|ff|3.14"),
    ("{{printf \"%d %s\" \"x\"}} {{printf \"%s\" \"a\" 1}}", "%!d(string=x) %!s(MISSING) a%!(EXTRA int=1)"),
    // Go field names on JSON data, and the proto getters.
    ("{{(index .spec.containers 0).name}} {{.TypeMeta.APIVersion}} {{len .Spec.Containers}}", "app v1 3"),
    ("{{.proxy.HoldApplicationUntilProxyStarts.GetValue}} {{.proxy.InterceptionMode.String}} {{.proxy.GetTracing.GetTlsSettings}}", "true REDIRECT <nil>"),
    // Sprig.
    ("{{quote .s 1}} {{squote .s}} {{\"a\\nb\" | quote}}", "\"str\" \"1\" 'str' \"a\\nb\""),
    ("{{coalesce .missing \"\" .s}} {{ternary \"y\" \"n\" .yes}} {{empty .none}} {{.list | join \",\"}}", "str y true a,b,c"),
    ("{{\"-_abcdef_-\" | trunc 8 | trimAll \"-_\"}} {{trunc -2 \"abc\"}}", "abcdef bc"),
    ("{{hasKey .m \"a\"}} {{contains \"tr\" .s}} {{hasPrefix \"st\" .s}} {{replace \"t\" \"T\" .s}} {{upper .s}}", "true true true sTr STR"),
    ("{{(split \",\" \"a,b\")._1}} {{splitList \",\" \"a,b\"}} {{trim \"  x \"}} {{lower \"AB\"}}", "b [a b] x ab"),
    ("{{$d := dict \"k\" \"v\" \"n\" 1}}{{$d.k}}{{$d.n}} {{kindIs \"map\" $d}} {{kindOf .list}} {{typeOf .s}}", "v1 true slice string"),
    ("{{b64enc \"hi\"}} {{b64dec \"aGk=\"}} {{add 1 2 3}} {{sub 5 2}} {{add1 .n}} {{int \"42\"}}", "aGk= hi 6 3 4 42"),
    ("{{toJson .m}} {{toJson \"<&>\"}}", "{\"a\":1,\"b\":2,\"c\":3} \"\\u003c\\u0026\\u003e\""),
    ("{{first .list}}{{last .list}} {{has \"b\" .list}} {{keys .m}}", "ac true [a b c]"),
    // Istio's.
    ("{{annotation .meta \"a/b\" \"d\"}} {{annotation .meta \"x\" 15020}} {{isset .meta.annotations \"empty\"}} {{isset .nil \"x\"}}", "set 15020 true false"),
    ("{{excludeInboundPort 15020 \"\"}}|{{excludeInboundPort \"15020\" \"80,15020\"}}|{{excludeInboundPort 0 \"80\"}}|{{excludeInboundPort 1 \"80, 90\"}}", "15020|80,15020|80|80,90,1"),
    ("{{applicationPorts .spec.containers}}|{{includeInboundPorts .spec.containers}}", "8080,9090|8080,15090,9090"),
    ("{{valueOrDefault .missing \"d\"}} {{valueOrDefault \"\" \"d\"}} {{valueOrDefault .n \"d\"}}", "d d 3"),
    ("{{toJSON .meta.labels}} {{toJSON .nil}} {{structToJSON .nil}} {{protoToJSON .m}}", "{\"app\":\"x\"} {} {} {\"a\":1,\"b\":2,\"c\":3}"),
    ("{{(fromJSON \"{\\\"a\\\":[1]}\").a}} {{fromJSON \"nope\"}}", "[1] {}"),
    ("{{toYaml .nested}}", "inner:\n  leaf: deep\n"),
    ("{{toYaml .list | indent 2}}", "- a\n  - b\n  - c\n  "),
    ("{{directory \"/etc/certs/root.pem\"}} {{toLower \"ABC\"}} {{env \"ISTIO_META_X\" \"d\"}} {{env \"UNSET_X\" \"d\"}}", "/etc/certs/ abc from-env d"),
    ("{{appendMultusNetwork \"\" \"default/istio-cni\"}}|{{appendMultusNetwork \"a, default/istio-cni\" \"default/istio-cni\"}}|{{appendMultusNetwork \"a\" \"default/istio-cni\"}}", "default/istio-cni|a, default/istio-cni|a, default/istio-cni"),
    ("{{appendMultusNetwork `[{\"name\": \"a\"}]` \"default/istio-cni\"}}", "[{\"name\": \"a\"}, {\"name\": \"istio-cni\", \"namespace\": \"default\"}]"),
    ("{{omit .meta.annotations \"a/b\"}} {{strdict \"a\" \"1\" \"b\"}} {{mergeMaps .meta.labels (strdict \"app\" \"y\" \"z\" \"1\")}}", "map[empty:] map[a:1 b:] map[app:y z:1]"),
    ("{{toJsonMap .meta.labels (strdict \"b\" \"2\")}}", "{\"app\":\"x\",\"b\":\"2\"}"),
    ("{{omitNil (fromJSON `{\"a\":null,\"b\":{\"c\":null},\"d\":[1,null]}`)}}", "map[d:[1]]"),
    ("{{formatDuration \"90s\"}} {{formatDuration \"1.5s\"}} {{formatDuration \"7200s\"}} {{formatDuration \"0.002s\"}}", "1m30s 1.5s 2h0m0s 2ms"),
];

#[test]
fn go_template_behaviour() {
    let mut failures = Vec::new();
    for (text, want) in CASES {
        match render(text, data()) {
            Ok(got) if got == *want => {}
            Ok(got) => failures.push(format!("{text}\n  want {want:?}\n  got  {got:?}")),
            Err(e) => failures.push(format!("{text}\n  want {want:?}\n  error {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// (template, the error's line, a part of its message)
const ERRORS: &[(&str, usize, &str)] = &[
    ("line 1\n{{if}}", 2, "missing value for if"),
    ("\n\n{{nosuch 1}}", 3, "function \"nosuch\" not defined"),
    ("{{$x}}", 1, "undefined variable \"$x\""),
    ("{{$x = 1}}", 1, "undefined variable \"$x\""),
    (
        "{{if true}}{{$x := 1}}{{end}}{{$x}}",
        1,
        "undefined variable \"$x\"",
    ),
    ("a\n{{end}}", 2, "unexpected {{end}}"),
    ("{{if true}}\n\nx", 3, "unexpected EOF"),
    ("{{.s", 1, "unclosed action"),
    ("{{break}}", 1, "{{break}} outside {{range}}"),
    (
        "{{if true}}{{define \"x\"}}{{end}}{{end}}",
        1,
        "only allowed at the top level",
    ),
    (
        "{{range .list}}{{else}}{{else}}{{end}}",
        1,
        "expected end; found {{else}}",
    ),
    ("{{/* unclosed", 1, "unclosed comment"),
    (
        "{{\"a\" | \"b\"}}",
        1,
        "non executable command in pipeline stage 2",
    ),
    ("{{nil}}", 1, "nil is not a command"),
    ("{{(1}}", 1, "unclosed left paren"),
    ("{{len\"x\"}}", 1, "missing space before"),
];

#[test]
fn parse_errors_name_the_template_and_line() {
    for (text, line, part) in ERRORS {
        let mut set = Templates::new();
        let error = set
            .parse("inject", text)
            .and_then(|()| set.execute("inject", &data()));
        match error {
            Err(e) => {
                let message = e.to_string();
                assert!(
                    message.starts_with(&format!("template: inject:{line}: "))
                        && message.contains(part),
                    "{text:?}: want line {line} and {part:?}, got {message:?}"
                );
            }
            Ok(out) => panic!("{text:?} rendered {out:?}, want an error"),
        }
    }
}

#[test]
fn execution_errors_name_the_template_and_line() {
    let cases: &[(&str, &str, usize, &str)] = &[
        (
            "a\nb\n{{len 3}}",
            "t",
            3,
            "error calling len: len of type int",
        ),
        ("{{.s.x}}", "t", 1, "can't evaluate field x in type string"),
        (
            "{{.nil.x}}",
            "t",
            1,
            "nil pointer evaluating interface {}.x",
        ),
        ("{{eq .s 1}}", "t", 1, "incompatible types for comparison"),
        ("{{index .list 5}}", "t", 1, "index out of range: 5"),
        (
            "{{range .s}}{{end}}",
            "t",
            1,
            "range can't iterate over str",
        ),
        ("{{template \"nope\"}}", "t", 1, "no such template \"nope\""),
        ("{{.s 1}}", "t", 1, "s is not a method but has arguments"),
        // An error inside a defined template names it, and the line in the source.
        (
            "{{define \"inner\"}}\n{{len 1}}{{end}}{{template \"inner\"}}",
            "inner",
            2,
            "len of type int",
        ),
        // A template that calls itself runs out of depth instead of stack.
        (
            "{{define \"loop\"}}{{template \"loop\"}}{{end}}{{template \"loop\"}}",
            "loop",
            0,
            "exceeded maximum template depth",
        ),
    ];
    for (text, template, line, part) in cases {
        let error = render(text, data()).expect_err(text);
        match &error {
            Error::Exec {
                source_name,
                line: got_line,
                template: got_template,
                message,
            } => {
                assert_eq!(source_name, "t", "{text}");
                assert_eq!(
                    (got_template.as_str(), *got_line),
                    (*template, *line),
                    "{text}: {error}"
                );
                assert!(message.contains(part), "{text}: {error}");
                assert!(
                    error
                        .to_string()
                        .starts_with(&format!("template: t:{line}: executing \"{template}\": ")),
                    "{error}"
                );
            }
            other => panic!("{text}: want an execution error, got {other:?}"),
        }
    }
}

#[test]
fn definitions_are_shared_across_texts_and_replace_earlier_ones() {
    let mut set = Templates::new();
    set.parse("base", "{{block \"item\" .}}default {{.}}{{end}}")
        .expect("base");
    assert_eq!(set.execute("base", &json!("x")).expect("run"), "default x");
    // A text of only definitions leaves `base` as it was and overrides `item`.
    set.parse("override", "{{define \"item\"}}custom {{.}}{{end}}\n")
        .expect("override");
    assert_eq!(set.execute("base", &json!("x")).expect("run"), "custom x");
    // An empty redefinition does not replace a body.
    set.parse("again", "{{define \"item\"}}  {{end}}")
        .expect("again");
    assert_eq!(set.execute("base", &json!("x")).expect("run"), "custom x");
    assert!(set.contains("item") && !set.contains("missing"));
    assert_eq!(
        set.execute("missing", &json!(null)),
        Err(Error::NoTemplate("missing".to_owned()))
    );
}

#[test]
fn deep_nesting_and_recursion_fail_cleanly() {
    let deep = parse::MAX_NESTING + 1;
    let text = format!("{}x{}", "{{if true}}".repeat(deep), "{{end}}".repeat(deep));
    let error = render(&text, data()).expect_err("too deep");
    assert!(
        error.to_string().contains("exceeded maximum nesting depth"),
        "{error}"
    );
    let text = format!("{}1{}", "{{(".repeat(deep), ")}}".repeat(deep));
    assert!(render(&text, data()).is_err());

    // As deep as allowed, calling itself until the call depth runs out: an error, on the
    // 2 MiB stack of a test thread.
    let nest = parse::MAX_NESTING - 1;
    let text = format!(
        "{{{{define \"loop\"}}}}{}{{{{template \"loop\" .}}}}{}{{{{end}}}}{{{{template \"loop\" .}}}}",
        "{{with .}}".repeat(nest),
        "{{end}}".repeat(nest)
    );
    let error = render(&text, data()).expect_err("recursion");
    assert!(
        error
            .to_string()
            .contains("exceeded maximum template depth"),
        "{error}"
    );
}

#[test]
fn functions_can_be_added() {
    fn shout(_: &Context<'_>, args: Vec<Value>) -> Result<Value, String> {
        Ok(Value::String(format!("{}!", value::to_string(&args[0]))))
    }
    let mut set = Templates::new().with_func("shout", shout);
    set.parse("t", "{{.s | shout}}").expect("parse");
    assert_eq!(set.execute("t", &data()).expect("run"), "str!");
}

/// Parses upstream's four injector templates from `INJECT_TEMPLATES_DIR` (the files of
/// upstream's `manifests/charts/istio-control/istio-discovery/files`), which the project
/// does not ship: run with `--ignored` and the variable set. With `INJECT_TEMPLATE_DATA`
/// (a JSON file of template data) each is also rendered and must give YAML.
#[test]
#[ignore = "needs upstream's injector templates: set INJECT_TEMPLATES_DIR"]
fn parses_upstream_injection_templates() {
    let Ok(dir) = std::env::var("INJECT_TEMPLATES_DIR") else {
        panic!(
            "INJECT_TEMPLATES_DIR is not set: point it at upstream's istio-discovery chart files/"
        );
    };
    for file in [
        "injection-template.yaml",
        "gateway-injection-template.yaml",
        "grpc-agent.yaml",
        "grpc-simple.yaml",
    ] {
        let path = std::path::Path::new(&dir).join(file);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut set = Templates::new();
        set.parse(file, &text).unwrap_or_else(|e| panic!("{e}"));
        let Ok(data) = std::env::var("INJECT_TEMPLATE_DATA") else {
            continue;
        };
        let data = std::fs::read_to_string(&data).unwrap_or_else(|e| panic!("{data}: {e}"));
        let data: Value = serde_json::from_str(&data).unwrap_or_else(|e| panic!("{e}"));
        let out = set.execute(file, &data).unwrap_or_else(|e| panic!("{e}"));
        if let Err(e) = crate::config::yaml::single(&out) {
            panic!("{file} rendered invalid YAML ({e}):\n{out}");
        }
        assert!(!out.contains("<no value>"), "{file}:\n{out}");
    }
}
