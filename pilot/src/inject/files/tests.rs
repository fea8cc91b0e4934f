//! Reading the injector's folder, and keeping the last good config on a broken change.

use std::time::Instant;

use super::*;

const CONFIG: &str = "policy: enabled\ntemplates:\n  sidecar: |\n    spec:\n      containers:\n      - name: istio-proxy\n        image: {{ .Values.global.hub }}/proxyv2\n";

fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "inject-files-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4()
    ));
    std::fs::create_dir_all(&d).expect("mkdir");
    d
}

#[test]
fn served_only_when_the_config_file_exists() {
    let d = dir();
    assert!(InjectFiles::find(&d, "default").is_none());
    std::fs::write(d.join("config"), CONFIG).expect("write");
    let files = InjectFiles::find(&d, "default").expect("found");
    // No values file: an error naming it.
    let error = files.load().expect_err("no values").to_string();
    assert!(error.contains("values"), "{error}");
    std::fs::write(d.join("values"), "global: {hub: docker.io/istio}").expect("write");
    let injector = files.load().expect("load");
    assert_eq!(injector.revision, "default");
    assert!(injector.config.templates.contains_key("sidecar"));
    std::fs::write(d.join("config"), "templates:\n  sidecar: '{{ if }}'\n").expect("write");
    let error = files.load().expect_err("bad template").to_string();
    assert!(
        error.contains("config") && error.contains("sidecar:1"),
        "{error}"
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[tokio::test]
async fn a_change_is_picked_up_and_a_broken_one_keeps_the_last_good_config() {
    let d = dir();
    std::fs::write(d.join("config"), CONFIG).expect("write");
    std::fs::write(d.join("values"), "global: {hub: one}").expect("write");
    let files = InjectFiles::find(&d, "").expect("found");
    let watch = files.watch().expect("watch");
    let current = Arc::new(ArcSwap::from_pointee(files.load().expect("load")));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(files.run(watch, current.clone(), shutdown.clone()));
    let hub = |c: &ArcSwap<Injector>| {
        c.load()
            .values
            .get("global.hub")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    std::fs::write(d.join("values"), "global: {hub: two}").expect("write");
    let deadline = Instant::now() + Duration::from_secs(10);
    while hub(&current).as_deref() != Some("two") {
        assert!(Instant::now() < deadline, "change not picked up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A broken config: logged, and the last good one stays.
    std::fs::write(d.join("config"), "policy: [").expect("write");
    std::fs::write(d.join("values"), "global: {hub: three}").expect("write");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(hub(&current).as_deref(), Some("two"));
    shutdown.cancel();
    task.await.expect("task");
    let _ = std::fs::remove_dir_all(&d);
}
