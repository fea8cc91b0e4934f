//! Signing images on a registry and verifying their signatures, as cosign lays them out: the
//! signatures of manifest `sha256:<hex>` are the layers of the image tagged
//! `sha256-<hex>.sig` in the same repository (see [`crate::signature`]).
//!
//! Adding a signature reads that image, appends a layer and pushes it again; like cosign,
//! two signers racing on one image can lose one of the two signatures.

use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use base64::Engine;
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use serde::Serialize;
use tracing::info;

use super::push::{self, retry, PushOptions};
use super::{auth, challenge, Error};
use crate::layer::digest_of;
use crate::signature::attachment::{self, SignatureImage, MANIFEST_TYPE};
use crate::signature::key::{decode_signature, PublicKey, SigningKey};
use crate::signature::payload::Claims;

/// Manifest types a tag may name; the digest signed is that of the bytes served.
const IMAGE_TYPES: [&str; 4] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
/// Payloads are a few hundred bytes; a larger layer is not one cosign wrote.
const MAX_PAYLOAD: u64 = 64 * 1024;

/// How to reach the registry: the settings sign and verify share with push.
#[derive(Debug, Clone, Default)]
pub struct Connection {
    pub plain_http: bool,
    pub insecure: bool,
    /// Docker config with credentials (default: `$DOCKER_CONFIG/config.json`).
    pub docker_config: Option<PathBuf>,
}

impl Connection {
    /// Push's options for `registry`, without a build output to push.
    fn options(&self, registry: &str) -> PushOptions {
        PushOptions {
            out: PathBuf::new(),
            registry: registry.to_string(),
            repositories: Vec::new(),
            extra_tags: Vec::new(),
            plain_http: self.plain_http,
            insecure: self.insecure,
            docker_config: self.docker_config.clone(),
            policy: crate::policy::Policy {
                max_compressed_bytes: 0,
            },
        }
    }
}

/// An authenticated client for one repository.
struct Session {
    client: Client,
    creds: RegistryAuth,
    registry: String,
    repository: String,
}

impl Session {
    async fn open(c: &Connection, image: &Reference, write: bool) -> Result<Self, Error> {
        let registry = image.registry().to_string();
        let o = c.options(&registry);
        let creds = match c.docker_config.clone().or_else(auth::config_path) {
            Some(p) => auth::for_registry(&p, &registry)?,
            None => RegistryAuth::Anonymous,
        };
        // Before oci-client is handed the credentials.
        challenge::check(&o, &creds).await?;
        let client = push::client(&o)?;
        let s = Self {
            client,
            creds,
            repository: image.repository().to_string(),
            registry,
        };
        let ops: &[RegistryOperation] = if write {
            &[RegistryOperation::Push, RegistryOperation::Pull]
        } else {
            &[RegistryOperation::Pull]
        };
        let base = s.at_tag("latest");
        for op in ops {
            retry(&s.registry, "authenticating", || {
                s.client.auth(&base, &s.creds, *op)
            })
            .await?;
        }
        Ok(s)
    }

    fn at_tag(&self, tag: &str) -> Reference {
        Reference::with_tag(
            self.registry.clone(),
            self.repository.clone(),
            tag.to_string(),
        )
    }

    /// `host[:port]/path`: the identity a signature names.
    fn docker_reference(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The digest `image` names: its own, or that of the manifest its tag points at now.
    async fn resolve(&self, image: &Reference) -> Result<String, Error> {
        if let Some(d) = image.digest() {
            return Ok(d.to_string());
        }
        let what = format!("reading the manifest of {image}");
        let (bytes, _) = retry(&self.registry, &what, || {
            self.client
                .pull_manifest_raw(image, &self.creds, &IMAGE_TYPES)
        })
        .await?;
        Ok(digest_of(&bytes))
    }

    /// The signature image of `digest` and its manifest digest, if there is one.
    async fn signatures_of(&self, digest: &str) -> Result<Option<(SignatureImage, String)>, Error> {
        let tag_ref = self.at_tag(&attachment::tag_for(digest)?);
        let (client, creds) = (&self.client, &self.creds);
        let got = retry(&self.registry, &format!("reading {tag_ref}"), || {
            let tag_ref = &tag_ref;
            async move {
                match client
                    .pull_manifest_raw(tag_ref, creds, &[MANIFEST_TYPE])
                    .await
                {
                    Ok((bytes, _)) => Ok(Some(bytes)),
                    Err(e) if is_not_found(&e) => Ok(None),
                    Err(e) => Err(e),
                }
            }
        })
        .await?;
        match got {
            Some(bytes) => Ok(Some((SignatureImage::parse(&bytes)?, digest_of(&bytes)))),
            None => Ok(None),
        }
    }

    async fn upload(&self, data: &[u8]) -> Result<(), Error> {
        let base = self.at_tag("latest");
        let digest = digest_of(data);
        if retry(&self.registry, "checking a blob", || {
            self.client.blob_exists(&base, &digest)
        })
        .await?
        {
            return Ok(());
        }
        retry(&self.registry, &format!("uploading blob {digest}"), || {
            self.client.push_blob(&base, data.to_vec(), &digest)
        })
        .await?;
        Ok(())
    }

    /// A payload blob, checked against its digest.
    async fn payload(&self, layer: &attachment::SignatureLayer) -> Result<Vec<u8>, String> {
        if layer.size > MAX_PAYLOAD {
            return Err(format!("payload of {} bytes is too large", layer.size));
        }
        let base = self.at_tag("latest");
        let client = &self.client;
        let digest = layer.digest.as_str();
        let limit = layer.size as usize;
        let data = retry(&self.registry, &format!("fetching blob {digest}"), || {
            let base = &base;
            async move {
                let mut out = Bounded {
                    buf: Vec::new(),
                    limit,
                };
                client.pull_blob(base, digest, &mut out).await?;
                Ok::<_, OciDistributionError>(out.buf)
            }
        })
        .await
        .map_err(|e| e.to_string())?;
        if digest_of(&data) != layer.digest {
            return Err("payload blob does not match its digest".into());
        }
        Ok(data)
    }
}

/// A buffer that refuses to grow past the size the descriptor gave: a registry cannot make
/// verification hold more than that in memory.
struct Bounded {
    buf: Vec<u8>,
    limit: usize,
}

impl tokio::io::AsyncWrite for Bounded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.buf.len() + data.len() > self.limit {
            return Poll::Ready(Err(std::io::Error::other(format!(
                "blob larger than the {} bytes its descriptor says",
                self.limit
            ))));
        }
        self.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Whether the registry answered that the manifest does not exist.
fn is_not_found(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::ImageManifestNotFoundError(_) => true,
        OciDistributionError::ServerError { code: 404, .. } => true,
        OciDistributionError::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|x| matches!(x.code, OciErrorCode::ManifestUnknown)),
        _ => false,
    }
}

/// A signature added (or found already there).
#[derive(Debug, Clone, Serialize)]
pub struct Signed {
    /// The signed image, `host/repo@sha256:...`.
    pub reference: String,
    /// The signature image, `host/repo:sha256-<hex>.sig`.
    pub signatures: String,
    /// Digest of the signature image's manifest.
    pub signatures_digest: String,
    /// Signatures the image now holds.
    pub count: usize,
    /// False when the key had signed these claims already (nothing was pushed).
    pub added: bool,
}

/// Signs the manifest `image` names (by tag or digest) with `key`.
pub async fn sign(c: &Connection, image: &Reference, key: &SigningKey) -> Result<Signed, Error> {
    let s = Session::open(c, image, true).await?;
    let digest = s.resolve(image).await?;
    sign_digest(&s, &digest, key).await
}

async fn sign_digest(s: &Session, digest: &str, key: &SigningKey) -> Result<Signed, Error> {
    let payload = Claims {
        docker_reference: s.docker_reference(),
        manifest_digest: digest.to_string(),
    }
    .to_payload();
    let tag_ref = s.at_tag(&attachment::tag_for(digest)?);
    let (mut img, existing) = match s.signatures_of(digest).await? {
        Some((img, d)) => (img, Some(d)),
        None => (SignatureImage::default(), None),
    };
    let public = key.public_key();
    let payload_digest = digest_of(&payload);
    let signed_already = img.signatures().iter().any(|l| {
        l.digest == payload_digest
            && l.signature
                .as_deref()
                .and_then(|b| decode_signature(b).ok())
                .is_some_and(|sig| public.verify(&payload, &sig).is_ok())
    });
    let reference = format!("{}@{digest}", s.docker_reference());
    if let (true, Some(d)) = (signed_already, &existing) {
        info!(%reference, "signed with this key already");
        return Ok(Signed {
            reference,
            signatures: tag_ref.to_string(),
            signatures_digest: d.clone(),
            count: img.signatures().len(),
            added: false,
        });
    }
    let signature = base64::engine::general_purpose::STANDARD.encode(key.sign(&payload)?);
    img.add(&payload, &signature);
    let config = img.config();
    s.upload(&payload).await?;
    s.upload(&config).await?;
    let manifest = img.manifest(&config);
    retry(&s.registry, &format!("pushing {tag_ref}"), || {
        s.client.push_manifest_raw(
            &tag_ref,
            manifest.clone(),
            http::HeaderValue::from_static(MANIFEST_TYPE),
        )
    })
    .await?;
    let count = img.signatures().len();
    info!(%reference, signatures = %tag_ref, count, key = %public.fingerprint(), "signed");
    Ok(Signed {
        reference,
        signatures: tag_ref.to_string(),
        signatures_digest: digest_of(&manifest),
        count,
        added: true,
    })
}

/// Signs each of `digests` in `repository` of `registry` (what a push just pushed).
pub async fn sign_pushed(
    c: &Connection,
    registry: &str,
    repository: &str,
    digests: &[String],
    key: &SigningKey,
) -> Result<Vec<Signed>, Error> {
    let base = Reference::with_tag(registry.into(), repository.into(), "latest".into());
    let s = Session::open(c, &base, true).await?;
    let mut out = Vec::new();
    for d in digests {
        out.push(sign_digest(&s, d, key).await?);
    }
    Ok(out)
}

/// One signature that verified.
#[derive(Debug, Clone, Serialize)]
pub struct VerifiedSignature {
    /// Digest of the payload layer.
    pub layer: String,
    pub claims: Claims,
}

/// What verification found.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// The image verified, `host/repo@sha256:...`.
    pub reference: String,
    pub verified: Vec<VerifiedSignature>,
    /// Why each other signature of the image did not count.
    pub rejected: Vec<String>,
}

/// Checks that a signature of the manifest `image` names verifies with `key`, covers that
/// manifest's digest and names `image`'s repository.
pub async fn verify(
    c: &Connection,
    image: &Reference,
    key: &PublicKey,
) -> Result<Verification, Error> {
    let s = Session::open(c, image, false).await?;
    let digest = s.resolve(image).await?;
    let reference = format!("{}@{digest}", s.docker_reference());
    let not_verified = |reasons: Vec<String>| Error::NotVerified {
        reference: reference.clone(),
        reasons,
    };
    let Some((img, _)) = s.signatures_of(&digest).await? else {
        return Err(not_verified(vec![format!(
            "no signatures (no tag {})",
            attachment::tag_for(&digest)?
        )]));
    };
    let layers = img.signatures();
    if layers.is_empty() {
        return Err(not_verified(vec![
            "the signature image has no signature layers".into(),
        ]));
    }
    let (mut verified, mut rejected) = (Vec::new(), Vec::new());
    for (i, layer) in layers.iter().enumerate() {
        match check(&s, layer, key, &digest).await {
            Ok(claims) => verified.push(VerifiedSignature {
                layer: layer.digest.clone(),
                claims,
            }),
            Err(why) => rejected.push(format!("signature {} ({}): {why}", i + 1, layer.digest)),
        }
    }
    if verified.is_empty() {
        return Err(not_verified(rejected));
    }
    Ok(Verification {
        reference,
        verified,
        rejected,
    })
}

/// One signature layer against the key and the image.
async fn check(
    s: &Session,
    layer: &attachment::SignatureLayer,
    key: &PublicKey,
    digest: &str,
) -> Result<Claims, String> {
    let b64 = layer
        .signature
        .as_deref()
        .ok_or("no signature annotation")?;
    let signature = decode_signature(b64).map_err(|e| e.to_string())?;
    let payload = s.payload(layer).await?;
    key.verify(&payload, &signature)
        .map_err(|e| e.to_string())?;
    let claims = Claims::parse(&payload).map_err(|e| e.to_string())?;
    if claims.manifest_digest != digest {
        return Err(format!(
            "signs manifest {}, not {digest}",
            claims.manifest_digest
        ));
    }
    let want = s.docker_reference();
    if normalize(repository_of(&claims.docker_reference)) != normalize(&want) {
        return Err(format!(
            "signs repository {}, not {want}",
            claims.docker_reference
        ));
    }
    Ok(claims)
}

/// The repository of a docker reference: without `:tag` or `@digest`. cosign names the
/// repository alone; containers/image names the tag it signed, and its `matchRepository`
/// compares repositories.
fn repository_of(reference: &str) -> &str {
    let name = reference.split_once('@').map_or(reference, |(n, _)| n);
    let last = name.rfind('/').map_or(0, |i| i + 1);
    match name[last..].rfind(':') {
        Some(i) => &name[..last + i],
        None => name,
    }
}

/// Docker Hub's two names for itself, as one.
fn normalize(repository: &str) -> &str {
    repository
        .strip_prefix("index.docker.io/")
        .or_else(|| repository.strip_prefix("docker.io/"))
        .unwrap_or(repository)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn payload_buffer_refuses_more_than_the_descriptor_says() {
        use tokio::io::AsyncWriteExt;
        let mut b = Bounded {
            buf: Vec::new(),
            limit: 4,
        };
        b.write_all(b"abc").await.expect("within the limit");
        assert!(b.write_all(b"de").await.is_err());
        assert_eq!(b.buf, b"abc");
    }

    #[test]
    fn repository_is_the_reference_without_tag_or_digest() {
        for (r, want) in [
            ("127.0.0.1:5000/ns/repo", "127.0.0.1:5000/ns/repo"),
            ("127.0.0.1:5000/ns/repo:1.0", "127.0.0.1:5000/ns/repo"),
            ("127.0.0.1:5000/ns/repo@sha256:00", "127.0.0.1:5000/ns/repo"),
            (
                "127.0.0.1:5000/ns/repo:1.0@sha256:00",
                "127.0.0.1:5000/ns/repo",
            ),
            ("registry:5000/repo", "registry:5000/repo"),
        ] {
            assert_eq!(repository_of(r), want, "{r}");
        }
    }

    #[test]
    fn docker_hub_names_compare_equal() {
        assert_eq!(
            normalize("index.docker.io/library/busybox"),
            normalize("docker.io/library/busybox")
        );
        assert_ne!(normalize("127.0.0.1:5000/a"), normalize("127.0.0.1:5000/b"));
    }

    #[test]
    fn missing_manifests_are_told_apart_from_other_errors() {
        assert!(is_not_found(&OciDistributionError::ServerError {
            code: 404,
            url: "u".into(),
            message: "m".into(),
        }));
        assert!(!is_not_found(&OciDistributionError::ServerError {
            code: 500,
            url: "u".into(),
            message: "m".into(),
        }));
        assert!(!is_not_found(&OciDistributionError::UnauthorizedError {
            url: "u".into()
        }));
    }
}
