//! Atomic writes: the mode, no temporary file left behind, and a link planted at the
//! temporary name is neither followed nor able to stop the write.

use std::os::unix::fs::PermissionsExt;

use super::*;

fn mode_of(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_key_is_written_private_and_nothing_else_is_left() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("ca-key.pem");
    write_atomic(&key, b"first", 0o600).expect("written");
    assert_eq!(std::fs::read(&key).expect("read"), b"first");
    assert_eq!(mode_of(&key), 0o600);

    // Replacing a file that was readable by others leaves it private too.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    write_atomic(&key, b"second", 0o600).expect("rewritten");
    assert_eq!(std::fs::read(&key).expect("read"), b"second");
    assert_eq!(mode_of(&key), 0o600);
    assert_eq!(names(dir.path()), ["ca-key.pem"]);

    let cert = dir.path().join("sub/root-cert.pem");
    write_atomic(&cert, b"cert", 0o644).expect("written in a new folder");
    assert_eq!(mode_of(&cert), 0o644);
    assert_eq!(names(&dir.path().join("sub")), ["root-cert.pem"]);
}

#[test]
fn a_link_at_the_temporary_name_is_not_followed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"untouched").expect("victim");
    let victim_mode = mode_of(&victim);
    let planted = dir.path().join(".ca-key.pem.tmp");
    std::os::unix::fs::symlink(&victim, &planted).expect("symlink");

    let key = dir.path().join("ca-key.pem");
    write_atomic(&key, b"secret", 0o600).expect("written beside the link");
    assert_eq!(std::fs::read(&victim).expect("victim"), b"untouched");
    assert_eq!(
        mode_of(&victim),
        victim_mode,
        "the link's target keeps its mode"
    );
    assert_eq!(std::fs::read(&key).expect("key"), b"secret");
    assert_eq!(mode_of(&key), 0o600);
    assert!(
        std::fs::symlink_metadata(&key)
            .expect("key")
            .file_type()
            .is_file(),
        "the key is a file of its own, not the link"
    );
    // Only the planted link remains besides the two files: no temporary file of ours.
    assert_eq!(
        names(dir.path()),
        [".ca-key.pem.tmp", "ca-key.pem", "victim"]
    );
}

#[test]
fn a_link_at_the_target_is_replaced_not_written_through() {
    let dir = tempfile::tempdir().expect("tempdir");
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"untouched").expect("victim");
    let key = dir.path().join("ca-key.pem");
    std::os::unix::fs::symlink(&victim, &key).expect("symlink");

    write_atomic(&key, b"secret", 0o600).expect("written");
    assert_eq!(std::fs::read(&victim).expect("victim"), b"untouched");
    assert!(std::fs::symlink_metadata(&key)
        .expect("key")
        .file_type()
        .is_file());
    assert_eq!(std::fs::read(&key).expect("key"), b"secret");
}

#[test]
fn a_failed_write_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The target is a non-empty folder: the rename fails after the temporary file exists.
    let target = dir.path().join("ca-key.pem");
    std::fs::create_dir(&target).expect("mkdir");
    std::fs::write(target.join("inside"), b"x").expect("inside");
    let err = write_atomic(&target, b"secret", 0o600).expect_err("cannot replace a folder");
    assert!(err.to_string().contains("ca-key.pem"), "{err}");
    assert_eq!(names(dir.path()), ["ca-key.pem"]);
}
