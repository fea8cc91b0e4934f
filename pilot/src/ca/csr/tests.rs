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

/// Property tests of CSR parsing: random text, random DER in a PEM block, and cut or
/// corrupted valid requests are refused with a `CsrError`, never a panic; whole ones pass.
mod properties {
    use proptest::prelude::*;
    use proptest::sample::Index;

    use super::*;
    use crate::arbitrary::{self, corrupted, truncated};

    fn pem_of_der(der: &[u8]) -> String {
        super::super::super::root::pem_of(der).replace("CERTIFICATE", "CERTIFICATE REQUEST")
    }

    /// One valid request per run: key generation is the slow part.
    fn valid() -> &'static (String, Vec<u8>) {
        static VALID: std::sync::OnceLock<(String, Vec<u8>)> = std::sync::OnceLock::new();
        VALID.get_or_init(|| {
            let pem = p256_csr();
            let der = csr_der(&pem).expect("der");
            (pem, der)
        })
    }

    proptest! {
        #![proptest_config(arbitrary::config())]

        #[test]
        fn random_text_is_refused(text in "\\PC{0,400}") {
            prop_assert!(parse(&text).is_err());
        }

        #[test]
        fn random_der_is_refused(der in prop::collection::vec(any::<u8>(), 0..600)) {
            prop_assert!(parse(&pem_of_der(&der)).is_err());
        }

        #[test]
        fn a_cut_request_is_refused(at in any::<Index>()) {
            let (pem, der) = valid();
            let cut = truncated(der.clone(), at);
            let result = parse(&pem_of_der(&cut));
            prop_assert_eq!(result.is_ok(), cut.len() == der.len());
            // Cut PEM text: refused, unless the cut only dropped trailing whitespace.
            let text = String::from_utf8(truncated(pem.clone().into_bytes(), at)).expect("ascii");
            if parse(&text).is_ok() {
                prop_assert_eq!(text.trim_end(), pem.trim_end());
            }
        }

        #[test]
        fn a_corrupted_request_is_refused_or_unchanged(at in any::<Index>(), byte in any::<u8>()) {
            let (_, der) = valid();
            let changed = corrupted(der.clone(), at, byte);
            if let Ok(csr) = parse(&pem_of_der(&changed)) {
                // Only a change that leaves the signed request equivalent can pass.
                prop_assert_eq!(csr.key, CsrKey::EcdsaP256);
            }
        }
    }
}
