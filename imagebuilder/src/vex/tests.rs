use super::*;
use crate::scan::{Affected, Severity, Source};

const IMAGE: &str = "pkg:oci/istio-pilot@sha256%3Aabcd?repository_url=dhi.io/istio-pilot&tag=0.1.0";

fn finding(id: &str, purl: &str) -> Finding {
    Finding {
        id: id.into(),
        aliases: vec!["CVE-2020-26235".into()],
        source: Source::RustSec,
        component: Affected {
            bom_ref: "crate:time@0.1.43".into(),
            purl: purl.into(),
            name: "time".into(),
            package: "time".into(),
        },
        installed: "0.1.43".into(),
        fixed: Some("0.2.23".into()),
        severity: Severity::Medium,
        cvss: None,
        title: None,
        url: String::new(),
    }
}

fn statement(vuln: &str, product: &str, subs: &[&str], status: Status) -> Statement {
    Statement {
        vulnerability: Vulnerability {
            iri: None,
            name: vuln.into(),
            description: None,
            aliases: vec![],
        },
        timestamp: None,
        products: vec![Product {
            id: product.into(),
            subcomponents: subs
                .iter()
                .map(|s| Subcomponent { id: s.to_string() })
                .collect(),
        }],
        status,
        status_notes: None,
        justification: (status == Status::NotAffected)
            .then_some(Justification::VulnerableCodeNotInExecutePath),
        impact_statement: None,
        action_statement: (status == Status::Affected).then(|| "upgrade".to_string()),
    }
}

fn statements(docs: Vec<(&str, Document)>) -> Statements {
    let mut s = Statements::default();
    for (name, d) in docs {
        s.add(name, d);
    }
    s
}

/// The example document of the OpenVEX specification, v0.2.0.
const SPEC_EXAMPLE: &str = r#"{
  "@context": "https://openvex.dev/ns/v0.2.0",
  "@id": "https://openvex.dev/docs/example/vex-9fb3463de1b57",
  "author": "Wolfi J Inkinson",
  "role": "Document Creator",
  "timestamp": "2023-01-08T18:02:03.647787998-06:00",
  "version": 1,
  "statements": [
    {
      "vulnerability": {"name": "CVE-2014-123456"},
      "products": [
        {"@id": "pkg:apk/distro/git@2.39.0-r1?arch=armv7"},
        {"@id": "pkg:apk/distro/git@2.39.0-r1?arch=x86_64"}
      ],
      "status": "fixed"
    }
  ]
}"#;

#[test]
fn reads_the_spec_example() {
    let d = Document::parse(SPEC_EXAMPLE.as_bytes()).expect("parse");
    assert_eq!(d.statements.len(), 1);
    assert_eq!(d.statements[0].status, Status::Fixed);
    assert_eq!(
        d.statements[0].products[1].id,
        "pkg:apk/distro/git@2.39.0-r1?arch=x86_64"
    );
}

#[test]
fn refuses_what_the_spec_forbids() {
    let mut s = statement("CVE-1", IMAGE, &[], Status::NotAffected);
    s.justification = None;
    assert!(s
        .check()
        .unwrap_err()
        .contains("neither a justification nor an impact_statement"));
    s.impact_statement = Some("only used at build time".into());
    assert!(s.check().is_ok());
    let mut s = statement("CVE-1", IMAGE, &[], Status::Affected);
    s.action_statement = None;
    assert!(s.check().unwrap_err().contains("no action_statement"));
    let mut s = statement("CVE-1", IMAGE, &[], Status::Fixed);
    s.products.clear();
    assert!(s.check().is_err());

    let bad = SPEC_EXAMPLE.replace("\"fixed\"", "\"not_affected\"");
    assert!(Document::parse(bad.as_bytes()).is_err());
    let other = SPEC_EXAMPLE.replace("https://openvex.dev/ns/v0.2.0", "https://example.com/ns");
    assert!(Document::parse(other.as_bytes()).is_err());
    assert!(Document::parse(b"{}").is_err());
}

#[test]
fn purl_matching() {
    let cases = [
        ("pkg:cargo/time@0.1.43", "pkg:cargo/time@0.1.43", true),
        ("pkg:cargo/time", "pkg:cargo/time@0.1.43", true),
        ("pkg:cargo/time@0.1.44", "pkg:cargo/time@0.1.43", false),
        ("pkg:cargo/tim", "pkg:cargo/time@0.1.43", false),
        (
            "pkg:deb/debian/libc6@2.36-9%2Bdeb12u3",
            "pkg:deb/debian/libc6@2.36-9+deb12u3?arch=amd64&distro=debian-12",
            true,
        ),
        (
            "pkg:deb/debian/libc6?arch=arm64",
            "pkg:deb/debian/libc6@2.36-9?arch=amd64",
            false,
        ),
        ("pkg:oci/istio-pilot", IMAGE, true),
        ("pkg:oci/istio-pilot@sha256%3Aabcd", IMAGE, true),
        ("pkg:oci/istio-pilot@sha256:abcd", IMAGE, true),
        ("pkg:oci/istio-pilot@sha256%3Aeeee", IMAGE, false),
        ("pkg:oci/istio-pilot?tag=0.1.0", IMAGE, true),
        ("pkg:oci/istio-pilot?tag=0.2.0", IMAGE, false),
    ];
    for (pattern, candidate, want) in cases {
        assert_eq!(
            purl_matches(pattern, candidate),
            want,
            "{pattern} ~ {candidate}"
        );
    }
}

#[test]
fn statements_apply_by_vulnerability_name_or_alias_and_product() {
    let time = "pkg:cargo/time@0.1.43";
    let f = finding("RUSTSEC-2020-0071", time);
    let doc = |s: Statement| Document::new("a", "2024-01-01T00:00:00Z", vec![s]);
    let cases = [
        // The image, no subcomponents: the whole image.
        (
            statement("RUSTSEC-2020-0071", IMAGE, &[], Status::NotAffected),
            true,
        ),
        // By alias.
        (
            statement(
                "CVE-2020-26235",
                "pkg:oci/istio-pilot",
                &[],
                Status::NotAffected,
            ),
            true,
        ),
        // The image, limited to this component.
        (
            statement(
                "CVE-2020-26235",
                IMAGE,
                &["pkg:cargo/time"],
                Status::NotAffected,
            ),
            true,
        ),
        // The image, limited to another component.
        (
            statement(
                "CVE-2020-26235",
                IMAGE,
                &["pkg:cargo/chrono"],
                Status::NotAffected,
            ),
            false,
        ),
        // The component itself as the product.
        (
            statement("RUSTSEC-2020-0071", time, &[], Status::Fixed),
            true,
        ),
        // Another image.
        (
            statement(
                "RUSTSEC-2020-0071",
                "pkg:oci/other",
                &[],
                Status::NotAffected,
            ),
            false,
        ),
        // Another vulnerability.
        (
            statement("CVE-2099-0001", IMAGE, &[], Status::NotAffected),
            false,
        ),
    ];
    for (s, applies) in cases {
        let name = format!("{} {}", s.vulnerability.name, s.products[0].id);
        let applied = statements(vec![("v.json", doc(s.clone()))]).apply(&f, IMAGE);
        assert_eq!(applied.is_some(), applies, "{name}");
        if let Some(a) = applied {
            assert_eq!(a.status, s.status);
            assert!(a.status.suppresses());
            assert_eq!(a.document, "v.json");
        }
    }
}

#[test]
fn the_latest_statement_wins_and_only_some_suppress() {
    let f = finding("RUSTSEC-2020-0071", "pkg:cargo/time@0.1.43");
    let early = Document::new(
        "a",
        "2024-01-01T00:00:00Z",
        vec![statement(
            "RUSTSEC-2020-0071",
            IMAGE,
            &[],
            Status::UnderInvestigation,
        )],
    );
    let mut late = Document::new(
        "a",
        "2024-02-01T00:00:00Z",
        vec![statement(
            "RUSTSEC-2020-0071",
            IMAGE,
            &[],
            Status::NotAffected,
        )],
    );
    let s = statements(vec![
        ("late.json", late.clone()),
        ("early.json", early.clone()),
    ]);
    let a = s.apply(&f, IMAGE).expect("applies");
    assert_eq!(
        (a.status, a.document.as_str()),
        (Status::NotAffected, "late.json")
    );
    assert_eq!(
        a.summary(),
        "not_affected (vulnerable_code_not_in_execute_path)"
    );

    // A later `affected` statement in the same document overrides; it does not suppress.
    let mut affected = statement("RUSTSEC-2020-0071", IMAGE, &[], Status::Affected);
    affected.timestamp = Some("2024-03-01T00:00:00Z".into());
    late.push(affected, "2024-03-01T00:00:00Z");
    assert_eq!(late.version, 2);
    let s = statements(vec![("late.json", late), ("early.json", early)]);
    let a = s.apply(&f, IMAGE).expect("applies");
    assert_eq!(a.status, Status::Affected);
    assert!(!a.status.suppresses());
    assert!(!Status::UnderInvestigation.suppresses());
    assert_eq!(a.summary(), "affected (upgrade)");
}

#[test]
fn documents_are_stable_and_round_trip() {
    let s = statement(
        "CVE-2023-4911",
        IMAGE,
        &["pkg:deb/debian/libc6"],
        Status::NotAffected,
    );
    let a = Document::new("Platform team", "2024-01-01T00:00:00Z", vec![s.clone()]);
    let b = Document::new("Platform team", "2024-01-01T00:00:00Z", vec![s]);
    assert_eq!(a.to_vec(), b.to_vec(), "same content, same bytes");
    assert!(a.id.starts_with("urn:uuid:"));
    let v: serde_json::Value = serde_json::from_slice(&a.to_vec()).expect("json");
    assert_eq!(v["@context"], CONTEXT);
    assert_eq!(v["statements"][0]["vulnerability"]["name"], "CVE-2023-4911");
    assert_eq!(
        v["statements"][0]["justification"],
        "vulnerable_code_not_in_execute_path"
    );
    assert_eq!(
        v["statements"][0]["products"][0]["subcomponents"][0]["@id"],
        "pkg:deb/debian/libc6"
    );
    assert_eq!(Document::parse(&a.to_vec()).expect("parse"), a);
}
