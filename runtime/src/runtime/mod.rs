//! `edge run`: assembles sources, plugins, plants and sinks from edge.yaml, keeps them in step
//! with the config file and plugin files while running (hot reload), and shuts down cleanly.
//!
//! Data flow: MQTT task → plugin thread (per source) → plant task (pipeline) → device workers
//! (batching, posting). Every arrow is a bounded channel, so a slow stage pushes back.

mod plant;
pub mod plugins;
mod source;
mod watch;

use crate::config::{self, Config, SourceConfig};
use crate::fleet::Fleet;
use crate::plugin::{Catalog, LoadError, LoadedPlugin, PluginEngine, SandboxLimits};
use plant::{PlantDown, PlantRuntime, PlantSettings};
use source::{Route, SourceRuntime};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use watch::FileWatcher;

/// Changes to one file often come as several events; wait this long for the rest.
const DEBOUNCE: Duration = Duration::from_millis(150);
/// Shutdown: sources finish and acknowledge the messages in flight within this...
const SOURCES_GRACE: Duration = Duration::from_secs(5);
/// ...and the whole shutdown, plants delivering what they hold included, within this.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(9);
/// A plant that could not start is tried again this often.
const PLANT_RETRY: Duration = Duration::from_secs(10);

/// Runs the configuration at `config_path` until SIGINT or SIGTERM.
pub async fn run(config_path: &Path) -> anyhow::Result<()> {
    let config_path = std::path::absolute(config_path)?;
    let loaded = config::load(&config_path)?;
    for warning in &loaded.warnings {
        tracing::warn!("{}: {warning}", config_path.display());
    }
    let config = loaded.config;
    crate::source::install_crypto_provider();
    let metrics = crate::http::install_metrics()?;
    std::fs::create_dir_all(&config.state_dir)
        .map_err(|e| anyhow::anyhow!("cannot create state_dir {}: {e}", config.state_dir.display()))?;
    let engine = PluginEngine::compiling_in_child(sandbox_limits(&config), Some(config.state_dir.join("compiled")))?;
    if let Some(broker) = config.embedded_broker.clone() {
        tokio::task::spawn_blocking(move || crate::broker::start(&broker)).await??;
    }
    let fleet = Arc::new(Fleet::new(config.judgement()));
    crate::http::serve(config.http.listen, fleet.clone(), metrics).await?;
    let (alerts, alerts_config) = tokio::sync::watch::channel(config.alerts.clone());
    tokio::spawn(judge_fleet(fleet.clone(), alerts_config));
    let (changes_tx, mut changes) = mpsc::unbounded_channel();
    let watcher =
        FileWatcher::new(changes_tx).map_err(|e| tracing::warn!("hot reload is off: cannot watch files: {e}")).ok();
    let mut runtime = Runtime {
        config_path,
        config: Config { sources: Vec::new(), plants: Vec::new(), simulator: None, ..config.clone() },
        engine,
        catalog: None,
        fleet,
        alerts,
        plants: BTreeMap::new(),
        down: BTreeMap::new(),
        sources: BTreeMap::new(),
        simulator: None,
        watcher,
    };
    runtime.apply(config).await?;
    tracing::info!(
        sources = runtime.sources.len(),
        plants = runtime.plants.len(),
        "edge is running; edit the config or replace a plugin file to reload"
    );

    let mut summary = tokio::time::interval(runtime.config.summary_interval);
    summary.tick().await;
    let mut plant_retry = tokio::time::interval(PLANT_RETRY);
    plant_retry.tick().await;
    let mut previous = [0u64; 6];
    // Listen for signals once, for the whole run: a listener created per loop turn would
    // miss a signal that arrives while the loop is busy elsewhere.
    let (stop_tx, mut stop) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    // SIGHUP (systemctl reload): read the config and every plugin file again, for filesystems
    // whose changes the watcher does not see.
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: reading the configuration and plugin files again");
                let mut paths = runtime.watched_files();
                paths.insert(runtime.config_path.clone());
                runtime.on_files_changed(&paths).await;
                runtime.on_plugins_dir_changed().await;
            }
            Some(path) = changes.recv() => {
                let paths = debounce(path, &mut changes).await;
                runtime.on_files_changed(&paths).await;
            }
            _ = summary.tick() => tracing::info!("summary: {}", crate::stats::STATS.summary(&mut previous)),
            _ = plant_retry.tick(), if !runtime.down.is_empty() => runtime.retry_down_plants().await,
        }
    }
    tracing::info!("shutting down: delivering what is held");
    runtime.shutdown().await;
    tracing::info!("stopped; last {}", crate::stats::STATS.summary(&mut previous));
    Ok(())
}

fn sandbox_limits(config: &Config) -> SandboxLimits {
    SandboxLimits {
        memory_bytes: config.sandbox.memory_mb << 20,
        call_timeout: Duration::from_millis(config.sandbox.call_timeout_ms),
        max_positions: config.sandbox.max_positions_per_message,
        ..SandboxLimits::default()
    }
}

struct Runtime {
    config_path: PathBuf,
    config: Config,
    engine: PluginEngine,
    /// What `plugins_dir` held at its last scan (None without one).
    catalog: Option<Arc<Catalog>>,
    fleet: Arc<Fleet>,
    /// The alerting configuration the fleet's heartbeat follows.
    alerts: tokio::sync::watch::Sender<config::AlertsConfig>,
    plants: BTreeMap<String, PlantRuntime>,
    /// Plants that could not start (their spool cannot be opened), with why. Their sources
    /// hold a session with the broker but take nothing, so the broker keeps their messages.
    down: BTreeMap<String, PlantDown>,
    sources: BTreeMap<String, SourceRuntime>,
    simulator: Option<tokio::sync::watch::Sender<bool>>,
    watcher: Option<FileWatcher>,
}

impl Runtime {
    /// Moves the running system to `new`. Nothing changes if a plugin that a source is
    /// running cannot be replaced by the one the new config asks for.
    async fn apply(&mut self, new: Config) -> anyhow::Result<()> {
        // Watch first: a file that lands while this runs is then reloaded, not missed.
        self.watch_files(&new);
        if self.catalog.as_ref().map(|c| &c.dir) != new.plugins_dir.as_ref() {
            self.scan_plugins_dir(new.plugins_dir.as_deref()).await;
        }
        let plugins = self.plugins_for(&new).await?;
        for plant in &new.plants {
            let settings = PlantSettings::of(plant, &new);
            match self.plants.get_mut(&plant.name) {
                Some(running) if running.settings == settings => {}
                Some(running) => running.reconfigure(settings).await,
                None => self.start_plant(plant, settings, &new).await,
            }
        }
        let keep: HashSet<&str> = new.sources.iter().map(|s| s.name.as_str()).collect();
        for name in self.sources.keys().filter(|n| !keep.contains(n.as_str())).cloned().collect::<Vec<_>>() {
            self.fleet.remove(Some(&name), None);
            let deadline = tokio::time::Instant::now() + SOURCES_GRACE;
            self.sources.remove(&name).expect("listed above").finish(deadline).await;
            tracing::info!(source = %name, "source removed");
        }
        for source in &new.sources {
            self.apply_source(source, plugins.get(&source.name).cloned()).await;
        }
        let keep: HashSet<&str> = new.plants.iter().map(|p| p.name.as_str()).collect();
        self.down.retain(|name, _| keep.contains(name.as_str()));
        for name in self.plants.keys().filter(|n| !keep.contains(n.as_str())).cloned().collect::<Vec<_>>() {
            self.fleet.remove(None, Some(&name));
            self.plants.remove(&name).expect("listed above").finish().await;
            tracing::info!(plant = %name, "plant removed");
        }
        if new.simulator != self.config.simulator {
            self.restart_simulator(&new);
        }
        let restart_only = [
            ("embedded_broker", new.embedded_broker != self.config.embedded_broker),
            ("http", new.http != self.config.http),
            ("sandbox", new.sandbox != self.config.sandbox),
            ("state_dir", new.state_dir != self.config.state_dir),
            ("spool.hard_cap_mb", new.spool.hard_cap_mb != self.config.spool.hard_cap_mb),
            ("spool.min_free_mb", new.spool.min_free_mb != self.config.spool.min_free_mb),
        ];
        for (what, changed) in restart_only {
            if changed && !self.sources.is_empty() {
                tracing::warn!("`{what}` changed: that takes effect at the next restart");
            }
        }
        self.fleet.set_judgement(new.judgement());
        self.alerts.send_if_modified(|alerts| {
            let changed = *alerts != new.alerts;
            alerts.clone_from(&new.alerts);
            changed
        });
        self.config = new;
        Ok(())
    }

    /// The plugin each source of `new` will run: the running one when its file and options
    /// are unchanged, else freshly loaded.
    async fn plugins_for(&self, new: &Config) -> anyhow::Result<BTreeMap<String, Arc<LoadedPlugin>>> {
        let mut plugins = BTreeMap::new();
        for source in &new.sources {
            let running = self.sources.get(&source.name);
            if let Some(plugin) = running.filter(|r| r.config.plugin == source.plugin).and_then(SourceRuntime::plugin) {
                plugins.insert(source.name.clone(), plugin);
                continue;
            }
            match self.load_plugin(source).await {
                Ok(plugin) => {
                    plugins.insert(source.name.clone(), plugin);
                }
                // A source that runs a plugin keeps it unless the replacement is good.
                Err(e) if running.is_some_and(|r| r.plugin().is_some()) => anyhow::bail!("source {}: {e}", source.name),
                Err(e) => log_waiting(&source.name, &e),
            }
        }
        Ok(plugins)
    }

    /// Starts a plant, or marks it out of service (logged, in /readyz) if it cannot start.
    async fn start_plant(&mut self, plant: &config::PlantConfig, settings: PlantSettings, config: &Config) {
        match PlantRuntime::start(settings, config).await {
            Ok(runtime) => {
                self.down.remove(&plant.name);
                self.fleet.set_plant(runtime.watch.clone());
                self.plants.insert(plant.name.clone(), runtime);
                self.spawn_preflight(plant);
            }
            Err(down) => {
                tracing::error!(
                    plant = %plant.name,
                    "cannot start the plant; its sources take nothing (the broker keeps their messages), the other plants run on; trying again every {PLANT_RETRY:?}: {down}"
                );
                self.fleet.set_plant_down(&plant.name, &down.to_string());
                self.down.insert(plant.name.clone(), down);
            }
        }
    }

    /// Tries the plants that could not start again; their sources connect once they run.
    async fn retry_down_plants(&mut self) {
        let config = self.config.clone();
        for name in self.down.keys().cloned().collect::<Vec<_>>() {
            let Some(plant) = config.plant(&name) else { continue };
            self.start_plant(plant, PlantSettings::of(plant, &config), &config).await;
            if self.plants.contains_key(&name) {
                tracing::info!(plant = %name, "plant started");
                for source in config.sources.iter().filter(|s| s.plant == name) {
                    let Some(running) = self.sources.get_mut(&source.name) else { continue };
                    // Reconnecting makes the broker deliver again what the source released.
                    running.disconnect(tokio::time::Instant::now() + SOURCES_GRACE).await;
                    let plugin = running.plugin();
                    self.apply_source(source, plugin).await;
                }
            }
        }
    }

    async fn apply_source(&mut self, source: &SourceConfig, plugin: Option<Arc<LoadedPlugin>>) {
        let running = match self.sources.get_mut(&source.name) {
            Some(running) => {
                if running.config.mqtt != source.mqtt {
                    tracing::info!(source = %source.name, "MQTT settings changed: reconnecting");
                    running.disconnect(tokio::time::Instant::now() + SOURCES_GRACE).await;
                }
                running.config = source.clone();
                running
            }
            None => {
                let started = SourceRuntime::start(source.clone(), Some(self.config.state_dir.join("sessions")));
                self.fleet.set_source(&source.name, &source.plant, started.watch.clone());
                self.sources.entry(source.name.clone()).or_insert(started)
            }
        };
        // A plant out of service: the source holds its broker session (so that the broker
        // queues for it) and releases whatever it is sent, until the plant starts.
        let Some(plant) = self.plants.get(&source.plant) else {
            if let Some(plugin) = plugin {
                running.hold_plugin(plugin);
                if !running.connected() {
                    running.connect();
                }
            }
            return;
        };
        if let Some(plugin) = plugin.or_else(|| running.plugin()) {
            running.set_route(Route {
                plugin,
                transform: (&source.transform).into(),
                plant: plant.tx.clone(),
                unacknowledged_limit: source.mqtt.unacknowledged_limit(),
            });
        }
        if !running.connected() {
            running.connect();
        }
    }

    async fn load_plugin(&self, source: &SourceConfig) -> Result<Arc<LoadedPlugin>, LoadError> {
        let (engine, catalog, plugin) = (self.engine.clone(), self.catalog.clone(), source.plugin.clone());
        tokio::task::spawn_blocking(move || plugins::load(&engine, catalog.as_deref(), &plugin))
            .await
            .expect("plugin loading does not panic")
    }

    /// Scans the plugins folder (or forgets it) and shows what it holds in the fleet view.
    async fn scan_plugins_dir(&mut self, dir: Option<&Path>) {
        let Some(dir) = dir.map(Path::to_path_buf) else {
            self.catalog = None;
            self.fleet.set_plugins(Vec::new());
            return;
        };
        let engine = self.engine.clone();
        let catalog = tokio::task::spawn_blocking(move || plugins::scan(&engine, &dir))
            .await
            .expect("scanning plugins does not panic");
        self.fleet.set_plugins(plugins::listing(&catalog));
        self.catalog = Some(Arc::new(catalog));
    }

    async fn on_files_changed(&mut self, paths: &HashSet<PathBuf>) {
        if paths.contains(&self.config_path) {
            self.reload_config().await;
        }
        let plugin_paths: HashSet<PathBuf> = self
            .config
            .sources
            .iter()
            .filter_map(|s| s.plugin.file())
            .filter(|p| paths.contains(*p))
            .map(Path::to_path_buf)
            .collect();
        for path in plugin_paths {
            let users: Vec<SourceConfig> =
                self.config.sources.iter().filter(|s| s.plugin.file() == Some(path.as_path())).cloned().collect();
            for source in users {
                self.reload_plugin(&source).await;
            }
        }
        let dir = self.config.plugins_dir.as_deref();
        if dir.is_some_and(|dir| paths.iter().any(|p| p.parent() == Some(dir))) {
            self.on_plugins_dir_changed().await;
        }
    }

    /// A file of the plugins folder came, went or changed: scan it again, and move every source
    /// that names its plugin to what the name now resolves to.
    async fn on_plugins_dir_changed(&mut self) {
        let dir = self.config.plugins_dir.clone();
        self.scan_plugins_dir(dir.as_deref()).await;
        let users: Vec<SourceConfig> =
            self.config.sources.iter().filter(|s| s.plugin.file().is_none()).cloned().collect();
        for source in users {
            self.reload_plugin(&source).await;
        }
    }

    /// The sources' plugin files, whose changes reload them.
    fn watched_files(&self) -> HashSet<PathBuf> {
        plugin_files(&self.config)
    }

    async fn reload_config(&mut self) {
        let loaded = match config::load(&self.config_path) {
            Ok(loaded) => loaded,
            Err(errors) => {
                metrics::counter!("edge_reloads_total", "kind" => "config", "outcome" => "rejected").increment(1);
                tracing::error!("rejected the edit, still running the previous configuration: {errors}");
                return;
            }
        };
        if loaded.config == self.config {
            return;
        }
        for warning in &loaded.warnings {
            tracing::warn!("{}: {warning}", self.config_path.display());
        }
        match self.apply(loaded.config).await {
            Ok(()) => {
                metrics::counter!("edge_reloads_total", "kind" => "config", "outcome" => "applied").increment(1);
                tracing::info!("configuration reloaded");
            }
            Err(e) => {
                metrics::counter!("edge_reloads_total", "kind" => "config", "outcome" => "rejected").increment(1);
                tracing::error!("rejected the edit, still running the previous configuration: {e:#}");
            }
        }
    }

    /// A source's plugin may have changed (its file, or what its name resolves to): load it
    /// again and swap it in where it loads, passes its checks and is another build. A bad file
    /// changes nothing.
    async fn reload_plugin(&mut self, source: &SourceConfig) {
        let running = self.sources.get(&source.name).and_then(SourceRuntime::plugin);
        match (self.load_plugin(source).await, running) {
            (Ok(new), Some(old)) if new.sha256 == old.sha256 => {}
            (Ok(new), _) => {
                metrics::counter!("edge_reloads_total", "kind" => "plugin", "outcome" => "applied").increment(1);
                tracing::info!(source = %source.name, plugin = %new.info.name, version = %new.info.version, sha256 = &new.sha256[..12], file = %new.path.display(), "plugin loaded; new messages use it");
                self.apply_source(source, Some(new)).await;
            }
            (Err(e), Some(_)) if e.is_absent() => {
                tracing::warn!(source = %source.name, plugin = %source.plugin.location, "plugin gone; the source keeps running the version it loaded: {e}");
            }
            (Err(e), running) => {
                metrics::counter!("edge_reloads_total", "kind" => "plugin", "outcome" => "rejected").increment(1);
                match running {
                    Some(_) => {
                        tracing::error!(source = %source.name, "rejected the new plugin file, keeping the running version: {e}")
                    }
                    None => log_waiting(&source.name, &e),
                }
            }
        }
    }

    fn spawn_preflight(&self, plant: &config::PlantConfig) {
        let Some(twinzo) = &plant.twinzo else { return };
        let (plant, watch) = (plant.clone(), self.plants.get(&plant.name).map(|p| p.watch.clone()));
        let api = match crate::sink::twinzo::TwinzoApi::new(twinzo) {
            Ok(api) => api,
            Err(e) => return tracing::error!(plant = %plant.name, "cannot set up the Twinzo client: {e:#}"),
        };
        tokio::spawn(async move {
            let crate::sink::twinzo::Preflight { problems, reached, sectors } =
                crate::sink::twinzo::check_devices(&api, &plant).await;
            if let Some(watch) = watch {
                if watch.reach.get().is_none() {
                    watch.reach.set(reached);
                }
                watch.set_sectors(sectors.into_iter());
            }
            for problem in &problems {
                tracing::warn!(plant = %plant.name, "device check: {problem}");
            }
            metrics::gauge!("edge_device_config_problems", "plant" => plant.name.clone()).set(problems.len() as f64);
            if problems.is_empty() {
                tracing::info!(plant = %plant.name, devices = plant.devices.len(), "every device signs in and posts to a sector of the plant's branch");
            }
        });
    }

    fn restart_simulator(&mut self, new: &Config) {
        if let Some(stop) = self.simulator.take() {
            let _ = stop.send(true);
        }
        let Some(sim) = new.simulator.clone() else { return };
        let broker = new.simulator_broker().expect("validated: a simulator without broker needs the embedded one");
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            if let Err(e) = crate::sim::run(sim, broker, stopped).await {
                tracing::error!("simulator stopped: {e:#}");
            }
        });
        self.simulator = Some(stop);
    }

    /// Watches the config file, `config`'s plugin files and its plugins folder.
    fn watch_files(&mut self, config: &Config) {
        let mut files = plugin_files(config);
        files.insert(self.config_path.clone());
        let Some(watcher) = &mut self.watcher else { return };
        watcher.watch(&files, config.plugins_dir.as_deref());
    }

    /// Bounded and lossless: sources finish the messages in flight and acknowledge them (the
    /// rest stays unacknowledged, for the broker to deliver again), then plants write what they
    /// hold and make one last post. Whatever is left stays in the spool.
    async fn shutdown(mut self) {
        let started = tokio::time::Instant::now();
        if let Some(stop) = self.simulator.take() {
            let _ = stop.send(true);
        }
        let sources = std::mem::take(&mut self.sources).into_values().map(|s| s.finish(started + SOURCES_GRACE));
        futures_join_all(sources).await;
        let plants = std::mem::take(&mut self.plants).into_iter().map(|(name, plant)| async move {
            if tokio::time::timeout_at(started + SHUTDOWN_GRACE, plant.finish()).await.is_err() {
                tracing::error!(plant = %name, "did not finish delivering within {SHUTDOWN_GRACE:?}; the rest stays in the spool");
            }
        });
        futures_join_all(plants).await;
    }
}

/// The fleet's heartbeat: judges the fleet once a second, logs the conditions that start and
/// end and sends them to the alert destinations, and sends the periodic summary.
async fn judge_fleet(fleet: Arc<Fleet>, mut config: tokio::sync::watch::Receiver<config::AlertsConfig>) {
    let mut alerts = crate::alert::Alerts::new(&config.borrow_and_update());
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if config.has_changed().unwrap_or(false) {
            alerts = crate::alert::Alerts::new(&config.borrow_and_update());
        }
        let events = fleet.tick();
        for event in &events {
            crate::fleet::log_event(event);
        }
        alerts.on_events(&events);
        alerts.maybe_summary(&fleet.latest());
    }
}

fn plugin_files(config: &Config) -> HashSet<PathBuf> {
    config.sources.iter().filter_map(|s| s.plugin.file()).map(Path::to_path_buf).collect()
}

/// Runs the futures concurrently to completion.
async fn futures_join_all<F: std::future::Future<Output = ()> + Send + 'static>(futures: impl Iterator<Item = F>) {
    let mut set = tokio::task::JoinSet::new();
    for f in futures {
        set.spawn(f);
    }
    while set.join_next().await.is_some() {}
}

fn log_waiting(source: &str, error: &LoadError) {
    if error.is_absent() {
        tracing::warn!(source, "the plugin is not there yet; the source will connect once it appears: {error}")
    } else {
        tracing::error!(source, "cannot load the plugin; the source waits for a good file: {error}")
    }
}

async fn debounce(first: PathBuf, changes: &mut mpsc::UnboundedReceiver<PathBuf>) -> HashSet<PathBuf> {
    let mut paths = HashSet::from([first]);
    let deadline = tokio::time::Instant::now() + DEBOUNCE;
    loop {
        tokio::select! {
            Some(path) = changes.recv() => { paths.insert(path); }
            () = tokio::time::sleep_until(deadline) => return paths,
        }
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
