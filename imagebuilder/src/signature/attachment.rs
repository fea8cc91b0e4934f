//! The signature image cosign pushes beside a signed image: tagged `sha256-<hex>.sig` in the
//! same repository, an OCI image manifest whose layers are payloads (one per signature), each
//! with its base64 signature in an annotation, and the config go-containerregistry writes for
//! such an image. Layers are kept as found, so that adding a signature keeps every other
//! (including keyless ones with certificates and bundles) intact.

use serde::Serialize;
use serde_json::json;

use super::Error;
use crate::layer::digest_of;

/// Media type of a payload layer.
pub const SIMPLE_SIGNING_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// Annotation of a payload layer holding the base64 DER signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The signature image's manifest media type.
pub const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// go-containerregistry's zero time, which its empty image carries.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// The tag of the signatures of `manifest_digest` (`sha256:<hex>` → `sha256-<hex>.sig`).
pub fn tag_for(manifest_digest: &str) -> Result<String, Error> {
    match manifest_digest.split_once(':') {
        Some(("sha256", hex))
            if hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(format!("sha256-{hex}.sig"))
        }
        _ => Err(Error::Attachment(format!(
            "`{manifest_digest}` is not a sha256 manifest digest"
        ))),
    }
}

/// One signature layer as listed in the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureLayer {
    /// Digest of the payload blob.
    pub digest: String,
    pub size: u64,
    /// The base64 signature annotation, if present.
    pub signature: Option<String>,
}

/// The layers of a signature image.
#[derive(Debug, Clone, Default)]
pub struct SignatureImage {
    layers: Vec<serde_json::Value>,
}

#[derive(Serialize)]
struct Config {
    architecture: &'static str,
    created: &'static str,
    history: Vec<History>,
    os: &'static str,
    rootfs: RootFs,
    config: serde_json::Map<String, serde_json::Value>,
}

#[derive(Serialize)]
struct History {
    created: &'static str,
}

#[derive(Serialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<String>,
}

impl SignatureImage {
    /// Reads an existing signature image's manifest.
    pub fn parse(manifest: &[u8]) -> Result<Self, Error> {
        let m: serde_json::Value = serde_json::from_slice(manifest)
            .map_err(|e| Error::Attachment(format!("manifest is not JSON: {e}")))?;
        let layers = m["layers"]
            .as_array()
            .ok_or_else(|| Error::Attachment("manifest has no layers".into()))?;
        if let Some(bad) = layers.iter().find(|l| l["digest"].as_str().is_none()) {
            return Err(Error::Attachment(format!("layer without a digest: {bad}")));
        }
        Ok(Self {
            layers: layers.clone(),
        })
    }

    /// The payload layers, in order.
    pub fn signatures(&self) -> Vec<SignatureLayer> {
        self.layers
            .iter()
            .filter(|l| l["mediaType"] == SIMPLE_SIGNING_TYPE)
            .map(|l| SignatureLayer {
                digest: l["digest"].as_str().unwrap_or_default().to_string(),
                size: l["size"].as_u64().unwrap_or_default(),
                signature: l["annotations"][SIGNATURE_ANNOTATION]
                    .as_str()
                    .map(str::to_string),
            })
            .collect()
    }

    /// Adds a payload layer with its signature (base64 of the DER).
    pub fn add(&mut self, payload: &[u8], signature_b64: &str) {
        self.layers.push(json!({
            "mediaType": SIMPLE_SIGNING_TYPE,
            "size": payload.len(),
            "digest": digest_of(payload),
            "annotations": {SIGNATURE_ANNOTATION: signature_b64},
        }));
    }

    /// The image config: one uncompressed layer per payload, so each diff ID is the
    /// layer's digest.
    pub fn config(&self) -> Vec<u8> {
        let digests = self.layers.iter().filter_map(|l| l["digest"].as_str());
        let c = Config {
            architecture: "",
            created: ZERO_TIME,
            history: digests
                .clone()
                .map(|_| History { created: ZERO_TIME })
                .collect(),
            os: "",
            rootfs: RootFs {
                kind: "layers",
                diff_ids: digests.map(str::to_string).collect(),
            },
            config: serde_json::Map::new(),
        };
        serde_json::to_vec(&c).unwrap_or_default()
    }

    /// The manifest over `config` (from [`SignatureImage::config`]) and the layers.
    pub fn manifest(&self, config: &[u8]) -> Vec<u8> {
        let m = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {"mediaType": CONFIG_TYPE, "size": config.len(), "digest": digest_of(config)},
            "layers": self.layers,
        });
        serde_json::to_vec(&m).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn tag_names_the_digest() {
        assert_eq!(
            tag_for(&format!("sha256:{HEX}")).expect("tag"),
            format!("sha256-{HEX}.sig")
        );
        for bad in [
            "sha256:abc",
            "sha512:00",
            "latest",
            &format!("sha256:{}", HEX.to_uppercase()),
        ] {
            assert!(tag_for(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn manifest_config_and_layers_are_as_cosign_writes_them() {
        let mut img = SignatureImage::default();
        img.add(b"payload-1", "c2lnLTE=");
        let config = img.config();
        let m: serde_json::Value = serde_json::from_slice(&img.manifest(&config)).expect("json");
        assert_eq!(m["mediaType"], MANIFEST_TYPE);
        assert_eq!(m["config"]["mediaType"], CONFIG_TYPE);
        assert_eq!(m["config"]["digest"], digest_of(&config));
        assert_eq!(m["layers"][0]["mediaType"], SIMPLE_SIGNING_TYPE);
        assert_eq!(m["layers"][0]["digest"], digest_of(b"payload-1"));
        assert_eq!(m["layers"][0]["size"], 9);
        assert_eq!(
            m["layers"][0]["annotations"][SIGNATURE_ANNOTATION],
            "c2lnLTE="
        );
        let c: serde_json::Value = serde_json::from_slice(&config).expect("json");
        assert_eq!(c["rootfs"]["diff_ids"], json!([digest_of(b"payload-1")]));
        assert_eq!(c["history"].as_array().map(Vec::len), Some(1));
        assert_eq!(c["created"], ZERO_TIME);
    }

    #[test]
    fn adding_keeps_existing_layers_verbatim() {
        let existing = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {},
            "layers": [{
                "mediaType": SIMPLE_SIGNING_TYPE,
                "size": 3,
                "digest": "sha256:aa",
                "annotations": {
                    SIGNATURE_ANNOTATION: "b2xk",
                    "dev.sigstore.cosign/certificate": "-----BEGIN CERTIFICATE-----",
                },
            }],
        });
        let mut img =
            SignatureImage::parse(&serde_json::to_vec(&existing).expect("json")).expect("parse");
        img.add(b"new", "bmV3");
        let sigs = img.signatures();
        assert_eq!(sigs.len(), 2);
        assert_eq!(sigs[0].signature.as_deref(), Some("b2xk"));
        assert_eq!(sigs[1].digest, digest_of(b"new"));
        let m: serde_json::Value =
            serde_json::from_slice(&img.manifest(&img.config())).expect("json");
        assert_eq!(m["layers"][0], existing["layers"][0]);
        let c: serde_json::Value = serde_json::from_slice(&img.config()).expect("json");
        assert_eq!(
            c["rootfs"]["diff_ids"],
            json!(["sha256:aa", digest_of(b"new")])
        );
    }

    #[test]
    fn manifests_without_layers_are_refused() {
        for bad in [&b"{}"[..], b"[]", b"nope", br#"{"layers":[{"size":1}]}"#] {
            assert!(SignatureImage::parse(bad).is_err());
        }
    }
}
