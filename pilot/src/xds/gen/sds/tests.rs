use prost::Message;

use super::*;
use crate::config::secrets::{SecretData, SecretKey};

fn pair(host: &str) -> (String, String) {
    let c = rcgen::generate_simple_self_signed(vec![host.to_owned()]).unwrap();
    (c.cert.pem(), c.signing_key.serialize_pem())
}

fn tls(cert: &str, key: &str, ca: Option<&str>) -> SecretData {
    let mut data = std::collections::BTreeMap::from([
        ("tls.crt".to_owned(), cert.as_bytes().to_vec()),
        ("tls.key".to_owned(), key.as_bytes().to_vec()),
    ]);
    if let Some(ca) = ca {
        data.insert("ca.crt".into(), ca.as_bytes().to_vec());
    }
    SecretData {
        type_: "kubernetes.io/tls".into(),
        data,
    }
}

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

fn gateway(namespace: &str) -> Access {
    Access::Namespace {
        namespace: namespace.into(),
        may_read_secrets: Ok(()),
    }
}

fn decode(r: &Resource) -> Secret {
    assert_eq!(r.body.type_url, crate::xds::types::SECRET);
    Secret::decode(r.body.value.as_slice()).unwrap()
}

fn inline_bytes(d: &Option<DataSource>) -> Vec<u8> {
    match d.as_ref().and_then(|d| d.specifier.clone()) {
        Some(Specifier::InlineBytes(b)) => b,
        other => panic!("want inline bytes, got {other:?}"),
    }
}

#[test]
fn serves_certificates_and_ca_bundles_in_the_proxys_namespace() {
    let (cert, key) = pair("gw.example.com");
    let (ca, _) = pair("ca");
    let store = Secrets::from_iter([
        (SecretKey::new("gw", "my-cert"), tls(&cert, &key, Some(&ca))),
        (SecretKey::new("other", "theirs"), tls(&cert, &key, None)),
    ]);
    let sub = Subscription::of([
        "kubernetes://my-cert",
        "kubernetes://my-cert-cacert",
        "kubernetes://gw/my-cert",
        "kubernetes://other/theirs",
        "kubernetes://missing",
        "bogus",
        "invalid://",
    ]);
    let out = secrets(&store, &gateway("gw"), &sub, now());
    let names: Vec<&str> = out.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "kubernetes://gw/my-cert",
            "kubernetes://my-cert",
            "kubernetes://my-cert-cacert"
        ]
    );
    let s = decode(&out.resources[1]);
    assert_eq!(s.name, "kubernetes://my-cert");
    let Some(secret::Type::TlsCertificate(t)) = s.r#type else {
        panic!("want a certificate: {s:?}")
    };
    assert_eq!(inline_bytes(&t.certificate_chain), cert.as_bytes());
    assert_eq!(inline_bytes(&t.private_key), key.as_bytes());
    let s = decode(&out.resources[2]);
    let Some(secret::Type::ValidationContext(v)) = s.r#type else {
        panic!("want a validation context: {s:?}")
    };
    assert_eq!(inline_bytes(&v.trusted_ca), ca.as_bytes());

    let errors: Vec<String> = out.errors.iter().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(
        errors
            .iter()
            .any(|e| e.contains("secret gw/missing not found")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("bogus: unknown resource type")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(
            |e| e.contains("unauthorized certificates kubernetes://other/theirs")
                && e.contains("ReferenceGrant")
        ),
        "{errors:?}"
    );
}

#[test]
fn nothing_for_unauthenticated_proxies_or_empty_subscriptions() {
    let (cert, key) = pair("a");
    let store = Secrets::from_iter([(SecretKey::new("gw", "a"), tls(&cert, &key, None))]);
    let out = secrets(
        &store,
        &Access::Unauthenticated,
        &Subscription::of(["kubernetes://gw/a"]),
        now(),
    );
    assert!(out.resources.is_empty());
    assert_eq!(out.errors, [SdsError::Unauthenticated]);
    for sub in [
        Subscription::Wildcard,
        Subscription::of(Vec::<String>::new()),
    ] {
        let out = secrets(&store, &gateway("gw"), &sub, now());
        assert!(out.resources.is_empty() && out.errors.is_empty());
    }
}

#[test]
fn a_broken_secret_leaves_the_others_served() {
    let (cert, key) = pair("a");
    let store = Secrets::from_iter([
        (SecretKey::new("gw", "good"), tls(&cert, &key, None)),
        (
            SecretKey::new("gw", "bad"),
            tls("not a certificate", &key, None),
        ),
    ]);
    let out = secrets(
        &store,
        &gateway("gw"),
        &Subscription::of(["kubernetes://good", "kubernetes://bad"]),
        now(),
    );
    assert_eq!(out.resources.len(), 1);
    assert_eq!(out.resources[0].name, "kubernetes://good");
    assert!(out.errors[0]
        .to_string()
        .starts_with("kubernetes://bad: invalid certificate in \"tls.crt\""));
}

#[test]
fn denials_are_reported_once_with_at_most_three_names() {
    assert_eq!(at_most(&["a", "b"], 3), "a, b");
    assert_eq!(
        at_most(&["a", "b", "c", "d", "e"], 3),
        "a, b, c, and 2 others"
    );
    let refused = Access::Namespace {
        namespace: "gw".into(),
        may_read_secrets: Err("gw/sa is not authorized to read secrets".into()),
    };
    let out = secrets(
        &Secrets::default(),
        &refused,
        &Subscription::of(["kubernetes://a", "kubernetes://b"]),
        now(),
    );
    assert_eq!(out.errors.len(), 1);
    assert!(out.errors[0]
        .to_string()
        .contains("kubernetes://a, kubernetes://b: gw/sa is not authorized"));
}

#[test]
fn expired_certificates_are_served_with_a_warning() {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["old.example.com".to_owned()]).unwrap();
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(10);
    params.not_after = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    let cert = params.self_signed(&key).unwrap().pem();
    let store = Secrets::from_iter([(
        SecretKey::new("gw", "old"),
        tls(&cert, &key.serialize_pem(), Some(&cert)),
    )]);
    let sub = Subscription::of(["kubernetes://old", "kubernetes://old-cacert"]);
    let out = secrets(&store, &gateway("gw"), &sub, now());
    assert_eq!(out.resources.len(), 2, "served anyway, as upstream");
    assert_eq!(out.errors.len(), 2);
    for e in &out.errors {
        assert!(
            e.to_string()
                .contains("certificate is expired or not yet valid"),
            "{e}"
        );
    }
    let later = secrets(
        &store,
        &gateway("gw"),
        &sub,
        now() - time::Duration::days(5),
    );
    assert!(later.errors.is_empty(), "valid five days ago");
}
