//! One wasmtime engine per process: compiles plugin files (through the disk cache), checks
//! them against the contract, and hands out [`LoadedPlugin`]s that instantiate cheaply.

use super::bindings::{VendorPlugin, VendorPluginPre};
use super::cache::{CacheOutcome, ComponentCache, sha256_hex};
use super::compiler::Compiler;
use super::contract::{ComponentSummary, ContractProblem};
use super::error::LoadError;
use super::instance::PluginInstance;
use super::sandbox::{HostState, SandboxLimits};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, Store};

/// How often the epoch ticker advances; call deadlines are counted in these ticks. Coarse on
/// purpose: the ticker's wake-ups cost every second, deadlines only when a plugin misbehaves.
const EPOCH_TICK: Duration = Duration::from_millis(20);
/// The timer that cuts off a call waiting in a host function fires this long after the epoch
/// deadline, so that a computing call is reported as such (its trap comes first).
const DEADLINE_MARGIN: Duration = Duration::from_millis(40);

/// The process-wide plugin engine. Cheap to clone.
#[derive(Clone)]
pub struct PluginEngine {
    inner: Arc<EngineInner>,
}

struct EngineInner {
    engine: Engine,
    linker: Linker<HostState>,
    cache: ComponentCache,
    limits: SandboxLimits,
}

/// The engine's configuration, here and in a compiler child process alike.
pub(super) fn engine_config(max_wasm_stack: usize) -> Config {
    let mut config = Config::new();
    config.epoch_interruption(true).max_wasm_stack(max_wasm_stack);
    // Plugins make one call at a time: without the component model's concurrent tasks, an
    // async call is one fiber switch, a third of a translation cheaper (docs/performance.md).
    config.concurrency_support(false);
    // EDGE_WASM_PERFMAP=1: name the plugins' compiled functions for `perf` (/tmp/perf-<pid>.map).
    if std::env::var_os("EDGE_WASM_PERFMAP").is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    config
}

impl PluginEngine {
    /// An engine with these limits, caching compiled plugins in `cache_dir` when given, and
    /// compiling in this process.
    pub fn new(limits: SandboxLimits, cache_dir: Option<PathBuf>) -> anyhow::Result<Self> {
        Self::with_compiler(limits, cache_dir, Compiler::InProcess)
    }

    /// As [`new`](Self::new), compiling in a child process (see [`Compiler::Child`]): for a
    /// long-running process.
    pub fn compiling_in_child(limits: SandboxLimits, cache_dir: Option<PathBuf>) -> anyhow::Result<Self> {
        let compiler = Compiler::Child { max_wasm_stack: limits.max_wasm_stack };
        Self::with_compiler(limits, cache_dir, compiler)
    }

    fn with_compiler(limits: SandboxLimits, cache_dir: Option<PathBuf>, compiler: Compiler) -> anyhow::Result<Self> {
        let engine = Engine::new(&engine_config(limits.max_wasm_stack))
            .map_err(|e| anyhow::anyhow!("cannot create the wasm engine: {e}"))?;
        let mut linker = Linker::new(&engine);
        // Async WASI: a plugin waiting in a host call (sleep, poll) can then be cut off at its
        // deadline, which the epoch interruption alone cannot do (it stops wasm code only).
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| anyhow::anyhow!("linking WASI: {e}"))?;
        VendorPlugin::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |state| state)
            .map_err(|e| anyhow::anyhow!("linking the edge:plugin host interface: {e}"))?;
        start_epoch_ticker(&engine);
        Ok(PluginEngine {
            inner: Arc::new(EngineInner { engine, linker, cache: ComponentCache::new(cache_dir, compiler), limits }),
        })
    }

    pub fn limits(&self) -> &SandboxLimits {
        &self.inner.limits
    }

    /// Reads, compiles and checks the plugin at `path`: it must implement a compatible
    /// contract, instantiate in the sandbox, describe itself and accept `options`.
    /// Blocking (disk and cranelift): call it from a blocking thread.
    pub fn load(
        &self,
        path: &Path,
        options: &[(String, String)],
        pinned_sha256: Option<&str>,
    ) -> Result<Arc<LoadedPlugin>, LoadError> {
        let wasm = std::fs::read(path).map_err(|source| LoadError::Read { path: path.into(), source })?;
        self.load_bytes(path, &wasm, options, pinned_sha256)
    }

    /// As [`load`](Self::load), with the file's bytes already read; `path` names it in errors.
    pub fn load_bytes(
        &self,
        path: &Path,
        wasm: &[u8],
        options: &[(String, String)],
        pinned_sha256: Option<&str>,
    ) -> Result<Arc<LoadedPlugin>, LoadError> {
        let plugin = Arc::new(self.compile_checked(path, wasm, options, pinned_sha256)?);
        // One configured instance proves the options are accepted before anyone relies on it.
        PluginInstance::start(plugin.clone())?;
        Ok(plugin)
    }

    /// Compiles (through the cache), checks the contract, links and describes; not configured.
    fn compile_checked(
        &self,
        path: &Path,
        wasm: &[u8],
        options: &[(String, String)],
        pinned_sha256: Option<&str>,
    ) -> Result<LoadedPlugin, LoadError> {
        let digest = sha256_hex(wasm);
        if let Some(expected) = pinned_sha256.filter(|e| !e.eq_ignore_ascii_case(&digest)) {
            return Err(LoadError::DigestMismatch { path: path.into(), expected: expected.into(), found: digest });
        }
        if !wasm.starts_with(b"\0asm") {
            return Err(LoadError::NotAComponent {
                path: path.into(),
                reason: "it does not start with the wasm magic bytes".into(),
            });
        }
        let started = Instant::now();
        let (component, cache) = self
            .inner
            .cache
            .load_or_compile(&self.inner.engine, wasm, &digest)
            .map_err(|e| LoadError::NotAComponent { path: path.into(), reason: format!("{e:#}") })?;
        let compile_time = started.elapsed();
        let summary = ComponentSummary::of(&component, &self.inner.engine);
        let contract = summary.contract_version().map_err(|problem| match problem {
            ContractProblem::NoTranslator(reason) => LoadError::NotAPlugin { path: path.into(), reason },
            ContractProblem::Incompatible { found, accepted } => {
                LoadError::IncompatibleContract { path: path.into(), found, accepted }
            }
        })?;
        let pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .and_then(VendorPluginPre::new)
            .map_err(|e| LoadError::Link { path: path.into(), reason: format!("{e:#}") })?;
        let mut plugin = LoadedPlugin {
            path: path.into(),
            sha256: digest,
            contract,
            summary,
            info: PluginInfo::default(),
            options: options.to_vec(),
            cache,
            compile_time,
            pre,
            engine: self.clone(),
        };
        plugin.info = plugin.describe()?;
        Ok(plugin)
    }

    /// Reads, compiles and checks the plugin at `path` and asks it to describe itself, without
    /// configuring it: what a folder listing shows of a plugin whose options are not known.
    /// Give it options with [`LoadedPlugin::with_options`] before running it. Blocking.
    pub fn examine(&self, path: &Path) -> Result<Arc<LoadedPlugin>, LoadError> {
        let wasm = std::fs::read(path).map_err(|source| LoadError::Read { path: path.into(), source })?;
        self.compile_checked(path, &wasm, &[], None).map(Arc::new)
    }

    pub(super) fn new_store(&self, plugin_name: Arc<str>) -> Store<HostState> {
        let mut store = Store::new(&self.inner.engine, HostState::new(plugin_name, &self.inner.limits));
        store.limiter(|state| &mut state.limiter);
        let call_timeout = self.inner.limits.call_timeout;
        store.epoch_deadline_callback(move |mut store| {
            Ok(store.data_mut().cpu_deadline.on_epoch_deadline(call_timeout))
        });
        store
    }

    /// Gives the call about to start on `store` its whole deadline.
    pub(super) fn arm_deadline(&self, store: &mut Store<HostState>) {
        store.set_epoch_deadline(self.deadline_ticks());
        store.data_mut().cpu_deadline.reset();
    }

    /// Epoch ticks that make up one call's wall-clock deadline (rounded up, plus the tick in
    /// progress); past it, [`super::deadline::CpuDeadline`] decides.
    fn deadline_ticks(&self) -> u64 {
        (self.inner.limits.call_timeout.as_nanos().div_ceil(EPOCH_TICK.as_nanos()) as u64) + 1
    }

    /// Runs one call into a plugin within its deadline. A call that computes past it traps
    /// (epoch interruption, a moment earlier); one that waits in a host call is dropped here.
    pub(super) fn call<F: std::future::Future>(&self, call: F) -> Result<F::Output, super::deadline::Overran> {
        super::deadline::run(self.inner.limits.call_timeout + DEADLINE_MARGIN, call)
    }
}

// One thread for the process advances the engine's epoch; it ends with the engine.
fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("edge-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawning the epoch ticker thread");
}

/// What a plugin says about itself (`describe`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    pub vendor: String,
    pub description: String,
    pub default_topics: Vec<String>,
    pub options: Vec<PluginOption>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PluginOption {
    pub name: String,
    pub description: String,
}

/// A compiled, checked plugin. Instances are created from it per worker thread.
#[derive(Clone)]
pub struct LoadedPlugin {
    pub path: PathBuf,
    pub sha256: String,
    /// The `edge:plugin` version it was built against.
    pub contract: String,
    pub summary: ComponentSummary,
    pub info: PluginInfo,
    pub options: Vec<(String, String)>,
    pub cache: CacheOutcome,
    pub compile_time: Duration,
    pub(super) pre: VendorPluginPre<HostState>,
    pub(super) engine: PluginEngine,
}

impl LoadedPlugin {
    /// A new configured instance.
    pub fn instantiate(self: &Arc<Self>) -> Result<PluginInstance, LoadError> {
        PluginInstance::start(self.clone())
    }

    /// The same compiled plugin with other options, checked by starting one instance.
    pub fn with_options(&self, options: &[(String, String)]) -> Result<Arc<LoadedPlugin>, LoadError> {
        let plugin = Arc::new(LoadedPlugin { options: options.to_vec(), ..self.clone() });
        PluginInstance::start(plugin.clone())?;
        Ok(plugin)
    }

    /// A call that had to be cut off at its deadline.
    pub(super) fn overran(&self, call: &str) -> LoadError {
        LoadError::Start {
            path: self.path.clone(),
            reason: format!(
                "{call} did not return within its deadline of {:?} (it waits in a host call, such as a sleep)",
                self.engine.limits().call_timeout
            ),
        }
    }

    fn describe(&self) -> Result<PluginInfo, LoadError> {
        let label: Arc<str> =
            self.path.file_name().map(|n| n.to_string_lossy().into()).unwrap_or_else(|| "plugin".into());
        let mut store = self.engine.new_store(label);
        self.engine.arm_deadline(&mut store);
        let start = |e: wasmtime::Error| LoadError::Start { path: self.path.clone(), reason: format!("{e:#}") };
        let described = self.engine.call(async {
            let bindings = self.pre.instantiate_async(&mut store).await?;
            bindings.edge_plugin_translator().call_describe(&mut store).await
        });
        let info = described.map_err(|_| self.overran("describe()"))?.map_err(start)?;
        let info = PluginInfo {
            options: info.options.into_iter().map(|(name, description)| PluginOption { name, description }).collect(),
            name: info.name,
            version: info.version,
            vendor: info.vendor,
            description: info.description,
            default_topics: info.default_topics,
        };
        if info.name.trim().is_empty() {
            return Err(LoadError::Start {
                path: self.path.clone(),
                reason: "describe() returned an empty name".into(),
            });
        }
        Ok(info)
    }
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("path", &self.path)
            .field("name", &self.info.name)
            .field("sha256", &self.sha256)
            .finish()
    }
}
