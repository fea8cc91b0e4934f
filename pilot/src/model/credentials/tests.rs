use super::*;

/// A self-signed certificate and its key, PEM.
fn pair(host: &str) -> (String, String) {
    let c = rcgen::generate_simple_self_signed(vec![host.to_owned()]).unwrap();
    (c.cert.pem(), c.signing_key.serialize_pem())
}

fn secret(data: &[(&str, &[u8])]) -> SecretData {
    SecretData {
        type_: "Opaque".into(),
        data: data
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect(),
    }
}

#[test]
fn resource_names_as_upstream() {
    let r = |name: &str| parse_resource_name(name, "gw-ns");
    let ok = |ns: &str, name: &str, raw: &str| {
        Ok(Some(SecretRef {
            resource_name: raw.into(),
            namespace: ns.into(),
            name: name.into(),
        }))
    };
    assert_eq!(
        r("kubernetes://my-cert"),
        ok("gw-ns", "my-cert", "kubernetes://my-cert")
    );
    assert_eq!(
        r("kubernetes://other/my-cert"),
        ok("other", "my-cert", "kubernetes://other/my-cert")
    );
    assert_eq!(
        r("kubernetes://my-cert-cacert"),
        ok("gw-ns", "my-cert-cacert", "kubernetes://my-cert-cacert")
    );
    // Upstream reads the first two parts of a longer path.
    assert_eq!(r("kubernetes://a/b/c"), ok("a", "b", "kubernetes://a/b/c"));
    assert_eq!(r("invalid://"), Ok(None));
    assert!(matches!(
        r("kubernetes://"),
        Err(CredentialError::BadName(_))
    ));
    assert!(matches!(
        r("kubernetes:///x"),
        Err(CredentialError::BadName(_))
    ));
    assert!(matches!(
        r("kubernetes-gateway://ns/x"),
        Err(CredentialError::Unsupported(..))
    ));
    assert!(matches!(
        r("configmap://ns/x"),
        Err(CredentialError::Unsupported(..))
    ));
    assert!(matches!(r("default"), Err(CredentialError::UnknownType(_))));
    assert!(matches!(
        r("file-cert:/a"),
        Err(CredentialError::UnknownType(_))
    ));
}

#[test]
fn related_secrets_pair_a_name_with_its_cacert() {
    let r = parse_resource_name("kubernetes://a", "ns")
        .unwrap()
        .unwrap();
    assert!(!r.ca_only());
    assert_eq!(
        r.related(),
        [SecretKey::new("ns", "a"), SecretKey::new("ns", "a-cacert")]
    );
    let r = parse_resource_name("kubernetes://a-cacert", "ns")
        .unwrap()
        .unwrap();
    assert!(r.ca_only());
    assert_eq!(
        r.related(),
        [SecretKey::new("ns", "a-cacert"), SecretKey::new("ns", "a")]
    );
}

#[test]
fn generic_keys_win_over_tls_keys() {
    let (c1, k1) = pair("generic");
    let (c2, k2) = pair("tls");
    let s = secret(&[
        ("cert", c1.as_bytes()),
        ("key", k1.as_bytes()),
        ("tls.crt", c2.as_bytes()),
        ("tls.key", k2.as_bytes()),
        ("tls.ocsp-staple", b"staple"),
        ("cacert", c1.as_bytes()),
        ("ca.crt", c2.as_bytes()),
    ]);
    let info = cert_info(&s).unwrap();
    assert_eq!(info.cert, c1.as_bytes());
    assert_eq!(info.key, k1.as_bytes());
    assert_eq!(info.staple, None, "the staple goes with tls.* keys only");
    assert_eq!(ca_info(&s).unwrap().cert, c1.as_bytes());

    let s = secret(&[
        ("tls.crt", c2.as_bytes()),
        ("tls.key", k2.as_bytes()),
        ("tls.ocsp-staple", b"staple"),
        ("ca.crt", c2.as_bytes()),
        ("ca.crl", b"crl"),
    ]);
    let info = cert_info(&s).unwrap();
    assert_eq!(
        (info.cert, info.staple),
        (c2.clone().into_bytes(), Some(b"staple".to_vec()))
    );
    let ca = ca_info(&s).unwrap();
    assert_eq!((ca.cert, ca.crl), (c2.into_bytes(), Some(b"crl".to_vec())));
}

#[test]
fn empty_generic_keys_fall_back_to_tls_keys() {
    let (c, k) = pair("tls");
    let s = secret(&[
        ("cert", b""),
        ("key", b""),
        ("tls.crt", c.as_bytes()),
        ("tls.key", k.as_bytes()),
    ]);
    assert_eq!(cert_info(&s).unwrap().cert, c.as_bytes());
}

#[test]
fn bad_secrets_say_what_is_wrong() {
    let (c, k) = pair("a");
    let (_, other_key) = pair("b");
    let cases: Vec<(SecretData, &str)> = vec![
        (
            secret(&[("cert", b""), ("key", b"")]),
            "found keys \"cert\" and \"key\", but they were empty",
        ),
        (
            secret(&[("a", b"1"), ("b", b"1"), ("c", b"1"), ("d", b"1")]),
            "found: a, b, c, and 1 more...",
        ),
        (
            secret(&[("tls.crt", b"junk"), ("tls.key", k.as_bytes())]),
            "invalid certificate in \"tls.crt\"",
        ),
        (
            secret(&[
                (
                    "tls.crt",
                    b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                ),
                ("tls.key", k.as_bytes()),
            ]),
            "invalid certificate in \"tls.crt\"",
        ),
        (
            secret(&[("tls.crt", c.as_bytes()), ("tls.key", b"junk")]),
            "invalid private key in \"tls.key\"",
        ),
        (
            secret(&[("tls.crt", c.as_bytes()), ("tls.key", other_key.as_bytes())]),
            "private key in \"tls.key\" does not match the certificate in \"tls.crt\"",
        ),
    ];
    for (s, want) in cases {
        let err = cert_info(&s).unwrap_err().to_string();
        assert!(err.contains(want), "{err:?} lacks {want:?}");
    }
    let err = ca_info(&secret(&[("tls.crt", c.as_bytes())]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("expected keys cacert or ca.crt; found: tls.crt"),
        "{err}"
    );
    let err = ca_info(&secret(&[("ca.crt", b"")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"ca.crt\", but it was empty"), "{err}");
    let err = ca_info(&secret(&[("ca.crt", b"not pem")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("invalid certificate in \"ca.crt\""), "{err}");
}

#[test]
fn cacert_reads_its_own_secret_then_the_base_secret() {
    let (c1, k1) = pair("a");
    let (c2, _) = pair("b");
    let secrets = Secrets::from_iter([
        (
            SecretKey::new("ns", "both"),
            secret(&[
                ("tls.crt", c1.as_bytes()),
                ("tls.key", k1.as_bytes()),
                ("ca.crt", c1.as_bytes()),
            ]),
        ),
        (
            SecretKey::new("ns", "split"),
            secret(&[("tls.crt", c1.as_bytes()), ("tls.key", k1.as_bytes())]),
        ),
        (
            SecretKey::new("ns", "split-cacert"),
            secret(&[("ca.crt", c2.as_bytes())]),
        ),
    ]);
    let get = |name: &str| {
        let r = parse_resource_name(name, "ns").unwrap().unwrap();
        resolve(&secrets, &r)
    };
    assert!(matches!(
        get("kubernetes://both"),
        Ok(Credential::Certificate(_))
    ));
    assert_eq!(
        get("kubernetes://both-cacert"),
        Ok(Credential::Ca(CaInfo {
            cert: c1.clone().into_bytes(),
            crl: None
        }))
    );
    assert_eq!(
        get("kubernetes://split-cacert"),
        Ok(Credential::Ca(CaInfo {
            cert: c2.into_bytes(),
            crl: None
        }))
    );
    assert_eq!(
        get("kubernetes://gone"),
        Err(CredentialError::NotFound(SecretKey::new("ns", "gone")))
    );
    assert_eq!(
        get("kubernetes://gone-cacert"),
        Err(CredentialError::NotFound(SecretKey::new("ns", "gone")))
    );
}

#[test]
fn access_as_upstream() {
    let r = |name: &str| parse_resource_name(name, "gw").unwrap().unwrap();
    let allowed = Access::Namespace {
        namespace: "gw".into(),
        may_read_secrets: Ok(()),
    };
    let refused = Access::Namespace {
        namespace: "gw".into(),
        may_read_secrets: Err("gw/sa is not authorized to read secrets".into()),
    };
    assert_eq!(allowed.check(&r("kubernetes://a")), Ok(()));
    assert_eq!(allowed.check(&r("kubernetes://gw/a")), Ok(()));
    assert!(matches!(
        allowed.check(&r("kubernetes://other/a")),
        Err(Denied::OtherNamespace { .. })
    ));
    assert!(matches!(
        allowed.check(&r("kubernetes://other/a-cacert")),
        Err(Denied::OtherNamespace { .. })
    ));
    // CA bundles are public within the namespace; keys need the right to read Secrets.
    assert_eq!(refused.check(&r("kubernetes://a-cacert")), Ok(()));
    assert_eq!(
        refused.check(&r("kubernetes://a")),
        Err(Denied::NotAuthorized(
            "gw/sa is not authorized to read secrets".into()
        ))
    );
    assert_eq!(
        Access::Unauthenticated.check(&r("kubernetes://gw/a-cacert")),
        Err(Denied::Unauthenticated)
    );
}
