//! Bare cost of issuing one workload certificate: CSR checks (parse, key, self-signature)
//! plus signing, for P-256 and RSA 2048 CSRs under an RSA 2048 root (upstream's default)
//! and a P-256 root. No gRPC, no TLS, no authentication.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use pilot::ca::authority::{Authority, TtlPolicy};
use pilot::ca::keys::KeyType;
use pilot::ca::root::{self, SelfSignedOptions};
use pilot::security::Identity;

fn authority(key_type: KeyType) -> Authority {
    let opts = SelfSignedOptions {
        trust_domain: "cluster.local".to_owned(),
        ttl: Duration::from_secs(10 * 365 * 24 * 3600),
        key_type,
    };
    let bundle = root::load_or_create_self_signed(None, &opts).expect("root");
    Authority::new(bundle, TtlPolicy::default(), "cluster.local").expect("authority")
}

fn csr(kind: KeyType) -> String {
    let key = pilot::ca::keys::generate(kind).expect("key").pair;
    rcgen::CertificateParams::default()
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem")
}

fn bench(c: &mut Criterion) {
    let id = Identity::new("cluster.local", "default", "sleep");
    let mut group = c.benchmark_group("ca_issue");
    for (root_name, root_key) in [
        ("rsa2048_root", KeyType::Rsa(2048)),
        ("p256_root", KeyType::EcdsaP256),
    ] {
        let ca = authority(root_key);
        for (csr_name, csr_key) in [
            ("p256_csr", KeyType::EcdsaP256),
            ("rsa2048_csr", KeyType::Rsa(2048)),
        ] {
            let pem = csr(csr_key);
            group.bench_function(format!("{root_name}/{csr_name}"), |b| {
                b.iter(|| {
                    let valid = pilot::ca::csr::parse(&pem).expect("valid csr");
                    ca.sign_workload(&valid, &id, Duration::from_secs(3600))
                        .expect("signed")
                })
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
