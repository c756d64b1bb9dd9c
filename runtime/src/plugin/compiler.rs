//! Where cranelift runs: in this process, or in a short-lived child of this very binary
//! (`edge compile-plugin`, hidden) whose memory goes back to the system when it exits.
//!
//! `edge run` uses the child: compiling touches 6-11 MiB of the compiler's code pages and heap
//! that a long-running process would otherwise carry for its life (docs/performance.md,
//! "Memory"). Short commands compile in process.

use std::io::{Read, Write};
use std::process::{Command, ExitCode, Stdio};
use wasmtime::{Config, Engine};

/// How plugins are compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compiler {
    /// In this process, by a throwaway engine of the same configuration: what cranelift keeps
    /// for its next compilation (its contexts, several MB) goes when it is done.
    InProcess,
    /// In `edge compile-plugin`, run from this process's own executable, which builds its
    /// engine's configuration from the same limits.
    Child { max_wasm_stack: usize },
}

/// The hidden subcommand the child runs.
pub const CHILD_COMMAND: &str = "compile-plugin";

/// Why the child could not be used; the caller then compiles in process.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the plugin compiler process ({exe}): {source}")]
struct Unavailable {
    exe: &'static str,
    source: std::io::Error,
}

/// This process's executable, as the kernel holds it: still the very binary after an upgrade
/// replaced the file on disk.
const SELF_EXE: &str = "/proc/self/exe";

impl Compiler {
    /// The serialised native code of component `wasm` for an engine configured as `config`
    /// (load it with `Component::deserialize`).
    pub fn compile(self, config: &Config, wasm: &[u8]) -> wasmtime::Result<Vec<u8>> {
        if let Compiler::Child { max_wasm_stack } = self {
            match compile_in_child(max_wasm_stack, wasm) {
                Ok(result) => return result,
                Err(why) => tracing::warn!("{why}; compiling in process"),
            }
        }
        Engine::new(config)?.precompile_component(wasm)
    }
}

/// The outer error: the child could not run; the inner one: what it said about the plugin.
fn compile_in_child(max_wasm_stack: usize, wasm: &[u8]) -> Result<wasmtime::Result<Vec<u8>>, Unavailable> {
    let unavailable = |source| Unavailable { exe: SELF_EXE, source };
    let mut child = Command::new(SELF_EXE)
        .args([CHILD_COMMAND, "--max-wasm-stack", &max_wasm_stack.to_string()])
        .env("EDGE_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(unavailable)?;
    // The child reads all of its input before it writes anything: no deadlock in writing first.
    let written = child.stdin.take().expect("piped").write_all(wasm);
    let output = child.wait_with_output().map_err(unavailable)?;
    if output.status.success() {
        return Ok(Ok(output.stdout));
    }
    let said = String::from_utf8_lossy(&output.stderr);
    let said = said.trim().strip_prefix("error: ").unwrap_or(said.trim());
    Ok(Err(match (output.status.code(), written) {
        (Some(_), _) if !said.is_empty() => wasmtime::Error::msg(said.to_string()),
        (_, Err(e)) => wasmtime::Error::msg(format!("the plugin compiler process did not take the plugin: {e}")),
        _ => wasmtime::Error::msg(format!("the plugin compiler process failed ({})", output.status)),
    }))
}

/// The child's side (`edge compile-plugin`): the component from stdin, its native code to
/// stdout, for an engine with this stack limit.
pub fn child_main(max_wasm_stack: usize) -> anyhow::Result<ExitCode> {
    let mut wasm = Vec::new();
    std::io::stdin().read_to_end(&mut wasm)?;
    let compiled = Engine::new(&super::engine::engine_config(max_wasm_stack))?.precompile_component(&wasm)?;
    std::io::stdout().lock().write_all(&compiled)?;
    Ok(ExitCode::SUCCESS)
}
