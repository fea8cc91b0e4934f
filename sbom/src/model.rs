//! The CycloneDX document: components, the image as metadata component, and the
//! dependency graph between them.

use std::collections::BTreeSet;

use cyclonedx_bom::external_models::date_time::DateTime;
use cyclonedx_bom::external_models::normalized_string::NormalizedString;
use cyclonedx_bom::external_models::spdx::SpdxExpression;
use cyclonedx_bom::external_models::uri::Purl;
use cyclonedx_bom::models::bom::{Bom, SpecVersion, UrnUuid};
use cyclonedx_bom::models::component::{Classification, Component, Components};
use cyclonedx_bom::models::dependency::{Dependencies, Dependency};
use cyclonedx_bom::models::hash::{Hash, HashAlgorithm, HashValue, Hashes};
use cyclonedx_bom::models::license::{LicenseChoice, Licenses};
use cyclonedx_bom::models::metadata::Metadata;
use cyclonedx_bom::models::property::{Properties, Property};
use cyclonedx_bom::models::tool::Tools;
use cyclonedx_bom::validation::Validate;
use sha2::{Digest, Sha256};

use crate::Error;

/// The image the SBOM describes (the metadata component).
#[derive(Debug, Clone)]
pub struct ImageInfo {
    /// Repository name, e.g. `dhi.io/istio-pilot`.
    pub name: String,
    /// Tag, e.g. `0.1.0-dev`.
    pub version: String,
    /// Variant name (`runtime` or `dev`).
    pub variant: String,
    /// RFC 3339 creation time (from `SOURCE_DATE_EPOCH`).
    pub created: String,
    /// Name and version of the tool that built the image.
    pub tool: (String, String),
    /// The Debian release the packages come from.
    pub distro: Distro,
}

/// A Debian release, as `/etc/os-release` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Distro {
    /// `ID`, e.g. `debian`.
    pub id: String,
    /// `VERSION_ID`, e.g. `12`.
    pub version_id: String,
    /// `VERSION_CODENAME`, e.g. `bookworm`: what security trackers key their data by.
    pub codename: String,
}

/// Property of the image component naming the release codename.
pub const PROP_CODENAME: &str = "imagebuilder:debian:codename";
/// Property of a Debian package naming the source package it was built from.
pub const PROP_SOURCE: &str = "imagebuilder:debian:source";
/// Property of a Debian package giving its source package's version.
pub const PROP_SOURCE_VERSION: &str = "imagebuilder:debian:source_version";

/// A Debian package installed in the image.
#[derive(Debug, Clone)]
pub struct DebPackage {
    pub name: String,
    pub version: String,
    pub arch: String,
    /// SHA-256 of the `.deb` file.
    pub sha256: String,
    /// License names found in the package's copyright file.
    pub licenses: Vec<String>,
    /// Names of the packages in the image that this one depends on.
    pub depends: Vec<String>,
    /// The source package it was built from: advisories name source packages.
    pub source: String,
    /// The source package's version (differs from `version` for binary-only uploads).
    pub source_version: String,
}

/// A Rust crate compiled into the binary.
#[derive(Debug, Clone)]
pub struct RustCrate {
    pub name: String,
    pub version: String,
    /// SPDX expression from the crate's manifest.
    pub license: Option<String>,
    /// SHA-256 from `Cargo.lock`, for registry crates.
    pub checksum: Option<String>,
    /// True for crates from crates.io (purl without a repository qualifier).
    pub registry: bool,
    /// `name@version` keys of the crate's own normal dependencies.
    pub depends: Vec<String>,
}

impl RustCrate {
    /// The key used to refer to this crate from other crates.
    pub fn key(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }
}

/// The application binary.
#[derive(Debug, Clone)]
pub struct BinaryFile {
    pub name: String,
    pub version: String,
    /// Path inside the image.
    pub path: String,
    pub sha256: String,
    /// `name@version` keys of the crates the binary's package depends on directly.
    pub depends: Vec<String>,
}

/// Everything an SBOM is made of.
#[derive(Debug, Clone)]
pub struct SbomInput {
    pub image: ImageInfo,
    pub binary: BinaryFile,
    pub debs: Vec<DebPackage>,
    pub crates: Vec<RustCrate>,
}

fn deb_ref(name: &str) -> String {
    format!("deb:{name}")
}

fn crate_ref(key: &str) -> String {
    format!("crate:{key}")
}

/// `pkg:deb/debian/NAME@VERSION?arch=ARCH&distro=debian-12`, with the version's `:` escaped.
pub(crate) fn deb_purl(p: &DebPackage, distro: &Distro) -> String {
    let version = p.version.replace(':', "%3A").replace('+', "%2B");
    format!(
        "pkg:deb/{}/{}@{}?arch={}&distro={}-{}",
        distro.id, p.name, version, p.arch, distro.id, distro.version_id
    )
}

fn property(name: &str, value: &str) -> Property {
    Property {
        name: name.into(),
        value: NormalizedString::new(value),
    }
}

fn sha256_hashes(hex: &str) -> Hashes {
    Hashes(vec![Hash {
        alg: HashAlgorithm::SHA_256,
        content: HashValue(hex.to_string()),
    }])
}

fn crate_license(expr: &str) -> LicenseChoice {
    // Old manifests separate alternatives with '/'; parse_lax normalises those.
    match SpdxExpression::parse_lax(expr.to_string()) {
        Ok(e) => LicenseChoice::Expression(e),
        Err(_) => LicenseChoice::license(expr),
    }
}

/// A serial number derived from the content, so that equal inputs give equal documents.
fn serial(input: &SbomInput) -> Result<UrnUuid, Error> {
    let mut h = Sha256::new();
    h.update(input.image.name.as_bytes());
    h.update(input.image.version.as_bytes());
    h.update(input.binary.sha256.as_bytes());
    for d in &input.debs {
        h.update(d.sha256.as_bytes());
    }
    for c in &input.crates {
        h.update(c.key().as_bytes());
    }
    let mut b: [u8; 16] = [0; 16];
    b.copy_from_slice(&h.finalize()[..16]);
    b[6] = (b[6] & 0x0f) | 0x50; // version 5 layout (name-based)
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    let x = hex::encode(b);
    let s = format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..]
    );
    UrnUuid::new(s).map_err(|e| Error::Invalid(format!("{e:?}")))
}

fn build(input: &SbomInput) -> Result<Bom, Error> {
    let image_ref = format!("image:{}:{}", input.image.name, input.image.version);
    let binary_ref = format!("file:{}", input.binary.path);

    let mut image = Component::new(
        Classification::Container,
        &input.image.name,
        &input.image.version,
        Some(image_ref.clone()),
    );
    image.properties = Some(Properties(vec![
        property("org.opencontainers.image.variant", &input.image.variant),
        property(PROP_CODENAME, &input.image.distro.codename),
    ]));

    let mut tool = Component::new(
        Classification::Application,
        &input.image.tool.0,
        &input.image.tool.1,
        None,
    );
    tool.bom_ref = None;

    let timestamp = DateTime::try_from(input.image.created.clone())
        .map_err(|e| Error::Timestamp(input.image.created.clone(), e.to_string()))?;
    let metadata = Metadata {
        timestamp: Some(timestamp),
        component: Some(image),
        tools: Some(Tools::Object {
            services: None,
            components: Some(Components(vec![tool])),
        }),
        ..Default::default()
    };

    let mut components = Vec::new();
    let mut binary = Component::new(
        Classification::Application,
        &input.binary.name,
        &input.binary.version,
        Some(binary_ref.clone()),
    );
    binary.hashes = Some(sha256_hashes(&input.binary.sha256));
    binary.properties = Some(Properties(vec![Property {
        name: "path".into(),
        value: NormalizedString::new(&input.binary.path),
    }]));
    components.push(binary);

    let deb_names: BTreeSet<&str> = input.debs.iter().map(|d| d.name.as_str()).collect();
    for d in &input.debs {
        let mut c = Component::new(
            Classification::Library,
            &d.name,
            &d.version,
            Some(deb_ref(&d.name)),
        );
        let purl = deb_purl(d, &input.image.distro);
        c.purl = Some(
            purl.parse::<Purl>()
                .map_err(|()| Error::Purl(d.name.clone(), purl.clone()))?,
        );
        c.properties = Some(Properties(vec![
            property(PROP_SOURCE, &d.source),
            property(PROP_SOURCE_VERSION, &d.source_version),
        ]));
        c.hashes = Some(sha256_hashes(&d.sha256));
        if !d.licenses.is_empty() {
            c.licenses = Some(Licenses(
                d.licenses
                    .iter()
                    .map(|l| LicenseChoice::license(l))
                    .collect(),
            ));
        }
        components.push(c);
    }

    let crate_keys: BTreeSet<String> = input.crates.iter().map(RustCrate::key).collect();
    for k in &input.crates {
        let mut c = Component::new(
            Classification::Library,
            &k.name,
            &k.version,
            Some(crate_ref(&k.key())),
        );
        let purl = cyclonedx_bom::external_models::uri::Purl::new("cargo", &k.name, &k.version)
            .map_err(|e| Error::Purl(k.key(), e.to_string()))?;
        c.purl = Some(purl);
        if let Some(sum) = &k.checksum {
            c.hashes = Some(sha256_hashes(sum));
        }
        if let Some(l) = &k.license {
            c.licenses = Some(Licenses(vec![crate_license(l)]));
        }
        components.push(c);
    }

    // The dependency graph: image -> binary + packages, binary -> crates, and so on.
    let mut deps = Vec::new();
    let mut image_deps = vec![binary_ref.clone()];
    image_deps.extend(input.debs.iter().map(|d| deb_ref(&d.name)));
    deps.push(Dependency {
        dependency_ref: image_ref,
        dependencies: image_deps,
    });
    deps.push(Dependency {
        dependency_ref: binary_ref,
        dependencies: input
            .binary
            .depends
            .iter()
            .filter(|k| crate_keys.contains(*k))
            .map(|k| crate_ref(k))
            .collect(),
    });
    for d in &input.debs {
        deps.push(Dependency {
            dependency_ref: deb_ref(&d.name),
            dependencies: d
                .depends
                .iter()
                .filter(|n| deb_names.contains(n.as_str()))
                .map(|n| deb_ref(n))
                .collect(),
        });
    }
    for k in &input.crates {
        deps.push(Dependency {
            dependency_ref: crate_ref(&k.key()),
            dependencies: k
                .depends
                .iter()
                .filter(|d| crate_keys.contains(*d))
                .map(|d| crate_ref(d))
                .collect(),
        });
    }

    Ok(Bom {
        version: 1,
        serial_number: Some(serial(input)?),
        metadata: Some(metadata),
        components: Some(Components(components)),
        dependencies: Some(Dependencies(deps)),
        spec_version: SpecVersion::V1_5,
        ..Bom::default()
    })
}

/// Renders the SBOM as CycloneDX 1.5 JSON, after checking it with the crate's validator.
pub fn render(input: &SbomInput) -> Result<Vec<u8>, Error> {
    let bom = build(input)?;
    let result = bom.validate_version(SpecVersion::V1_5);
    if result.has_errors() {
        return Err(Error::Invalid(format!("{result:?}")));
    }
    let mut out = Vec::new();
    bom.output_as_json_v1_5(&mut out)
        .map_err(|e| Error::Json(e.to_string()))?;
    // Re-serialise with sorted keys and a trailing newline so the bytes are stable.
    let value: serde_json::Value =
        serde_json::from_slice(&out).map_err(|e| Error::Json(e.to_string()))?;
    let mut pretty = serde_json::to_vec_pretty(&value).map_err(|e| Error::Json(e.to_string()))?;
    pretty.push(b'\n');
    Ok(pretty)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> SbomInput {
        SbomInput {
            image: ImageInfo {
                name: "dhi.io/istio-pilot".into(),
                version: "0.1.0".into(),
                variant: "runtime".into(),
                created: "2024-01-02T03:04:05Z".into(),
                tool: ("imagebuilder".into(), "0.1.0".into()),
                distro: Distro {
                    id: "debian".into(),
                    version_id: "12".into(),
                    codename: "bookworm".into(),
                },
            },
            binary: BinaryFile {
                name: "pilot-discovery".into(),
                version: "0.1.0".into(),
                path: "/usr/local/bin/pilot-discovery".into(),
                sha256: "ab".repeat(32),
                depends: vec!["serde@1.0.0".into()],
            },
            debs: vec![DebPackage {
                name: "libc6".into(),
                version: "2.36-9+deb12u1".into(),
                arch: "amd64".into(),
                sha256: "cd".repeat(32),
                licenses: vec!["LGPL-2.1".into()],
                depends: vec!["libgcc-s1".into()],
                source: "glibc".into(),
                source_version: "2.36-9+deb12u1".into(),
            }],
            crates: vec![RustCrate {
                name: "serde".into(),
                version: "1.0.0".into(),
                license: Some("MIT/Apache-2.0".into()),
                checksum: Some("ef".repeat(32)),
                registry: true,
                depends: vec![],
            }],
        }
    }

    #[test]
    fn renders_valid_stable_json() {
        let a = render(&input()).expect("render");
        let b = render(&input()).expect("render");
        assert_eq!(a, b, "same input, same bytes");
        let v: serde_json::Value = serde_json::from_slice(&a).expect("json");
        assert_eq!(v["specVersion"], "1.5");
        assert_eq!(v["metadata"]["component"]["type"], "container");
        let comps = v["components"].as_array().expect("components");
        assert!(comps
            .iter()
            .any(|c| c["purl"]
                == "pkg:deb/debian/libc6@2.36-9%2Bdeb12u1?arch=amd64&distro=debian-12"));
        assert!(comps.iter().any(|c| c["purl"] == "pkg:cargo/serde@1.0.0"));
        // Scanners match advisories by source package and release codename.
        let libc = comps.iter().find(|c| c["name"] == "libc6").expect("libc6");
        assert_eq!(
            libc["properties"],
            serde_json::json!([
                {"name": PROP_SOURCE, "value": "glibc"},
                {"name": PROP_SOURCE_VERSION, "value": "2.36-9+deb12u1"},
            ])
        );
        assert!(v["metadata"]["component"]["properties"]
            .as_array()
            .expect("properties")
            .contains(&serde_json::json!({"name": PROP_CODENAME, "value": "bookworm"})));
        // libgcc-s1 is not in the image, so it is not a dependency edge.
        let deps = v["dependencies"].as_array().expect("deps");
        let libc = deps
            .iter()
            .find(|d| d["ref"] == "deb:libc6")
            .expect("libc6");
        assert!(libc
            .get("dependsOn")
            .is_none_or(|d| d.as_array().is_some_and(|a| a.is_empty())));
    }

    #[test]
    fn epoch_is_escaped_in_purl() {
        let mut input = input();
        let mut d = input.debs.remove(0);
        d.version = "1:2.3-1".into();
        assert_eq!(
            deb_purl(&d, &input.image.distro),
            "pkg:deb/debian/libc6@1%3A2.3-1?arch=amd64&distro=debian-12"
        );
    }
}
