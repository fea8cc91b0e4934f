//! Debian version ordering (`[epoch:]upstream[-revision]`), as `dpkg --compare-versions`,
//! through the `debversion` crate.

use std::cmp::Ordering;

use debversion::Version;

/// Compares two Debian versions. A string that is not a Debian version sorts before every
/// version (and by bytes among such strings), so that it never wins a "newest" choice or
/// passes a `fixed` bound.
pub fn compare(a: &str, b: &str) -> Ordering {
    match (a.parse::<Version>(), b.parse::<Version>()) {
        (Ok(a), Ok(b)) => a.cmp(&b),
        (Err(_), Ok(_)) => Ordering::Less,
        (Ok(_), Err(_)) => Ordering::Greater,
        (Err(_), Err(_)) => a.cmp(b),
    }
}

/// Whether `version` satisfies `op constraint` (`<<`, `<=`, `=`, `>=`, `>>`).
pub fn satisfies(version: &str, op: &str, constraint: &str) -> bool {
    let c = compare(version, constraint);
    match op {
        "<<" | "<" => c == Ordering::Less,
        "<=" => c != Ordering::Greater,
        "=" => c == Ordering::Equal,
        ">=" => c != Ordering::Less,
        ">>" | ">" => c == Ordering::Greater,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    /// Cases from Debian Policy §5.6.12 and dpkg's own test suite.
    #[test]
    fn orders_like_dpkg() {
        let cases = [
            ("1.0", "1.0", Equal),
            ("1.0", "1.1", Less),
            ("1.10", "1.9", Greater),
            ("1.001", "1.1", Equal),
            ("1.0a", "1.0", Greater),
            // `~` sorts before everything, even the end of the string.
            ("1.0~rc1", "1.0", Less),
            ("1.0~rc1", "1.0~rc2", Less),
            ("1.0~~", "1.0~", Less),
            ("1.0~~a", "1.0~", Less),
            ("1.0~", "1.0", Less),
            // Letters sort before non-letters.
            ("1.0a", "1.0+", Less),
            ("1.0+b1", "1.0.1", Less),
            ("1.0", "1.0+b1", Less),
            // The epoch wins over everything else; no epoch is epoch 0.
            ("1:1.0", "2.0", Greater),
            ("0:1.0", "1.0", Equal),
            ("1:0.1", "0:9.9", Greater),
            ("2:1.0-1", "10:0.1-1", Less),
            // The revision: absent equals `0`, compared after the upstream version.
            ("1.0", "1.0-0", Equal),
            ("1.0-1", "1.0-2", Less),
            ("1.0-10", "1.0-9", Greater),
            ("2.36-9", "2.36-9+deb12u1", Less),
            ("2.36-9+deb12u4", "2.36-9+deb12u10", Less),
            ("1.0-1", "1.0-1~bpo1", Greater),
            ("1.0-1+deb12u1", "1.0-1+deb13u1", Less),
            // The last hyphen splits the revision; earlier ones belong to upstream.
            ("1.2-3-4", "1.2-3-5", Less),
            ("1.2-3-4", "1.2-4-1", Less),
            ("0.5.12-2", "0.5.12-2", Equal),
            ("7.88.1-10+deb12u5", "7.88.1-10+deb12u12", Less),
            ("3.0.11-1~deb12u2", "3.0.11-1", Less),
        ];
        for (a, b, want) in cases {
            assert_eq!(compare(a, b), want, "{a} vs {b}");
            assert_eq!(compare(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn a_malformed_version_sorts_first() {
        assert_eq!(compare("not a version!", "0"), Less);
        assert_eq!(compare("1.0", "x:y z"), Greater);
    }

    #[test]
    fn constraints() {
        assert!(satisfies("2.36-9", ">=", "2.34"));
        assert!(!satisfies("2.36-9", "<<", "2.34"));
        assert!(satisfies("1.0", "=", "1.0"));
        assert!(satisfies("12.2.0-14", ">>", "12.2.0-1"));
        assert!(satisfies("1:1.0", ">>", "9.9"));
    }
}
