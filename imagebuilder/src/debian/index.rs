//! The `Packages` index (deb822 paragraphs).

use std::collections::BTreeMap;

use super::sha256::Sha256;

/// One alternative of a dependency: a name and an optional version constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dep {
    pub name: String,
    pub constraint: Option<(String, String)>,
}

/// A binary package as listed in a `Packages` index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub arch: String,
    /// Path of the `.deb` relative to the mirror root (`pool/...`).
    pub filename: String,
    pub sha256: Sha256,
    pub size: u64,
    /// `Pre-Depends` and `Depends`: a list of alternatives each.
    pub depends: Vec<Vec<Dep>>,
    pub provides: Vec<String>,
    /// The mirror this package came from.
    pub mirror: String,
}

/// Splits deb822 text into paragraphs of `field -> value` (continuation lines joined).
pub fn paragraphs(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut out = Vec::new();
    let mut cur: BTreeMap<String, String> = BTreeMap::new();
    let mut last: Option<String> = None;
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            last = None;
        } else if line.starts_with(' ') || line.starts_with('\t') {
            if let Some(v) = last.as_ref().and_then(|k| cur.get_mut(k)) {
                v.push('\n');
                v.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            cur.insert(k.to_string(), v.trim().to_string());
            last = Some(k.to_string());
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Parses `a (>= 1), b | c:any, d [amd64]` into groups of alternatives.
pub fn parse_depends(s: &str) -> Vec<Vec<Dep>> {
    s.split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(|group| {
            group
                .split('|')
                .filter_map(|alt| {
                    let alt = alt.trim();
                    let (name, rest) = match alt.find([' ', '(', '[']) {
                        Some(i) => (&alt[..i], &alt[i..]),
                        None => (alt, ""),
                    };
                    let name = name.split(':').next().unwrap_or(name).trim();
                    if name.is_empty() {
                        return None;
                    }
                    let constraint = rest
                        .find('(')
                        .zip(rest.find(')'))
                        .and_then(|(a, b)| rest.get(a + 1..b))
                        .and_then(|c| {
                            let c = c.trim();
                            let i = c.find(|ch: char| !"<>=".contains(ch))?;
                            Some((c[..i].trim().to_string(), c[i..].trim().to_string()))
                        });
                    Some(Dep {
                        name: name.to_string(),
                        constraint,
                    })
                })
                .collect::<Vec<_>>()
        })
        .filter(|g| !g.is_empty())
        .collect()
}

/// Parses a `Packages` index. Paragraphs without the fields a build needs, or with a malformed
/// digest, are skipped.
pub fn parse_packages(text: &str, mirror: &str) -> Vec<Package> {
    paragraphs(text)
        .into_iter()
        .filter_map(|p| {
            let mut depends = p
                .get("Pre-Depends")
                .map(|d| parse_depends(d))
                .unwrap_or_default();
            depends.extend(
                p.get("Depends")
                    .map(|d| parse_depends(d))
                    .unwrap_or_default(),
            );
            Some(Package {
                name: p.get("Package")?.clone(),
                version: p.get("Version")?.clone(),
                arch: p.get("Architecture")?.clone(),
                filename: p.get("Filename")?.clone(),
                sha256: p.get("SHA256")?.parse().ok()?,
                size: p.get("Size")?.parse().ok()?,
                depends,
                provides: p
                    .get("Provides")
                    .map(|s| {
                        parse_depends(s)
                            .into_iter()
                            .flatten()
                            .map(|d| d.name)
                            .collect()
                    })
                    .unwrap_or_default(),
                mirror: mirror.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACKAGES: &str = "\
Package: libc6
Version: 2.36-9+deb12u10
Architecture: amd64
Pre-Depends: libgcc-s1
Depends: libgcc-s1 (>= 3.0)
Filename: pool/main/g/glibc/libc6_2.36-9+deb12u10_amd64.deb
Size: 2757936
SHA256: 0011001100110011001100110011001100110011001100110011001100110011
Description: GNU C Library
 shared libraries

Package: mawk
Version: 1.3.4.20200120-3.1
Architecture: amd64
Provides: awk
Depends: libc6 (>= 2.34) | libc6-udeb:any
Filename: pool/main/m/mawk/mawk_1.3.4.20200120-3.1_amd64.deb
Size: 100
SHA256: 2233223322332233223322332233223322332233223322332233223322332233

Package: broken
Version: 1

Package: escapes
Version: 1
Architecture: amd64
Filename: pool/main/e/escapes.deb
Size: 1
SHA256: ../../../etc/passwd
";

    #[test]
    fn parses_packages() {
        let p = parse_packages(PACKAGES, "http://m/debian");
        assert_eq!(
            p.len(),
            2,
            "paragraphs without Filename or with a malformed SHA256 are skipped"
        );
        assert_eq!(p[0].name, "libc6");
        assert_eq!(p[0].size, 2757936);
        assert_eq!(p[0].depends.len(), 2);
        assert_eq!(
            p[0].depends[1][0].constraint,
            Some((">=".into(), "3.0".into()))
        );
        assert_eq!(p[1].provides, vec!["awk".to_string()]);
        assert_eq!(p[1].depends[0].len(), 2);
        assert_eq!(p[1].depends[0][1].name, "libc6-udeb");
    }

    #[test]
    fn parses_depends_with_arch_lists() {
        let d = parse_depends("a [amd64], b (<< 2) | c, , d:any (= 1:2)");
        assert_eq!(d.len(), 3);
        assert_eq!(d[0][0].name, "a");
        assert_eq!(d[1][0].constraint, Some(("<<".into(), "2".into())));
        assert_eq!(d[2][0].name, "d");
        assert_eq!(d[2][0].constraint, Some(("=".into(), "1:2".into())));
    }
}
