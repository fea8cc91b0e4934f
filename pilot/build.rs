//! Generates the Rust code for our protobuf APIs. Uses `protox` (a pure-Rust protobuf
//! compiler) so that building needs no `protoc` binary. Also records the compiler that
//! builds us, for `pilot-discovery version`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    record_rustc_version();
    let protos = ["proto/istio/v1/auth/ca.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}

/// Sets `PILOT_RUSTC_VERSION` to the release of the compiler building this crate ("1.95.0"),
/// or "unknown" where `rustc --version` cannot be run.
fn record_rustc_version() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let version = std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|line| line.split_whitespace().nth(1).map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=PILOT_RUSTC_VERSION={version}");
    println!("cargo:rerun-if-env-changed=RUSTC");
}
