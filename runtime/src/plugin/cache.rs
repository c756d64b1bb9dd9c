//! Compiled plugins on disk, keyed by the wasm's sha256 and the engine's compatibility hash,
//! so that a restart (or a second `edge plugin test`) does not recompile with cranelift.
//!
//! A cache entry is native code, so it is trusted only when it cannot have been planted: the
//! folder and the file must belong to this user and be writable by nobody else, and the
//! entry must carry the digest of the very wasm it was compiled from (so that neither a
//! corrupted file nor another plugin's entry renamed into place is run, with or without a
//! `sha256` pin). Otherwise the plugin is compiled afresh.

use super::compiler::Compiler;
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Where a compiled component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CacheOutcome {
    /// Loaded from the on-disk cache.
    Hit,
    /// Compiled now (and stored, when a cache directory is set).
    Compiled,
}

/// The sha256 of a plugin file, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[derive(Debug, Clone)]
pub struct ComponentCache {
    dir: Option<PathBuf>,
    compiler: Compiler,
}

impl ComponentCache {
    /// A cache in `dir` (created 0700 on first write), or none; what it lacks, `compiler` makes.
    pub fn new(dir: Option<PathBuf>, compiler: Compiler) -> Self {
        ComponentCache { dir, compiler }
    }

    /// The compiled component for `wasm` (whose sha256 is `digest`).
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        wasm: &[u8],
        digest: &str,
    ) -> wasmtime::Result<(Component, CacheOutcome)> {
        let path = self.entry(engine, digest).filter(|path| {
            let trust = trusted(path.parent().expect("cache entries live in a directory"), true);
            if let Err(why) = &trust {
                tracing::warn!(dir = %path.display(), "not using the compiled-plugin cache: {why}");
            }
            trust.is_ok()
        });
        if let Some(path) = &path {
            match read_entry(path, digest) {
                // SAFETY: the entry sits in a folder only this user can write, is not writable by
                // others, and carries the seal of this very wasm (see the module comment).
                // Read into memory rather than mapped: a file truncated under a running process
                // would otherwise crash it with SIGBUS.
                Ok(Some(compiled)) => match unsafe { Component::deserialize(engine, &compiled) } {
                    Ok(component) => return Ok((component, CacheOutcome::Hit)),
                    Err(e) => discard(path, &e.to_string()),
                },
                Ok(None) => {}
                Err(why) => discard(path, &why),
            }
        }
        let compiled = self.compiler.compile(engine.config(), wasm)?;
        // SAFETY: compiled a moment ago by this very binary, for an engine configured as `engine`.
        let component = unsafe { Component::deserialize(engine, &compiled)? };
        if let Some(path) = &path
            && let Err(e) = store(path, &sealed(digest, &compiled))
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot write compiled-plugin cache entry; continuing without");
        }
        drop(compiled);
        crate::memory::release_freed_memory();
        Ok((component, CacheOutcome::Compiled))
    }

    fn entry(&self, engine: &Engine, digest: &str) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        env!("CARGO_PKG_VERSION").hash(&mut hasher);
        Some(dir.join(format!("{digest}-{:016x}.cwasm", hasher.finish())))
    }
}

/// The seal of an entry: sha256 over the wasm's digest and the compiled bytes.
fn seal(digest: &str, compiled: &[u8]) -> [u8; 32] {
    Sha256::new().chain_update(digest.as_bytes()).chain_update(compiled).finalize().into()
}

fn sealed(digest: &str, compiled: &[u8]) -> Vec<u8> {
    [compiled, &seal(digest, compiled)].concat()
}

/// The compiled bytes of the entry at `path` if it is there, trusted and sealed for `digest`.
fn read_entry(path: &Path, digest: &str) -> Result<Option<Vec<u8>>, String> {
    if !path.exists() {
        return Ok(None);
    }
    trusted(path, false)?;
    let mut bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let Some(body) = bytes.len().checked_sub(32) else { return Err("too short to be an entry".into()) };
    if bytes[body..] != seal(digest, &bytes[..body]) {
        return Err("its seal does not match the plugin file (corrupted, or not compiled from it)".into());
    }
    bytes.truncate(body);
    Ok(Some(bytes))
}

fn discard(path: &Path, why: &str) {
    tracing::warn!(path = %path.display(), "discarding compiled-plugin cache entry: {why}");
    let _ = std::fs::remove_file(path);
}

/// Whether `path` belongs to this user and nobody else may write it (a folder that does not
/// exist yet will be created so).
fn trusted(path: &Path, folder: bool) -> Result<(), String> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if folder && e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.to_string()),
    };
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(format!("{} belongs to another user (uid {})", path.display(), meta.uid()));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!("{} may be written by others (mode {:o})", path.display(), meta.mode() & 0o777));
    }
    Ok(())
}

fn store(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().expect("cache entries live in a directory");
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const WASM_A: &str = "(component)";

    fn engine() -> Engine {
        Engine::default()
    }

    #[test]
    fn a_second_load_is_a_hit() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ComponentCache::new(Some(dir.path().join("c")), Compiler::InProcess);
        let wasm = wat::parse_str(WASM_A).unwrap();
        let digest = sha256_hex(&wasm);
        assert_eq!(cache.load_or_compile(&engine(), &wasm, &digest).unwrap().1, CacheOutcome::Compiled);
        assert_eq!(cache.load_or_compile(&engine(), &wasm, &digest).unwrap().1, CacheOutcome::Hit);
    }

    #[test]
    fn an_entry_from_another_plugin_renamed_into_place_is_not_run() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ComponentCache::new(Some(dir.path().join("c")), Compiler::InProcess);
        let (engine, a) = (engine(), wat::parse_str(WASM_A).unwrap());
        let b = wat::parse_str("(component (core module))").unwrap();
        let (da, db) = (sha256_hex(&a), sha256_hex(&b));
        cache.load_or_compile(&engine, &a, &da).unwrap();
        cache.load_or_compile(&engine, &b, &db).unwrap();
        let (entry_a, entry_b) = (cache.entry(&engine, &da).unwrap(), cache.entry(&engine, &db).unwrap());
        std::fs::copy(&entry_b, &entry_a).unwrap();
        assert_eq!(cache.load_or_compile(&engine, &a, &da).unwrap().1, CacheOutcome::Compiled);
    }

    #[test]
    fn a_folder_others_may_write_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("c");
        let cache = ComponentCache::new(Some(folder.clone()), Compiler::InProcess);
        let wasm = wat::parse_str(WASM_A).unwrap();
        let digest = sha256_hex(&wasm);
        cache.load_or_compile(&engine(), &wasm, &digest).unwrap();
        std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(cache.load_or_compile(&engine(), &wasm, &digest).unwrap().1, CacheOutcome::Compiled);
    }
}
