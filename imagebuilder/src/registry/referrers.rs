//! The SBOM as an OCI 1.1 referrer of its image, with the `sha256-<hex>` tag fallback for
//! registries without the referrers API.

use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde_json::json;
use tracing::{info, warn};

use super::push::{retry, PushOptions, MANIFEST_TYPE};
use super::Error;
use crate::image::canonical_json;
use crate::layer::digest_of;

/// Artifact type of the SBOM referrer.
pub const SBOM_ARTIFACT_TYPE: &str = "application/vnd.cyclonedx+json";
const EMPTY_TYPE: &str = "application/vnd.oci.empty.v1+json";
const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";

/// The attached referrer.
pub struct Attached {
    pub digest: String,
    /// Whether the registry serves the referrers API (else the fallback tag was updated).
    pub referrers_api: bool,
}

/// The artifact manifest of an SBOM whose subject is the image manifest.
pub fn sbom_manifest(subject: &str, subject_size: usize, sbom: &[u8]) -> Vec<u8> {
    let m = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "artifactType": SBOM_ARTIFACT_TYPE,
        "config": {"mediaType": EMPTY_TYPE, "digest": digest_of(b"{}"), "size": 2, "data": "e30="},
        "layers": [{
            "mediaType": SBOM_ARTIFACT_TYPE,
            "digest": digest_of(sbom),
            "size": sbom.len(),
            "annotations": {"org.opencontainers.image.title": "sbom.cdx.json"},
        }],
        "subject": {"mediaType": MANIFEST_TYPE, "digest": subject, "size": subject_size},
    });
    canonical_json(&m).unwrap_or_default()
}

/// The fallback index with `descriptor` added (once).
pub fn add_to_index(existing: Option<&[u8]>, descriptor: serde_json::Value) -> Vec<u8> {
    let mut index = existing
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
        .filter(|v| v["manifests"].is_array())
        .unwrap_or_else(|| json!({"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": []}));
    if let Some(list) = index["manifests"].as_array_mut() {
        if !list.iter().any(|d| d["digest"] == descriptor["digest"]) {
            list.push(descriptor);
        }
    }
    canonical_json(&index).unwrap_or_default()
}

/// Whether `GET /v2/<repo>/referrers/<digest>` is served (200 with an index).
async fn referrers_api(o: &PushOptions, creds: &RegistryAuth, repo: &str, digest: &str) -> bool {
    let scheme = if o.plain_http { "http" } else { "https" };
    let url = format!("{scheme}://{}/v2/{repo}/referrers/{digest}", o.registry);
    let client = match super::challenge::http_client(o) {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "no HTTP client for the referrers API; using the fallback tag");
            return false;
        }
    };
    let mut req = client.get(&url);
    match creds {
        RegistryAuth::Basic(u, p) => req = req.basic_auth(u, Some(p)),
        RegistryAuth::Bearer(t) => req = req.bearer_auth(t),
        RegistryAuth::Anonymous => {}
    }
    match req.send().await {
        Ok(r) if r.status() == reqwest::StatusCode::OK => r
            .bytes()
            .await
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|v| v["manifests"].is_array()),
        _ => false,
    }
}

/// Pushes the SBOM artifact for `subject` and, without a referrers API, updates the
/// `sha256-<hex>` fallback tag.
pub async fn attach(
    client: &Client,
    o: &PushOptions,
    creds: &RegistryAuth,
    repo: &str,
    subject: &str,
    subject_size: usize,
    sbom: &[u8],
) -> Result<Attached, Error> {
    let reg = o.registry.as_str();
    let base = Reference::with_tag(reg.to_string(), repo.to_string(), "latest".into());
    for (data, digest) in [
        (b"{}".to_vec(), digest_of(b"{}")),
        (sbom.to_vec(), digest_of(sbom)),
    ] {
        if !retry(reg, "checking a blob", || {
            client.blob_exists(&base, &digest)
        })
        .await?
        {
            retry(reg, "uploading the SBOM", || {
                client.push_blob(&base, data.clone(), &digest)
            })
            .await?;
        }
    }
    let manifest = sbom_manifest(subject, subject_size, sbom);
    let digest = digest_of(&manifest);
    let by_digest = Reference::with_digest(reg.to_string(), repo.to_string(), digest.clone());
    retry(reg, "pushing the SBOM manifest", || {
        client.push_manifest_raw(
            &by_digest,
            manifest.clone(),
            http::HeaderValue::from_static(MANIFEST_TYPE),
        )
    })
    .await?;

    let api = referrers_api(o, creds, repo, subject).await;
    if !api {
        let tag = subject.replace(':', "-");
        let tag_ref = Reference::with_tag(reg.to_string(), repo.to_string(), tag.clone());
        let existing = client
            .pull_manifest_raw(&tag_ref, creds, &[INDEX_TYPE])
            .await
            .ok()
            .map(|(b, _)| b.to_vec());
        let index = add_to_index(
            existing.as_deref(),
            json!({
                "mediaType": MANIFEST_TYPE,
                "digest": digest,
                "size": manifest.len(),
                "artifactType": SBOM_ARTIFACT_TYPE,
            }),
        );
        retry(reg, "pushing the referrers fallback tag", || {
            client.push_manifest_raw(
                &tag_ref,
                index.clone(),
                http::HeaderValue::from_static(INDEX_TYPE),
            )
        })
        .await?;
        info!(%repo, %tag, "updated referrers fallback tag");
    }
    Ok(Attached {
        digest,
        referrers_api: api,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sbom_manifest_points_at_subject() {
        let m: serde_json::Value =
            serde_json::from_slice(&sbom_manifest("sha256:abc", 10, b"{\"bom\":1}")).expect("json");
        assert_eq!(m["artifactType"], SBOM_ARTIFACT_TYPE);
        assert_eq!(m["subject"]["digest"], "sha256:abc");
        assert_eq!(m["config"]["mediaType"], EMPTY_TYPE);
        assert_eq!(m["layers"][0]["digest"], digest_of(b"{\"bom\":1}"));
    }

    #[test]
    fn fallback_index_adds_each_referrer_once() {
        let d = json!({"mediaType": MANIFEST_TYPE, "digest": "sha256:1", "size": 1});
        let a = add_to_index(None, d.clone());
        let b = add_to_index(Some(&a), d);
        assert_eq!(a, b);
        let c = add_to_index(Some(&b), json!({"digest": "sha256:2"}));
        let v: serde_json::Value = serde_json::from_slice(&c).expect("json");
        assert_eq!(v["manifests"].as_array().map(Vec::len), Some(2));
        assert_eq!(v["mediaType"], INDEX_TYPE);
    }

    /// Serves one HTTP response on loopback; returns the address and the request received.
    async fn serve_once(
        status: &'static str,
        body: &'static str,
    ) -> (String, tokio::task::JoinHandle<String>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let request = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.expect("accept");
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = conn.read(&mut buf).await.expect("read");
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            let reply = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            conn.write_all(reply.as_bytes()).await.expect("write");
            String::from_utf8_lossy(&got).into_owned()
        });
        (addr, request)
    }

    fn options(registry: String) -> PushOptions {
        PushOptions {
            out: "out".into(),
            registry,
            repositories: vec!["ns/repo".into()],
            extra_tags: vec![],
            plain_http: true,
            insecure: false,
            docker_config: None,
            policy: crate::policy::Policy {
                max_compressed_bytes: 0,
            },
        }
    }

    #[tokio::test]
    async fn referrers_api_is_detected_with_credentials_sent() {
        let (addr, request) = serve_once("200 OK", r#"{"schemaVersion":2,"manifests":[]}"#).await;
        let creds = RegistryAuth::Basic("pusher".into(), "secret".into());
        assert!(referrers_api(&options(addr), &creds, "ns/repo", "sha256:ab").await);
        let request = request.await.expect("server");
        assert!(
            request.starts_with("GET /v2/ns/repo/referrers/sha256:ab HTTP/1.1"),
            "{request}"
        );
        let header = request
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("authorization:"));
        // base64("pusher:secret")
        assert_eq!(
            header.map(|h| h[14..].trim()),
            Some("Basic cHVzaGVyOnNlY3JldA=="),
            "{request}"
        );
    }

    #[tokio::test]
    async fn referrers_api_absent_on_404_or_a_body_without_manifests() {
        for (status, body) in [("404 Not Found", "{}"), ("200 OK", r#"{"errors":[]}"#)] {
            let (addr, request) = serve_once(status, body).await;
            let creds = RegistryAuth::Bearer("t0k".into());
            assert!(!referrers_api(&options(addr), &creds, "ns/repo", "sha256:ab").await);
            let request = request.await.expect("server");
            let header = request
                .lines()
                .find(|l| l.to_ascii_lowercase().starts_with("authorization:"));
            assert_eq!(
                header.map(|h| h[14..].trim()),
                Some("Bearer t0k"),
                "{request}"
            );
        }
    }
}
