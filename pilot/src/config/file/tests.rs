//! The folder source: last good config kept, link loops, depth, aliases.

use super::*;
use crate::config::kind::Kind;

#[test]
fn bad_file_keeps_last_good_config() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("svc.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: ns}\nspec: {ports: [{port: 80}]}\n",
    )
    .unwrap();
    let store = ConfigStore::new();
    let src = DirSource::new(dir.path(), store.clone(), Metrics::default());
    src.sync().unwrap();
    assert_eq!(store.snapshot().of_kind(Kind::Service).count(), 1);

    std::fs::write(&file, "apiVersion: v1\nkind: Service\nmetadata: {name: [\n").unwrap();
    src.sync().unwrap();
    let snap = store.snapshot();
    assert_eq!(
        snap.of_kind(Kind::Service).count(),
        1,
        "last good config kept"
    );
    assert!(
        snap.errors[0].error.contains("invalid YAML"),
        "{:?}",
        snap.errors
    );
    assert_eq!(src.metrics.file_errors.get(), 1);

    std::fs::remove_file(&file).unwrap();
    src.sync().unwrap();
    let snap = store.snapshot();
    assert!(snap.configs.is_empty() && snap.errors.is_empty());
}

const SERVICE: &str =
    "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: ns}\nspec: {ports: [{port: 80}]}\n";

fn relative(dir: &Path, files: &[PathBuf]) -> Vec<String> {
    files
        .iter()
        .map(|f| f.strip_prefix(dir).unwrap_or(f).display().to_string())
        .collect()
}

#[test]
fn link_loops_are_read_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    std::fs::create_dir(root.join("a")).expect("mkdir");
    std::fs::write(root.join("a/svc.yaml"), SERVICE).expect("write");
    // A link back to the top, one to itself, and two links to one folder.
    std::os::unix::fs::symlink(root, root.join("a/up")).expect("symlink");
    std::os::unix::fs::symlink(".", root.join("self")).expect("symlink");
    std::os::unix::fs::symlink("a", root.join("b")).expect("symlink");
    let files = config_files(root).expect("listed");
    assert_eq!(relative(root, &files), ["a/svc.yaml"]);

    // The watch on such a folder starts too, and the source serves the file once.
    let store = ConfigStore::new();
    let src = DirSource::new(root, store.clone(), Metrics::default());
    let _watch = src.watch().expect("watching a folder with a link loop");
    src.sync().expect("synced");
    assert_eq!(store.snapshot().of_kind(Kind::Service).count(), 1);
}

#[test]
fn folders_deeper_than_the_limit_are_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut folder = dir.path().to_path_buf();
    for depth in 0..=MAX_DEPTH + 3 {
        std::fs::write(folder.join(format!("at-{depth}.yaml")), SERVICE).expect("write");
        folder = folder.join("d");
        std::fs::create_dir(&folder).expect("mkdir");
    }
    let files = config_files(dir.path()).expect("listed");
    let names: Vec<String> = files
        .iter()
        .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    let want: Vec<String> = (0..=MAX_DEPTH).map(|d| format!("at-{d}.yaml")).collect();
    let mut sorted = names.clone();
    sorted.sort_by_key(|n| {
        n.trim_start_matches("at-")
            .trim_end_matches(".yaml")
            .parse::<usize>()
            .unwrap_or(usize::MAX)
    });
    assert_eq!(sorted, want);
}

#[test]
fn only_regular_files_are_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("pipe.yaml");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    std::fs::write(dir.path().join("svc.yaml"), SERVICE).expect("write");
    // A dangling link is listed, so that reading it reports the error.
    std::os::unix::fs::symlink("missing.yaml", dir.path().join("gone.yaml")).expect("symlink");
    let files = config_files(dir.path()).expect("listed");
    assert_eq!(relative(dir.path(), &files), ["gone.yaml", "svc.yaml"]);
}

#[test]
fn an_alias_bomb_is_refused_and_the_last_good_config_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("svc.yaml");
    std::fs::write(&file, SERVICE).expect("write");
    let store = ConfigStore::new();
    let src = DirSource::new(dir.path(), store.clone(), Metrics::default());
    src.sync().expect("synced");

    // The classic bomb, and one anchor of 2,000 values named 2,000 times (4 million).
    let wide = format!(
        "{SERVICE}x: &x [{}]\ny: [{}]\n",
        vec!["1"; 2000].join(","),
        vec!["*x"; 2000].join(",")
    );
    for (bomb, want) in [
        (
            crate::config::yaml::tests::BILLION_LAUGHS,
            "repetition limit exceeded",
        ),
        (wide.as_str(), "aliases repeat too much"),
    ] {
        std::fs::write(&file, bomb).expect("write");
        src.sync().expect("synced");
        let snap = store.snapshot();
        assert_eq!(
            snap.of_kind(Kind::Service).count(),
            1,
            "last good config kept"
        );
        let error = &snap.errors.first().expect("an error recorded").error;
        assert!(
            error.contains("invalid YAML") && error.contains(want),
            "{error}"
        );
    }
}
