use super::*;
use crate::debian::lock::{Locked, VariantLock, LOCK_VERSION};
use crate::debian::sha256::Sha256;

fn locked(name: &str, version: &str) -> Locked {
    Locked {
        name: name.into(),
        version: version.into(),
        arch: "amd64".into(),
        sha256: Sha256::of(name.as_bytes()),
        size: 1,
        mirror: "http://deb.debian.org/debian/".into(),
        filename: format!("pool/main/x/{name}/{name}_{version}_amd64.deb"),
        depends: vec![],
    }
}

fn lock() -> LockFile {
    let variant = |pkgs: Vec<Locked>| VariantLock {
        roots: vec![],
        exclude: vec![],
        packages: pkgs,
    };
    LockFile {
        lock_version: LOCK_VERSION,
        distro: "debian-12".into(),
        arch: "amd64".into(),
        variants: [
            (
                "runtime".to_string(),
                variant(vec![locked("libc6", "2.36-9+deb12u10")]),
            ),
            (
                "dev".to_string(),
                variant(vec![
                    locked("libc6", "2.36-9+deb12u10"),
                    locked("bash", "5.2.15-2+b7"),
                ]),
            ),
        ]
        .into(),
    }
}

fn render_with(lock: &LockFile, revision: &str) -> Vec<u8> {
    let crates = [
        CrateDependency {
            name: "serde".into(),
            version: "1.0.0".into(),
            checksum: Some("ef".repeat(32)),
        },
        CrateDependency {
            name: "xds-protos".into(),
            version: "0.1.0".into(),
            checksum: None,
        },
    ];
    render(&Inputs {
        subjects: vec![
            Subject {
                name: "dhi.io/istio-pilot:0.1.0".into(),
                manifest: format!("sha256:{}", "11".repeat(32)),
            },
            Subject {
                name: "dhi.io/istio-pilot:0.1.0-dev".into(),
                manifest: format!("sha256:{}", "22".repeat(32)),
            },
        ],
        source_url: "https://github.com/hardened-mesh/istio-pilot",
        revision,
        lock_path: "imagebuilder/packages.lock.json",
        lock_sha256: &"33".repeat(32),
        lock,
        repository: "dhi.io/istio-pilot",
        version: "0.1.0",
        user: "1337:1337",
        cargo_package: "pilot",
        max_compressed_bytes: 40 << 20,
        source_date_epoch: 1_700_000_000,
        binary_path: "/usr/local/bin/pilot-discovery",
        binary_sha256: &"44".repeat(32),
        crates: &crates,
        rustc: Some("rustc version 1.95.0 (59807616e 2026-04-14)".into()),
        tool_version: "0.1.0",
    })
}

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// Descriptors without a name (the source) or with `name`.
fn deps_named<'a>(def: &'a Value, name: &str) -> Vec<&'a Value> {
    def["resolvedDependencies"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|d| d["name"].as_str().unwrap_or_default() == name)
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_revision_that_is_not_a_commit_is_no_digest() {
    let v: Value = serde_json::from_slice(&render_with(&lock(), "unknown")).expect("json");
    let source = &v["predicate"]["buildDefinition"]["externalParameters"]["source"];
    assert!(source.get("digest").is_none());
    assert_eq!(source["annotations"]["revision"], "unknown");
}

#[test]
fn same_inputs_same_bytes_other_inputs_other_bytes() {
    let a = render_with(&lock(), COMMIT);
    assert_eq!(a, render_with(&lock(), COMMIT));
    assert_ne!(a, render_with(&lock(), &"1".repeat(40)));
    assert!(a.ends_with(b"}\n"));
}

#[test]
fn statement_shape() {
    let v: Value = serde_json::from_slice(&render_with(&lock(), COMMIT)).expect("json");
    assert_eq!(v["_type"], STATEMENT_TYPE);
    assert_eq!(v["predicateType"], PREDICATE_TYPE);
    assert_eq!(v["subject"][0]["digest"]["sha256"], "11".repeat(32));
    assert_eq!(v["subject"][1]["name"], "dhi.io/istio-pilot:0.1.0-dev");
    let def = &v["predicate"]["buildDefinition"];
    assert_eq!(def["buildType"], BUILD_TYPE);
    assert_eq!(
        def["externalParameters"]["source"]["digest"]["gitCommit"],
        COMMIT
    );
    assert_eq!(deps_named(def, "")[0]["digest"]["gitCommit"], COMMIT);
    assert_eq!(
        def["externalParameters"]["packagesLock"]["digest"]["sha256"],
        "33".repeat(32)
    );
    let meta = &v["predicate"]["runDetails"]["metadata"];
    assert_eq!(meta["startedOn"], "2023-11-14T22:13:20Z");
    assert_eq!(meta["finishedOn"], "2023-11-14T22:13:20Z");

    let deps = def["resolvedDependencies"].as_array().expect("deps");
    let by_name = |n: &str| deps.iter().filter(|d| d["name"] == n).collect::<Vec<_>>();
    let libc = by_name("libc6");
    assert_eq!(libc.len(), 1, "a package of both variants is listed once");
    assert_eq!(
        libc[0]["uri"],
        "http://deb.debian.org/debian/pool/main/x/libc6/libc6_2.36-9+deb12u10_amd64.deb"
    );
    assert_eq!(
        libc[0]["digest"]["sha256"],
        Sha256::of(b"libc6").to_string()
    );
    assert_eq!(
        libc[0]["annotations"]["variants"],
        json!(["dev", "runtime"])
    );
    assert_eq!(
        by_name("bash")[0]["annotations"]["variants"],
        json!(["dev"])
    );
    assert_eq!(by_name("serde")[0]["digest"]["sha256"], "ef".repeat(32));
    assert!(by_name("xds-protos")[0].get("digest").is_none());
    assert_eq!(by_name("rustc")[0]["uri"], "pkg:generic/rustc@1.95.0");
    assert_eq!(
        by_name("pilot-discovery")[0]["digest"]["sha256"],
        "44".repeat(32)
    );
    // Every descriptor has a uri or a digest, as the in-toto ResourceDescriptor requires.
    assert!(deps
        .iter()
        .all(|d| d.get("uri").is_some() || d.get("digest").is_some()));
}

#[test]
fn reads_the_compiler_from_a_binary() {
    let exe = std::fs::read(std::env::current_exe().expect("exe")).expect("read");
    let rustc = rustc_of(&exe).expect("test binaries carry .comment");
    assert!(rustc.starts_with("rustc version 1."), "{rustc}");
    assert_eq!(rustc_of(b"not an ELF file"), None);
}
