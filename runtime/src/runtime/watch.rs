//! Watches the config file and plugin files for changes (notify), by watching their folders:
//! editors and `cp`/`mv` replace files in ways a watch on the file itself would miss.

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;

pub struct FileWatcher {
    watcher: RecommendedWatcher,
    dirs: HashSet<PathBuf>,
}

impl FileWatcher {
    /// Changed paths arrive on `tx`.
    pub fn new(tx: mpsc::UnboundedSender<PathBuf>) -> anyhow::Result<Self> {
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            if matches!(event.kind, EventKind::Access(_)) {
                return;
            }
            for path in event.paths {
                let _ = tx.send(path);
            }
        })?;
        Ok(FileWatcher { watcher, dirs: HashSet::new() })
    }

    /// Makes sure the folders of these files are watched.
    pub fn watch_files<'a>(&mut self, files: impl IntoIterator<Item = &'a Path>) {
        for file in files {
            let Some(dir) = file.parent() else { continue };
            if self.dirs.contains(dir) {
                continue;
            }
            match self.watcher.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.dirs.insert(dir.to_path_buf());
                }
                Err(e) => tracing::warn!(dir = %dir.display(), "cannot watch for changes (hot reload off for files there): {e}"),
            }
        }
    }
}
