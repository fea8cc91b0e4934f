use super::*;

fn opts(ttl: Duration) -> SelfSignedOptions {
    SelfSignedOptions {
        trust_domain: "cluster.local".to_owned(),
        ttl,
        key_type: KeyType::EcdsaP256,
    }
}

#[test]
fn self_signed_root_survives_restart_in_five_key_layout() {
    let dir = tempfile::tempdir().unwrap();
    let year = Duration::from_secs(365 * 24 * 3600);
    let first = load_or_create_self_signed(Some(dir.path()), &opts(year)).unwrap();
    for f in [CA_CERT, CA_KEY, ROOT_CERT, CERT_CHAIN, KEY] {
        assert!(dir.path().join(f).is_file(), "{f}");
    }
    assert_eq!(
        std::fs::read_to_string(dir.path().join(CERT_CHAIN)).unwrap(),
        ""
    );
    let second = load_or_create_self_signed(Some(dir.path()), &opts(year)).unwrap();
    assert_eq!(first.ca_cert_pem, second.ca_cert_pem);
    assert_eq!(first.roots, second.roots);
    let der = der_of(&first.ca_cert_pem, "t").unwrap();
    let (_, x509) = X509Certificate::from_der(&der).unwrap();
    assert!(x509.is_ca());
    assert_eq!(x509.subject().to_string(), "O=cluster.local");
}

#[test]
fn rotation_keeps_key_subject_and_key_id() {
    let old = load_or_create_self_signed(None, &opts(Duration::from_secs(100))).unwrap();
    let now = OffsetDateTime::now_utc();
    assert!(!needs_rotation(&old.ca_cert_pem, now, 20));
    assert!(needs_rotation(
        &old.ca_cert_pem,
        now + Duration::from_secs(90),
        20
    ));
    let new = rotate(&old, &opts(Duration::from_secs(1000))).unwrap();
    assert_ne!(new.ca_cert_pem, old.ca_cert_pem);
    assert_eq!(
        new.roots,
        vec![new.ca_cert_pem.clone(), old.ca_cert_pem.clone()]
    );
    let parse = |pem: &str| der_of(pem, "t").unwrap();
    let (o, n) = (parse(&old.ca_cert_pem), parse(&new.ca_cert_pem));
    let (_, o) = X509Certificate::from_der(&o).unwrap();
    let (_, n) = X509Certificate::from_der(&n).unwrap();
    assert_eq!(o.subject().as_raw(), n.subject().as_raw());
    assert_eq!(o.public_key().raw, n.public_key().raw);
    let ski = |c: &X509Certificate<'_>| {
        c.extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) => {
                    Some(k.0.to_vec())
                }
                _ => None,
            })
    };
    assert_eq!(ski(&o), ski(&n));
    assert!(ski(&o).is_some());
}

#[test]
fn plugged_bundle_must_be_complete_and_consistent() {
    let dir = tempfile::tempdir().unwrap();
    assert!(load_plugged(dir.path()).unwrap().is_none());
    let root = load_or_create_self_signed(None, &opts(Duration::from_secs(1000))).unwrap();
    std::fs::write(dir.path().join(CA_KEY), &root.key.pem).unwrap();
    let err = load_plugged(dir.path()).unwrap_err();
    assert!(matches!(err, Error::IncompleteBundle { .. }), "{err}");
    for f in [CA_CERT, ROOT_CERT, CERT_CHAIN] {
        std::fs::write(dir.path().join(f), &root.ca_cert_pem).unwrap();
    }
    let b = load_plugged(dir.path()).unwrap().unwrap();
    assert_eq!(b.mode, Mode::Plugged);
    assert!(b.intermediates.is_empty());
    // A key that does not belong to the certificate.
    let other = keys::generate(KeyType::EcdsaP256).unwrap();
    std::fs::write(dir.path().join(CA_KEY), &other.pem).unwrap();
    assert!(matches!(
        load_plugged(dir.path()).unwrap_err(),
        Error::BadKey { .. }
    ));
}

#[test]
fn pem_encoding_round_trips() {
    let root = load_or_create_self_signed(None, &opts(Duration::from_secs(1000))).unwrap();
    let der = der_of(&root.ca_cert_pem, "t").unwrap();
    assert_eq!(pem_of(&der), root.ca_cert_pem);
}
