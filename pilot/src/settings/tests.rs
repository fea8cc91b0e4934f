use super::*;

/// A value of the right kind for each rule, and one that is not.
fn good_and_bad(rule: Rule) -> (&'static str, Option<&'static str>) {
    match rule {
        Rule::Bool => ("T", Some("yes")),
        Rule::Duration => ("90m", Some("10")),
        Rule::Integer => ("50", Some("many")),
        Rule::Number => ("12.5", Some("fast")),
        Rule::Text | Rule::List | Rule::Path => ("x", None),
    }
}

/// Variables that flags fall back to (clap reads them; their parsers are `go_*`).
fn flag_variables() -> Vec<String> {
    use clap::Args;
    let cmd = crate::args::DiscoveryArgs::augment_args(clap::Command::new("discovery"));
    cmd.get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect()
}

#[test]
fn flag_variables_are_in_the_table() {
    let flags = flag_variables();
    assert!(
        flags.contains(&GRPC_KEEPALIVE_INTERVAL.to_owned()),
        "{flags:?}"
    );
    for f in &flags {
        assert!(
            VARIABLES.iter().any(|v| v.name == f),
            "{f} missing from VARIABLES"
        );
    }
}

#[test]
fn every_variable_is_read_with_its_rule() {
    let defaults = Settings::from_env(&Env::default()).expect("defaults");
    let flags = flag_variables();
    for v in VARIABLES {
        if flags.iter().any(|f| f == v.name) && v.name != POD_NAMESPACE {
            // Read by the flag parser (see `flag_variables_are_in_the_table`).
            continue;
        }
        let (good, bad) = good_and_bad(v.rule);
        // Variables whose meaning constrains the value further (key sizes, key types).
        let good = match v.name {
            CITADEL_SELF_SIGNED_CA_RSA_KEY_SIZE => "4096",
            CITADEL_SELF_SIGNED_CA_KEY_TYPE => "ECDSA_P256",
            DEFAULT_WORKLOAD_CERT_TTL => "1h",
            MAX_WORKLOAD_CERT_TTL => "48h",
            _ => good,
        };
        Settings::from_env(&Env::from_pairs([(v.name, good)]))
            .unwrap_or_else(|e| panic!("{} = {good:?}: {e}", v.name));
        if let Some(bad) = bad {
            let err = Settings::from_env(&Env::from_pairs([(v.name, bad)]))
                .expect_err(&format!("{} = {bad:?} must be refused", v.name));
            assert_eq!(err.var, v.name, "{err}");
            assert_eq!(err.value, bad);
            assert!(err.to_string().contains(v.name), "{err}");
        }
        // A blank value counts as unset.
        let blank = Settings::from_env(&Env::from_pairs([(v.name, " ")])).expect("blank");
        assert_eq!(format!("{blank:?}"), format!("{defaults:?}"), "{}", v.name);
    }
}

#[test]
fn defaults_in_the_table_are_the_defaults_used() {
    let s = Settings::from_env(&Env::default()).expect("defaults");
    let default_of = |name: &str| {
        VARIABLES
            .iter()
            .find(|v| v.name == name)
            .map(|v| v.default)
            .unwrap_or_else(|| panic!("{name} not in VARIABLES"))
    };
    assert_eq!(
        go_duration(default_of(PILOT_DEBOUNCE_AFTER)),
        Ok(s.features.debounce_after)
    );
    assert_eq!(
        go_duration(default_of(PILOT_DEBOUNCE_MAX)),
        Ok(s.features.debounce_max)
    );
    assert_eq!(
        go_bool(default_of(ENABLE_LEADER_ELECTION)),
        Ok(s.leader_election)
    );
    assert_eq!(go_bool(default_of(ENABLE_CA_SERVER)), Ok(s.ca.enabled));
    assert_eq!(
        go_duration(default_of(DEFAULT_WORKLOAD_CERT_TTL)),
        Ok(s.ca.default_ttl)
    );
    assert_eq!(
        go_duration(default_of(MAX_WORKLOAD_CERT_TTL)),
        Ok(s.ca.max_ttl)
    );
    assert_eq!(
        go_duration(default_of(CITADEL_SELF_SIGNED_CA_CERT_TTL)),
        Ok(s.ca.self_signed_ttl)
    );
    assert_eq!(default_of(POD_NAMESPACE), s.ca.namespace);
    assert_eq!(default_of(TRUST_DOMAIN), s.ca.trust_domain);
    for v in VARIABLES {
        match v.rule {
            Rule::Bool => assert!(go_bool(v.default).is_ok(), "{}", v.name),
            Rule::Duration => assert!(go_duration(v.default).is_ok(), "{}", v.name),
            Rule::Integer => assert!(v.default.parse::<u64>().is_ok(), "{}", v.name),
            Rule::Number => assert!(v.default.parse::<f64>().is_ok(), "{}", v.name),
            Rule::Text | Rule::List | Rule::Path => {}
        }
    }
}

#[test]
fn booleans_follow_go() {
    for t in ["1", "t", "T", "TRUE", "true", "True"] {
        assert_eq!(go_bool(t), Ok(true), "{t}");
    }
    for f in ["0", "f", "F", "FALSE", "false", "False"] {
        assert_eq!(go_bool(f), Ok(false), "{f}");
    }
    for bad in ["yes", "tRUE", "on", "2", ""] {
        assert!(go_bool(bad).is_err(), "{bad}");
    }
    // The same rule everywhere: leader election and ambient accept `1` alike.
    let env = Env::from_pairs([(ENABLE_LEADER_ELECTION, "0"), (PILOT_ENABLE_AMBIENT, "1")]);
    let s = Settings::from_env(&env).expect("settings");
    assert!(!s.leader_election && s.features.enable_ambient);
}

#[test]
fn durations_follow_go() {
    assert_eq!(go_duration("0"), Ok(Duration::ZERO));
    assert_eq!(go_duration("1h30m"), Ok(Duration::from_secs(5400)));
    assert_eq!(go_duration("1.5s"), Ok(Duration::from_millis(1500)));
    assert_eq!(go_duration("2160h"), Ok(Duration::from_secs(2160 * 3600)));
    for bad in ["10", "1d", "-1s", "soon", ""] {
        assert!(go_duration(bad).is_err(), "{bad}");
    }
}

/// `docs/settings.md` carries the generated table; `UPDATE_DOCS=1 cargo test` rewrites it.
#[test]
fn docs_reference_table_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/settings.md");
    let text = std::fs::read_to_string(&path).expect("docs/settings.md");
    let (head, rest) = text
        .split_once("<!-- settings table -->\n")
        .expect("start marker");
    let (_, tail) = rest
        .split_once("<!-- end settings table -->")
        .expect("end marker");
    let want = format!(
        "{head}<!-- settings table -->\n{}<!-- end settings table -->{tail}",
        reference_table()
    );
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(&path, &want).expect("write docs/settings.md");
    } else {
        assert!(
            text == want,
            "docs/settings.md is out of date: run `UPDATE_DOCS=1 cargo test -p pilot --lib settings`"
        );
    }
}
