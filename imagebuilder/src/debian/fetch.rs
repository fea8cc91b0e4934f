//! Downloads: signed indexes and `.deb` files into a content-addressed cache.
//!
//! Nothing downloaded is trusted before it is checked, and nothing is held whole in memory:
//! each index and package is streamed to a temporary file while it is hashed, and used only
//! if its size and SHA-256 are those the signed Release (or the lock file) names. A `.deb`
//! is renamed into the cache only then, so a mismatch leaves nothing there.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tracing::{debug, info, warn};

use super::index::{self, Package};
use super::lock::Locked;
use super::release::Release;
use super::sha256::{HashingWriter, Sha256};
use super::sources::Source;
use super::verify;
use super::Error;

/// Largest `InRelease` read (Debian's are well under 1 MiB); it is read whole to verify it.
const MAX_INRELEASE: u64 = 16 << 20;

/// How downloads are retried after a transport error (never after a checksum mismatch).
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// Wait before the second attempt; doubled before each next one.
    pub first_delay: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 4,
            first_delay: Duration::from_secs(1),
        }
    }
}

/// Why one attempt failed: worth another try, or not.
enum Failure {
    Transient(String),
    Fatal(Error),
}

/// HTTP client with retries, and the `.deb` cache.
pub struct Fetcher {
    client: reqwest::blocking::Client,
    cache: PathBuf,
    offline: bool,
    retry: Retry,
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
            retry: Retry::default(),
        })
    }

    /// Replaces the retry policy.
    pub fn with_retry(self, retry: Retry) -> Self {
        Fetcher { retry, ..self }
    }

    /// Runs `attempt` until it succeeds, fails for good, or the attempts run out.
    fn retrying<T>(
        &self,
        url: &str,
        mut attempt: impl FnMut() -> Result<T, Failure>,
    ) -> Result<T, Error> {
        let mut delay = self.retry.first_delay;
        let mut last = String::new();
        for n in 0..self.retry.attempts.max(1) {
            if n > 0 {
                warn!(url, attempt = n + 1, error = %last, "retrying download");
                std::thread::sleep(delay);
                delay *= 2;
            }
            match attempt() {
                Ok(v) => return Ok(v),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Transient(e)) => last = e,
            }
        }
        Err(Error::Http {
            url: url.into(),
            reason: last,
        })
    }

    /// Sends a GET; the response's body is still to be read.
    fn send(&self, url: &str) -> Result<reqwest::blocking::Response, Failure> {
        match self.client.get(url).send() {
            // A 404 will not get better.
            Ok(resp) if resp.status() == reqwest::StatusCode::NOT_FOUND => {
                Err(Failure::Fatal(Error::Http {
                    url: url.into(),
                    reason: "404 Not Found".into(),
                }))
            }
            Ok(resp) => resp
                .error_for_status()
                .map_err(|e| Failure::Transient(e.to_string())),
            Err(e) => Err(Failure::Transient(e.to_string())),
        }
    }

    /// A small document, read whole: at most `limit` bytes.
    fn get_small(&self, url: &str, limit: u64) -> Result<Vec<u8>, Error> {
        self.retrying(url, || {
            let mut body = Vec::new();
            self.send(url)?
                .take(limit + 1)
                .read_to_end(&mut body)
                .map_err(|e| Failure::Transient(e.to_string()))?;
            if body.len() as u64 > limit {
                return Err(Failure::Fatal(Error::Http {
                    url: url.into(),
                    reason: format!("larger than {limit} bytes"),
                }));
            }
            Ok(body)
        })
    }

    /// Streams `url` into `file` (emptied first), hashing on the way; fails unless exactly
    /// `size` bytes with digest `want` arrived.
    fn download_into(
        &self,
        url: &str,
        want: &Sha256,
        size: u64,
        file: &mut File,
    ) -> Result<(), Error> {
        let disk = |e: std::io::Error| Failure::Fatal(Error::io(format!("saving {url}"), e));
        self.retrying(url, || {
            file.set_len(0).map_err(disk)?;
            file.rewind().map_err(disk)?;
            let resp = self.send(url)?;
            if let Some(len) = resp.content_length().filter(|len| *len != size) {
                return Err(Failure::Fatal(Error::Size {
                    what: url.into(),
                    expected: size,
                    actual: format!("{len} (Content-Length)"),
                }));
            }
            // One byte past `size` is enough to tell that the body is too long.
            let mut body = resp.take(size + 1);
            let mut out = HashingWriter::new(BufWriter::new(&mut *file));
            let mut buf = vec![0u8; 64 << 10];
            loop {
                let n = match body.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(Failure::Transient(format!("reading the body: {e}"))),
                };
                out.write_all(&buf[..n]).map_err(disk)?;
            }
            let (mut buffered, (got, len)) = out.finish();
            buffered.flush().map_err(disk)?;
            if len != size {
                let actual = if len > size {
                    format!("more than {size}")
                } else {
                    len.to_string()
                };
                return Err(Failure::Fatal(Error::Size {
                    what: url.into(),
                    expected: size,
                    actual,
                }));
            }
            if got != *want {
                return Err(Failure::Fatal(Error::Checksum {
                    what: url.into(),
                    expected: want.to_string(),
                    actual: got.to_string(),
                }));
            }
            Ok(())
        })
    }

    /// Fetches, verifies and parses the `main` `Packages` index of each source for `arch`.
    /// Each suite's `InRelease` must be signed by `keyring`, be the Release of that suite and
    /// be current (see [`Release::check`]).
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
            let inrelease = self.get_small(&url, MAX_INRELEASE)?;
            let signed = verify::verify_inrelease(&inrelease, keyring, &url)?;
            let release = Release::parse(&signed, &url)?;
            release.check(&url, &s.suite, SystemTime::now())?;
            let rel = format!("main/binary-{arch}/Packages.xz");
            let (want, size) = release
                .files
                .get(&rel)
                .ok_or_else(|| Error::NotInRelease(format!("{base}/{rel}")))?;
            let packages_url = format!("{base}/{rel}");
            let mut xz = tempfile::tempfile().map_err(|e| Error::io("a temporary file", e))?;
            self.download_into(&packages_url, want, *size, &mut xz)?;
            xz.rewind().map_err(|e| Error::io(&packages_url, e))?;
            let mut text = String::new();
            liblzma::read::XzDecoder::new(BufReader::new(xz))
                .read_to_string(&mut text)
                .map_err(|e| Error::io(&packages_url, e))?;
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
        // `Sha256` is hex only, so the name stays inside `dir`.
        let path = dir.join(format!("{}.deb", p.sha256));
        match File::open(&path).and_then(|f| Sha256::of_reader(BufReader::new(f))) {
            Ok((got, _)) if got == p.sha256 => return Ok(path),
            Ok(_) => warn!(path = %path.display(), "cached package has the wrong checksum"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warn!(path = %path.display(), error = %e, "cached package is unreadable"),
        }
        if self.offline {
            return Err(Error::NotCached(format!(
                "{}_{}_{}.deb (sha256 {})",
                p.name, p.version, p.arch, p.sha256
            )));
        }
        let url = format!("{}/{}", p.mirror, p.filename);
        info!(%url, "downloading");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(dir.display(), e))?;
        // Removed when dropped: a failed download leaves nothing behind.
        let mut tmp = tempfile::Builder::new()
            .prefix(".download-")
            .suffix(".partial")
            .tempfile_in(&dir)
            .map_err(|e| Error::io(dir.display(), e))?;
        self.download_into(&url, &p.sha256, p.size, tmp.as_file_mut())?;
        tmp.persist(&path)
            .map_err(|e| Error::io(path.display(), e.error))?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests;
