use super::*;

const HOSTILE: [&str; 5] = [
    "a\"b",
    "x\"} 1\npilot_xds_pushes{type=\"forged\"} 99\n# HELP",
    "back\\slash",
    "type.googleapis.com/envoy.config.cluster.v3.Cluster\n",
    "",
];

fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
    out
}

#[test]
fn type_labels_are_short_names_or_other() {
    let t = |l: TypeLabel| l.r#type.as_str();
    assert_eq!(t(Metrics::type_label(types::CLUSTER)), "cds");
    assert_eq!(t(Metrics::type_label(types::WORKLOAD)), "wds");
    assert_eq!(t(Metrics::type_label("istio.io/debug/syncz")), "other");
    assert_eq!(t(Metrics::send_error_label(types::LISTENER)), "lds_senderr");
    assert_eq!(
        t(Metrics::send_error_label(types::AUTHORIZATION)),
        "wads_senderr"
    );
    assert_eq!(t(Metrics::send_error_label("cds")), "other_senderr");
    assert_eq!(t(Metrics::type_url_label(types::ROUTE)), types::ROUTE);
    assert_eq!(t(Metrics::type_url_label("cds")), "other");
    assert_eq!(t(Metrics::label("global")), "global");
    for hostile in HOSTILE {
        assert_eq!(t(Metrics::type_label(hostile)), "other", "{hostile:?}");
        assert_eq!(t(Metrics::type_url_label(hostile)), "other", "{hostile:?}");
    }
}

#[test]
fn every_known_type_has_a_send_error_label() {
    for url in [
        types::CLUSTER,
        types::ENDPOINT,
        types::LISTENER,
        types::ROUTE,
        types::SECRET,
        types::EXTENSION_CONFIG,
        types::NAME_TABLE,
        types::PROXY_CONFIG,
        types::ADDRESS,
        types::WORKLOAD,
        types::AUTHORIZATION,
    ] {
        let short = types::short_name(url);
        assert_eq!(
            Metrics::send_error_label(url).r#type.as_str(),
            format!("{short}_senderr")
        );
    }
}

#[test]
fn releases_keep_digits_and_dots_only() {
    let cases = [
        ("1.22.3", "1.22.3"),
        ("1.22.3-distroless", "1.22.3"),
        ("1.23-alpha.f00d", "1.23"),
        ("1.24.0.1", "1.24.0"),
        ("2", "2"),
        ("", "unknown"),
        ("latest", "other"),
        (".1", "other"),
        ("1..2", "other"),
        ("123456.1", "other"),
        ("1\"} 1\n# HELP x", "1"),
        ("\n1.2", "other"),
    ];
    for (input, want) in cases {
        assert_eq!(Release::of(input).0, want, "{input:?}");
    }
}

#[test]
fn a_release_leaves_the_gauge_with_its_last_proxy() {
    let mut registry = Registry::default();
    let m = Metrics::new(&mut registry);
    let a = m.connected("1.22.3");
    let b = m.connected("1.22.3-distroless");
    assert_eq!(a, b);
    assert!(encode(&registry).contains("pilot_xds{version=\"1.22.3\"} 2\n"));
    m.disconnected(&a);
    assert!(encode(&registry).contains("pilot_xds{version=\"1.22.3\"} 1\n"));
    m.disconnected(&b);
    assert!(!encode(&registry).contains("version=\"1.22.3\""));
}

#[test]
fn distinct_releases_are_bounded() {
    let mut registry = Registry::default();
    let m = Metrics::new(&mut registry);
    let labels: Vec<VersionLabel> = (0..1000).map(|i| m.connected(&format!("1.{i}"))).collect();
    let out = encode(&registry);
    let series = out.lines().filter(|l| l.starts_with("pilot_xds{")).count();
    assert_eq!(series, MAX_VERSIONS + 1, "{out}");
    assert!(out.contains(&format!(
        "pilot_xds{{version=\"other\"}} {}\n",
        1000 - MAX_VERSIONS
    )));
    for l in &labels {
        m.disconnected(l);
    }
    assert!(!encode(&registry).contains("pilot_xds{"));
    // Places freed by departed releases are taken by new ones.
    let l = m.connected("1.30.0");
    assert!(encode(&registry).contains("pilot_xds{version=\"1.30.0\"} 1\n"));
    m.disconnected(&l);
}

#[test]
fn hostile_type_urls_and_versions_never_reach_the_exposition() {
    let mut registry = Registry::default();
    let m = Metrics::new(&mut registry);
    for hostile in HOSTILE {
        m.pushes.get_or_create(&Metrics::type_label(hostile)).inc();
        m.pushes
            .get_or_create(&Metrics::send_error_label(hostile))
            .inc();
        m.config_size
            .get_or_create(&Metrics::type_url_label(hostile))
            .observe(1.0);
        m.rejects.get_or_create(&Metrics::type_label(hostile)).inc();
        m.connected(hostile);
    }
    let out = encode(&registry);
    for line in out.lines().filter(|l| !l.starts_with('#')) {
        let labels = line
            .split_once('{')
            .and_then(|(_, rest)| rest.split_once('}'))
            .map_or("", |(labels, _)| labels);
        for pair in labels.split(',').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap();
            if name == "le" {
                continue;
            }
            let value = value.trim_matches('"');
            assert!(crate::metrics::is_safe(value), "{line}");
        }
    }
    assert!(!out.contains("forged"), "{out}");
    assert!(
        out.contains("pilot_xds_pushes_total{type=\"other\"} 5\n"),
        "{out}"
    );
    assert!(out.contains("pilot_xds_write_timeout_total 0\n"), "{out}");
}
