//! The fetcher against a mirror on loopback, with Releases signed by a test key.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use super::*;
use crate::debian::lock::Locked;

/// How the mirror answers one path.
#[derive(Clone)]
struct Reply {
    body: Vec<u8>,
    /// Sent as `Content-Length`; more than the body makes a truncated response.
    length: u64,
}

impl Reply {
    fn full(body: impl Into<Vec<u8>>) -> Reply {
        let body = body.into();
        Reply {
            length: body.len() as u64,
            body,
        }
    }
}

/// A mirror on 127.0.0.1: serves fixed replies (404 for anything else), one request per
/// connection, and records the paths asked for.
struct Mirror {
    url: String,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Mirror {
    fn start(routes: BTreeMap<String, Reply>) -> Mirror {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = std::io::BufReader::new(conn.try_clone().expect("clone"));
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                // The rest of the request head.
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).map_or(true, |n| n == 0) || h == "\r\n" {
                        break;
                    }
                }
                seen.lock().expect("lock").push(path.clone());
                let (status, reply) = match routes.get(&path) {
                    Some(r) => ("200 OK", r.clone()),
                    None => ("404 Not Found", Reply::full("")),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    reply.length
                );
                let _ = conn.write_all(head.as_bytes());
                let _ = conn.write_all(&reply.body);
            }
        });
        Mirror { url, requests }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("lock").clone()
    }
}

/// A GnuPG home with the test archive key (`testdata/archive-test-key.asc`), which signs
/// Releases, and the keyring gpgv checks them against.
struct TestKey {
    home: tempfile::TempDir,
    keyring: PathBuf,
}

impl TestKey {
    fn new() -> TestKey {
        let home = tempfile::tempdir().expect("tempdir");
        let key =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("src/debian/testdata/archive-test-key.asc");
        let gpg = |args: &[&str]| {
            let out = Command::new("gpg")
                .arg("--homedir")
                .arg(home.path())
                .args(["--batch", "--quiet"])
                .args(args)
                .output()
                .expect("run gpg (install the gpg and gpg-agent packages)");
            assert!(
                out.status.success(),
                "gpg {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        };
        gpg(&["--import", key.to_str().expect("utf-8 path")]);
        let keyring = home.path().join("archive-test.gpg");
        std::fs::write(&keyring, gpg(&["--export"])).expect("write keyring");
        TestKey { home, keyring }
    }

    /// `text` clearsigned, as an `InRelease`.
    fn sign(&self, text: &str) -> Vec<u8> {
        let input = self.home.path().join("Release");
        std::fs::write(&input, text).expect("write");
        let out = Command::new("gpg")
            .arg("--homedir")
            .arg(self.home.path())
            .args([
                "--batch",
                "--quiet",
                "--yes",
                "--clearsign",
                "--output",
                "-",
            ])
            .arg(&input)
            .output()
            .expect("run gpg");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

impl Drop for TestKey {
    fn drop(&mut self) {
        // Signing started an agent for this home; it goes with it.
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(self.home.path())
            .args(["--kill", "gpg-agent"])
            .output();
    }
}

const PACKAGES: &str = "\
Package: demo
Version: 1.0-1
Architecture: amd64
Filename: pool/main/d/demo/demo_1.0-1_amd64.deb
Size: 4
SHA256: 9f64a747e1b97f131fabb6b447296c9b6f0201e79fb3c5356e6c77e89b6a806a
";

fn xz(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    liblzma::read::XzEncoder::new(text.as_bytes(), 6)
        .read_to_end(&mut out)
        .expect("xz");
    out
}

/// A Release of `suite` (as Codename, with Suite `oldstable`) covering `packages_xz`.
fn release(suite: &str, valid_until: &str, packages_xz: &[u8]) -> String {
    format!(
        "Origin: Test\nSuite: oldstable\nCodename: {suite}\nDate: Sat, 01 Jan 2000 00:00:00 UTC\n\
         Valid-Until: {valid_until}\nArchitectures: amd64\nComponents: main\nSHA256:\n \
         {} {} main/binary-amd64/Packages.xz\n",
        Sha256::of(packages_xz),
        packages_xz.len()
    )
}

fn fetcher(cache: &Path) -> Fetcher {
    Fetcher::new(cache, false)
        .expect("fetcher")
        .with_retry(Retry {
            attempts: 2,
            first_delay: Duration::from_millis(1),
        })
}

fn source(mirror: &Mirror, suite: &str) -> Vec<Source> {
    vec![Source {
        uri: mirror.url.clone(),
        suite: suite.into(),
    }]
}

const FAR_FUTURE: &str = "Fri, 01 Jan 2100 00:00:00 UTC";

#[test]
fn a_signed_current_release_gives_its_packages() {
    let key = TestKey::new();
    let packages = xz(PACKAGES);
    let mirror = Mirror::start(BTreeMap::from([
        (
            "/dists/bookworm/InRelease".to_string(),
            Reply::full(key.sign(&release("bookworm", FAR_FUTURE, &packages))),
        ),
        (
            "/dists/bookworm/main/binary-amd64/Packages.xz".to_string(),
            Reply::full(packages),
        ),
    ]));
    let cache = tempfile::tempdir().expect("tempdir");
    let pkgs = fetcher(cache.path())
        .indexes(&source(&mirror, "bookworm"), "amd64", &key.keyring)
        .expect("indexes");
    assert_eq!(pkgs.len(), 1);
    assert_eq!(pkgs[0].name, "demo");
    assert_eq!(pkgs[0].mirror, mirror.url);
}

#[test]
fn an_expired_release_is_refused_before_its_index_is_read() {
    let key = TestKey::new();
    let packages = xz(PACKAGES);
    let mirror = Mirror::start(BTreeMap::from([
        (
            "/dists/bookworm/InRelease".to_string(),
            Reply::full(key.sign(&release(
                "bookworm",
                "Mon, 01 Jan 2001 00:00:00 UTC",
                &packages,
            ))),
        ),
        (
            "/dists/bookworm/main/binary-amd64/Packages.xz".to_string(),
            Reply::full(packages),
        ),
    ]));
    let cache = tempfile::tempdir().expect("tempdir");
    let err = fetcher(cache.path())
        .indexes(&source(&mirror, "bookworm"), "amd64", &key.keyring)
        .unwrap_err();
    assert!(matches!(err, Error::Expired { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("/dists/bookworm/InRelease")
            && msg.contains("expired on Mon, 01 Jan 2001 00:00:00 UTC"),
        "{msg}"
    );
    assert_eq!(mirror.requests(), ["/dists/bookworm/InRelease"]);
}

#[test]
fn a_replayed_release_of_another_suite_is_refused() {
    let key = TestKey::new();
    let packages = xz(PACKAGES);
    // bookworm's own, validly signed Release served as bookworm-updates'.
    let mirror = Mirror::start(BTreeMap::from([(
        "/dists/bookworm-updates/InRelease".to_string(),
        Reply::full(key.sign(&release("bookworm", FAR_FUTURE, &packages))),
    )]));
    let cache = tempfile::tempdir().expect("tempdir");
    let err = fetcher(cache.path())
        .indexes(&source(&mirror, "bookworm-updates"), "amd64", &key.keyring)
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, Error::WrongSuite { .. })
            && msg.contains("Codename bookworm, not of bookworm-updates"),
        "{msg}"
    );
}

#[test]
fn a_release_signed_by_another_key_is_refused() {
    let key = TestKey::new();
    let packages = xz(PACKAGES);
    let mirror = Mirror::start(BTreeMap::from([(
        "/dists/bookworm/InRelease".to_string(),
        Reply::full(key.sign(&release("bookworm", FAR_FUTURE, &packages))),
    )]));
    let cache = tempfile::tempdir().expect("tempdir");
    let err = fetcher(cache.path())
        .indexes(
            &source(&mirror, "bookworm"),
            "amd64",
            Path::new(verify::DEBIAN_KEYRING),
        )
        .unwrap_err();
    assert!(matches!(err, Error::Signature { .. }), "{err:?}");
}

#[test]
fn an_index_that_differs_from_the_release_is_refused() {
    let key = TestKey::new();
    let packages = xz(PACKAGES);
    let other = xz(&PACKAGES.replace("demo", "evil"));
    let mirror = Mirror::start(BTreeMap::from([
        (
            "/dists/bookworm/InRelease".to_string(),
            Reply::full(key.sign(&release("bookworm", FAR_FUTURE, &packages))),
        ),
        (
            "/dists/bookworm/main/binary-amd64/Packages.xz".to_string(),
            Reply::full(other),
        ),
    ]));
    let cache = tempfile::tempdir().expect("tempdir");
    let err = fetcher(cache.path())
        .indexes(&source(&mirror, "bookworm"), "amd64", &key.keyring)
        .unwrap_err();
    assert!(
        matches!(err, Error::Checksum { .. } | Error::Size { .. }),
        "{err:?}"
    );
}

const DEB: &[u8] = b"!deb";

fn locked(mirror: &Mirror, body: &[u8]) -> Locked {
    Locked {
        name: "demo".into(),
        version: "1.0-1".into(),
        arch: "amd64".into(),
        sha256: Sha256::of(body),
        size: body.len() as u64,
        mirror: mirror.url.clone(),
        filename: "pool/demo.deb".into(),
        depends: vec![],
    }
}

/// Every file in the cache's `debs/`, partial downloads included.
fn cached(cache: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(cache.join("debs"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn a_deb_is_streamed_into_the_cache_and_then_read_from_it() {
    let mirror = Mirror::start(BTreeMap::from([(
        "/pool/demo.deb".to_string(),
        Reply::full(DEB),
    )]));
    let cache = tempfile::tempdir().expect("tempdir");
    let p = locked(&mirror, DEB);
    let f = fetcher(cache.path());
    let path = f.deb(&p).expect("download");
    assert_eq!(std::fs::read(&path).expect("read"), DEB);
    assert_eq!(cached(cache.path()), [format!("{}.deb", p.sha256)]);
    f.deb(&p).expect("cached");
    assert_eq!(mirror.requests().len(), 1, "the second use reads the cache");
    // A corrupted cache entry is fetched again.
    std::fs::write(&path, b"!bad").expect("corrupt");
    f.deb(&p).expect("replaced");
    assert_eq!(std::fs::read(&path).expect("read"), DEB);
    assert_eq!(mirror.requests().len(), 2);
}

#[test]
fn a_deb_with_other_content_leaves_nothing_in_the_cache() {
    let mirror = Mirror::start(BTreeMap::from([(
        "/pool/demo.deb".to_string(),
        Reply::full(b"!DEB".to_vec()),
    )]));
    let cache = tempfile::tempdir().expect("tempdir");
    let err = fetcher(cache.path())
        .deb(&locked(&mirror, DEB))
        .unwrap_err();
    assert!(matches!(err, Error::Checksum { .. }), "{err:?}");
    assert!(err.to_string().contains("/pool/demo.deb"), "{err}");
    assert_eq!(cached(cache.path()), Vec::<String>::new());
    assert_eq!(mirror.requests().len(), 1, "a mismatch is not retried");
}

#[test]
fn a_truncated_deb_is_retried_then_refused_leaving_nothing() {
    let body = vec![1u8; 300_000];
    let mirror = Mirror::start(BTreeMap::from([(
        "/pool/demo.deb".to_string(),
        Reply {
            body: body[..1000].to_vec(),
            length: body.len() as u64,
        },
    )]));
    let cache = tempfile::tempdir().expect("tempdir");
    let err = fetcher(cache.path())
        .deb(&locked(&mirror, &body))
        .unwrap_err();
    assert!(matches!(err, Error::Http { .. }), "{err:?}");
    assert_eq!(cached(cache.path()), Vec::<String>::new());
    assert_eq!(mirror.requests().len(), 2, "both attempts were made");
}

#[test]
fn a_deb_of_the_wrong_size_is_refused_leaving_nothing() {
    let mirror = Mirror::start(BTreeMap::from([(
        "/pool/demo.deb".to_string(),
        Reply::full(&DEB[..2]),
    )]));
    let cache = tempfile::tempdir().expect("tempdir");
    let err = fetcher(cache.path())
        .deb(&locked(&mirror, DEB))
        .unwrap_err();
    assert!(matches!(err, Error::Size { .. }), "{err:?}");
    assert!(err.to_string().contains("expected 4 bytes, got 2"), "{err}");
    assert_eq!(cached(cache.path()), Vec::<String>::new());
}

#[test]
fn offline_a_missing_deb_is_an_error_without_a_request() {
    let mirror = Mirror::start(BTreeMap::new());
    let cache = tempfile::tempdir().expect("tempdir");
    let err = Fetcher::new(cache.path(), true)
        .expect("fetcher")
        .deb(&locked(&mirror, DEB))
        .unwrap_err();
    assert!(err.to_string().contains("not in the cache"), "{err}");
    assert!(mirror.requests().is_empty());
}
