//! A filesystem tree and its deterministic layer tarball.
//!
//! Entries are written sorted by path, parents first, with one fixed mtime, numeric owners
//! and no user/group names, GNU headers, and gzip at a fixed level with a zero header mtime:
//! the same tree always gives the same bytes, hence the same digests.

use std::collections::BTreeMap;
use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;
use sha2::{Digest, Sha256};

/// What a path is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
}

/// One path in a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    /// Permission bits including setuid/setgid/sticky.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
}

impl Entry {
    pub fn dir(mode: u32) -> Self {
        Entry {
            kind: Kind::Dir,
            mode,
            uid: 0,
            gid: 0,
        }
    }

    pub fn file(data: impl Into<Vec<u8>>, mode: u32) -> Self {
        Entry {
            kind: Kind::File(data.into()),
            mode,
            uid: 0,
            gid: 0,
        }
    }

    pub fn symlink(target: &str) -> Self {
        Entry {
            kind: Kind::Symlink(target.to_string()),
            mode: 0o777,
            uid: 0,
            gid: 0,
        }
    }

    pub fn owned(mut self, uid: u64, gid: u64) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }
}

/// A set of paths (relative, no leading `/` or `./`) with their entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    entries: BTreeMap<String, Entry>,
}

/// Normalises `./usr/bin/`, `/usr/bin` and `usr/bin` to `usr/bin`; `None` for the root.
pub fn normalize(path: &str) -> Option<String> {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.is_empty() || parts.contains(&"..") {
        None
    } else {
        Some(parts.join("/"))
    }
}

impl Tree {
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts an entry, creating missing parent directories (mode 0755, root).
    pub fn insert(&mut self, path: &str, entry: Entry) {
        let Some(path) = normalize(path) else { return };
        let mut parent = String::new();
        let parts: Vec<&str> = path.split('/').collect();
        for p in &parts[..parts.len() - 1] {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(p);
            self.entries
                .entry(parent.clone())
                .or_insert_with(|| Entry::dir(0o755));
        }
        self.entries.insert(path, entry);
    }

    pub fn get(&self, path: &str) -> Option<&Entry> {
        normalize(path).and_then(|p| self.entries.get(&p))
    }

    #[cfg(test)]
    pub fn remove(&mut self, path: &str) -> Option<Entry> {
        normalize(path).and_then(|p| self.entries.remove(&p))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Entry)> {
        self.entries.iter()
    }

    /// Adds every entry of `other`, replacing entries at the same path.
    pub fn merge(&mut self, other: &Tree) {
        for (p, e) in &other.entries {
            self.insert(p, e.clone());
        }
    }

    /// The entries of `self` that are not identical in `lower`.
    pub fn minus(&self, lower: &Tree) -> Tree {
        Tree {
            entries: self
                .entries
                .iter()
                .filter(|(p, e)| lower.entries.get(*p) != Some(*e))
                .map(|(p, e)| (p.clone(), e.clone()))
                .collect(),
        }
    }
}

/// A built layer: the gzipped tarball and its digests.
#[derive(Debug, Clone)]
pub struct Layer {
    /// Gzip-compressed tar (the blob).
    pub blob: Vec<u8>,
    /// `sha256:` of the blob.
    pub digest: String,
    /// `sha256:` of the uncompressed tar (the config's diff_id).
    pub diff_id: String,
    /// Size of the uncompressed tar.
    pub tar_size: u64,
}

/// `sha256:<hex>` of a byte slice.
pub fn digest_of(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Writes `tree` as an uncompressed tar with every mtime set to `mtime`.
pub fn tar_bytes(tree: &Tree, mtime: u64) -> std::io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    b.mode(tar::HeaderMode::Deterministic);
    for (path, e) in tree.iter() {
        let mut h = tar::Header::new_gnu();
        h.set_mode(e.mode);
        h.set_uid(e.uid);
        h.set_gid(e.gid);
        h.set_mtime(mtime);
        match &e.kind {
            Kind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, format!("{path}/"), std::io::empty())?;
            }
            Kind::File(data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, path, &data[..])?;
            }
            Kind::Symlink(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, path, target)?;
            }
        }
    }
    b.into_inner()
}

/// Gzip at a fixed level; flate2 writes a zero mtime and no file name in the header.
pub fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = GzEncoder::new(Vec::with_capacity(data.len() / 3), Compression::new(6));
    enc.write_all(data)?;
    enc.finish()
}

/// Builds the layer blob of a tree.
pub fn build(tree: &Tree, mtime: u64) -> std::io::Result<Layer> {
    let tar = tar_bytes(tree, mtime)?;
    let blob = gzip(&tar)?;
    Ok(Layer {
        digest: digest_of(&blob),
        diff_id: digest_of(&tar),
        tar_size: tar.len() as u64,
        blob,
    })
}

/// Reads a gzipped layer tarball back into a tree (no whiteout handling: our layers only add).
pub fn read_tar_gz(blob: &[u8], into: &mut Tree) -> std::io::Result<()> {
    use std::io::Read;
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(blob));
    for e in ar.entries()? {
        let mut e = e?;
        let path = e.path()?.to_string_lossy().into_owned();
        let h = e.header();
        let (mode, uid, gid) = (h.mode()?, h.uid()?, h.gid()?);
        let kind = match h.entry_type() {
            tar::EntryType::Directory => Kind::Dir,
            tar::EntryType::Symlink => Kind::Symlink(
                e.link_name()?
                    .map(|l| l.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            ),
            _ => {
                let mut data = Vec::new();
                e.read_to_end(&mut data)?;
                Kind::File(data)
            }
        };
        into.insert(
            &path,
            Entry {
                kind,
                mode,
                uid,
                gid,
            },
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(order: &[&str]) -> Tree {
        let mut t = Tree::new();
        for p in order {
            match *p {
                "usr/bin/tool" => t.insert(p, Entry::file(b"#!bin".to_vec(), 0o755)),
                "usr/lib/link" => t.insert(p, Entry::symlink("../bin/tool")),
                "tmp" => t.insert(p, Entry::dir(0o1777)),
                "home/nonroot" => t.insert(p, Entry::dir(0o700).owned(65532, 65532)),
                long => t.insert(long, Entry::file(b"x".to_vec(), 0o644)),
            }
        }
        t
    }

    #[test]
    fn same_tree_any_insertion_order_same_digest() {
        let long = format!("usr/share/{}/file", "d".repeat(120));
        let a = tree(&["usr/bin/tool", "tmp", "usr/lib/link", "home/nonroot", &long]);
        let b = tree(&[&long, "home/nonroot", "usr/lib/link", "tmp", "usr/bin/tool"]);
        let la = build(&a, 1_700_000_000).expect("layer");
        let lb = build(&b, 1_700_000_000).expect("layer");
        assert_eq!(la.digest, lb.digest);
        assert_eq!(la.diff_id, lb.diff_id);
        assert_eq!(la.blob, lb.blob);
        let lc = build(&a, 1_700_000_001).expect("layer");
        assert_ne!(la.diff_id, lc.diff_id, "mtime is part of the content");
    }

    #[test]
    fn tar_has_sorted_entries_with_fixed_metadata() {
        let long = format!("usr/share/{}/file", "d".repeat(120));
        let t = tree(&["usr/bin/tool", "tmp", "usr/lib/link", "home/nonroot", &long]);
        let tar = tar_bytes(&t, 42).expect("tar");
        let mut ar = tar::Archive::new(&tar[..]);
        let mut seen = Vec::new();
        for e in ar.entries().expect("entries") {
            let e = e.expect("entry");
            let h = e.header();
            assert_eq!(h.mtime().expect("mtime"), 42);
            assert_eq!(h.username().expect("utf8").unwrap_or(""), "");
            let path = e.path().expect("path").to_string_lossy().into_owned();
            if path == "tmp/" {
                assert_eq!(h.mode().expect("mode"), 0o1777);
            }
            if path == "home/nonroot/" {
                assert_eq!(h.uid().expect("uid"), 65532);
            }
            seen.push(path.trim_end_matches('/').to_string());
        }
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(seen, sorted);
        assert!(seen.contains(&long), "long names survive");
        assert!(seen.contains(&"usr".to_string()), "parents are explicit");
    }

    #[test]
    fn layers_read_back_to_the_same_tree() {
        let t = tree(&["usr/bin/tool", "tmp", "usr/lib/link", "home/nonroot"]);
        let l = build(&t, 7).expect("layer");
        let mut back = Tree::new();
        read_tar_gz(&l.blob, &mut back).expect("read");
        assert_eq!(back, t);
    }

    #[test]
    fn minus_keeps_only_changes() {
        let lower = tree(&["usr/bin/tool", "tmp"]);
        let mut upper = lower.clone();
        upper.insert("etc/x", Entry::file(b"1".to_vec(), 0o644));
        let diff = upper.minus(&lower);
        let paths: Vec<&String> = diff.iter().map(|(p, _)| p).collect();
        assert_eq!(paths, ["etc", "etc/x"]);
        assert_eq!(normalize("./a//b/"), Some("a/b".into()));
        assert_eq!(normalize("./"), None);
        assert_eq!(normalize("a/../b"), None);
    }
}
