use super::*;
use rcgen::{CertificateParams, KeyPair, SanType};

fn csr_for(key: &KeyPair, sans: &[&str]) -> String {
    let mut params = CertificateParams::default();
    params.subject_alt_names = sans
        .iter()
        .map(|s| SanType::URI((*s).try_into().unwrap()))
        .collect();
    params.serialize_request(key).unwrap().pem().unwrap()
}

fn p256_csr() -> String {
    csr_for(
        &KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
        &["spiffe://cluster.local/ns/other/sa/admin"],
    )
}

/// Flips a bit in the signature (the last byte of the DER) and re-encodes.
fn tamper(pem: &str) -> String {
    let mut der = csr_der(pem).unwrap();
    let last = der.len() - 1;
    der[last] ^= 0x01;
    let body = super::super::root::pem_of(&der);
    body.replace("CERTIFICATE", "CERTIFICATE REQUEST")
}

#[test]
fn accepts_supported_keys() {
    let p256 = parse(&p256_csr()).unwrap();
    assert_eq!(p256.key, CsrKey::EcdsaP256);
    assert_eq!(
        p256.requested_sans,
        vec!["URI(spiffe://cluster.local/ns/other/sa/admin)"]
    );
    let p384 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    assert_eq!(parse(&csr_for(&p384, &[])).unwrap().key, CsrKey::EcdsaP384);
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(3);
    let rsa = crate::ca::keys::generate_rsa(2048, &mut rng).unwrap();
    assert_eq!(
        parse(&csr_for(&rsa.pair, &[])).unwrap().key,
        CsrKey::Rsa(2048)
    );
}

#[test]
fn refuses_bad_input_precisely() {
    let good = p256_csr();
    let huge = format!("{}{}", "A".repeat(1 << 20), good);
    type Check = fn(&CsrError) -> bool;
    let cases: Vec<(&str, String, Check)> =
        vec![
        ("empty", "  ".to_owned(), |e| matches!(e, CsrError::Empty)),
        ("garbage", "hello world".to_owned(), |e| matches!(e, CsrError::Pem(_))),
        (
            "certificate instead of CSR",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_owned(),
            |e| matches!(e, CsrError::Pem(_)),
        ),
        (
            "not DER inside",
            "-----BEGIN CERTIFICATE REQUEST-----\naGVsbG8=\n-----END CERTIFICATE REQUEST-----\n"
                .to_owned(),
            |e| matches!(e, CsrError::Parse(_)),
        ),
        ("1 MB", huge, |e| matches!(e, CsrError::TooLarge { .. })),
        ("bad signature", tamper(&good), |e| {
            matches!(e, CsrError::BadSignature)
        }),
        (
            "RSA 1024",
            include_str!("testdata/rsa1024.csr").to_owned(),
            |e| matches!(e, CsrError::RsaKeySize { bits: 1024 }),
        ),
        ("P-521", include_str!("testdata/p521.csr").to_owned(), |e| {
            matches!(e, CsrError::UnsupportedKey(_))
        }),
        (
            "Ed25519",
            include_str!("testdata/ed25519.csr").to_owned(),
            |e| matches!(e, CsrError::UnsupportedKey(_)),
        ),
    ];
    for (name, input, want) in cases {
        let err = parse(&input).expect_err(name);
        assert!(want(&err), "{name}: got {err:?}");
        assert!(!err.to_string().is_empty());
    }
}

#[test]
fn counts_modulus_bits() {
    assert_eq!(modulus_bits(&[0x00, 0x80, 0x00]), 16);
    assert_eq!(modulus_bits(&[0x01, 0xff]), 9);
    assert_eq!(modulus_bits(&[0, 0]), 0);
}
