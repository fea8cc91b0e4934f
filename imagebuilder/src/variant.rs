//! The two variants: what goes into the runtime image, and what the dev layer adds.

use std::collections::BTreeMap;

use crate::debian::deb::{copyright_licenses, DebContents};
use crate::debian::lock::Locked;
use crate::layer::{Entry, Kind, Tree};
use crate::policy::CA_BUNDLE;

/// Packages of the runtime variant: the C runtime the binary links, CA certificates and
/// `/etc/services`. Excluded groups are tools used only by maintainer scripts.
pub const RUNTIME_ROOTS: &[&str] = &["libc6", "libgcc-s1", "ca-certificates", "netbase"];
pub const RUNTIME_EXCLUDE: &[&str] = &["openssl", "debconf", "debconf-2.0"];
/// Packages the dev layer adds: a shell, core tools, the package manager and debug tools.
pub const DEV_ROOTS: &[&str] = &[
    "dash",
    "bash",
    "coreutils",
    "findutils",
    "grep",
    "sed",
    "dpkg",
    "apt",
    "curl",
    "openssl",
    "procps",
    "iproute2",
    "busybox",
];
pub const DEV_EXCLUDE: &[&str] = &[];

/// The Debian release the images are made from (`/etc/os-release`, the SBOM).
pub const DEBIAN_VERSION_ID: &str = "12";
pub const DEBIAN_CODENAME: &str = "bookworm";

/// Path of the binary inside the image.
pub const BINARY_PATH: &str = "usr/local/bin/pilot-discovery";
/// Where SBOMs live inside the image.
pub const SBOM_DIR: &str = "usr/share/sbom";

/// A locked package with its extracted contents.
pub struct Installed {
    pub locked: Locked,
    pub contents: DebContents,
}

/// Documentation is dropped except each package's copyright file (licenses, scanners).
fn keep_path(path: &str) -> bool {
    for dropped in [
        "usr/share/man/",
        "usr/share/info/",
        "usr/share/lintian/",
        "usr/share/locale/",
    ] {
        if path.starts_with(dropped) {
            return false;
        }
    }
    if let Some(rest) = path.strip_prefix("usr/share/doc/") {
        let parts: Vec<&str> = rest.split('/').collect();
        return parts.len() == 1 || (parts.len() == 2 && parts[1] == "copyright");
    }
    true
}

/// The files of a set of packages plus their records under `/var/lib/dpkg/status.d/`.
pub fn packages_tree(pkgs: &[Installed]) -> Tree {
    let mut t = Tree::new();
    for p in pkgs {
        for (path, e) in p.contents.files.iter() {
            if keep_path(path) {
                t.insert(path, e.clone());
            }
        }
        let name = &p.locked.name;
        let mut record = p.contents.control.trim_end().to_string();
        record.push('\n');
        t.insert(
            &format!("var/lib/dpkg/status.d/{name}"),
            Entry::file(record, 0o644),
        );
        if let Some(md5) = &p.contents.md5sums {
            t.insert(
                &format!("var/lib/dpkg/status.d/{name}.md5sums"),
                Entry::file(md5.clone(), 0o644),
            );
        }
    }
    t
}

/// License names of a package, following a `/usr/share/doc/<pkg>` symlink if there is one.
pub fn licenses(tree: &Tree, package: &str) -> Vec<String> {
    let mut doc = format!("usr/share/doc/{package}");
    if let Some(Kind::Symlink(target)) = tree.get(&doc).map(|e| &e.kind) {
        let target = target.trim_end_matches('/');
        doc = match target.strip_prefix('/') {
            Some(abs) => abs.to_string(),
            None => format!(
                "usr/share/doc/{}",
                target.rsplit('/').next().unwrap_or(target)
            ),
        };
    }
    match tree.get(&format!("{doc}/copyright")).map(|e| &e.kind) {
        Some(Kind::File(d)) => copyright_licenses(&String::from_utf8_lossy(d)),
        _ => Vec::new(),
    }
}

/// The accounts of the image, as `(name, uid, home)`.
const ACCOUNTS: &[(&str, u64, &str)] = &[
    ("root", 0, "/root"),
    ("istio-proxy", 1337, "/home/istio-proxy"),
    ("nonroot", 65532, "/home/nonroot"),
    ("nobody", 65534, "/nonexistent"),
];

/// The OS files of the runtime base: accounts, homes, `/tmp`, os-release, CA bundle.
pub fn os_files(tree: &mut Tree, pretty_name: &str) {
    let mut passwd = String::new();
    let mut group = String::new();
    for (name, id, home) in ACCOUNTS {
        passwd.push_str(&format!("{name}:x:{id}:{id}:{name}:{home}:/sbin/nologin\n"));
        group.push_str(&format!("{name}:x:{id}:\n"));
        if *home != "/nonexistent" {
            tree.insert(home, Entry::dir(0o700).owned(*id, *id));
        }
    }
    tree.insert("etc/passwd", Entry::file(passwd, 0o644));
    tree.insert("etc/group", Entry::file(group, 0o644));
    tree.insert(
        "etc/nsswitch.conf",
        Entry::file("passwd: files\ngroup: files\nhosts: files dns\n", 0o644),
    );
    tree.insert("tmp", Entry::dir(0o1777));
    tree.insert(
        "etc/os-release",
        Entry::file(
            format!(
                "PRETTY_NAME=\"{pretty_name}\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"{DEBIAN_VERSION_ID}\"\nVERSION=\"{DEBIAN_VERSION_ID} ({DEBIAN_CODENAME})\"\nVERSION_CODENAME={DEBIAN_CODENAME}\nID=debian\nHOME_URL=\"https://www.debian.org/\"\n"
            ),
            0o644,
        ),
    );
    // What update-ca-certificates would generate: every certificate shipped, in path order.
    let mut bundle = Vec::new();
    let certs: BTreeMap<&String, &Entry> = tree
        .iter()
        .filter(|(p, _)| p.starts_with("usr/share/ca-certificates/") && p.ends_with(".crt"))
        .collect();
    for e in certs.values() {
        if let Kind::File(d) = &e.kind {
            bundle.extend_from_slice(d);
            if !d.ends_with(b"\n") {
                bundle.push(b'\n');
            }
        }
    }
    if !bundle.is_empty() {
        tree.insert(CA_BUNDLE, Entry::file(bundle, 0o644));
    }
}

/// The application layer: the binary and the runtime SBOM.
pub fn app_tree(binary: &[u8], sbom: &[u8]) -> Tree {
    let mut t = Tree::new();
    t.insert(BINARY_PATH, Entry::file(binary.to_vec(), 0o755));
    t.insert(
        &format!("{SBOM_DIR}/pilot-discovery.cdx.json"),
        Entry::file(sbom.to_vec(), 0o644),
    );
    t
}

/// The dev layer: the dev packages, `/bin/sh`, a dpkg database of every package, apt
/// sources, and the dev SBOM.
pub fn dev_tree(dev: &[Installed], all: &[&Installed], mirror: &str, sbom: &[u8]) -> Tree {
    let mut t = packages_tree(dev);
    if t.get("bin/sh").is_none() {
        t.insert("bin/sh", Entry::symlink("dash"));
    }
    let mut status = String::new();
    let mut sorted: Vec<&&Installed> = all.iter().collect();
    sorted.sort_by(|a, b| a.locked.name.cmp(&b.locked.name));
    for p in sorted {
        let control = p.contents.control.trim_end();
        // dpkg wants Status right after Package.
        let mut lines = control.lines();
        if let Some(first) = lines.next() {
            status.push_str(first);
            status.push_str("\nStatus: install ok installed\n");
            for l in lines {
                status.push_str(l);
                status.push('\n');
            }
            status.push('\n');
        }
    }
    t.insert("var/lib/dpkg/status", Entry::file(status, 0o644));
    for d in [
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/lib/apt/lists/partial",
        "var/cache/apt/archives/partial",
    ] {
        t.insert(d, Entry::dir(0o755));
    }
    t.insert(
        "etc/apt/sources.list.d/debian.sources",
        Entry::file(
            format!("Types: deb\nURIs: {mirror}\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"),
            0o644,
        ),
    );
    t.insert(
        &format!("{SBOM_DIR}/pilot-discovery-dev.cdx.json"),
        Entry::file(sbom.to_vec(), 0o644),
    );
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_are_dropped_but_copyright_kept() {
        assert!(keep_path("usr/share/doc/libc6/copyright"));
        assert!(keep_path("usr/share/doc/libgcc-s1"));
        assert!(!keep_path("usr/share/doc/libc6/changelog.Debian.gz"));
        assert!(!keep_path("usr/share/man/man1/ls.1.gz"));
        assert!(keep_path("usr/lib/x86_64-linux-gnu/libc.so.6"));
    }

    #[test]
    fn os_files_have_accounts_and_bundle() {
        let mut t = Tree::new();
        t.insert(
            "usr/share/ca-certificates/mozilla/B.crt",
            Entry::file("-----BEGIN CERTIFICATE-----\nB", 0o644),
        );
        t.insert(
            "usr/share/ca-certificates/mozilla/A.crt",
            Entry::file("-----BEGIN CERTIFICATE-----\nA\n", 0o644),
        );
        os_files(&mut t, "test");
        let Some(Kind::File(passwd)) = t.get("etc/passwd").map(|e| e.kind.clone()) else {
            panic!("no passwd")
        };
        let passwd = String::from_utf8(passwd).expect("utf8");
        assert!(passwd.starts_with("root:x:0:0:root:/root:/sbin/nologin\n"));
        assert!(passwd.contains("istio-proxy:x:1337:1337:"));
        assert!(passwd.contains("nonroot:x:65532:65532:"));
        assert!(passwd.contains("nobody:x:65534:65534:"));
        assert_eq!(t.get("tmp").expect("tmp").mode, 0o1777);
        assert_eq!(t.get("home/istio-proxy").expect("home").uid, 1337);
        let Some(Kind::File(b)) = t.get(CA_BUNDLE).map(|e| e.kind.clone()) else {
            panic!("no bundle")
        };
        assert_eq!(
            b,
            b"-----BEGIN CERTIFICATE-----\nA\n-----BEGIN CERTIFICATE-----\nB\n"
        );
    }
}
