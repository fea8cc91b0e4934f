//! Pushes the images of a build output: blobs first (skipping existing ones, mounting from
//! a sibling repository when possible), manifests last, then the SBOM referrers. A push
//! that dies midway therefore never leaves a tag on a partial image.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use http::HeaderValue;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use tracing::{info, warn};

use super::{auth, challenge, referrers, Error};
use crate::assemble::Refs;
use crate::layer::{self, Tree};
use crate::policy::{self, Policy};

/// Where and how to push.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Build output directory (with `refs.json` and `oci/`).
    pub out: PathBuf,
    /// Registry host, e.g. `127.0.0.1:5000`.
    pub registry: String,
    /// Repository paths on the registry; blobs are mounted from the first into the others.
    pub repositories: Vec<String>,
    /// Extra tags of the runtime image (the dev image gets each with `-dev`).
    pub extra_tags: Vec<String>,
    pub plain_http: bool,
    pub insecure: bool,
    pub docker_config: Option<PathBuf>,
    /// Policy the runtime image is checked against before anything is pushed.
    pub policy: Policy,
}

/// One pushed manifest.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Pushed {
    pub reference: String,
    pub digest: String,
    pub sbom_referrer: String,
    pub referrers_api: bool,
    /// The signature image (`push --sign-key`), `host/repo:sha256-<hex>.sig`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signatures: Option<String>,
}

pub(crate) const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

fn is_auth_error(e: &OciDistributionError) -> Option<String> {
    match e {
        OciDistributionError::AuthenticationFailure(m) => Some(m.clone()),
        OciDistributionError::UnauthorizedError { url } => Some(format!("unauthorized: {url}")),
        OciDistributionError::RequestError(r)
            if matches!(r.status().map(|s| s.as_u16()), Some(401 | 403)) =>
        {
            Some(r.to_string())
        }
        OciDistributionError::ServerError {
            code: 401 | 403,
            message,
            ..
        } => Some(message.clone()),
        _ => None,
    }
}

fn is_transient(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::RequestError(r) => {
            r.is_connect() || r.is_timeout() || r.status().is_some_and(|s| s.is_server_error())
        }
        OciDistributionError::ServerError { code, .. } => *code >= 500 || *code == 429,
        OciDistributionError::IoError(_) => true,
        _ => false,
    }
}

/// Runs `op` with retries and exponential backoff on transient errors.
pub(crate) async fn retry<T, F, Fut>(registry: &str, what: &str, mut op: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, OciDistributionError>>,
{
    let mut delay = Duration::from_millis(250);
    let mut attempt = 1;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) => {
                if let Some(detail) = is_auth_error(&e) {
                    return Err(Error::Auth {
                        registry: registry.to_string(),
                        detail,
                    });
                }
                if attempt >= 5 || !is_transient(&e) {
                    return Err(Error::Registry {
                        what: what.to_string(),
                        source: e,
                    });
                }
                warn!(what, attempt, error = %e, "transient registry error; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
        }
    }
}

fn read_blob(out: &Path, digest: &str) -> Result<Vec<u8>, Error> {
    let p = out
        .join("oci/blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    std::fs::read(&p).map_err(|e| Error::Output {
        path: p.display().to_string(),
        reason: e.to_string(),
    })
}

fn read_refs(out: &Path) -> Result<Refs, Error> {
    let p = out.join("refs.json");
    let text = std::fs::read_to_string(&p).map_err(|e| Error::Output {
        path: p.display().to_string(),
        reason: format!("{e} (run `imagebuilder build` first)"),
    })?;
    serde_json::from_str(&text).map_err(|e| Error::Output {
        path: p.display().to_string(),
        reason: e.to_string(),
    })
}

/// Re-checks the runtime image as stored, so that nothing built with a laxer policy (or
/// altered since) is pushed.
fn check_policy(o: &PushOptions, refs: &Refs) -> Result<(), Error> {
    for img in refs.images.iter().filter(|i| i.variant == "runtime") {
        let mut fs = Tree::new();
        for l in &img.layers {
            let blob = read_blob(&o.out, l)?;
            layer::read_tar_gz(&blob, &mut fs).map_err(|e| Error::Output {
                path: l.clone(),
                reason: e.to_string(),
            })?;
        }
        let config: serde_json::Value = serde_json::from_slice(&read_blob(&o.out, &img.config)?)
            .map_err(|e| Error::Output {
                path: img.config.clone(),
                reason: e.to_string(),
            })?;
        let user = config["config"]["User"].as_str().unwrap_or("");
        policy::check_runtime(&o.policy, &fs, user, img.compressed_size)
            .map_err(|v| Error::Policy(img.reference.clone(), v))?;
    }
    Ok(())
}

/// The client for the options' protocol and TLS settings. (`Client::new` would fall back to
/// a default configuration on error, dropping these settings.)
pub fn client(o: &PushOptions) -> Result<Client, Error> {
    crate::tls::install_crypto_provider();
    Client::try_from(ClientConfig {
        protocol: if o.plain_http {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        accept_invalid_certificates: o.insecure,
        ..Default::default()
    })
    .map_err(|e| Error::Client(e.to_string()))
}

/// Pushes both variants (and their SBOMs) of the build in `o.out` to every repository.
pub async fn push(o: &PushOptions) -> Result<Vec<Pushed>, Error> {
    let started = Instant::now();
    let refs = read_refs(&o.out)?;
    check_policy(o, &refs)?;
    let config = o.docker_config.clone().or_else(auth::config_path);
    let creds = match &config {
        Some(p) => auth::for_registry(p, &o.registry)?,
        None => RegistryAuth::Anonymous,
    };
    // Before oci-client is handed the credentials.
    challenge::check(o, &creds).await?;
    let client = client(o)?;
    let reg = o.registry.as_str();
    let mut pushed = Vec::new();
    let first_repo = o.repositories.first().cloned();

    for repo in &o.repositories {
        let base = Reference::with_tag(reg.to_string(), repo.clone(), "latest".into());
        for op in [RegistryOperation::Push, RegistryOperation::Pull] {
            retry(reg, "authenticating", || client.auth(&base, &creds, op)).await?;
        }
        // Blobs of both images, each once.
        let mut digests = BTreeSet::new();
        for img in &refs.images {
            digests.insert(img.config.clone());
            digests.extend(img.layers.iter().cloned());
        }
        let (mut skipped, mut mounted, mut uploaded) = (0, 0, 0);
        for d in &digests {
            if retry(reg, "checking a blob", || client.blob_exists(&base, d)).await? {
                skipped += 1;
                continue;
            }
            if let Some(src) = first_repo.as_ref().filter(|f| *f != repo) {
                let from = Reference::with_tag(reg.to_string(), src.clone(), "latest".into());
                let m = client.mount_blob(&base, &from, d).await;
                if m.is_ok() && client.blob_exists(&base, d).await.unwrap_or(false) {
                    mounted += 1;
                    continue;
                }
            }
            let data = read_blob(&o.out, d)?;
            retry(reg, &format!("uploading blob {d}"), || {
                client.push_blob(&base, data.clone(), d)
            })
            .await?;
            uploaded += 1;
        }
        info!(repository = %repo, skipped, mounted, uploaded, "blobs in place");

        // Manifests last: only now do tags appear.
        for img in &refs.images {
            let manifest = read_blob(&o.out, &img.manifest)?;
            let tag = img
                .reference
                .rsplit_once(':')
                .map(|(_, t)| t.to_string())
                .ok_or_else(|| Error::Reference(img.reference.clone(), "no tag".into()))?;
            let suffix = if img.variant == "dev" { "-dev" } else { "" };
            let mut tags = vec![tag];
            tags.extend(o.extra_tags.iter().map(|t| format!("{t}{suffix}")));
            for t in &tags {
                let r = Reference::with_tag(reg.to_string(), repo.clone(), t.clone());
                retry(reg, &format!("pushing manifest {r}"), || {
                    client.push_manifest_raw(
                        &r,
                        manifest.clone(),
                        HeaderValue::from_static(MANIFEST_TYPE),
                    )
                })
                .await?;
            }
            let first = Reference::with_tag(reg.to_string(), repo.clone(), tags[0].clone());
            let got = retry(reg, "reading back the manifest digest", || {
                client.fetch_manifest_digest(&first, &creds)
            })
            .await?;
            if got != img.manifest {
                return Err(Error::DigestMismatch {
                    what: first.to_string(),
                    want: img.manifest.clone(),
                    got,
                });
            }
            let sbom = std::fs::read(&img.sbom).map_err(|e| Error::Output {
                path: img.sbom.clone(),
                reason: e.to_string(),
            })?;
            let attached = referrers::attach(
                &client,
                o,
                &creds,
                repo,
                &img.manifest,
                manifest.len(),
                &sbom,
            )
            .await?;
            pushed.push(Pushed {
                reference: format!("{reg}/{repo}:{}", tags[0]),
                digest: img.manifest.clone(),
                sbom_referrer: attached.digest,
                referrers_api: attached.referrers_api,
                signatures: None,
            });
        }
    }
    info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "push complete"
    );
    Ok(pushed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_build_with_the_ring_provider() {
        for (plain_http, insecure) in [(true, false), (false, false), (false, true)] {
            client(&PushOptions {
                out: "out".into(),
                registry: "127.0.0.1:5000".into(),
                repositories: vec!["ns/repo".into()],
                extra_tags: vec![],
                plain_http,
                insecure,
                docker_config: None,
                policy: Policy {
                    max_compressed_bytes: 0,
                },
            })
            .expect("client");
        }
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }

    #[tokio::test]
    async fn retry_gives_up_on_permanent_errors_and_maps_auth() {
        let mut calls = 0;
        let r: Result<(), Error> = retry("r", "x", || {
            calls += 1;
            async { Err(OciDistributionError::ImageManifestNotFoundError("m".into())) }
        })
        .await;
        assert!(matches!(r, Err(Error::Registry { .. })));
        assert_eq!(calls, 1);
        let r: Result<(), Error> = retry("r", "x", || async {
            Err(OciDistributionError::UnauthorizedError { url: "u".into() })
        })
        .await;
        let msg = r.unwrap_err().to_string();
        assert!(msg.contains("authentication to r failed"), "{msg}");
    }

    #[tokio::test(start_paused = true)]
    async fn retry_retries_transient_errors() {
        let mut calls = 0;
        let r = retry("r", "x", || {
            calls += 1;
            let n = calls;
            async move {
                if n < 3 {
                    Err(OciDistributionError::ServerError {
                        code: 503,
                        url: "u".into(),
                        message: "busy".into(),
                    })
                } else {
                    Ok(n)
                }
            }
        })
        .await
        .expect("eventually ok");
        assert_eq!(r, 3);
    }
}
