use serde_json::json;

use super::*;
use crate::testing::jwt::{service_account_claims, Issuer};

const ISSUER: &str = "https://issuer.test";

fn claims(aud: &str, ttl_secs: i64, ns: &str) -> serde_json::Value {
    service_account_claims(ISSUER, aud, ns, "sleep", ttl_secs)
}

fn authenticator(iss: &Issuer) -> JwtAuthenticator {
    let rule = json!({"issuer": ISSUER, "jwks": iss.jwks()}).to_string();
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
    let iss = Issuer::new("k1");
    let a = authenticator(&iss);
    let id = a
        .authenticate(&bearer(iss.sign(&claims("istio-ca", 600, "default"))))
        .await
        .unwrap();
    assert_eq!(id.to_string(), "spiffe://cluster.local/ns/default/sa/sleep");
}

#[tokio::test]
async fn refuses_bad_tokens() {
    let iss = Issuer::new("k1");
    let stranger = Issuer::new("k1");
    let a = authenticator(&iss);
    let no_k8s = json!({"iss": ISSUER, "aud": "istio-ca",
        "exp": time::OffsetDateTime::now_utc().unix_timestamp() + 60});
    let cases = [
        (
            "expired",
            iss.sign(&claims("istio-ca", -60, "ns")),
            "expired",
        ),
        (
            "audience",
            iss.sign(&claims("other", 600, "ns")),
            "audience",
        ),
        (
            "signature",
            stranger.sign(&claims("istio-ca", 600, "ns")),
            "signature",
        ),
        (
            "unknown kid",
            iss.sign_as("k9", &claims("istio-ca", 600, "ns")),
            "key id",
        ),
        ("no k8s claims", iss.sign(&no_k8s), "kubernetes.io"),
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

#[tokio::test]
async fn not_before_is_checked_with_the_expiry_skew_allowance() {
    let iss = Issuer::new("k1");
    let a = authenticator(&iss);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let with_nbf = |nbf: i64| {
        let mut c = claims("istio-ca", 600, "ns");
        c["nbf"] = json!(nbf);
        iss.sign(&c)
    };
    // Not yet valid: by a minute, and by more than the allowance of `exp` (none) only.
    for nbf in [
        now + 60,
        now + 5 + i64::try_from(CLOCK_SKEW_LEEWAY_SECS).expect("small"),
    ] {
        let err = a.authenticate(&bearer(with_nbf(nbf))).await.unwrap_err();
        assert!(
            err.to_string().contains("not yet valid"),
            "nbf {nbf}: {err}"
        );
    }
    let id = a.authenticate(&bearer(with_nbf(now - 60))).await;
    assert_eq!(
        id.map(|i| i.to_string()),
        Ok("spiffe://cluster.local/ns/ns/sa/sleep".to_owned())
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
    std::fs::write(&path, Issuer::new("k").jwks()).unwrap();
    let rule = json!({"issuer": "x", "jwks_uri": format!("file://{}", path.display())});
    JwtAuthenticator::from_rule_json(&rule.to_string(), "td", &["istio-ca".to_owned()]).unwrap();
}
