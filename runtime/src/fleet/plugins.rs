//! The plugins folder (`plugins_dir`) as the operator sees it: every component on the box with
//! its name, version and digest, the files that are not usable and why, and who runs what.

use serde::{Deserialize, Serialize};

/// One `.wasm` file of the plugins folder (`/readyz`, `/api/status`, `edge plugin list`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PluginFile {
    pub file: String,
    /// What the component says of itself; empty when it is not usable.
    pub name: String,
    pub version: String,
    pub vendor: String,
    /// The `edge:plugin` contract version it implements.
    pub contract: String,
    pub topics: Vec<String>,
    pub sha256: String,
    /// Why the file cannot be used, if it cannot.
    pub error: Option<String>,
    /// The sources running this very build (filled in by the fleet's judgement).
    #[serde(default)]
    pub used_by: Vec<String>,
}
