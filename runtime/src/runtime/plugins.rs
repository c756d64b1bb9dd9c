//! Where each source's plugin comes from: its own file (`plugin.path`) or a component of the
//! plugins folder named by its own name (`plugin.name`); and the folder as the fleet lists it.

use crate::config::{PluginLocation, PluginRef};
use crate::fleet::PluginFile;
use crate::plugin::{Catalog, LoadError, LoadedPlugin, PluginEngine};
use std::path::Path;
use std::sync::Arc;

/// The plugin `plugin` refers to, checked with its options. Blocking (disk, compiling).
/// A name needs the catalog of the plugins folder; without one it is not found.
pub fn load(
    engine: &PluginEngine,
    catalog: Option<&Catalog>,
    plugin: &PluginRef,
) -> Result<Arc<LoadedPlugin>, LoadError> {
    match &plugin.location {
        PluginLocation::File(path) => engine.load(path, &plugin.options(), plugin.sha256.as_deref()),
        PluginLocation::Named(name) => match catalog {
            Some(catalog) => catalog.find(name, plugin.sha256.as_deref())?.with_options(&plugin.options()),
            None => Err(LoadError::NotInFolder {
                name: name.clone(),
                dir: Default::default(),
                holds: "edge.yaml has no plugins_dir".into(),
            }),
        },
    }
}

/// Scans the plugins folder. Blocking.
pub fn scan(engine: &PluginEngine, dir: &Path) -> Catalog {
    let catalog = Catalog::scan(engine, dir);
    if let Some(why) = &catalog.unreadable {
        tracing::warn!(dir = %dir.display(), "cannot list the plugins folder (plugins_dir): {why}");
    }
    for file in &catalog.files {
        if let Err(why) = &file.plugin {
            tracing::warn!(file = %file.file.display(), "the plugins folder holds a file that is not a usable plugin: {why}");
        }
    }
    catalog
}

/// The folder's files as the fleet view and `edge plugin list` show them.
pub fn listing(catalog: &Catalog) -> Vec<PluginFile> {
    catalog
        .files
        .iter()
        .map(|f| {
            let file = f.file.display().to_string();
            match &f.plugin {
                Ok(p) => PluginFile {
                    file,
                    name: p.info.name.clone(),
                    version: p.info.version.clone(),
                    vendor: p.info.vendor.clone(),
                    contract: p.contract.clone(),
                    topics: p.info.default_topics.clone(),
                    sha256: p.sha256.clone(),
                    error: None,
                    used_by: Vec::new(),
                },
                Err(why) => PluginFile { file, error: Some(why.clone()), ..PluginFile::default() },
            }
        })
        .collect()
}
