//! The lock file: the exact packages (name, version, architecture, SHA-256) of each variant,
//! committed so that a rebuild uses the same bytes without reading any index.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::sha256::Sha256;
use super::Error;

/// Format version written to and expected in lock files.
pub const LOCK_VERSION: u32 = 1;

/// One pinned package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Locked {
    pub name: String,
    pub version: String,
    pub arch: String,
    /// Validated when read: it names the package's file in the cache.
    pub sha256: Sha256,
    pub size: u64,
    /// Mirror root the package was resolved from.
    pub mirror: String,
    /// Path below the mirror root.
    pub filename: String,
    /// Names of the locked packages this one depends on (for the SBOM graph).
    #[serde(default)]
    pub depends: Vec<String>,
}

/// What a variant asked for, and the packages it resolved to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VariantLock {
    pub roots: Vec<String>,
    pub exclude: Vec<String>,
    pub packages: Vec<Locked>,
}

/// The whole lock file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockFile {
    pub lock_version: u32,
    pub distro: String,
    pub arch: String,
    pub variants: BTreeMap<String, VariantLock>,
}

impl LockFile {
    /// Reads a lock file; `Ok(None)` if it does not exist.
    pub fn read(path: &Path) -> Result<Option<LockFile>, Error> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(path.display(), e)),
        };
        let lock: LockFile = serde_json::from_str(&text).map_err(|e| Error::Lock {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        if lock.lock_version != LOCK_VERSION {
            return Err(Error::Lock {
                path: path.display().to_string(),
                reason: format!(
                    "lock_version {} is not supported (want {LOCK_VERSION})",
                    lock.lock_version
                ),
            });
        }
        Ok(Some(lock))
    }

    /// Writes the lock file (pretty JSON, sorted, trailing newline).
    pub fn write(&self, path: &Path) -> Result<(), Error> {
        let mut text = serde_json::to_string_pretty(self).map_err(|e| Error::Lock {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        text.push('\n');
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display(), e))?;
        }
        std::fs::write(path, text).map_err(|e| Error::io(path.display(), e))
    }

    /// Whether the variant `name` was locked for exactly these roots and exclusions.
    pub fn matches(&self, name: &str, roots: &[String], exclude: &[String]) -> bool {
        self.variants
            .get(name)
            .is_some_and(|v| v.roots == roots && v.exclude == exclude)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> LockFile {
        let pkg = Locked {
            name: "libc6".into(),
            version: "2.36-9+deb12u10".into(),
            arch: "amd64".into(),
            sha256: Sha256::of(b"libc6"),
            size: 42,
            mirror: "http://deb.debian.org/debian".into(),
            filename: "pool/main/g/glibc/libc6_2.36-9+deb12u10_amd64.deb".into(),
            depends: vec!["libgcc-s1".into()],
        };
        LockFile {
            lock_version: LOCK_VERSION,
            distro: "debian-12".into(),
            arch: "amd64".into(),
            variants: [(
                "runtime".to_string(),
                VariantLock {
                    roots: vec!["libc6".into()],
                    exclude: vec![],
                    packages: vec![pkg],
                },
            )]
            .into(),
        }
    }

    #[test]
    fn round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/packages.lock.json");
        let lock = sample();
        lock.write(&path).expect("write");
        let back = LockFile::read(&path).expect("read").expect("present");
        assert_eq!(back, lock);
        // Writing again gives the same bytes.
        let first = std::fs::read(&path).expect("read");
        back.write(&path).expect("write");
        assert_eq!(std::fs::read(&path).expect("read"), first);
        assert!(lock.matches("runtime", &["libc6".into()], &[]));
        assert!(!lock.matches("runtime", &["libc6".into(), "x".into()], &[]));
        assert!(!lock.matches("dev", &[], &[]));
    }

    #[test]
    fn missing_is_none_and_bad_version_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(LockFile::read(&dir.path().join("nope"))
            .expect("read")
            .is_none());
        let mut lock = sample();
        lock.lock_version = 99;
        let path = dir.path().join("l.json");
        lock.write(&path).expect("write");
        let err = LockFile::read(&path).unwrap_err();
        assert!(err.to_string().contains("lock_version 99"), "{err}");
    }

    #[test]
    fn a_hash_that_is_not_a_digest_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("l.json");
        let good = Sha256::of(b"libc6").to_string();
        for bad in ["../../etc", &good.to_uppercase(), &good[..60]] {
            let text = serde_json::to_string(&sample())
                .expect("json")
                .replace(&good, bad);
            std::fs::write(&path, text).expect("write");
            let err = LockFile::read(&path).unwrap_err().to_string();
            assert!(
                err.contains(&format!("lock file {}", path.display()))
                    && err.contains(&format!("{bad:?} is not a SHA-256 digest")),
                "{err}"
            );
        }
    }
}
