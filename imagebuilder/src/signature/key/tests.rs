use super::*;

/// A cheap scrypt cost for tests that do not check the cost itself.
const TEST_LOG_N: u8 = 10;

fn envelope_of(pem: &str) -> serde_json::Value {
    let (label, body) = pem_decode(pem.as_bytes()).expect("pem");
    assert_eq!(label, ENCRYPTED_KEY_LABEL);
    serde_json::from_slice(&body).expect("json")
}

#[test]
fn encrypted_key_round_trips_and_signs() {
    let key = SigningKey::generate().expect("generate");
    let pem = key
        .to_encrypted_pem_with_cost(b"hunter2", TEST_LOG_N)
        .expect("encrypt");
    assert!(pem.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n"));
    let back = SigningKey::from_pem(pem.as_bytes(), Some(b"hunter2")).expect("decrypt");
    assert_eq!(back.public_key(), key.public_key());
    let sig = back.sign(b"message").expect("sign");
    key.public_key().verify(b"message", &sig).expect("verifies");
    assert!(matches!(
        key.public_key().verify(b"other message", &sig),
        Err(Error::BadSignature)
    ));
}

#[test]
fn envelope_is_the_one_cosign_writes() {
    let key = SigningKey::generate().expect("generate");
    let pem = key.to_encrypted_pem(b"pw").expect("encrypt");
    let env = envelope_of(&pem);
    let fields: Vec<&str> = env
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(fields.len(), 3, "{env}");
    assert_eq!(env["kdf"]["name"], "scrypt");
    assert_eq!(
        env["kdf"]["params"],
        serde_json::json!({"N": 32768, "r": 8, "p": 1})
    );
    assert_eq!(env["cipher"]["name"], "nacl/secretbox");
    let b64 = |v: &serde_json::Value| {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("string"))
            .expect("base64")
    };
    assert_eq!(b64(&env["kdf"]["salt"]).len(), 32);
    assert_eq!(b64(&env["cipher"]["nonce"]).len(), 24);
    // secretbox: a 16-byte Poly1305 tag, then the PKCS#8 DER encrypted.
    assert_eq!(b64(&env["ciphertext"]).len(), key.pkcs8.len() + 16);
    // The JSON's field order is Go's (struct order), as cosign writes it.
    let body =
        String::from_utf8(pem_decode(pem.as_bytes()).expect("pem").1.to_vec()).expect("utf-8");
    assert!(
        body.starts_with(r#"{"kdf":{"name":"scrypt","params":{"N":32768,"r":8,"p":1},"salt":""#),
        "{body}"
    );
    assert!(
        body.contains(r#""cipher":{"name":"nacl/secretbox","nonce":""#),
        "{body}"
    );
}

/// The secretbox key derivation and layout: decrypting by hand (scrypt, then XSalsa20 with
/// the tag first) gives the PKCS#8 back.
#[test]
fn ciphertext_is_a_secretbox_under_the_scrypt_key() {
    let key = SigningKey::generate().expect("generate");
    let pem = key
        .to_encrypted_pem_with_cost(b"pw", TEST_LOG_N)
        .expect("encrypt");
    let (_, body) = pem_decode(pem.as_bytes()).expect("pem");
    let env: Envelope = serde_json::from_slice(&body).expect("envelope");
    let box_key = derive(b"pw", &env.kdf.salt, &env.kdf.params).expect("derive");
    use crypto_secretbox::aead::{generic_array::GenericArray, AeadInPlace};
    let (tag, ct) = env.ciphertext.split_at(16);
    let mut buf = ct.to_vec();
    XSalsa20Poly1305::new(Key::from_slice(box_key.as_slice()))
        .decrypt_in_place_detached(
            Nonce::from_slice(&env.cipher.nonce),
            b"",
            &mut buf,
            GenericArray::from_slice(tag),
        )
        .expect("tag first, then ciphertext");
    assert_eq!(buf, *key.pkcs8);
}

#[test]
fn wrong_or_missing_passphrase_is_a_clear_error() {
    let key = SigningKey::generate().expect("generate");
    let pem = key
        .to_encrypted_pem_with_cost(b"right", TEST_LOG_N)
        .expect("encrypt");
    let e = SigningKey::from_pem(pem.as_bytes(), Some(b"wrong")).expect_err("wrong passphrase");
    assert!(matches!(e, Error::WrongPassphrase), "{e}");
    assert!(e.to_string().contains("wrong passphrase"), "{e}");
    assert!(e.to_string().contains(PASSWORD_ENV), "{e}");
    let e = SigningKey::from_pem(pem.as_bytes(), None).expect_err("no passphrase");
    assert!(matches!(e, Error::PassphraseRequired), "{e}");
    assert!(e.to_string().contains(PASSWORD_ENV), "{e}");
}

#[test]
fn empty_passphrase_works_as_cosign_allows_it() {
    let key = SigningKey::generate().expect("generate");
    let pem = key
        .to_encrypted_pem_with_cost(b"", TEST_LOG_N)
        .expect("encrypt");
    let back = SigningKey::from_pem(pem.as_bytes(), Some(b"")).expect("decrypt");
    assert_eq!(back.public_key(), key.public_key());
}

#[test]
fn legacy_label_is_read() {
    let key = SigningKey::generate().expect("generate");
    let pem = key
        .to_encrypted_pem_with_cost(b"pw", TEST_LOG_N)
        .expect("encrypt");
    let legacy = pem.replace(ENCRYPTED_KEY_LABEL, LEGACY_ENCRYPTED_KEY_LABEL);
    let back = SigningKey::from_pem(legacy.as_bytes(), Some(b"pw")).expect("decrypt");
    assert_eq!(back.public_key(), key.public_key());
}

#[test]
fn hostile_envelopes_are_refused_before_deriving() {
    let key = SigningKey::generate().expect("generate");
    let pem = key
        .to_encrypted_pem_with_cost(b"pw", TEST_LOG_N)
        .expect("encrypt");
    let env = envelope_of(&pem);
    let cases: Vec<(&str, serde_json::Value)> = vec![
        ("huge N", {
            let mut e = env.clone();
            e["kdf"]["params"]["N"] = (1u64 << 40).into();
            e
        }),
        ("N not a power of two", {
            let mut e = env.clone();
            e["kdf"]["params"]["N"] = 1000.into();
            e
        }),
        ("other KDF", {
            let mut e = env.clone();
            e["kdf"]["name"] = "pbkdf2".into();
            e
        }),
        ("short nonce", {
            let mut e = env.clone();
            e["cipher"]["nonce"] = "AAAA".into();
            e
        }),
    ];
    for (what, e) in cases {
        let text =
            pem_encode(ENCRYPTED_KEY_LABEL, &serde_json::to_vec(&e).expect("json")).expect("pem");
        let err = SigningKey::from_pem(text.as_bytes(), Some(b"pw")).expect_err(what);
        assert!(matches!(err, Error::Envelope(_)), "{what}: {err}");
    }
}

#[test]
fn tampered_ciphertext_does_not_decrypt() {
    let key = SigningKey::generate().expect("generate");
    let pem = key
        .to_encrypted_pem_with_cost(b"pw", TEST_LOG_N)
        .expect("encrypt");
    let (_, body) = pem_decode(pem.as_bytes()).expect("pem");
    let mut env: Envelope = serde_json::from_slice(&body).expect("envelope");
    env.ciphertext[20] ^= 1;
    let text = pem_encode(
        ENCRYPTED_KEY_LABEL,
        &serde_json::to_vec(&env).expect("json"),
    )
    .expect("pem");
    assert!(matches!(
        SigningKey::from_pem(text.as_bytes(), Some(b"pw")),
        Err(Error::WrongPassphrase)
    ));
}

#[test]
fn public_key_pem_round_trips_as_spki() {
    let key = SigningKey::generate().expect("generate");
    let pem = key.public_key().to_pem().expect("pem");
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"), "{pem}");
    assert!(pem.ends_with("-----END PUBLIC KEY-----\n"), "{pem}");
    let der = key.public_key().to_spki_der();
    assert_eq!(der.len(), 91);
    assert_eq!(
        PublicKey::from_pem(pem.as_bytes()).expect("read"),
        key.public_key()
    );
    assert_eq!(
        PublicKey::from_spki_der(&der).expect("der"),
        key.public_key()
    );
    assert_eq!(
        key.public_key().fingerprint(),
        hex::encode(Sha256::digest(&der))
    );
}

/// A P-256 key as `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256` wrote it,
/// and its public key from `openssl pkey -pubout`.
const OPENSSL_PKCS8: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg1AR4LUFL03lraAJP
gS6LvYXTrHSIkysW/H1Dgb7s8QOhRANCAATQ4T5Z3+VQ0QcD1FjIoRfZlWYhY6PZ
0szolhN+UOAmWaIkNkGTDNmVZajMQvNRANWvBdhDvxznGi6vp1pF6hu8
-----END PRIVATE KEY-----
";
const OPENSSL_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE0OE+Wd/lUNEHA9RYyKEX2ZVmIWOj
2dLM6JYTflDgJlmiJDZBkwzZlWWozELzUQDVrwXYQ78c5xour6daReobvA==
-----END PUBLIC KEY-----
";
/// An RSA public key from openssl: not a key cosign's ECDSA verification takes.
const OPENSSL_RSA_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDEX8nlqJQA3sxRZ4TULbRLbvx6
4Jus5GqwJOTK6or3sDcbDzJwchVx2BlA7qMnwONdx3EwhedRi0jPOORiZ8olyEi8
e3fDGbEYMDAYR9+fDFvS1bWVKhSSSOOyADdef7N0RcVrrNWjv2bz2hDvw13n/+uD
Uw+oWBe+Vj7+O0FhqwIDAQAB
-----END PUBLIC KEY-----
";

#[test]
fn openssl_pkcs8_keys_sign() {
    let key = SigningKey::from_pem(OPENSSL_PKCS8.as_bytes(), None).expect("pkcs8");
    let public = PublicKey::from_pem(OPENSSL_PUBLIC.as_bytes()).expect("openssl public key");
    assert_eq!(key.public_key(), public);
    assert_eq!(key.public_key().to_pem().expect("pem"), OPENSSL_PUBLIC);
    let sig = key.sign(b"m").expect("sign");
    public.verify(b"m", &sig).expect("verify");
    // And our PKCS#8 PEM reads back.
    let again =
        SigningKey::from_pem(key.to_pkcs8_pem().expect("pem").as_bytes(), None).expect("pkcs8");
    assert_eq!(again.public_key(), key.public_key());
}

#[test]
fn other_files_are_refused_with_what_they_are() {
    let key = SigningKey::generate().expect("generate");
    let public = key.public_key().to_pem().expect("pem");
    assert!(matches!(
        SigningKey::from_pem(public.as_bytes(), None),
        Err(Error::NotP256(_))
    ));
    let cert = pem_encode("CERTIFICATE", b"\x30\x00").expect("pem");
    assert!(matches!(
        SigningKey::from_pem(cert.as_bytes(), None),
        Err(Error::Label(l)) if l == "CERTIFICATE"
    ));
    assert!(matches!(
        PublicKey::from_pem(cert.as_bytes()),
        Err(Error::Label(_))
    ));
    assert!(matches!(
        SigningKey::from_pem(b"garbage", None),
        Err(Error::Pem(_))
    ));
    assert!(matches!(
        PublicKey::from_pem(OPENSSL_RSA_PUBLIC.as_bytes()),
        Err(Error::NotP256(_))
    ));
}

#[test]
fn key_pair_files_are_written_private_and_not_overwritten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = dir.path().join("cosign").display().to_string();
    let files = generate_key_pair(&prefix, b"pw", false).expect("generate");
    let mode = std::fs::metadata(&files.private)
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let key = SigningKey::read(&files.private, Some(b"pw")).expect("read key");
    let public = PublicKey::read(&files.public).expect("read pub");
    assert_eq!(key.public_key(), public);
    let e = generate_key_pair(&prefix, b"pw", false).expect_err("exists");
    assert!(e.to_string().contains("exists already"), "{e}");
    // Untouched by the refused attempt.
    assert_eq!(PublicKey::read(&files.public).expect("read pub"), public);
    let again = generate_key_pair(&prefix, b"pw", true).expect("overwrite");
    assert_ne!(PublicKey::read(&again.public).expect("read pub"), public);
    let e = SigningKey::read(&files.private, Some(b"nope")).expect_err("wrong");
    assert!(matches!(e, Error::WrongPassphrase));
}
