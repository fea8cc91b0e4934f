//! Key generation and the PEM encodings, and the guard that keeps the `rsa` crate to
//! key generation and encoding conversions.

use super::*;
use rand::SeedableRng;

#[test]
fn rsa_round_trips_through_pkcs1() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let key = generate_rsa(2048, &mut rng).unwrap();
    assert!(key.pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    let back = parse_pem(&key.pem, "test").unwrap();
    assert_eq!(back.pair.public_key_raw(), key.pair.public_key_raw());
}

#[test]
fn ec_round_trips() {
    for kind in [KeyType::EcdsaP256, KeyType::EcdsaP384] {
        let key = generate(kind).unwrap();
        let back = parse_pem(&key.pem, "test").unwrap();
        assert_eq!(back.pair.public_key_raw(), key.pair.public_key_raw());
    }
}

#[test]
fn rejects_small_rsa_and_garbage() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    assert!(generate_rsa(1024, &mut rng).is_err());
    assert!(parse_pem("not a key", "test").is_err());
    assert!(parse_pem(
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        "test"
    )
    .is_err());
}

#[test]
fn parses_key_type_names() {
    assert_eq!("rsa".parse::<KeyType>().unwrap(), KeyType::Rsa(2048));
    assert_eq!("ECDSA_P256".parse::<KeyType>().unwrap(), KeyType::EcdsaP256);
    assert_eq!("p384".parse::<KeyType>().unwrap(), KeyType::EcdsaP384);
    assert!("dsa".parse::<KeyType>().is_err());
}

/// Every use of the `rsa` crate stays in `rsa_encoding.rs`, and there only the key
/// constructors and encoders: its private-key operations are not constant-time
/// (RUSTSEC-2023-0071), so none may be called (docs/security.md). `clippy.toml` forbids
/// them by name too; this test catches a new path into the crate before review does.
#[test]
fn the_rsa_crate_only_generates_and_encodes_keys() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let path_use = regex::Regex::new(r"\brsa::[A-Za-z0-9_:{}, ]*").expect("regex");
    let allowed = [
        "rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey}",
        "rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding}",
        "rsa::RsaPrivateKey::new",
        "rsa::RsaPrivateKey::from_pkcs1_pem",
        "rsa::RsaPrivateKey::from_pkcs8_der",
    ];
    let wrapper = root.join("src/ca/keys/rsa_encoding.rs");
    // This file names the allowed paths above.
    let this = root.join("src/ca/keys/tests.rs");
    let mut files = Vec::new();
    for dir in ["src", "benches", "examples", "tests"] {
        collect_rs(&root.join(dir), &mut files);
    }
    assert!(files.contains(&wrapper), "the wrapper module was not found");
    let mut found = Vec::new();
    for file in files {
        if file == this {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read source");
        for m in path_use.find_iter(&text) {
            let path = m.as_str().trim_end();
            if file != wrapper || !allowed.contains(&path) {
                found.push(format!("{}: {path}", file.display()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "uses of the rsa crate outside key generation and encoding: {found:#?}"
    );
    let wrapper_text = std::fs::read_to_string(&wrapper).expect("read wrapper");
    for op in [".decrypt", ".sign", "SigningKey", "DecryptingKey", "hazmat"] {
        assert!(!wrapper_text.contains(op), "rsa_encoding.rs names {op}");
    }
}

fn collect_rs(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_rs(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}
