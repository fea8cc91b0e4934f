//! CA Secrets against the fake API server: the stored layout, adopting another replica's
//! root, plugged-in `cacerts`, and guarded rotation.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};

use super::*;
use kube_fake::{failure, FakeApi};

const SECRETS: &str = "/api/v1/namespaces/istio-system/secrets";

/// Base64 as the API server stores Secret data.
fn b64(s: &str) -> String {
    serde_json::to_value(ByteString(s.as_bytes().to_vec()))
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn secret(name: &str, data: &[(&str, &str)]) -> Value {
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(b64(v))))
        .collect();
    json!({"apiVersion": "v1", "kind": "Secret", "type": CA_SECRET_TYPE,
           "metadata": {"name": name}, "data": data})
}

fn stored(api: &FakeApi, name: &str) -> Value {
    api.get(&format!("{SECRETS}/{name}"))
        .expect("secret stored")
}

#[tokio::test]
async fn creates_the_five_key_secret_once() {
    let (client, api) = kube_fake::pair();
    let secrets = CaSecrets::new(client, "istio-system");
    let generated = Arc::new(AtomicBool::new(false));
    let flag = generated.clone();
    let (data, created) = secrets
        .load_or_create(CA_SECRET_NAME, move || {
            flag.store(true, Ordering::SeqCst);
            Ok::<_, String>(CaSecretData::self_signed("CERT", "KEY"))
        })
        .await
        .expect("created");
    assert!(created && generated.load(Ordering::SeqCst));
    assert_eq!(data.root_cert, "CERT");

    let s = stored(&api, CA_SECRET_NAME);
    assert_eq!(s["type"], "istio.io/ca-root");
    let keys: Vec<&str> = s["data"]
        .as_object()
        .expect("data")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "ca-cert.pem",
            "ca-key.pem",
            "cert-chain.pem",
            "key.pem",
            "root-cert.pem"
        ]
    );
    assert_eq!(s["data"]["root-cert.pem"], b64("CERT"));
    assert_eq!(s["data"]["cert-chain.pem"], "");

    // A second replica loads the same root without generating one.
    let (again, created) = secrets
        .load_or_create(CA_SECRET_NAME, || {
            Err::<CaSecretData, _>("must not generate")
        })
        .await
        .expect("loaded");
    assert!(!created);
    assert_eq!(again, data);
}

#[tokio::test]
async fn a_replica_that_loses_the_create_race_adopts_the_winner() {
    let (client, api) = kube_fake::pair();
    api.put(
        SECRETS,
        secret(
            CA_SECRET_NAME,
            &[
                (CA_CERT, "THEIRS"),
                (CA_KEY, "THEIR-KEY"),
                (ROOT_CERT, "THEIRS"),
                (CERT_CHAIN, ""),
                (PRIVATE_KEY, ""),
            ],
        ),
    );
    // Our first read happens before the other replica's create lands.
    let mut first_get = true;
    api.on(move |call| {
        if call.method == http::Method::GET && std::mem::take(&mut first_get) {
            return Some(failure(404, "NotFound", "not found"));
        }
        None
    });
    let (data, created) = CaSecrets::new(client, "istio-system")
        .load_or_create(CA_SECRET_NAME, || {
            Ok::<_, String>(CaSecretData::self_signed("MINE", "MY-KEY"))
        })
        .await
        .expect("adopted");
    assert!(!created);
    assert_eq!(
        (data.root_cert.as_str(), data.ca_key.as_str()),
        ("THEIRS", "THEIR-KEY")
    );
    assert_eq!(
        stored(&api, CA_SECRET_NAME)["data"]["ca-cert.pem"],
        b64("THEIRS")
    );
}

#[tokio::test]
async fn plugged_in_cacerts_is_read_and_a_partial_one_refused() {
    let (client, api) = kube_fake::pair();
    let secrets = CaSecrets::new(client, "istio-system");
    assert_eq!(secrets.load_plugged().await.expect("absent"), None);

    api.put(
        SECRETS,
        secret(
            CACERTS_NAME,
            &[
                (CA_CERT, "INT"),
                (CA_KEY, "INT-KEY"),
                (ROOT_CERT, "ROOT"),
                (CERT_CHAIN, "INT\nROOT"),
            ],
        ),
    );
    let plugged = secrets
        .load_plugged()
        .await
        .expect("read")
        .expect("present");
    assert_eq!(
        (plugged.ca_cert.as_str(), plugged.root_cert.as_str()),
        ("INT", "ROOT")
    );

    api.put(
        SECRETS,
        secret(CACERTS_NAME, &[(CA_CERT, "INT"), (ROOT_CERT, "ROOT")]),
    );
    let err = secrets.load_plugged().await.expect_err("partial");
    assert!(err.to_string().contains("ca-key.pem"), "{err}");

    // A cacerts Secret istiod generated itself is not a plugged-in CA.
    api.put(
        SECRETS,
        secret(
            CACERTS_NAME,
            &[
                (CA_CERT, "C"),
                (CA_KEY, "K"),
                (ROOT_CERT, "C"),
                (GENERATED_MARKER, "true"),
            ],
        ),
    );
    assert_eq!(secrets.load_plugged().await.expect("generated"), None);
}

#[tokio::test]
async fn rotation_updates_only_the_root_it_replaces() {
    let (client, api) = kube_fake::pair();
    let secrets = CaSecrets::new(client, "istio-system");
    let (old, _) = secrets
        .load_or_create(CA_SECRET_NAME, || {
            Ok::<_, String>(CaSecretData::self_signed("OLD", "KEY"))
        })
        .await
        .expect("created");
    let new = CaSecretData::self_signed("NEW", "KEY");
    secrets
        .update(CA_SECRET_NAME, &old, &new)
        .await
        .expect("rotated");
    assert_eq!(
        stored(&api, CA_SECRET_NAME)["data"]["root-cert.pem"],
        b64("NEW")
    );

    // Another replica already rotated: ours is refused so we reload instead.
    let err = secrets
        .update(
            CA_SECRET_NAME,
            &old,
            &CaSecretData::self_signed("OTHER", "KEY"),
        )
        .await
        .expect_err("conflict");
    assert!(matches!(err, CaSecretError::Conflict { .. }), "{err}");
    assert_eq!(
        stored(&api, CA_SECRET_NAME)["data"]["root-cert.pem"],
        b64("NEW")
    );
}

#[tokio::test]
async fn a_forbidden_read_names_the_permission() {
    let (client, api) = kube_fake::pair();
    api.on(|_| Some(failure(403, "Forbidden", "forbidden")));
    let err = CaSecrets::new(client, "istio-system")
        .read(CA_SECRET_NAME)
        .await
        .expect_err("forbidden");
    assert!(err.to_string().contains("get on secrets"), "{err}");
}
