//! Watches the config file and plugin files for changes (notify), by watching their folders:
//! editors and `cp`/`mv` replace files in ways a watch on the file itself would miss.

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

pub struct FileWatcher {
    watcher: RecommendedWatcher,
    dirs: HashSet<PathBuf>,
    /// Only changes to these files are reported (their folders hold other files too: logs,
    /// the state directory).
    files: Arc<Mutex<HashSet<PathBuf>>>,
}

impl FileWatcher {
    /// Changed paths of watched files arrive on `tx`.
    pub fn new(tx: mpsc::UnboundedSender<PathBuf>) -> anyhow::Result<Self> {
        let files: Arc<Mutex<HashSet<PathBuf>>> = Arc::default();
        let wanted = files.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            if matches!(event.kind, EventKind::Access(_)) {
                return;
            }
            let wanted = wanted.lock().expect("watch list lock");
            for path in event.paths.into_iter().filter(|p| wanted.contains(p)) {
                let _ = tx.send(path);
            }
        })?;
        Ok(FileWatcher { watcher, dirs: HashSet::new(), files })
    }

    /// Watches exactly these files (by watching their folders).
    pub fn watch_files<'a>(&mut self, files: impl IntoIterator<Item = &'a Path>) {
        let files: Vec<&Path> = files.into_iter().collect();
        *self.files.lock().expect("watch list lock") = files.iter().map(|f| f.to_path_buf()).collect();
        for file in files {
            let Some(dir) = file.parent() else { continue };
            if self.dirs.contains(dir) {
                continue;
            }
            match self.watcher.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.dirs.insert(dir.to_path_buf());
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), "cannot watch for changes (hot reload off for files there): {e}")
                }
            }
        }
    }
}
