//! Writing key material and certificates to disk so that a reader never sees a partial
//! file and nobody else can read a key, not even for an instant: a fresh temporary file in
//! the target's folder, created exclusively (`O_CREAT|O_EXCL`, so a link planted at the
//! temporary name is never followed) with its final mode, synced, renamed over the target,
//! and the folder synced so that the rename survives a crash.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::Error;

/// How many temporary names are tried before giving up; each after the first is random,
/// so only a stale file or a planted link at every one of them stops the write.
const TEMP_ATTEMPTS: usize = 8;

/// Replaces `path` with `content`, readable per `mode` (`0o600` for keys). The folder is
/// created if missing.
pub fn write_atomic(path: &Path, content: &[u8], mode: u32) -> Result<(), Error> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io { path, source }
    };
    let dir = match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => dir,
        None => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let (tmp, mut file) = create_temp(path, mode)?;
    let written = (|| {
        // The mode given at creation is filtered by the umask; set it exactly.
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.write_all(content)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)
    })();
    if let Err(source) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::Io {
            path: path.to_owned(),
            source,
        });
    }
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Creates a new temporary file beside `path`: `.NAME.tmp`, else `.NAME.tmp.RANDOM` when
/// that name is taken.
fn create_temp(path: &Path, mode: u32) -> Result<(PathBuf, File), Error> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut last = None;
    for attempt in 0..TEMP_ATTEMPTS {
        let tmp_name = if attempt == 0 {
            format!(".{name}.tmp")
        } else {
            format!(".{name}.tmp.{:016x}", rand::random::<u64>())
        };
        let tmp = path.with_file_name(tmp_name);
        let opened = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp);
        match opened {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => last = Some(e),
            Err(source) => return Err(Error::Io { path: tmp, source }),
        }
    }
    Err(Error::Io {
        path: path.to_owned(),
        source: last.unwrap_or_else(|| ErrorKind::AlreadyExists.into()),
    })
}

#[cfg(test)]
mod tests;
