//! The components a scan looks at, read from a CycloneDX JSON SBOM.
//!
//! Rust crates are the `pkg:cargo/` components; Debian packages the `pkg:deb/` ones, with
//! the source package and its version from the properties `build` records (or, in SBOMs
//! from other tools, the purl's `upstream` qualifier, else the binary package itself). The
//! release codename comes from the image's `imagebuilder:debian:codename` property, the
//! release number from the purls' `distro=debian-N` qualifier.

use std::path::Path;

use serde_json::Value;

use super::{Affected, Error};

/// A Rust crate in the SBOM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crate {
    pub component: Affected,
    pub version: String,
}

/// A Debian package in the SBOM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deb {
    /// `component.package` is the source package.
    pub component: Affected,
    /// The binary package's version.
    pub version: String,
    /// The source package's version: what advisories' fixed versions refer to.
    pub source_version: String,
}

/// What one SBOM lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    /// The image (metadata component): name and version.
    pub image: (String, String),
    pub crates: Vec<Crate>,
    pub debs: Vec<Deb>,
    /// Debian release codename (`bookworm`), empty when the SBOM does not say.
    pub codename: String,
    /// Debian release number (`12`), empty when the SBOM does not say.
    pub version_id: String,
    /// Components that are neither crates nor Debian packages (the binary, files).
    pub other: usize,
}

fn property<'a>(c: &'a Value, name: &str) -> Option<&'a str> {
    c["properties"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)?["value"]
        .as_str()
}

/// Splits `pkg:type/namespace/name@version?qualifiers#subpath` into the part before
/// the version, the percent-decoded version, and the qualifiers.
pub fn split_purl(purl: &str) -> (&str, String, Vec<(&str, String)>) {
    let purl = purl.split('#').next().unwrap_or(purl);
    let (path, qualifiers) = purl.split_once('?').unwrap_or((purl, ""));
    let (name, version) = match path.rsplit_once('@') {
        Some((n, v)) => (n, decode(v)),
        None => (path, String::new()),
    };
    let qualifiers = qualifiers
        .split('&')
        .filter_map(|q| q.split_once('='))
        .map(|(k, v)| (k, decode(v)))
        .collect();
    (name, version, qualifiers)
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Inventory {
    /// Reads a CycloneDX JSON SBOM from a file.
    pub fn read(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read(path).map_err(Error::io(path))?;
        Self::parse(&text).map_err(|reason| Error::Sbom {
            path: path.display().to_string(),
            reason,
        })
    }

    /// Reads a CycloneDX JSON SBOM.
    pub fn parse(text: &[u8]) -> Result<Self, String> {
        let v: Value = serde_json::from_slice(text).map_err(|e| e.to_string())?;
        if v["bomFormat"] != "CycloneDX" {
            return Err("bomFormat is not CycloneDX".into());
        }
        let meta = &v["metadata"]["component"];
        let mut inv = Inventory {
            image: (
                meta["name"].as_str().unwrap_or_default().to_string(),
                meta["version"].as_str().unwrap_or_default().to_string(),
            ),
            codename: property(meta, sbom::PROP_CODENAME)
                .unwrap_or_default()
                .to_string(),
            ..Default::default()
        };
        let components = v["components"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        for c in components {
            let (Some(purl), Some(name)) = (c["purl"].as_str(), c["name"].as_str()) else {
                inv.other += 1;
                continue;
            };
            let bom_ref = c["bom-ref"].as_str().unwrap_or(purl).to_string();
            let (path, purl_version, qualifiers) = split_purl(purl);
            let version = c["version"]
                .as_str()
                .map(str::to_string)
                .unwrap_or(purl_version);
            let qualifier = |k: &str| {
                qualifiers
                    .iter()
                    .find(|(q, _)| *q == k)
                    .map(|(_, v)| v.as_str())
            };
            if path.starts_with("pkg:cargo/") {
                inv.crates.push(Crate {
                    component: Affected {
                        bom_ref,
                        purl: purl.to_string(),
                        name: name.to_string(),
                        package: name.to_string(),
                    },
                    version,
                });
            } else if path.starts_with("pkg:deb/") {
                if let Some(n) = qualifier("distro").and_then(|d| d.strip_prefix("debian-")) {
                    // `debian-12` or `debian-12.4`: the release is the major number.
                    inv.version_id = n.split('.').next().unwrap_or(n).to_string();
                }
                let (source, source_version) = match (
                    property(c, sbom::PROP_SOURCE),
                    property(c, sbom::PROP_SOURCE_VERSION),
                ) {
                    (Some(s), Some(v)) => (s.to_string(), v.to_string()),
                    (Some(s), None) => (s.to_string(), version.clone()),
                    _ => match qualifier("upstream") {
                        // Other tools' `upstream=name` or `upstream=name@version`.
                        Some(u) => match u.split_once('@') {
                            Some((n, v)) => (n.to_string(), v.to_string()),
                            None => (u.to_string(), version.clone()),
                        },
                        None => (name.to_string(), version.clone()),
                    },
                };
                inv.debs.push(Deb {
                    component: Affected {
                        bom_ref,
                        purl: purl.to_string(),
                        name: name.to_string(),
                        package: source,
                    },
                    version,
                    source_version,
                });
            } else {
                inv.other += 1;
            }
        }
        Ok(inv)
    }
}
