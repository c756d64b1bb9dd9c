//! The WebAssembly plugin host: compiles plugin components (with an on-disk cache), checks
//! their contract version, and runs them in a sandbox with CPU, memory and capability limits.
//!
//! [`PluginEngine`] is one per process; [`PluginEngine::load`] gives a checked, shareable
//! [`LoadedPlugin`]; each worker thread owns [`PluginInstance`]s created from it.

mod bindings;
mod cache;
pub mod catalog;
mod compiler;
mod contract;
mod deadline;
mod engine;
mod error;
pub mod fixtures;
mod instance;
mod sandbox;

pub use cache::{CacheOutcome, sha256_hex};
pub use catalog::{Catalog, CatalogFile};
pub use compiler::{CHILD_COMMAND as COMPILER_COMMAND, child_main as compiler_main};
pub use contract::{CONTRACT_PACKAGE, CONTRACT_VERSION, ComponentSummary};
pub use engine::{LoadedPlugin, PluginEngine, PluginInfo};
pub use error::{CallError, LoadError};
pub use instance::PluginInstance;
pub use sandbox::SandboxLimits;
