//! The directory source: Kubernetes-style YAML files in a watched folder (`--configDir`).
//!
//! Every change triggers a rescan of the folder; unchanged files produce no events because
//! the store compares contents. A file that fails to parse is reported (log, metric,
//! `/debug/configz`) and its last good objects keep serving.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::object::parse_manifests;
use super::secrets::SecretStore;
use super::store::ConfigStore;

/// How long to wait for a burst of file events to settle before rescanning.
const SETTLE: Duration = Duration::from_millis(50);

/// Metrics of the directory source.
#[derive(Clone, Default)]
pub struct Metrics {
    file_errors: Counter,
}

impl Metrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "pilot_config_file_errors",
            "Configuration files that could not be read or parsed",
            m.file_errors.clone(),
        );
        m
    }
}

/// Reads and watches a folder of manifests.
pub struct DirSource {
    dir: PathBuf,
    store: ConfigStore,
    /// Where the folder's `v1` Secrets go, if anywhere (SDS credentials).
    secrets: Option<SecretStore>,
    metrics: Metrics,
}

impl DirSource {
    pub fn new(dir: impl Into<PathBuf>, store: ConfigStore, metrics: Metrics) -> Self {
        DirSource {
            dir: dir.into(),
            store,
            secrets: None,
            metrics,
        }
    }

    /// Also feeds the folder's Secrets to `secrets`, each file a source of its own.
    pub fn with_secrets(mut self, secrets: SecretStore) -> Self {
        self.secrets = Some(secrets);
        self
    }

    /// Loads every file once. Errors in files are recorded, not returned: only an unreadable
    /// folder is an error.
    pub fn sync(&self) -> std::io::Result<()> {
        let files = config_files(&self.dir)?;
        let seen: std::collections::BTreeSet<String> =
            files.iter().map(|p| p.display().to_string()).collect();
        for source in self.store.sources() {
            if !seen.contains(&source) {
                info!(file = %source, "config file removed");
                self.store.remove_source(&source);
            }
        }
        if let Some(secrets) = &self.secrets {
            for source in secrets.sources() {
                if !seen.contains(&source) {
                    secrets.replace_source(&source, Vec::new());
                }
            }
        }
        for path in files {
            self.load_file(&path);
        }
        Ok(())
    }

    fn load_file(&self, path: &Path) {
        let source = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                self.fail(&source, format!("cannot read: {e}"));
                return;
            }
        };
        match parse_manifests(&text) {
            Ok(mut parsed) => {
                for skipped in &parsed.skipped {
                    debug!(file = %source, kind = %skipped, "skipping kind istiod does not use");
                }
                // Istio resources the webhook would deny are not applied; the rest of the
                // file is.
                let mut rejected = Vec::new();
                parsed.configs.retain(|c| match c.raw.as_ref().and_then(crate::validation::rejection) {
                    Some(error) => {
                        warn!(file = %source, config = %c.key, %error, "rejecting invalid resource");
                        rejected.push(format!("{}: {error}", c.key));
                        false
                    }
                    None => true,
                });
                if let Some(secrets) = &self.secrets {
                    let changed = secrets.replace_source(&source, parsed.secrets);
                    if !changed.is_empty() {
                        info!(file = %source, secrets = changed.len(), "Secrets updated");
                    }
                }
                let changes = self.store.replace_source(&source, parsed.configs);
                if !changes.is_empty() {
                    info!(file = %source, kinds = ?changes.kinds, "config updated");
                }
                if !rejected.is_empty() {
                    self.metrics.file_errors.inc();
                    self.store.record_error(&source, rejected.join("; "));
                }
            }
            Err(e) => self.fail(&source, e.to_string()),
        }
    }

    fn fail(&self, source: &str, error: String) {
        warn!(file = %source, %error, "rejecting config file; keeping its last good version");
        self.metrics.file_errors.inc();
        self.store.record_error(source, error);
    }

    /// Starts watching the folder. Call before the first [`DirSource::sync`], so that no
    /// change between the initial load and the watch is missed.
    pub fn watch(&self) -> notify::Result<DirWatch> {
        DirWatch::new(&self.dir)
    }

    /// Rescans on every change in the folder until `shutdown` fires.
    pub async fn run(
        self,
        mut watch: DirWatch,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<()> {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                ev = watch.changed(SETTLE) => {
                    match ev {
                        None => return Ok(()),
                        Some(Err(e)) => warn!(error = %e, "watching config dir"),
                        Some(Ok(())) => {}
                    }
                    if let Err(e) = self.sync() {
                        warn!(dir = %self.dir.display(), error = %e, "rescanning config dir");
                    }
                }
            }
        }
    }
}

/// An active watch on a folder and everything under it (`--configDir`, the injector's
/// mounted ConfigMap): a nudge for each change, the reader rescans as a whole.
pub struct DirWatch {
    _watcher: notify::RecommendedWatcher,
    events: mpsc::UnboundedReceiver<notify::Result<()>>,
}

impl DirWatch {
    /// Watches `dir`: the folder, not its files, since a ConfigMap volume updates them by
    /// swapping a symlink.
    pub fn new(dir: &Path) -> notify::Result<DirWatch> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            // Reading the files ourselves produces access events: only changes matter.
            match ev {
                Ok(ev) if matches!(ev.kind, notify::EventKind::Access(_)) => {}
                other => {
                    let _ = tx.send(other.map(|_| ()));
                }
            }
        })?;
        watcher.watch(dir, RecursiveMode::Recursive)?;
        Ok(DirWatch {
            _watcher: watcher,
            events: rx,
        })
    }

    /// Waits for the next change, then `settle` more, so that a burst of events (an editor
    /// writes, renames, chmods) counts once. `None` once the watcher is gone.
    pub async fn changed(&mut self, settle: Duration) -> Option<notify::Result<()>> {
        let first = self.events.recv().await?;
        tokio::time::sleep(settle).await;
        while self.events.try_recv().is_ok() {}
        Some(first)
    }
}

/// How many folders deep `--configDir` is searched; deeper folders are skipped.
pub const MAX_DEPTH: usize = 16;

/// The config files under `dir`, sorted: `.yaml`, `.yml` and `.json`, in subfolders too;
/// hidden entries (editor swap files, a ConfigMap volume's `..data` links) are skipped.
/// Links are followed, but a folder is read once however many links lead to it, so a
/// link loop ends the descent, as does [`MAX_DEPTH`]; names that are neither files nor
/// folders (a FIFO would block the read) are skipped.
pub fn config_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut seen = HashSet::new();
    collect_files(dir, 0, &mut seen, &mut files)?;
    files.sort();
    Ok(files)
}

fn collect_files(
    dir: &Path,
    depth: usize,
    seen: &mut HashSet<(u64, u64)>,
    out: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    let meta = std::fs::metadata(dir)?;
    if !seen.insert((meta.dev(), meta.ino())) {
        warn!(dir = %dir.display(), "config folder already read (a link loop or a second link to it); skipping");
        return Ok(());
    }
    // In name order, so that of two links to one folder the same one is read every time.
    let mut entries = std::fs::read_dir(dir)?.collect::<std::io::Result<Vec<_>>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue; // editor swap files, Kubernetes ConfigMap `..data` links
        }
        let is_config = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        );
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => {
                if depth + 1 > MAX_DEPTH {
                    warn!(dir = %path.display(), max_depth = MAX_DEPTH, "config folder nested too deep; skipping");
                } else {
                    collect_files(&path, depth + 1, seen, out)?;
                }
            }
            Ok(m) if m.is_file() => {
                if is_config {
                    out.push(path);
                }
            }
            Ok(_) => {
                if is_config {
                    warn!(file = %path.display(), "not a regular file; skipping");
                }
            }
            // A dangling link: reading it reports the error against the file.
            Err(_) => {
                if is_config {
                    out.push(path);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
