//! The simple-signing payload: the claims a signature covers. containers/image reads it
//! strictly (exactly these fields in `critical`), and so does [`Claims::parse`].

use serde::{Deserialize, Serialize};

use super::Error;

/// `critical.type` of a cosign signature.
pub const SIGNATURE_TYPE: &str = "cosign container image signature";

/// Field names and order as cosign writes them.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    critical: Critical,
    /// Free-form annotations; cosign writes `null` when there are none.
    #[serde(default)]
    optional: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Critical {
    identity: Identity,
    image: Image,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Identity {
    #[serde(rename = "docker-reference")]
    docker_reference: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Image {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

/// What a signature says: this manifest digest is an image of this repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Claims {
    /// The repository, `host[:port]/path`, without tag or digest.
    pub docker_reference: String,
    /// `sha256:<hex>` of the manifest as the registry serves it.
    pub manifest_digest: String,
}

impl Claims {
    /// The payload bytes, byte for byte as cosign writes them.
    pub fn to_payload(&self) -> Vec<u8> {
        let p = Payload {
            critical: Critical {
                identity: Identity {
                    docker_reference: self.docker_reference.clone(),
                },
                image: Image {
                    docker_manifest_digest: self.manifest_digest.clone(),
                },
                kind: SIGNATURE_TYPE.into(),
            },
            optional: None,
        };
        // Strings and structs only: serialising cannot fail.
        serde_json::to_vec(&p).unwrap_or_default()
    }

    /// Reads a payload; anything but a cosign image signature's claims is an error.
    pub fn parse(payload: &[u8]) -> Result<Self, Error> {
        let p: Payload =
            serde_json::from_slice(payload).map_err(|e| Error::Payload(e.to_string()))?;
        if p.critical.kind != SIGNATURE_TYPE {
            return Err(Error::Payload(format!(
                "type `{}`, not `{SIGNATURE_TYPE}`",
                p.critical.kind
            )));
        }
        Ok(Self {
            docker_reference: p.critical.identity.docker_reference,
            manifest_digest: p.critical.image.docker_manifest_digest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn claims() -> Claims {
        Claims {
            docker_reference: "127.0.0.1:5000/mirror/dhi-istio-pilot".into(),
            manifest_digest: DIGEST.into(),
        }
    }

    #[test]
    fn payload_is_what_cosign_writes() {
        let want = format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"127.0.0.1:5000/mirror/dhi-istio-pilot"}},"image":{{"docker-manifest-digest":"{DIGEST}"}},"type":"cosign container image signature"}},"optional":null}}"#
        );
        assert_eq!(
            String::from_utf8(claims().to_payload()).expect("utf-8"),
            want
        );
    }

    #[test]
    fn payload_round_trips() {
        assert_eq!(
            Claims::parse(&claims().to_payload()).expect("parse"),
            claims()
        );
    }

    #[test]
    fn optional_annotations_are_accepted() {
        let p = format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"r/x"}},"image":{{"docker-manifest-digest":"{DIGEST}"}},"type":"cosign container image signature"}},"optional":{{"creator":"someone","ts":1}}}}"#
        );
        let c = Claims::parse(p.as_bytes()).expect("parse");
        assert_eq!(c.docker_reference, "r/x");
    }

    #[test]
    fn other_payloads_are_refused() {
        let cases = [
            // another type
            r#"{"critical":{"identity":{"docker-reference":"r/x"},"image":{"docker-manifest-digest":"sha256:00"},"type":"atomic container signature"},"optional":null}"#,
            // an unknown critical field
            r#"{"critical":{"identity":{"docker-reference":"r/x"},"image":{"docker-manifest-digest":"sha256:00"},"type":"cosign container image signature","extra":1},"optional":null}"#,
            // no identity
            r#"{"critical":{"image":{"docker-manifest-digest":"sha256:00"},"type":"cosign container image signature"},"optional":null}"#,
            "not json",
        ];
        for c in cases {
            let e = Claims::parse(c.as_bytes()).expect_err(c);
            assert!(matches!(e, Error::Payload(_)), "{c}: {e}");
        }
    }
}
