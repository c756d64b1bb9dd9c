//! Watches the config file, plugin files and the plugins folder for changes (notify), by
//! watching folders: editors and `cp`/`mv` replace files in ways a watch on the file would miss.

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

pub struct FileWatcher {
    watcher: RecommendedWatcher,
    dirs: HashSet<PathBuf>,
    wanted: Arc<Mutex<Wanted>>,
}

/// Only changes to these are reported (the folders hold other files too: logs, the state
/// directory).
#[derive(Default)]
struct Wanted {
    files: HashSet<PathBuf>,
    /// Every `.wasm` file in this folder.
    plugins_dir: Option<PathBuf>,
}

impl Wanted {
    fn wants(&self, path: &Path) -> bool {
        self.files.contains(path)
            || (path.extension().is_some_and(|e| e == "wasm") && path.parent() == self.plugins_dir.as_deref())
    }
}

impl FileWatcher {
    /// Changed paths of watched files arrive on `tx`.
    pub fn new(tx: mpsc::UnboundedSender<PathBuf>) -> anyhow::Result<Self> {
        let wanted: Arc<Mutex<Wanted>> = Arc::default();
        let filter = wanted.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            if matches!(event.kind, EventKind::Access(_)) {
                return;
            }
            let wanted = filter.lock().expect("watch list lock");
            for path in event.paths.into_iter().filter(|p| wanted.wants(p)) {
                let _ = tx.send(path);
            }
        })?;
        Ok(FileWatcher { watcher, dirs: HashSet::new(), wanted })
    }

    /// Watches exactly these files, and the `.wasm` files of `plugins_dir` (by watching folders).
    pub fn watch(&mut self, files: &HashSet<PathBuf>, plugins_dir: Option<&Path>) {
        *self.wanted.lock().expect("watch list lock") =
            Wanted { files: files.clone(), plugins_dir: plugins_dir.map(Path::to_path_buf) };
        let dirs = files.iter().filter_map(|f| f.parent()).chain(plugins_dir);
        for dir in dirs.collect::<Vec<_>>() {
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
