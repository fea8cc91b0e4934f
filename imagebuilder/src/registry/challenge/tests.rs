//! The credential check against registries on loopback: a TLS one (self-signed, as with
//! `--insecure`) and plain listeners that record what reaches them.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http::HeaderValue;
use oci_client::{Reference, RegistryOperation};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::policy::Policy;

fn options(registry: SocketAddr, plain_http: bool) -> PushOptions {
    PushOptions {
        out: "out".into(),
        registry: registry.to_string(),
        repositories: vec!["ns/repo".into()],
        extra_tags: vec![],
        plain_http,
        insecure: true,
        docker_config: None,
        policy: Policy {
            max_compressed_bytes: 0,
        },
    }
}

fn basic() -> RegistryAuth {
    RegistryAuth::Basic("pusher".into(), "s3cret".into())
}

/// Reads a request head (or, from a TLS client, its first bytes).
async fn read_head(conn: &mut (impl AsyncRead + Unpin)) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
        // A TLS handshake is not an HTTP head; its first record is enough.
        if got.first() == Some(&0x16) {
            break;
        }
    }
    got
}

/// What reached a listener, one entry per connection.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Vec<u8>>>>);

impl Seen {
    fn all(&self) -> Vec<String> {
        let seen = self.0.lock().expect("lock");
        seen.iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect()
    }
}

/// A plain TCP listener answering every connection with `reply`.
async fn plain_listener(reply: &'static str) -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Seen::default();
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let head = read_head(&mut conn).await;
            record.0.lock().expect("lock").push(head);
            let _ = conn.write_all(reply.as_bytes()).await;
            let _ = conn.shutdown().await;
        }
    });
    (addr, seen)
}

/// A registry over TLS answering every request with `reply`.
async fn tls_registry(reply: String) -> (SocketAddr, Seen) {
    crate::tls::install_crypto_provider();
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("certificate");
    let der = rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der());
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], der.into())
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Seen::default();
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let Ok(mut conn) = acceptor.accept(tcp).await else {
                continue;
            };
            let head = read_head(&mut conn).await;
            record.0.lock().expect("lock").push(head);
            let _ = conn.write_all(reply.as_bytes()).await;
            let _ = conn.shutdown().await;
        }
    });
    (addr, seen)
}

fn challenge_reply(realm: &str) -> String {
    format!(
        "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"{realm}\",service=\"test\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
}

const TOKEN: &str = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\nConnection: close\r\n\r\n{\"token\":\"tok\"}";

#[test]
fn realms_that_are_not_https_are_found() {
    let h = |s: &'static str| HeaderValue::from_static(s);
    for (headers, want) in [
        (
            vec![h(
                r#"Bearer realm="https://auth.example/token",service="r""#,
            )],
            None,
        ),
        (vec![h(r#"Basic realm="Registry Realm""#)], None),
        (
            vec![h(r#"Bearer realm="http://auth.example/token",service="r""#)],
            Some("http://auth.example/token"),
        ),
        (vec![h(r#"bearer REALM="HTTP://a/t""#)], Some("HTTP://a/t")),
        (vec![h(r#"Bearer realm="/token""#)], Some("/token")),
        (
            vec![h(r#"Basic realm="x", Bearer realm="http://a/t""#)],
            Some("http://a/t"),
        ),
        (
            vec![
                h(r#"Bearer realm="https://a/t""#),
                h(r#"Bearer realm="http://b/t""#),
            ],
            Some("http://b/t"),
        ),
    ] {
        assert_eq!(plain_realm(&headers).as_deref(), want, "{headers:?}");
    }
}

#[tokio::test]
async fn oci_client_alone_sends_the_password_to_a_plain_http_realm() {
    // Why `check` exists: an HTTPS registry whose challenge names an http:// realm.
    let (realm, realm_seen) = plain_listener(TOKEN).await;
    let (reg, _) = tls_registry(challenge_reply(&format!("http://{realm}/token"))).await;
    let client = crate::registry::push::client(&options(reg, false)).expect("client");
    let image = Reference::with_tag(reg.to_string(), "ns/repo".into(), "latest".into());
    client
        .auth(&image, &basic(), RegistryOperation::Push)
        .await
        .expect("auth");
    let seen = realm_seen.all();
    // base64("pusher:s3cret")
    assert!(
        seen.len() == 1 && seen[0].contains("cHVzaGVyOnMzY3JldA=="),
        "{seen:?}"
    );
}

#[tokio::test]
async fn a_plain_http_token_realm_is_refused_before_anything_is_sent() {
    let (realm, realm_seen) = plain_listener(TOKEN).await;
    let (reg, reg_seen) = tls_registry(challenge_reply(&format!("http://{realm}/token"))).await;
    let err = check(&options(reg, false), &basic()).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, Error::PlainHttpCredentials { .. })
            && msg.contains(&format!("to http://{realm}/token"))
            && msg.contains("--plain-http"),
        "{msg}"
    );
    assert!(realm_seen.all().is_empty());
    let probe = reg_seen.all();
    assert!(
        probe.len() == 1
            && probe[0].starts_with("GET /v2/ ")
            && !probe[0].to_ascii_lowercase().contains("authorization"),
        "{probe:?}"
    );
}

#[tokio::test]
async fn a_redirect_to_plain_http_is_refused() {
    let (plain, plain_seen) = plain_listener(TOKEN).await;
    let (reg, _) = tls_registry(format!(
        "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://{plain}/v2/\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    ))
    .await;
    let err = check(&options(reg, false), &basic()).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("to http://{plain}/v2/")) && msg.contains("redirects there"),
        "{msg}"
    );
    assert!(plain_seen.all().is_empty());
}

#[tokio::test]
async fn https_realms_and_basic_challenges_pass() {
    for reply in [
        challenge_reply("https://auth.example/token"),
        "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"r\"\r\nContent-Length: 0\r\n\r\n"
            .to_string(),
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}".to_string(),
    ] {
        let (reg, _) = tls_registry(reply.clone()).await;
        check(&options(reg, false), &basic())
            .await
            .unwrap_or_else(|e| panic!("{reply}: {e}"));
    }
}

#[tokio::test]
async fn a_plain_http_registry_without_the_flag_gets_no_credentials() {
    let (reg, seen) = plain_listener("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n").await;
    let err = check(&options(reg, false), &basic()).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, Error::Unreachable { .. }) && msg.contains("needs --plain-http"),
        "{msg}"
    );
    let seen = seen.all();
    // Only a TLS handshake reached it.
    assert!(
        !seen.is_empty() && seen.iter().all(|s| s.as_bytes().first() == Some(&0x16)),
        "{seen:?}"
    );
}

#[tokio::test]
async fn nothing_is_checked_for_anonymous_pushes_or_with_plain_http() {
    // A listener that would record a probe.
    let (reg, seen) = plain_listener("HTTP/1.1 400 Bad Request\r\n\r\n").await;
    check(&options(reg, false), &RegistryAuth::Anonymous)
        .await
        .expect("anonymous");
    check(&options(reg, true), &basic())
        .await
        .expect("--plain-http");
    assert!(seen.all().is_empty());
}
