use super::*;
use crate::ca::keys::KeyType;
use crate::ca::root::SelfSignedOptions;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

fn authority() -> Authority {
    let opts = SelfSignedOptions {
        trust_domain: "cluster.local".to_owned(),
        ttl: Duration::from_secs(10 * 365 * 24 * 3600),
        key_type: KeyType::EcdsaP256,
    };
    let bundle = root::load_or_create_self_signed(None, &opts).unwrap();
    Authority::new(bundle, TtlPolicy::default(), "cluster.local").unwrap()
}

fn csr(san: &str) -> ValidCsr {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![SanType::URI(san.try_into().unwrap())];
    let pem = params.serialize_request(&key).unwrap().pem().unwrap();
    crate::ca::csr::parse(&pem).unwrap()
}

#[test]
fn san_is_the_callers_identity_not_the_csrs() {
    let ca = authority();
    let caller = Identity::new("cluster.local", "default", "bookinfo");
    let chain = ca
        .sign_workload(
            &csr("spiffe://cluster.local/ns/istio-system/sa/istiod"),
            &caller,
            Duration::from_secs(3600),
        )
        .unwrap();
    assert_eq!(chain.len(), 2, "leaf and root");
    assert_eq!(chain[1], ca.trust_bundle().roots[0]);
    let der = root::der_of(&chain[0], "leaf").unwrap();
    let (_, leaf) = X509Certificate::from_der(&der).unwrap();
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    assert!(san.critical, "SAN is critical when the subject is empty");
    let uris: Vec<_> = san
        .value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::URI(u) => u.to_string(),
            other => panic!("unexpected SAN {other:?}"),
        })
        .collect();
    assert_eq!(uris, vec!["spiffe://cluster.local/ns/default/sa/bookinfo"]);
    let v = leaf.validity();
    assert_eq!(v.not_after.timestamp() - v.not_before.timestamp(), 3600);
    assert!(!leaf.is_ca());
}

#[test]
fn ttl_policy() {
    let ca = authority();
    assert_eq!(ca.ttl_for(0).unwrap(), Duration::from_secs(24 * 3600));
    assert_eq!(ca.ttl_for(-5).unwrap(), Duration::from_secs(24 * 3600));
    assert_eq!(ca.ttl_for(60).unwrap(), Duration::from_secs(60));
    let max = 90 * 24 * 3600;
    assert!(ca.ttl_for(max).is_ok());
    assert!(matches!(ca.ttl_for(max + 1), Err(Error::TtlTooLong { .. })));
}

#[test]
fn replace_announces_new_roots() {
    let ca = authority();
    let rx = ca.subscribe();
    let before = ca.trust_bundle();
    let opts = SelfSignedOptions {
        trust_domain: "cluster.local".to_owned(),
        ttl: Duration::from_secs(1000),
        key_type: KeyType::EcdsaP256,
    };
    let rotated = ca.with_bundle(|b| root::rotate(b, &opts)).unwrap();
    ca.replace(rotated).unwrap();
    assert!(rx.has_changed().unwrap());
    let after = ca.trust_bundle();
    assert_eq!(after.roots.len(), 2);
    assert_eq!(after.roots[1], before.roots[0]);
}

#[test]
fn serving_certificate_has_dns_names() {
    let ca = authority();
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let names = vec!["istiod.istio-system.svc".to_owned()];
    let chain = ca
        .sign_serving(&names, &key, Duration::from_secs(3600))
        .unwrap();
    let der = root::der_of(&chain[0], "leaf").unwrap();
    let (_, leaf) = X509Certificate::from_der(&der).unwrap();
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    assert!(matches!(
        san.value.general_names[0],
        GeneralName::DNSName("istiod.istio-system.svc")
    ));
}

#[test]
fn serving_certificate_hosts_that_are_addresses_are_ip_sans() {
    let ca = authority();
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let hosts = [
        "127.0.0.1",
        "::1",
        "istiod.istio-system.svc",
        "spiffe://cluster.local/ns/istio-system/sa/istiod",
    ]
    .map(str::to_owned);
    let chain = ca
        .sign_serving(&hosts, &key, Duration::from_secs(3600))
        .unwrap();
    let der = root::der_of(&chain[0], "leaf").unwrap();
    let (_, leaf) = X509Certificate::from_der(&der).unwrap();
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    let names = &san.value.general_names;
    assert_eq!(names.len(), 4, "{names:?}");
    assert!(
        matches!(names[0], GeneralName::IPAddress(&[127, 0, 0, 1])),
        "{names:?}"
    );
    let mut v6 = [0u8; 16];
    v6[15] = 1;
    assert!(
        matches!(names[1], GeneralName::IPAddress(b) if b == v6),
        "{names:?}"
    );
    assert!(
        matches!(names[2], GeneralName::DNSName("istiod.istio-system.svc")),
        "{names:?}"
    );
    assert!(
        matches!(
            names[3],
            GeneralName::URI("spiffe://cluster.local/ns/istio-system/sa/istiod")
        ),
        "{names:?}"
    );
}
