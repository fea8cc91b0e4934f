use super::*;

const BOOKWORM_SECURITY: &str = "\
Origin: Debian
Label: Debian-Security
Suite: oldstable-security
Version: 12
Codename: bookworm-security
Date: Sun, 29 Nov 2026 00:53:13 UTC
Valid-Until: Sun, 06 Dec 2026 00:53:13 UTC
Acquire-By-Hash: yes
Architectures: amd64 arm64
Components: updates/main
Description: Debian 12 - Security Updates
MD5Sum:
 0123 10 main/binary-amd64/Packages.xz
SHA256:
 a3f1a4d4ee4e1e5e0c3ab0c7f1e1b6e6e0f2b61d0b2a0c5b8e0e9f7d7d6c5b4a 1234 main/binary-amd64/Packages.xz
 not-a-hash 20 main/binary-amd64/Packages
 ../../etc 30 main/binary-amd64/Release
";

fn at(s: &str) -> SystemTime {
    parse_date(s).expect("date")
}

#[test]
fn parses_the_fields_a_build_relies_on() {
    let r = Release::parse(BOOKWORM_SECURITY, "u").expect("parse");
    assert_eq!(r.suite.as_deref(), Some("oldstable-security"));
    assert_eq!(r.codename.as_deref(), Some("bookworm-security"));
    assert_eq!(
        r.valid_until.as_ref().map(|v| v.text.as_str()),
        Some("Sun, 06 Dec 2026 00:53:13 UTC")
    );
    // Only well-formed digests are kept.
    assert_eq!(r.files.len(), 1);
    let (hash, size) = &r.files["main/binary-amd64/Packages.xz"];
    assert_eq!(*size, 1234);
    assert!(hash.as_str().starts_with("a3f1a4"));
}

#[test]
fn dates_as_debian_writes_them() {
    // 2026-12-06T00:53:13Z
    assert_eq!(
        parse_date("Sun, 06 Dec 2026 00:53:13 UTC"),
        Some(UNIX_EPOCH + Duration::from_secs(1_796_518_393))
    );
    assert_eq!(
        parse_date("Thu, 01 Jan 1970 00:00:00 GMT"),
        Some(UNIX_EPOCH)
    );
    // Leap day, an offset and no weekday.
    assert_eq!(
        parse_date("29 Feb 2024 01:30:00 +0130"),
        parse_date("Thu, 29 Feb 2024 00:00:00 UTC")
    );
    assert_eq!(
        parse_date("Sat, 1 Mar 2025 00:00:00 Z"),
        Some(UNIX_EPOCH + Duration::from_secs(1_740_787_200))
    );
    for bad in [
        "",
        "yesterday",
        "Sun, 06 Foo 2026 00:53:13 UTC",
        "Sun, 06 Dec 2026 24:00:00 UTC",
        "Sun, 06 Dec 2026 0:53:13 UTC",
        "Sun, 06 Dec 2026 00:53:13 CEST",
        "Sun, 06 Dec 1969 00:53:13 UTC",
        "Sun, 32 Dec 2026 00:53:13 UTC",
    ] {
        assert_eq!(parse_date(bad), None, "{bad}");
    }
}

#[test]
fn a_current_release_of_the_suite_passes_by_codename_or_suite() {
    let r = Release::parse(BOOKWORM_SECURITY, "u").expect("parse");
    let now = at("Tue, 01 Dec 2026 12:00:00 UTC");
    r.check("u", "bookworm-security", now).expect("codename");
    r.check("u", "oldstable-security", now).expect("suite");
}

#[test]
fn an_expired_release_is_refused_naming_the_date() {
    let r = Release::parse(
        BOOKWORM_SECURITY,
        "http://m/dists/bookworm-security/InRelease",
    )
    .expect("parse");
    let now = at("Tue, 08 Dec 2026 02:53:13 UTC");
    let err = r
        .check(
            "http://m/dists/bookworm-security/InRelease",
            "bookworm-security",
            now,
        )
        .unwrap_err();
    assert!(matches!(err, Error::Expired { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("http://m/dists/bookworm-security/InRelease")
            && msg.contains("expired on Sun, 06 Dec 2026 00:53:13 UTC")
            && msg.contains("2days 2h ago"),
        "{msg}"
    );
}

#[test]
fn a_release_of_another_suite_is_refused() {
    let r = Release::parse(BOOKWORM_SECURITY, "u").expect("parse");
    let now = at("Tue, 01 Dec 2026 12:00:00 UTC");
    let err = r.check("u", "bookworm", now).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("not of bookworm")
            && msg.contains("oldstable-security")
            && msg.contains("bookworm-security"),
        "{msg}"
    );
    let bare =
        Release::parse("Origin: X\nDate: Sat, 11 Jul 2026 10:16:37 UTC\n", "u").expect("parse");
    let msg = bare.check("u", "bookworm", now).unwrap_err().to_string();
    assert!(msg.contains("(none)"), "{msg}");
}

#[test]
fn a_release_from_the_future_is_refused_and_bad_dates_are_errors() {
    let text = "Suite: stable\nCodename: bookworm\nDate: Sat, 11 Jul 2026 10:16:37 UTC\n";
    let r = Release::parse(text, "u").expect("parse");
    r.check("u", "bookworm", at("Sat, 11 Jul 2026 10:16:30 UTC"))
        .expect("within the allowed skew");
    let err = r
        .check("u", "bookworm", at("Sat, 11 Jul 2026 10:16:00 UTC"))
        .unwrap_err();
    assert!(matches!(err, Error::NotYetValid { .. }), "{err:?}");
    // No Valid-Until (bookworm's own Release has none): never expires.
    r.check("u", "bookworm", at("Fri, 01 Jan 2100 00:00:00 UTC"))
        .expect("no Valid-Until");
    let err = Release::parse("Suite: stable\nValid-Until: soon\n", "u").unwrap_err();
    assert!(err.to_string().contains("Valid-Until: \"soon\""), "{err}");
}
