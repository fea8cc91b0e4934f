use std::path::{Path, PathBuf};

use super::crates::{fixed_version, RustSec};
use super::debian::Tracker;
use super::inventory::{split_purl, Crate, Deb};
use super::osv::{Event, Range, Records};
use super::report::{Format, Report, Scanned};
use super::*;

fn affected(name: &str, package: &str, purl: &str) -> Affected {
    Affected {
        bom_ref: format!("ref:{name}"),
        purl: purl.into(),
        name: name.into(),
        package: package.into(),
    }
}

fn krate(name: &str, version: &str) -> Crate {
    Crate {
        component: affected(name, name, &format!("pkg:cargo/{name}@{version}")),
        version: version.into(),
    }
}

fn deb(name: &str, source: &str, source_version: &str) -> Deb {
    Deb {
        component: affected(
            name,
            source,
            &format!("pkg:deb/debian/{name}@{source_version}?arch=amd64&distro=debian-12"),
        ),
        version: source_version.into(),
        source_version: source_version.into(),
    }
}

/// The RustSec snapshot beside the workspace, or `None` (with a message) when absent.
fn rustsec_snapshot() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/rustsec-advisory-db");
    if p.join("crates").is_dir() {
        Some(p)
    } else {
        eprintln!(
            "skipped: no RustSec snapshot at {} (../shared/data is not checked out)",
            p.display()
        );
        None
    }
}

fn write(dir: &Path, path: &str, text: &str) {
    let p = dir.join(path);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, text).expect("write");
}

fn ids(f: &[Finding]) -> Vec<(&str, &str)> {
    f.iter()
        .map(|f| (f.id.as_str(), f.component.name.as_str()))
        .collect()
}

#[test]
fn real_rustsec_snapshot() {
    let Some(dir) = rustsec_snapshot() else {
        return;
    };
    let db = RustSec::open(&dir).expect("open");
    assert!(db.len() > 500, "{} advisories", db.len());

    let found = db.scan(&[krate("time", "0.1.43"), krate("time", "0.2.23")]);
    let f: Vec<&Finding> = found
        .iter()
        .filter(|f| f.id == "RUSTSEC-2020-0071")
        .collect();
    assert_eq!(f.len(), 1, "only the vulnerable version: {:?}", ids(&found));
    assert_eq!(f[0].installed, "0.1.43");
    assert_eq!(f[0].fixed.as_deref(), Some("0.2.23"));
    assert!(f[0].aliases.contains(&"CVE-2020-26235".to_string()));
    assert_eq!(f[0].severity, Severity::Medium);
    assert!(f[0]
        .cvss
        .as_ref()
        .is_some_and(|c| c.vector.starts_with("CVSS:3.1/")));

    // RUSTSEC-2023-0002 covers git2 0.15.0 but is withdrawn: not reported.
    let withdrawn = rustsec::Advisory::load_file(dir.join("crates/git2/RUSTSEC-2023-0002.md"))
        .expect("advisory");
    assert!(withdrawn.withdrawn());
    assert!(withdrawn
        .versions
        .is_vulnerable(&"0.15.0".parse().expect("version")));
    let git2 = db.scan(&[krate("git2", "0.15.0")]);
    assert!(
        !git2.iter().any(|f| f.id == "RUSTSEC-2023-0002"),
        "{:?}",
        ids(&git2)
    );
}

const ADVISORY: &str = r#"```toml
[advisory]
id = "RUSTSEC-2099-0001"
package = "demo"
date = "2099-01-01"
cvss = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"
aliases = ["CVE-2099-1111"]

[versions]
patched = [">= 2.0.0", "^1.2.9"]
unaffected = ["< 1.0.0"]
```

# Demo is broken
"#;

const WITHDRAWN: &str = r#"```toml
[advisory]
id = "RUSTSEC-2099-0002"
package = "demo"
date = "2099-01-02"
withdrawn = "2099-02-01"

[versions]
patched = []
```

# Not actually a bug
"#;

const UNMAINTAINED: &str = r#"```toml
[advisory]
id = "RUSTSEC-2099-0003"
package = "demo"
date = "2099-01-03"
informational = "unmaintained"

[versions]
patched = []
```

# demo is unmaintained
"#;

const WINDOWS_ONLY: &str = r#"```toml
[advisory]
id = "RUSTSEC-2099-0004"
package = "demo"
date = "2099-01-04"

[affected]
os = ["windows"]

[versions]
patched = [">= 9.0.0"]
```

# Windows paths
"#;

#[test]
fn rustsec_ranges_withdrawn_informational_and_platforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "crates/demo/RUSTSEC-2099-0001.md", ADVISORY);
    write(dir.path(), "crates/demo/RUSTSEC-2099-0002.md", WITHDRAWN);
    write(dir.path(), "crates/demo/RUSTSEC-2099-0003.md", UNMAINTAINED);
    write(dir.path(), "crates/demo/RUSTSEC-2099-0004.md", WINDOWS_ONLY);
    let db = RustSec::open(dir.path()).expect("open");
    let cases = [
        ("0.9.0", None),          // unaffected
        ("1.0.0", Some("1.2.9")), // vulnerable, lowest patched above
        ("1.2.8", Some("1.2.9")),
        ("1.2.9", None), // ^1.2.9
        ("1.3.0", None), // still ^1.2.9
        ("1.4.1", None), // ^1.2.9 covers 1.x
        ("2.0.0", None), // >= 2.0.0
    ];
    for (version, fixed) in cases {
        let found = db.scan(&[krate("demo", version)]);
        assert!(
            found.iter().all(|f| f.id == "RUSTSEC-2099-0001"),
            "withdrawn, informational and Windows-only advisories never apply: {:?}",
            ids(&found)
        );
        assert_eq!(
            found.first().and_then(|f| f.fixed.as_deref()),
            fixed,
            "demo {version}"
        );
        if let Some(f) = found.first() {
            assert_eq!(f.severity, Severity::Critical);
            assert_eq!(f.aliases, ["CVE-2099-1111"]);
        }
    }
    assert!(db.scan(&[krate("other", "1.0.0")]).is_empty());
    assert!(db.scan(&[krate("demo", "not-semver")]).is_empty());
}

#[test]
fn fixed_version_is_the_lowest_patched_bound_above() {
    let reqs = |r: &[&str]| -> Vec<rustsec::VersionReq> {
        r.iter().map(|s| s.parse().expect("req")).collect()
    };
    let v = |s: &str| -> rustsec::Version { s.parse().expect("version") };
    assert_eq!(
        fixed_version(&reqs(&[">= 0.2.23"]), &v("0.1.43")).as_deref(),
        Some("0.2.23")
    );
    assert_eq!(
        fixed_version(&reqs(&[">= 2.0.0", ">= 1.5.3, < 2.0.0"]), &v("1.5.0")).as_deref(),
        Some("1.5.3")
    );
    assert_eq!(
        fixed_version(&reqs(&["> 1.2"]), &v("1.0.0")).as_deref(),
        Some(">1.2")
    );
    assert_eq!(fixed_version(&[], &v("1.0.0")), None);
}

const TRACKER: &str = r#"{
  "glibc": {
    "CVE-2023-4911": {
      "description": "Looney Tunables",
      "scope": "local",
      "releases": {
        "bookworm": {"status": "resolved", "repositories": {"bookworm": "2.36-9+deb12u13"},
                     "fixed_version": "2.36-9+deb12u3", "urgency": "high"},
        "trixie": {"status": "resolved", "fixed_version": "2.37-12", "urgency": "not yet assigned"}
      }
    },
    "CVE-2010-4756": {
      "description": "glob wildcards",
      "releases": {
        "bookworm": {"status": "open", "repositories": {"bookworm": "2.36-9+deb12u13"},
                     "urgency": "unimportant"}
      }
    },
    "CVE-2020-1751": {
      "releases": {
        "bookworm": {"status": "resolved", "fixed_version": "0", "urgency": "low"}
      }
    },
    "CVE-2024-0001": {
      "releases": {
        "trixie": {"status": "open", "urgency": "high"}
      }
    },
    "CVE-2024-0002": {
      "releases": {
        "bookworm": {"status": "undetermined", "urgency": "medium**"}
      }
    }
  },
  "curl": {
    "CVE-2023-38545": {
      "releases": {
        "bookworm": {"status": "resolved", "fixed_version": "7.88.1-10+deb12u4", "urgency": "high"}
      }
    }
  }
}"#;

#[test]
fn debian_tracker_by_source_package_and_release() {
    let t = Tracker::parse(TRACKER.as_bytes()).expect("tracker");
    assert_eq!(t.len(), 2);
    let old = [
        deb("libc6", "glibc", "2.36-9+deb12u1"),
        deb("curl", "curl", "7.88.1-10+deb12u4"),
    ];
    let found = t.scan(&old, "bookworm");
    assert_eq!(
        ids(&found),
        [
            ("CVE-2010-4756", "libc6"),
            ("CVE-2023-4911", "libc6"),
            ("CVE-2024-0002", "libc6"),
        ],
        "the fixed curl, the never-affected CVE-2020-1751 and the trixie-only CVE are not reported"
    );
    let looney = &found[1];
    assert_eq!(looney.fixed.as_deref(), Some("2.36-9+deb12u3"));
    assert_eq!(looney.severity, Severity::High);
    assert_eq!(looney.installed, "2.36-9+deb12u1");
    assert_eq!(looney.component.package, "glibc");
    assert_eq!(found[0].severity, Severity::Negligible);
    assert_eq!(found[0].fixed, None);
    assert_eq!(found[2].severity, Severity::Medium, "medium** is medium");

    // Past the fix: only the open CVEs remain. In trixie, another set.
    let new = t.scan(&[deb("libc6", "glibc", "2.36-9+deb12u13")], "bookworm");
    assert_eq!(
        ids(&new),
        [("CVE-2010-4756", "libc6"), ("CVE-2024-0002", "libc6")]
    );
    let trixie = t.scan(&[deb("libc6", "glibc", "2.36-9+deb12u13")], "trixie");
    assert_eq!(
        ids(&trixie),
        [("CVE-2023-4911", "libc6"), ("CVE-2024-0001", "libc6")]
    );
    assert_eq!(trixie[0].severity, Severity::Unknown);
    // An epoch on the installed version puts it past any epoch-less fix.
    assert!(t
        .scan(&[deb("curl", "curl", "1:7.0-1")], "bookworm")
        .is_empty());
}

fn range(events: &[(&str, &str)]) -> Range {
    Range {
        kind: "ECOSYSTEM".into(),
        events: events
            .iter()
            .map(|(k, v)| {
                let v = Some(v.to_string());
                match *k {
                    "introduced" => Event {
                        introduced: v,
                        ..Default::default()
                    },
                    "fixed" => Event {
                        fixed: v,
                        ..Default::default()
                    },
                    "last_affected" => Event {
                        last_affected: v,
                        ..Default::default()
                    },
                    _ => Event {
                        limit: v,
                        ..Default::default()
                    },
                }
            })
            .collect(),
    }
}

#[test]
fn osv_range_evaluation_in_dpkg_order() {
    let r = range(&[("introduced", "0"), ("fixed", "2.36-9+deb12u3")]);
    for (v, want) in [
        ("2.36-9", true),
        ("2.36-9+deb12u2", true),
        ("2.36-9+deb12u3", false),
        ("2.36-9+deb12u10", false),
        ("2.36-9+deb12u3~1", true),
        ("1:2.0-1", false),
    ] {
        assert_eq!(r.affects(v), want, "{v}");
    }
    // Two introduced/fixed pairs, events listed out of order.
    let r = range(&[
        ("fixed", "1.5-1"),
        ("introduced", "2.0-1"),
        ("introduced", "1.0-1"),
        ("fixed", "2.2-1"),
    ]);
    for (v, want) in [
        ("0.9-1", false),
        ("1.0-1", true),
        ("1.5-1", false),
        ("1.9-1", false),
        ("2.1-3", true),
        ("2.2-1", false),
    ] {
        assert_eq!(r.affects(v), want, "{v}");
    }
    let r = range(&[("introduced", "1.0"), ("last_affected", "1.4-2")]);
    assert!(r.affects("1.4-2"));
    assert!(!r.affects("1.4-3"));
    assert!(!r.affects("0.9"));
}

const DSA: &str = r#"{
  "schema_version": "1.6.0",
  "id": "DSA-5514-1",
  "summary": "glibc - security update",
  "upstream": ["CVE-2023-4911"],
  "affected": [{
    "package": {"ecosystem": "Debian:12", "name": "glibc", "purl": "pkg:deb/debian/glibc?arch=source"},
    "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.36-9+deb12u3"}]}]
  }]
}"#;

const DEBIAN_CVE: &str = r#"{
  "id": "DEBIAN-CVE-2024-5535",
  "aliases": ["CVE-2024-5535"],
  "summary": "SSL_select_next_proto buffer overread",
  "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N"}],
  "affected": [
    {"package": {"ecosystem": "Debian:12", "name": "openssl"},
     "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "3.0.14-1~deb12u1"}]}]},
    {"package": {"ecosystem": "Debian:11", "name": "openssl"},
     "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1.1.1w-0+deb11u2"}]}]}
  ]
}"#;

const DLA_OLD_RELEASE: &str = r#"{
  "id": "DLA-3500-1",
  "affected": [{"package": {"ecosystem": "Debian:11", "name": "curl"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "9.9"}]}]}]
}"#;

const WITHDRAWN_OSV: &str = r#"{
  "id": "DEBIAN-CVE-2020-0001",
  "withdrawn": "2021-01-01T00:00:00Z",
  "affected": [{"package": {"ecosystem": "Debian", "name": "curl"}, "versions": ["7.88.1-10+deb12u4"]}]
}"#;

const VERSIONS_ONLY: &str = r#"{
  "id": "DEBIAN-CVE-2023-0002",
  "affected": [{"package": {"ecosystem": "Debian", "name": "curl"}, "versions": ["7.88.1-10+deb12u4"],
                "ecosystem_specific": {"urgency": "low"}}]
}"#;

fn osv_db() -> (tempfile::TempDir, Records) {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "osv/DSA-5514-1.json", DSA);
    write(dir.path(), "osv/cve/DEBIAN-CVE-2024-5535.json", DEBIAN_CVE);
    write(dir.path(), "osv/DLA-3500-1.json", DLA_OLD_RELEASE);
    write(dir.path(), "osv/DEBIAN-CVE-2020-0001.json", WITHDRAWN_OSV);
    write(dir.path(), "osv/DEBIAN-CVE-2023-0002.json", VERSIONS_ONLY);
    let mut r = Records::default();
    assert_eq!(r.load_dir(&dir.path().join("osv")).expect("load"), 5);
    (dir, r)
}

#[test]
fn osv_records_by_release_range_and_versions() {
    let (_dir, r) = osv_db();
    let debs = [
        deb("libc6", "glibc", "2.36-9+deb12u1"),
        deb("libssl3", "openssl", "3.0.11-1~deb12u2"),
        deb("curl", "curl", "7.88.1-10+deb12u4"),
    ];
    let found = r.scan(&debs, "12");
    assert_eq!(
        ids(&found),
        [
            ("DSA-5514-1", "libc6"),
            ("DEBIAN-CVE-2024-5535", "libssl3"),
            ("DEBIAN-CVE-2023-0002", "curl"),
        ],
        "the Debian 11 DLA and the withdrawn record do not apply"
    );
    assert_eq!(found[0].aliases, ["CVE-2023-4911"]);
    assert_eq!(found[1].fixed.as_deref(), Some("3.0.14-1~deb12u1"));
    assert_eq!(found[1].severity, Severity::High);
    assert_eq!(found[2].severity, Severity::Low);
    assert_eq!(found[2].fixed, None);
    // In Debian 11, the other openssl range applies and the DSA does not.
    let eleven = r.scan(&[deb("libssl3", "openssl", "1.1.1n-0+deb11u5")], "11");
    assert_eq!(ids(&eleven), [("DEBIAN-CVE-2024-5535", "libssl3")]);
    assert_eq!(eleven[0].fixed.as_deref(), Some("1.1.1w-0+deb11u2"));
}

fn inventory(crates: Vec<Crate>, debs: Vec<Deb>) -> Inventory {
    Inventory {
        image: ("dhi.io/istio-pilot".into(), "0.1.0".into()),
        crates,
        debs,
        codename: "bookworm".into(),
        version_id: "12".into(),
        other: 1,
    }
}

#[test]
fn database_merges_sources_and_sorts_worst_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "crates/demo/RUSTSEC-2099-0001.md", ADVISORY);
    write(dir.path(), "debian/tracker.json", TRACKER);
    write(dir.path(), "osv/DSA-5514-1.json", DSA);
    let db = Database::open(&[dir.path().to_path_buf()]).expect("open");
    assert_eq!(db.loaded.len(), 3, "{:?}", db.loaded);
    let inv = inventory(
        vec![krate("demo", "1.0.0")],
        vec![deb("libc6", "glibc", "2.36-9+deb12u1")],
    );
    let found = db.scan(&inv);
    assert_eq!(
        ids(&found),
        [
            ("RUSTSEC-2099-0001", "demo"),
            ("CVE-2023-4911", "libc6"),
            ("CVE-2024-0002", "libc6"),
            ("CVE-2010-4756", "libc6"),
        ]
    );
    // The DSA names CVE-2023-4911, which the tracker reported: it becomes an alias.
    assert_eq!(found[1].aliases, ["DSA-5514-1"]);

    let empty = tempfile::tempdir().expect("tempdir");
    let err = Database::open(&[empty.path().to_path_buf()])
        .err()
        .expect("error");
    assert!(err.to_string().contains("holds no advisory data"), "{err}");
}

#[test]
fn inventory_from_a_built_sbom() {
    let input = sbom::SbomInput {
        image: sbom::ImageInfo {
            name: "dhi.io/istio-pilot".into(),
            version: "0.1.0".into(),
            variant: "runtime".into(),
            created: "2024-01-02T03:04:05Z".into(),
            tool: ("imagebuilder".into(), "0.1.0".into()),
            distro: sbom::Distro {
                id: "debian".into(),
                version_id: "12".into(),
                codename: "bookworm".into(),
            },
        },
        binary: sbom::BinaryFile {
            name: "pilot-discovery".into(),
            version: "0.1.0".into(),
            path: "/usr/local/bin/pilot-discovery".into(),
            sha256: "ab".repeat(32),
            depends: vec!["time@0.1.43".into()],
        },
        debs: vec![sbom::DebPackage {
            name: "libgcc-s1".into(),
            version: "1:12.2.0-14+b1".into(),
            arch: "amd64".into(),
            sha256: "cd".repeat(32),
            licenses: vec![],
            depends: vec![],
            source: "gcc-12".into(),
            source_version: "12.2.0-14".into(),
        }],
        crates: vec![sbom::RustCrate {
            name: "time".into(),
            version: "0.1.43".into(),
            license: None,
            checksum: None,
            registry: true,
            depends: vec![],
        }],
    };
    let inv = Inventory::parse(&sbom::render(&input).expect("render")).expect("inventory");
    assert_eq!(inv.image, ("dhi.io/istio-pilot".into(), "0.1.0".into()));
    assert_eq!(
        (inv.codename.as_str(), inv.version_id.as_str()),
        ("bookworm", "12")
    );
    assert_eq!(inv.other, 1, "the binary");
    assert_eq!(
        inv.crates,
        [Crate {
            component: Affected {
                bom_ref: "crate:time@0.1.43".into(),
                purl: "pkg:cargo/time@0.1.43".into(),
                name: "time".into(),
                package: "time".into(),
            },
            version: "0.1.43".into(),
        }]
    );
    let d = &inv.debs[0];
    assert_eq!(d.component.package, "gcc-12");
    assert_eq!(d.version, "1:12.2.0-14+b1");
    assert_eq!(d.source_version, "12.2.0-14");

    assert!(Inventory::parse(b"{\"bomFormat\": \"SPDX\"}").is_err());
    assert!(Inventory::parse(b"not json").is_err());
}

#[test]
fn inventory_falls_back_to_the_purl_upstream_qualifier() {
    let text = br#"{"bomFormat": "CycloneDX", "specVersion": "1.5", "components": [
        {"type": "library", "name": "libssl3", "version": "3.0.11-1~deb12u2",
         "purl": "pkg:deb/debian/libssl3@3.0.11-1~deb12u2?arch=amd64&upstream=openssl&distro=debian-12.4"},
        {"type": "library", "name": "bash", "purl": "pkg:deb/debian/bash@5.2.15-2%2Bb2?arch=amd64"}
    ]}"#;
    let inv = Inventory::parse(text).expect("inventory");
    assert_eq!(inv.version_id, "12");
    assert_eq!(inv.debs[0].component.package, "openssl");
    assert_eq!(inv.debs[0].source_version, "3.0.11-1~deb12u2");
    assert_eq!(inv.debs[1].component.package, "bash");
    assert_eq!(
        inv.debs[1].version, "5.2.15-2+b2",
        "percent-decoded from the purl"
    );
}

#[test]
fn purl_parts() {
    let (name, version, q) =
        split_purl("pkg:deb/debian/libc6@2.36-9%2Bdeb12u3?arch=amd64&distro=debian-12#sub");
    assert_eq!(name, "pkg:deb/debian/libc6");
    assert_eq!(version, "2.36-9+deb12u3");
    assert_eq!(
        q,
        [
            ("arch", "amd64".to_string()),
            ("distro", "debian-12".to_string())
        ]
    );
    assert_eq!(split_purl("pkg:cargo/serde").1, "");
}

#[test]
fn severities() {
    assert_eq!(Severity::from_urgency("unimportant"), Severity::Negligible);
    assert_eq!(Severity::from_urgency("low*"), Severity::Low);
    assert_eq!(
        Severity::from_urgency("not yet assigned"),
        Severity::Unknown
    );
    assert_eq!(Severity::from_urgency("end-of-life"), Severity::Unknown);
    let c: cvss::Cvss = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"
        .parse()
        .expect("cvss");
    assert_eq!(Severity::from_cvss(&c), Severity::Critical);
    assert!(Severity::Negligible < Severity::Unknown && Severity::Unknown < Severity::Low);
    assert!(Severity::High < Severity::Critical);
}

fn finding(id: &str, severity: Severity) -> Finding {
    Finding {
        id: id.into(),
        aliases: vec!["CVE-2099-1111".into()],
        source: Source::RustSec,
        component: krate("demo", "1.0.0").component,
        installed: "1.0.0".into(),
        fixed: Some("1.2.9".into()),
        severity,
        cvss: None,
        title: Some("Demo is broken".into()),
        url: Source::RustSec.url(id),
    }
}

fn report() -> Report {
    let suppressed = crate::vex::Applied {
        status: crate::vex::Status::NotAffected,
        justification: Some(crate::vex::Justification::VulnerableCodeNotInExecutePath),
        impact_statement: None,
        action_statement: None,
        document: "pilot.openvex.json".into(),
    };
    Report {
        sbom: "out/sbom/runtime.cdx.json".into(),
        image: image_purl("dhi.io/istio-pilot", "0.1.0", Some("sha256:abcd")),
        codename: "bookworm".into(),
        components: report::Counts {
            crates: 1,
            debs: 0,
            other: 1,
        },
        databases: vec![],
        results: vec![
            Scanned {
                finding: finding("RUSTSEC-2099-0001", Severity::High),
                vex: None,
            },
            Scanned {
                finding: finding("RUSTSEC-2099-0009", Severity::Critical),
                vex: Some(suppressed),
            },
        ],
    }
}

#[test]
fn image_purls() {
    assert_eq!(
        image_purl("dhi.io/istio-pilot", "0.1.0", Some("sha256:abcd")),
        "pkg:oci/istio-pilot@sha256%3Aabcd?repository_url=dhi.io/istio-pilot&tag=0.1.0"
    );
    assert_eq!(
        image_purl("istio-pilot", "0.1.0", None),
        "pkg:oci/istio-pilot?repository_url=istio-pilot&tag=0.1.0"
    );
}

#[test]
fn fail_on_ignores_suppressed_findings() {
    let r = report();
    assert!(r.fails(Severity::High));
    assert!(
        !r.fails(Severity::Critical),
        "the critical one is not_affected"
    );
    assert_eq!(r.findings().count(), 1);
    assert_eq!(r.suppressed().count(), 1);
}

#[test]
fn table_lists_findings_and_says_what_vex_suppressed() {
    let t = report().table();
    let lines: Vec<&str> = t.lines().collect();
    assert!(lines[2].starts_with("SEVERITY  ID "), "{t}");
    assert!(
        lines[3].starts_with("high      RUSTSEC-2099-0001  demo"),
        "{t}"
    );
    assert!(t.contains("\n1 finding (1 high)\n"), "{t}");
    assert!(
        t.contains("1 suppressed by VEX:\n  RUSTSEC-2099-0009 pkg:cargo/demo@1.0.0: not_affected (vulnerable_code_not_in_execute_path) (pilot.openvex.json)\n"),
        "{t}"
    );
}

#[test]
fn json_and_sarif_outputs() {
    let r = report();
    let j: serde_json::Value =
        serde_json::from_slice(&r.render(Format::Json, b"").expect("json")).expect("parse");
    assert_eq!(j["results"][0]["id"], "RUSTSEC-2099-0001");
    assert_eq!(j["results"][0]["component"]["purl"], "pkg:cargo/demo@1.0.0");
    assert_eq!(j["results"][1]["vex"]["status"], "not_affected");

    let s: serde_json::Value =
        serde_json::from_slice(&r.render(Format::Sarif, b"").expect("sarif")).expect("parse");
    assert_eq!(s["version"], "2.1.0");
    let run = &s["runs"][0];
    assert_eq!(
        run["tool"]["driver"]["rules"].as_array().map(Vec::len),
        Some(2)
    );
    assert_eq!(run["results"][0]["level"], "error");
    assert_eq!(run["results"][0]["ruleIndex"], 0);
    assert_eq!(
        run["results"][0]["locations"][0]["logicalLocations"][0]["fullyQualifiedName"],
        "pkg:cargo/demo@1.0.0"
    );
    assert!(run["results"][0].get("suppressions").is_none());
    assert_eq!(run["results"][1]["suppressions"][0]["kind"], "external");
    assert_eq!(
        run["tool"]["driver"]["rules"][1]["properties"]["security-severity"],
        "9.5"
    );
}

#[test]
fn cyclonedx_output_marks_vex_analysis() {
    let sbom = br#"{"bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1,
        "components": [{"type": "library", "bom-ref": "ref:demo", "name": "demo", "version": "1.0.0",
                        "purl": "pkg:cargo/demo@1.0.0"}]}"#;
    let out = report().render(Format::Cyclonedx, sbom).expect("cyclonedx");
    let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
    let vulns = v["vulnerabilities"].as_array().expect("vulnerabilities");
    assert_eq!(vulns.len(), 2);
    assert_eq!(vulns[0]["affects"][0]["ref"], "ref:demo");
    assert_eq!(vulns[1]["analysis"]["state"], "not_affected");
    assert_eq!(vulns[1]["analysis"]["justification"], "code_not_reachable");
}
