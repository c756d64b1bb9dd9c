//! Shared helpers for the integration tests: where the repository, the built plugins and
//! the `edge` binary are. Plugins must be built first (`scripts/build-plugins`; `scripts/test` does it).
#![allow(dead_code)]

pub mod browser;
pub mod mosquitto;
pub mod mqtt;
pub mod ports;
pub mod process;
pub mod proxy;
pub mod tls;
pub mod tmpfs;
pub mod twinzo;
pub mod webhook;

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("runtime/ sits in the repository").to_path_buf()
}

/// A built plugin component from plugins/dist/.
pub fn plugin(name: &str) -> PathBuf {
    let path = repo().join("plugins/dist").join(format!("{name}.wasm"));
    assert!(path.exists(), "{} is missing: run scripts/build-plugins first", path.display());
    path
}

/// The `edge` binary, with a private compiled-plugin cache so tests do not share state.
pub fn edge(cache: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edge"));
    cmd.env("EDGE_CACHE_DIR", cache).env_remove("EDGE_LOG").current_dir(repo());
    cmd
}

/// The same component with a custom section appended: a different file (new sha256) that
/// behaves identically.
pub fn wasm_variant(wasm: &[u8], tag: u8) -> Vec<u8> {
    let name = b"edge-test";
    let payload = [&[name.len() as u8][..], name, &[tag]].concat();
    [wasm, &[0u8, payload.len() as u8], &payload].concat()
}

/// Writes a file only its owner can read (configs with secrets in clear must be).
pub fn write_private(path: &Path, contents: impl AsRef<[u8]>) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path).unwrap();
    std::io::Write::write_all(&mut file, contents.as_ref()).unwrap();
}
