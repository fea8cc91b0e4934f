use super::*;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

struct Issuer {
    key: EncodingKey,
    jwks: String,
}

fn b64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let mut n = 0u32;
        for (i, b) in chunk.iter().enumerate() {
            n |= u32::from(*b) << (16 - 8 * i);
        }
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn issuer(kid: &str) -> Issuer {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let point = pair.public_key_raw();
    let jwks = json!({"keys": [{
        "kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
        "x": b64(&point[1..33]), "y": b64(&point[33..65]),
    }]})
    .to_string();
    Issuer {
        key: EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
        jwks,
    }
}

fn token(issuer: &Issuer, kid: &str, claims: serde_json::Value) -> String {
    let mut header = Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, &claims, &issuer.key).unwrap()
}

fn claims(aud: &str, exp_offset: i64, ns: &str) -> serde_json::Value {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    json!({
        "iss": "https://issuer.test", "aud": [aud], "exp": now + exp_offset, "iat": now,
        "sub": format!("system:serviceaccount:{ns}:sleep"),
        "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": "sleep", "uid": "u"}},
    })
}

fn authenticator(iss: &Issuer) -> JwtAuthenticator {
    let rule = json!({"issuer": "https://issuer.test", "jwks": iss.jwks}).to_string();
    JwtAuthenticator::from_rule_json(&rule, "cluster.local", &["istio-ca".to_owned()]).unwrap()
}

fn bearer(t: String) -> Credentials {
    Credentials {
        bearer: Some(t),
        ..Default::default()
    }
}

#[tokio::test]
async fn accepts_a_service_account_token() {
    let iss = issuer("k1");
    let a = authenticator(&iss);
    let id = a
        .authenticate(&bearer(token(
            &iss,
            "k1",
            claims("istio-ca", 600, "default"),
        )))
        .await
        .unwrap();
    assert_eq!(id.to_string(), "spiffe://cluster.local/ns/default/sa/sleep");
}

#[tokio::test]
async fn refuses_bad_tokens() {
    let iss = issuer("k1");
    let stranger = issuer("k1");
    let a = authenticator(&iss);
    let no_k8s = json!({"iss": "https://issuer.test", "aud": "istio-ca",
        "exp": time::OffsetDateTime::now_utc().unix_timestamp() + 60});
    let cases = [
        (
            "expired",
            token(&iss, "k1", claims("istio-ca", -60, "ns")),
            "expired",
        ),
        (
            "audience",
            token(&iss, "k1", claims("other", 600, "ns")),
            "audience",
        ),
        (
            "signature",
            token(&stranger, "k1", claims("istio-ca", 600, "ns")),
            "signature",
        ),
        (
            "unknown kid",
            token(&iss, "k9", claims("istio-ca", 600, "ns")),
            "key id",
        ),
        ("no k8s claims", token(&iss, "k1", no_k8s), "kubernetes.io"),
        ("garbage", "not.a.jwt".to_owned(), "malformed"),
    ];
    for (name, t, want) in cases {
        let err = a.authenticate(&bearer(t)).await.unwrap_err();
        assert!(err.to_string().contains(want), "{name}: {err}");
    }
    assert_eq!(
        a.authenticate(&Credentials::default()).await.unwrap_err(),
        AuthError::NotPresented("bearer token")
    );
}

#[test]
fn rule_configuration_errors() {
    assert!(matches!(
        JwtAuthenticator::from_rule_json("{", "td", &[]),
        Err(JwtConfigError::Rule(_))
    ));
    assert!(matches!(
        JwtAuthenticator::from_rule_json(r#"{"issuer":"x"}"#, "td", &[]),
        Err(JwtConfigError::NoKeys(_))
    ));
    assert!(matches!(
        JwtAuthenticator::from_rule_json(r#"{"issuer":"x","jwksUri":"https://a/b"}"#, "td", &[]),
        Err(JwtConfigError::UnsupportedUri(_))
    ));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, issuer("k").jwks).unwrap();
    let rule = json!({"issuer": "x", "jwks_uri": format!("file://{}", path.display())});
    JwtAuthenticator::from_rule_json(&rule.to_string(), "td", &["istio-ca".to_owned()]).unwrap();
}
