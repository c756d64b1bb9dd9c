//! Why a plugin could not be loaded, and why one call into it failed.
//! Every message names the plugin file or plugin it is about.

use std::path::PathBuf;

/// A plugin file that cannot be used. The running system keeps its previous plugin.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read plugin {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("plugin {} is not a WebAssembly component: {reason}", path.display())]
    NotAComponent { path: PathBuf, reason: String },
    #[error("plugin {} does not implement the edge plugin contract: {reason}", path.display())]
    NotAPlugin { path: PathBuf, reason: String },
    #[error("plugin {} was built against edge:plugin@{found}; this host accepts {accepted}", path.display())]
    IncompatibleContract { path: PathBuf, found: String, accepted: String },
    #[error("plugin {} needs something the sandbox does not provide: {reason}", path.display())]
    Link { path: PathBuf, reason: String },
    #[error("plugin {} failed to start: {reason}", path.display())]
    Start { path: PathBuf, reason: String },
    #[error("plugin {} rejected its options: {reason}", path.display())]
    Configure { path: PathBuf, reason: String },
    #[error("plugin {} has sha256 {found}, but edge.yaml pins {expected}", path.display())]
    DigestMismatch { path: PathBuf, expected: String, found: String },
    /// A source names a plugin that its plugins folder does not hold (yet).
    #[error("no plugin named `{name}` in {} ({holds})", dir.display())]
    NotInFolder { name: String, dir: PathBuf, holds: String },
}

impl LoadError {
    /// The plugin is not there (yet): no such file, or no such name in the plugins folder.
    pub fn is_absent(&self) -> bool {
        match self {
            LoadError::Read { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
            LoadError::NotInFolder { .. } => true,
            _ => false,
        }
    }
}

/// One `translate` call that produced no positions.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// The plugin says the message can never be translated.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The plugin cannot translate it now.
    #[error("plugin unavailable: {0}")]
    Unavailable(String),
    /// The plugin trapped (deadline, memory limit, panic, stack overflow); its instance
    /// was replaced.
    #[error("plugin trapped: {0}")]
    Trapped(String),
    /// The plugin returned something the contract forbids (non-finite coordinates,
    /// too many positions, an empty device id).
    #[error("plugin returned invalid output: {0}")]
    InvalidOutput(String),
}

impl CallError {
    /// A short, stable label for metrics and fixtures.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::Malformed(_) => "malformed",
            CallError::Unavailable(_) => "unavailable",
            CallError::Trapped(_) => "trapped",
            CallError::InvalidOutput(_) => "invalid-output",
        }
    }

    /// The plugin misbehaved (as opposed to a message it cannot read): counts against its health.
    pub fn is_fault(&self) -> bool {
        matches!(self, CallError::Trapped(_) | CallError::InvalidOutput(_))
    }

    pub fn detail(&self) -> &str {
        match self {
            CallError::Malformed(m)
            | CallError::Unavailable(m)
            | CallError::Trapped(m)
            | CallError::InvalidOutput(m) => m,
        }
    }
}
