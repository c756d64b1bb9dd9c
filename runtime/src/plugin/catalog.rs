//! A folder of plugin components (`plugins_dir`): every `.wasm` in it compiled and described
//! once, so that a source can name its plugin and an operator can see what is on the box.
//!
//! A name resolves to the component whose `describe()` gives it; of several, the highest
//! version (a vendor drops `acme-1.3.wasm` beside `acme-1.2.wasm` and the next reload runs it).

use super::engine::{LoadedPlugin, PluginEngine};
use super::error::LoadError;
use std::cmp::Ordering;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What one scan of a plugins folder found.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub dir: PathBuf,
    /// Every `.wasm` file, by file name.
    pub files: Vec<CatalogFile>,
    /// Why the folder could not be listed, if it could not (it holds nothing then).
    pub unreadable: Option<String>,
}

/// One file of the folder: a described (not yet configured) plugin, or why it is not usable.
#[derive(Debug, Clone)]
pub struct CatalogFile {
    pub file: PathBuf,
    pub plugin: Result<Arc<LoadedPlugin>, String>,
}

impl Catalog {
    /// Examines every `.wasm` file in `dir` (compiling through the engine's cache). Blocking.
    pub fn scan(engine: &PluginEngine, dir: &Path) -> Catalog {
        let listed = std::fs::read_dir(dir).map(|entries| {
            let mut paths: Vec<PathBuf> = entries
                .filter_map(|entry| Some(entry.ok()?.path()))
                .filter(|path| path.extension().is_some_and(|e| e == "wasm") && path.is_file())
                .collect();
            paths.sort();
            paths
        });
        let (paths, unreadable) = match listed {
            Ok(paths) => (paths, None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        let files = paths
            .into_iter()
            .map(|file| {
                let plugin = engine.examine(&file).map_err(|e| e.to_string());
                CatalogFile { file, plugin }
            })
            .collect();
        Catalog { dir: dir.to_path_buf(), files, unreadable }
    }

    /// The plugins that loaded.
    pub fn usable(&self) -> impl Iterator<Item = &Arc<LoadedPlugin>> {
        self.files.iter().filter_map(|f| f.plugin.as_ref().ok())
    }

    /// The component named `name` (the highest version of that name), or the one of them with
    /// sha256 `pinned` when given. Not yet configured: see [`LoadedPlugin::with_options`].
    pub fn find(&self, name: &str, pinned: Option<&str>) -> Result<Arc<LoadedPlugin>, LoadError> {
        let mut named: Vec<&Arc<LoadedPlugin>> = self.usable().filter(|p| p.info.name == name).collect();
        named.sort_by(|a, b| compare_versions(&a.info.version, &b.info.version).then_with(|| a.path.cmp(&b.path)));
        let Some(newest) = named.last() else {
            return Err(LoadError::NotInFolder { name: name.into(), dir: self.dir.clone(), holds: self.holds() });
        };
        match pinned {
            None => Ok((*newest).clone()),
            Some(pin) => {
                named.iter().rev().find(|p| p.sha256.eq_ignore_ascii_case(pin)).map(|p| (*p).clone()).ok_or_else(|| {
                    LoadError::DigestMismatch {
                        path: newest.path.clone(),
                        expected: pin.into(),
                        found: newest.sha256.clone(),
                    }
                })
            }
        }
    }

    /// What the folder holds, for an error that names a plugin it does not.
    fn holds(&self) -> String {
        if let Some(why) = &self.unreadable {
            return format!("it cannot be read: {why}");
        }
        let mut parts: Vec<String> = self
            .files
            .iter()
            .map(|f| match &f.plugin {
                Ok(p) => format!("{} {}", p.info.name, p.info.version),
                Err(_) => format!("{} (not usable)", f.file.file_name().unwrap_or_default().to_string_lossy()),
            })
            .collect();
        if parts.is_empty() {
            parts.push("no .wasm file".into());
        }
        format!("it holds {}", parts.join(", "))
    }
}

/// Compares versions: by semver precedence when both are semver (`1.2.0-rc1` before `1.2.0`),
/// else part by part, numbers as numbers (`1.10` after `1.9`) and the rest as text.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let semver = |v: &str| semver::Version::parse(v.trim_start_matches('v')).ok();
    if let (Some(a), Some(b)) = (semver(a), semver(b)) {
        return a.cmp_precedence(&b);
    }
    let parts = |v: &str| -> Vec<(u64, String)> {
        v.trim_start_matches('v')
            .split(['.', '-', '+'])
            .map(|p| p.parse::<u64>().map_or((u64::MAX, p.to_string()), |n| (n, String::new())))
            .collect()
    };
    parts(a).cmp(&parts(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_as_numbers() {
        assert_eq!(compare_versions("1.10.0", "1.9.3"), Ordering::Greater);
        assert_eq!(compare_versions("2.0", "2.0.0"), Ordering::Less);
        assert_eq!(compare_versions("v1.2.0", "1.2.0"), Ordering::Equal);
        assert_eq!(compare_versions("1.2.0", "1.2.0-rc1"), Ordering::Greater);
        assert_eq!(compare_versions("1.2", "1.10"), Ordering::Less);
    }
}
