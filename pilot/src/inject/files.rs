//! The injector's configuration from files, as upstream's file watcher: the
//! `istio-sidecar-injector` ConfigMap mounted at `./var/lib/istio/inject` (`config` and
//! `values`), read at start and again whenever the folder changes. A change that does
//! not parse is logged and the last good configuration kept.

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::config::{Config, ConfigError, Values};
use super::Injector;
use crate::config::file::DirWatch;

/// Where upstream's istiod reads the injector ConfigMap, relative to its working folder.
pub const DEFAULT_DIR: &str = "./var/lib/istio/inject";
/// Quiet time after a change before the files are read again (upstream's debounce).
const SETTLE: Duration = Duration::from_millis(100);

/// Why the files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: String,
        #[source]
        source: Box<ConfigError>,
    },
}

/// The injector's folder and the revision it serves.
#[derive(Debug, Clone)]
pub struct InjectFiles {
    dir: PathBuf,
    revision: String,
}

impl InjectFiles {
    /// `None` when the folder has no `config` file: then, as upstream, nothing is
    /// injected and `/inject` is not served.
    pub fn find(dir: impl Into<PathBuf>, revision: &str) -> Option<InjectFiles> {
        let dir = dir.into();
        dir.join("config").exists().then(|| InjectFiles {
            dir,
            revision: revision.to_owned(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads and parses both files.
    pub fn load(&self) -> Result<Injector, FilesError> {
        let read = |name: &str| {
            let path = self.dir.join(name);
            std::fs::read_to_string(&path)
                .map_err(|source| FilesError::Read {
                    path: path.display().to_string(),
                    source,
                })
                .map(|text| (path, text))
        };
        let parse_error = |path: &Path, source| FilesError::Parse {
            path: path.display().to_string(),
            source: Box::new(source),
        };
        let (config_path, config) = read("config")?;
        let config = Config::parse(&config).map_err(|e| parse_error(&config_path, e))?;
        let (values_path, values) = read("values")?;
        let values = Values::parse(&values).map_err(|e| parse_error(&values_path, e))?;
        Ok(Injector {
            config,
            values,
            revision: self.revision.clone(),
        })
    }

    /// Starts watching the folder; call before the first [`InjectFiles::load`] so no
    /// change in between is missed.
    pub fn watch(&self) -> notify::Result<DirWatch> {
        DirWatch::new(&self.dir)
    }

    /// Reloads `current` on every change until `shutdown`; a broken change is logged and
    /// the last good configuration kept.
    pub async fn run(
        self,
        mut watch: DirWatch,
        current: Arc<ArcSwap<Injector>>,
        shutdown: CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                ev = watch.changed(SETTLE) => {
                    match ev {
                        None => return,
                        Some(Err(e)) => warn!(dir = %self.dir.display(), error = %e, "watching the injection config"),
                        Some(Ok(())) => {}
                    }
                    match self.load() {
                        Ok(injector) => {
                            info!(dir = %self.dir.display(), "injection config reloaded");
                            current.store(Arc::new(injector));
                        }
                        Err(e) => warn!(error = %e, "rejecting the changed injection config; keeping the last good one"),
                    }
                }
            }
        }
    }
}
