//! The CA with its root in Secret `istio-ca-secret` (against the fake API server) and in
//! files: first start, a second replica, rotation, adoption of another replica's rotation,
//! and garbled Secrets.

use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::ByteString;
use prometheus_client::registry::Registry;
use serde_json::{json, Value};

use super::*;
use crate::ca::authority::Authority;
use crate::ca::keys::KeyType;
use crate::ca::rotation::{self, RotationOptions};
use crate::ca::{Ca, CaConfig, SecureOptions};
use crate::kube::ca_secret::SecretRoot;
use kube_fake::FakeApi;

const SECRETS: &str = "/api/v1/namespaces/istio-system/secrets";
const CA_SECRET: &str = "/api/v1/namespaces/istio-system/secrets/istio-ca-secret";

fn config(grace_percentile: u32) -> CaConfig {
    CaConfig {
        key_type: KeyType::EcdsaP256,
        // No plugged-in CA: the folder does not exist.
        root_ca_dir: PathBuf::from("/nonexistent/cacerts"),
        self_signed_ttl: Duration::from_secs(365 * 24 * 3600),
        grace_period_percentile: grace_percentile,
        ..CaConfig::default()
    }
}

fn secret_store(client: &kube::Client) -> RootStore {
    RootStore::Shared(Arc::new(SecretRoot::new(client.clone(), "istio-system")))
}

async fn start(store: RootStore) -> Result<Ca, Error> {
    Ca::new(
        config(20),
        SecureOptions::default(),
        store,
        &mut Registry::default(),
    )
    .await
}

fn authority(ca: &Ca) -> &Arc<Authority> {
    ca.authority().expect("CA enabled")
}

fn rotation(store: RootStore, grace_percentile: u32) -> RotationOptions {
    let c = config(grace_percentile);
    RotationOptions {
        check_interval: c.root_check_interval,
        grace_percentile,
        self_signed: root::SelfSignedOptions {
            trust_domain: c.trust_domain,
            ttl: c.self_signed_ttl,
            key_type: c.key_type,
        },
        store,
    }
}

/// One key of the stored Secret, decoded.
fn stored_key(api: &FakeApi, key: &str) -> String {
    let secret = api.get(CA_SECRET).expect("istio-ca-secret stored");
    let bytes: ByteString =
        serde_json::from_value(secret["data"][key].clone()).expect("base64 data");
    String::from_utf8(bytes.0).expect("UTF-8")
}

/// The DER of every certificate in a PEM string: PEM text may differ in layout.
fn ders(pem: &str) -> Vec<Vec<u8>> {
    root::split_pem(pem, "test")
        .expect("certificates")
        .iter()
        .map(|p| root::der_of(p, "test").expect("DER"))
        .collect()
}

fn trusted(ca: &Ca) -> Vec<Vec<u8>> {
    ders(&authority(ca).trust_bundle().pem())
}

#[tokio::test]
async fn a_fresh_start_stores_the_root_in_the_secret() {
    let (client, api) = kube_fake::pair();
    let ca = start(secret_store(&client)).await.expect("CA");

    let secret = api.get(CA_SECRET).expect("istio-ca-secret created");
    assert_eq!(secret["type"], "istio.io/ca-root");
    let mut keys: Vec<&str> = secret["data"]
        .as_object()
        .expect("data")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
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
    assert_eq!(stored_key(&api, "cert-chain.pem"), "");
    assert_eq!(trusted(&ca), ders(&stored_key(&api, "root-cert.pem")));
    assert_eq!(
        ders(&stored_key(&api, "ca-cert.pem")),
        ders(&stored_key(&api, "root-cert.pem"))
    );
    let key = authority(&ca).with_bundle(|b| b.key.pem.clone());
    assert_eq!(stored_key(&api, "ca-key.pem"), key);
}

#[tokio::test]
async fn a_second_replica_adopts_the_stored_root() {
    let (client, api) = kube_fake::pair();
    let first = start(secret_store(&client)).await.expect("first CA");
    let second = start(secret_store(&client)).await.expect("second CA");
    assert_eq!(trusted(&first), trusted(&second));
    let creates = api
        .calls()
        .iter()
        .filter(|c| c.method == http::Method::POST)
        .count();
    assert_eq!(creates, 1, "only the first replica creates the Secret");
}

#[tokio::test]
async fn rotation_stores_the_new_root_in_the_secret() {
    let (client, api) = kube_fake::pair();
    let ca = start(secret_store(&client)).await.expect("CA");
    let a = authority(&ca);
    let (old_cert, old_key) = (
        stored_key(&api, "ca-cert.pem"),
        stored_key(&api, "ca-key.pem"),
    );

    // At 100% every moment is inside the grace period.
    assert!(rotation::check_once(a, &rotation(secret_store(&client), 100)).await);
    let new_cert = stored_key(&api, "ca-cert.pem");
    assert_ne!(ders(&new_cert), ders(&old_cert));
    assert_eq!(stored_key(&api, "ca-key.pem"), old_key, "the key is kept");
    let roots = ders(&stored_key(&api, "root-cert.pem"));
    assert_eq!(roots, [ders(&new_cert), ders(&old_cert)].concat());
    assert_eq!(trusted(&ca), roots);
    // The next reload finds the root it stored: nothing to adopt.
    assert!(!rotation::check_once(a, &rotation(secret_store(&client), 1)).await);
}

#[tokio::test]
async fn a_replica_picks_up_a_root_another_one_rotated() {
    let (client, _api) = kube_fake::pair();
    let rotating = start(secret_store(&client)).await.expect("first CA");
    let other = start(secret_store(&client)).await.expect("second CA");

    assert!(
        rotation::check_once(authority(&rotating), &rotation(secret_store(&client), 100)).await
    );
    assert_ne!(trusted(&rotating), trusted(&other));
    // Not due for rotation itself, the other replica still reloads the Secret.
    let roots = authority(&other).subscribe();
    assert!(rotation::check_once(authority(&other), &rotation(secret_store(&client), 1)).await);
    assert!(roots.has_changed().expect("authority alive"));
    assert_eq!(trusted(&rotating), trusted(&other));
    // Nothing new: nothing changes.
    assert!(!rotation::check_once(authority(&other), &rotation(secret_store(&client), 1)).await);
}

/// A shared store in memory whose first update loses to a rotation by "another replica".
struct Racing {
    stored: Mutex<Option<RootPem>>,
    theirs: Mutex<Option<RootPem>>,
}

impl fmt::Display for Racing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("racing store")
    }
}

impl SharedRoot for Racing {
    fn load_or_create<'a>(
        &'a self,
        generate: Generate<'a>,
    ) -> BoxFuture<'a, Result<RootPem, StoreError>> {
        Box::pin(async move {
            let mut stored = self.stored.lock().expect("lock");
            if stored.is_none() {
                *stored = Some(generate().map_err(|e| StoreError::Failed(e.into()))?);
            }
            Ok(stored.clone().unwrap_or_default())
        })
    }

    fn update<'a>(
        &'a self,
        previous: &'a RootPem,
        next: &'a RootPem,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut stored = self.stored.lock().expect("lock");
            if let Some(theirs) = self.theirs.lock().expect("lock").take() {
                *stored = Some(theirs);
            }
            if stored.as_ref() != Some(previous) {
                return Err(StoreError::Conflict("changed".to_owned()));
            }
            *stored = Some(next.clone());
            Ok(())
        })
    }
}

#[tokio::test]
async fn losing_a_rotation_race_adopts_the_winner() {
    let opts = rotation(RootStore::Files(None), 100);
    let ours = root::generate_self_signed(&opts.self_signed).expect("root");
    let theirs = root::rotate(&ours, &opts.self_signed).expect("their rotation");
    let store = Arc::new(Racing {
        stored: Mutex::new(Some(RootPem::of(&ours))),
        theirs: Mutex::new(Some(RootPem::of(&theirs))),
    });
    let ca = start(RootStore::Shared(store.clone())).await.expect("CA");
    let theirs_roots = theirs
        .roots
        .iter()
        .flat_map(|r| ders(r))
        .collect::<Vec<_>>();
    assert_ne!(trusted(&ca), theirs_roots);

    let opts = RotationOptions {
        store: RootStore::Shared(store.clone()),
        ..opts
    };
    assert!(rotation::check_once(authority(&ca), &opts).await);
    assert_eq!(trusted(&ca), theirs_roots);
    let stored = store.stored.lock().expect("lock").clone().expect("stored");
    assert_eq!(ders(&stored.root_cert), theirs_roots);
}

fn garbled(name: &str, data: &[(&str, &str)]) -> Value {
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| {
            let b64 = serde_json::to_value(ByteString(v.as_bytes().to_vec())).expect("base64");
            ((*k).to_owned(), b64)
        })
        .collect();
    json!({"apiVersion": "v1", "kind": "Secret", "type": "istio.io/ca-root",
           "metadata": {"name": name}, "data": data})
}

#[tokio::test]
async fn a_garbled_secret_is_refused_with_a_clear_error() {
    let valid = root::generate_self_signed(&rotation(RootStore::Files(None), 20).self_signed)
        .expect("root");
    let other = root::generate_self_signed(&rotation(RootStore::Files(None), 20).self_signed)
        .expect("root");
    let (cert, key) = (valid.ca_cert_pem.as_str(), valid.key.pem.as_str());
    let cases: [(&[(&str, &str)], &str); 4] = [
        (
            &[("ca-cert.pem", cert)],
            "Secret istio-system/istio-ca-secret lacks key \"ca-key.pem\"",
        ),
        (
            &[("ca-cert.pem", cert), ("ca-key.pem", "not a key")],
            "Secret istio-system/istio-ca-secret key ca-key.pem",
        ),
        (
            &[("ca-cert.pem", "not a certificate"), ("ca-key.pem", key)],
            "Secret istio-system/istio-ca-secret key ca-cert.pem",
        ),
        (
            &[("ca-cert.pem", cert), ("ca-key.pem", &other.key.pem)],
            "does not match the public key",
        ),
    ];
    for (data, want) in cases {
        let (client, api) = kube_fake::pair();
        api.put(SECRETS, garbled("istio-ca-secret", data));
        let err = start(secret_store(&client)).await.expect_err("garbled");
        assert!(err.to_string().contains(want), "{err} (want {want:?})");
    }
}

#[tokio::test]
async fn file_mode_rotation_rewrites_the_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = RootStore::Files(Some(dir.path().to_owned()));
    let ca = start(store.clone()).await.expect("CA");
    let before = std::fs::read_to_string(dir.path().join(CA_CERT)).expect("ca-cert.pem");
    assert!(rotation::check_once(authority(&ca), &rotation(store.clone(), 100)).await);
    let after = std::fs::read_to_string(dir.path().join(CA_CERT)).expect("ca-cert.pem");
    assert_ne!(before, after);
    assert_eq!(ders(&after)[0], trusted(&ca)[0]);
    // Not due: nothing happens.
    assert!(!rotation::check_once(authority(&ca), &rotation(store, 1)).await);
}
