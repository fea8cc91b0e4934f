//! Checks that run before an image is written or pushed.

use crate::layer::{Kind, Tree};

/// Shells that must not exist in the runtime variant.
const SHELLS: &[&str] = &[
    "sh", "bash", "dash", "ash", "zsh", "ksh", "mksh", "busybox", "toybox",
];
/// Package managers that must not exist in the runtime variant.
const PACKAGE_MANAGERS: &[&str] = &[
    "dpkg", "apt", "apt-get", "apk", "rpm", "yum", "dnf", "microdnf",
];
const BIN_DIRS: &[&str] = &[
    "bin",
    "sbin",
    "usr/bin",
    "usr/sbin",
    "usr/local/bin",
    "usr/local/sbin",
];
/// Where the CA bundle must be.
pub const CA_BUNDLE: &str = "etc/ssl/certs/ca-certificates.crt";

/// What the runtime variant is checked against.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Largest allowed sum of compressed layer sizes.
    pub max_compressed_bytes: u64,
}

/// Everything a policy check found wrong, one message per line.
#[derive(Debug, thiserror::Error)]
#[error("image policy violated:\n  - {}", .0.join("\n  - "))]
pub struct Violations(pub Vec<String>);

fn is_root_user(user: &str) -> bool {
    let u = user.split(':').next().unwrap_or("");
    u.is_empty() || u == "0" || u == "root"
}

/// Checks the runtime variant's merged filesystem, user and size.
pub fn check_runtime(
    policy: &Policy,
    fs: &Tree,
    user: &str,
    compressed_bytes: u64,
) -> Result<(), Violations> {
    let mut v = Vec::new();
    for dir in BIN_DIRS {
        for name in SHELLS {
            if fs.get(&format!("{dir}/{name}")).is_some() {
                v.push(format!("shell present: /{dir}/{name}"));
            }
        }
        for name in PACKAGE_MANAGERS {
            if fs.get(&format!("{dir}/{name}")).is_some() {
                v.push(format!("package manager present: /{dir}/{name}"));
            }
        }
    }
    if is_root_user(user) {
        v.push(format!("runs as root (user {user:?}); use a non-zero uid"));
    }
    for (path, e) in fs.iter() {
        if matches!(e.kind, Kind::Symlink(_)) {
            continue;
        }
        if e.mode & 0o6000 != 0 {
            v.push(format!("setuid/setgid file: /{path} (mode {:o})", e.mode));
        }
        if e.mode & 0o002 != 0 && path != "tmp" {
            v.push(format!("world-writable path: /{path} (mode {:o})", e.mode));
        }
    }
    match fs.get(CA_BUNDLE).map(|e| &e.kind) {
        Some(Kind::File(d)) if d.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") => {}
        _ => v.push(format!("CA certificates missing: /{CA_BUNDLE}")),
    }
    if compressed_bytes > policy.max_compressed_bytes {
        v.push(format!(
            "image is {compressed_bytes} bytes compressed, over the budget of {}",
            policy.max_compressed_bytes
        ));
    }
    if v.is_empty() {
        Ok(())
    } else {
        Err(Violations(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::Entry;

    fn good() -> Tree {
        let mut t = Tree::new();
        t.insert("tmp", Entry::dir(0o1777));
        t.insert(
            CA_BUNDLE,
            Entry::file(b"-----BEGIN CERTIFICATE-----\n".to_vec(), 0o644),
        );
        t.insert(
            "usr/local/bin/pilot-discovery",
            Entry::file(b"elf".to_vec(), 0o755),
        );
        t
    }

    const P: Policy = Policy {
        max_compressed_bytes: 1000,
    };

    #[test]
    fn accepts_a_hardened_tree() {
        check_runtime(&P, &good(), "1337:1337", 10).expect("passes");
    }

    #[test]
    fn reports_every_violation() {
        let mut t = good();
        t.insert("bin/sh", Entry::symlink("dash"));
        t.insert("usr/bin/dpkg", Entry::file(b"x".to_vec(), 0o755));
        t.insert("usr/bin/su", Entry::file(b"x".to_vec(), 0o4755));
        t.insert("var/open", Entry::dir(0o777));
        t.remove(CA_BUNDLE);
        let err = check_runtime(&P, &t, "0:0", 5000).unwrap_err();
        let msg = err.to_string();
        for want in [
            "/bin/sh",
            "/usr/bin/dpkg",
            "/usr/bin/su",
            "/var/open",
            "CA certificates",
            "root",
            "budget",
        ] {
            assert!(msg.contains(want), "missing {want} in {msg}");
        }
        assert_eq!(err.0.len(), 7);
    }
}
