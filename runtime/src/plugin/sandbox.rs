//! What a plugin may use: an empty WASI context (no files, network or environment), a memory
//! cap, a CPU deadline per call, and a rate-limited log import. One `HostState` per store.

use super::bindings::{self, Level};
use crate::text::sanitize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Resource limits applied to every plugin instance.
#[derive(Debug, Clone)]
pub struct SandboxLimits {
    /// Largest linear memory an instance may grow to.
    pub memory_bytes: usize,
    /// CPU time one `translate` (or `describe`/`configure`) call may take.
    pub call_timeout: Duration,
    /// Most positions one message may produce.
    pub max_positions: usize,
    /// Native stack for wasm frames (deep recursion traps beyond it).
    pub max_wasm_stack: usize,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        SandboxLimits {
            memory_bytes: 64 << 20,
            call_timeout: Duration::from_millis(100),
            max_positions: 1000,
            max_wasm_stack: 512 << 10,
        }
    }
}

/// The data of one plugin store.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) limiter: Limiter,
    log: RateLimitedLog,
    /// The plugin's stderr (where a Rust panic message goes), kept to explain traps.
    pub(super) stderr: MemoryOutputPipe,
    pub(super) cpu_deadline: super::deadline::CpuDeadline,
}

impl HostState {
    pub(super) fn new(plugin_name: Arc<str>, limits: &SandboxLimits) -> Self {
        let stderr = MemoryOutputPipe::new(8 << 10);
        let mut wasi = WasiCtx::builder();
        wasi.stderr(stderr.clone()).allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false);
        HostState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limiter: Limiter { memory_bytes: limits.memory_bytes, used: 0, exceeded: None },
            log: RateLimitedLog::new(plugin_name),
            stderr,
            cpu_deadline: Default::default(),
        }
    }

    /// The last panic message the plugin wrote to stderr, if any.
    pub(super) fn panic_message(&self) -> Option<String> {
        let text = String::from_utf8_lossy(&self.stderr.contents()).into_owned();
        let start = text.rfind("panicked at")?;
        let panic = text[start..].lines().take(2).collect::<Vec<_>>().join(": ");
        Some(sanitize(&panic, 300))
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl bindings::edge::plugin::types::Host for HostState {}

impl bindings::edge::plugin::host::Host for HostState {
    fn log(&mut self, level: Level, message: String) {
        self.log.write(level, &message);
    }
}

/// Caps the linear memory of an instance, all its memories together (a component may hold
/// several), and remembers that it did, so a trap can be explained.
pub(super) struct Limiter {
    memory_bytes: usize,
    /// Bytes of linear memory granted to this store so far.
    used: usize,
    pub(super) exceeded: Option<String>,
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let total = (self.used - current.min(self.used)).saturating_add(desired);
        if total > self.memory_bytes {
            let why = format!(
                "memory limit of {} MiB exceeded (its memories would take {} MiB)",
                self.memory_bytes >> 20,
                total >> 20
            );
            self.exceeded = Some(why.clone());
            return Err(wasmtime::format_err!(why));
        }
        self.used = total;
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }

    fn instances(&self) -> usize {
        64
    }

    fn memories(&self) -> usize {
        8
    }

    fn tables(&self) -> usize {
        64
    }
}

/// Plugin log lines go to `tracing`, tagged with the plugin name: a burst of 20, then
/// 5 per second; the rest are counted and reported with the next line that passes.
struct RateLimitedLog {
    plugin: Arc<str>,
    tokens: f64,
    refilled: Instant,
    suppressed: u64,
    /// Looked up once, not per line: a suppressed line must cost next to nothing.
    suppressed_total: metrics::Counter,
}

const LOG_BURST: f64 = 20.0;
const LOG_PER_SECOND: f64 = 5.0;
const LOG_MAX_BYTES: usize = 512;

impl RateLimitedLog {
    fn new(plugin: Arc<str>) -> Self {
        let suppressed_total = metrics::counter!("edge_plugin_log_suppressed_total", "plugin" => plugin.to_string());
        RateLimitedLog { plugin, tokens: LOG_BURST, refilled: Instant::now(), suppressed: 0, suppressed_total }
    }

    fn write(&mut self, level: Level, message: &str) {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.refilled).as_secs_f64() * LOG_PER_SECOND).min(LOG_BURST);
        self.refilled = now;
        if self.tokens < 1.0 {
            self.suppressed += 1;
            self.suppressed_total.increment(1);
            return;
        }
        self.tokens -= 1.0;
        let (plugin, suppressed, text) = (&*self.plugin, self.suppressed, sanitize(message, LOG_MAX_BYTES));
        self.suppressed = 0;
        match level {
            Level::Debug => tracing::debug!(plugin, suppressed, "{text}"),
            Level::Info => tracing::info!(plugin, suppressed, "{text}"),
            Level::Warn => tracing::warn!(plugin, suppressed, "{text}"),
            Level::Error => tracing::error!(plugin, suppressed, "{text}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_cap_covers_all_memories_together() {
        use wasmtime::ResourceLimiter;
        let mut limiter = Limiter { memory_bytes: 64 << 20, used: 0, exceeded: None };
        // Two memories of 32 MiB each fit; growing either beyond does not.
        assert!(limiter.memory_growing(0, 32 << 20, None).unwrap());
        assert!(limiter.memory_growing(0, 32 << 20, None).unwrap());
        assert!(limiter.memory_growing(32 << 20, 33 << 20, None).is_err());
        assert!(limiter.exceeded.as_deref().is_some_and(|why| why.contains("64 MiB")));
    }

    #[test]
    fn log_burst_then_suppression() {
        let mut log = RateLimitedLog::new("t".into());
        for _ in 0..100 {
            log.write(Level::Debug, "line");
        }
        // 20 in the burst, maybe one more refilled while looping.
        assert!(log.suppressed >= 79, "suppressed {}", log.suppressed);
    }
}
