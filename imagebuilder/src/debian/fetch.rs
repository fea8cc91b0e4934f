//! Downloads: signed indexes and `.deb` files into a content-addressed cache.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tracing::{debug, info, warn};

use super::index::{self, Package};
use super::lock::Locked;
use super::sources::Source;
use super::verify;
use super::Error;

/// Hex SHA-256 of a byte slice.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// HTTP client with retries, and the `.deb` cache.
pub struct Fetcher {
    client: reqwest::blocking::Client,
    cache: PathBuf,
    offline: bool,
}

impl Fetcher {
    pub fn new(cache: &Path, offline: bool) -> Result<Self, Error> {
        crate::tls::install_crypto_provider();
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(300))
            .build()
            .map_err(|e| Error::Client(e.to_string()))?;
        Ok(Fetcher {
            client,
            cache: cache.to_path_buf(),
            offline,
        })
    }

    fn get(&self, url: &str) -> Result<Vec<u8>, Error> {
        let mut last = String::new();
        for attempt in 0..4u32 {
            if attempt > 0 {
                let wait = Duration::from_millis(500 << attempt);
                warn!(url, attempt, error = %last, "retrying download");
                std::thread::sleep(wait);
            }
            match self.client.get(url).send() {
                // A 404 will not get better.
                Ok(resp) if resp.status() == reqwest::StatusCode::NOT_FOUND => {
                    return Err(Error::Http {
                        url: url.into(),
                        reason: "404 Not Found".into(),
                    })
                }
                Ok(resp) => match resp.error_for_status().and_then(|r| r.bytes()) {
                    Ok(body) => return Ok(body.to_vec()),
                    Err(e) => last = e.to_string(),
                },
                Err(e) => last = e.to_string(),
            }
        }
        Err(Error::Http {
            url: url.into(),
            reason: last,
        })
    }

    /// Fetches, verifies and parses the `main` amd64 `Packages` index of each source.
    pub fn indexes(
        &self,
        sources: &[Source],
        arch: &str,
        keyring: &Path,
    ) -> Result<Vec<Package>, Error> {
        if self.offline {
            return Err(Error::NotCached(
                "the Packages indexes (the lock file does not match the requested packages)".into(),
            ));
        }
        let mut all = Vec::new();
        for s in sources {
            let base = format!("{}/dists/{}", s.uri, s.suite);
            let url = format!("{base}/InRelease");
            info!(%url, "fetching index");
            let signed = verify::verify_inrelease(&self.get(&url)?, keyring, &url)?;
            let files = index::release_sha256(&signed);
            let rel = format!("main/binary-{arch}/Packages.xz");
            let (want, _) = files
                .get(&rel)
                .ok_or_else(|| Error::NotInRelease(format!("{base}/{rel}")))?;
            let xz = self.get(&format!("{base}/{rel}"))?;
            let got = sha256_hex(&xz);
            if &got != want {
                return Err(Error::Checksum {
                    what: format!("{base}/{rel}"),
                    expected: want.clone(),
                    actual: got,
                });
            }
            let mut text = String::new();
            liblzma::read::XzDecoder::new(&xz[..])
                .read_to_string(&mut text)
                .map_err(|e| Error::io(format!("{base}/{rel}"), e))?;
            let pkgs = index::parse_packages(&text, &s.uri);
            debug!(suite = %s.suite, packages = pkgs.len(), "parsed index");
            all.extend(pkgs);
        }
        Ok(all)
    }

    /// Path of a package in the cache, downloading it unless offline. The SHA-256 is checked
    /// on every use, so a corrupted cache entry is replaced (online) or reported (offline).
    pub fn deb(&self, p: &Locked) -> Result<PathBuf, Error> {
        let dir = self.cache.join("debs");
        let path = dir.join(format!("{}.deb", p.sha256));
        if let Ok(data) = std::fs::read(&path) {
            if sha256_hex(&data) == p.sha256 {
                return Ok(path);
            }
            warn!(path = %path.display(), "cached package has the wrong checksum");
        }
        if self.offline {
            return Err(Error::NotCached(format!(
                "{}_{}_{}.deb (sha256 {})",
                p.name, p.version, p.arch, p.sha256
            )));
        }
        let url = format!("{}/{}", p.mirror, p.filename);
        info!(%url, "downloading");
        let data = self.get(&url)?;
        let got = sha256_hex(&data);
        if got != p.sha256 {
            return Err(Error::Checksum {
                what: url,
                expected: p.sha256.clone(),
                actual: got,
            });
        }
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(dir.display(), e))?;
        let tmp = dir.join(format!(".{}.partial", p.sha256));
        std::fs::write(&tmp, &data).map_err(|e| Error::io(tmp.display(), e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(path.display(), e))?;
        Ok(path)
    }
}
