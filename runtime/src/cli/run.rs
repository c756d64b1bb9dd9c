//! `edge run`, `edge check` and `edge sim`: the main job, validating a config without
//! connecting anywhere, and the fleet simulator on its own.

use crate::config::{self, SimFormat, SimulatorConfig};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Threads for disk work and compiling plugins.
const BLOCKING_THREADS: usize = 16;

pub fn run(config: &Path) -> anyhow::Result<ExitCode> {
    // One worker: the async side (MQTT I/O, plants, device workers, HTTP) is light, and tasks
    // that wake each other on one thread cost no thread switch, the largest cost per message at
    // a plant's rates (docs/performance.md). Plugins, disk and compiling run on threads of their own.
    // Disk work is serialised per plant by its spool anyway: without a cap, a thousand devices
    // looking at the spool at start left ~150 threads behind, each kept alive by its turn.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(BLOCKING_THREADS)
        .enable_all()
        .thread_name("edge-rt")
        .build()?;
    runtime.block_on(crate::runtime::run(config))?;
    Ok(ExitCode::SUCCESS)
}

/// Validates without connecting; prints every problem with its key path, and never a secret.
/// Plugins are loaded (compiled, or from `cache_dir`) to show the topics they subscribe to.
pub fn check(path: &Path, cache_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let loaded = match config::load(path) {
        Ok(loaded) => loaded,
        Err(errors) => {
            println!("{errors}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let c = &loaded.config;
    println!("{}: OK", path.display());
    let engine = crate::plugin::PluginEngine::new(crate::plugin::SandboxLimits::default(), cache_dir)?;
    let catalog = c.plugins_dir.as_deref().map(|dir| crate::runtime::plugins::scan(&engine, dir));
    if let Some(catalog) = &catalog {
        let usable = catalog.usable().count();
        println!(
            "  plugins_dir {}: {usable} plugins, {} files not usable",
            catalog.dir.display(),
            catalog.files.len() - usable
        );
    }
    let mut problems = Vec::new();
    for source in &c.sources {
        let plugin = &source.plugin;
        let topics = if !source.mqtt.topics.is_empty() {
            source.mqtt.topics.join(", ")
        } else {
            match crate::runtime::plugins::load(&engine, catalog.as_ref(), plugin) {
                Ok(loaded) => format!("{} (the plugin's defaults)", loaded.info.default_topics.join(", ")),
                Err(e) if e.is_absent() => {
                    // A missing file is one of the configuration's warnings already.
                    if plugin.file().is_none() {
                        problems.push(format!("source {}: {e}; the source will wait for it", source.name));
                    }
                    "the plugin's default topics, once it is there".to_string()
                }
                Err(e) => {
                    problems.push(format!("source {}: cannot load its plugin: {e}", source.name));
                    "the plugin's default topics".to_string()
                }
            }
        };
        println!(
            "  source {}: {}:{} (MQTT {:?}{}) via {} -> plant {} [{topics}]",
            source.name,
            source.mqtt.host,
            source.mqtt.port(),
            source.mqtt.protocol,
            if source.mqtt.tls.is_some() { ", TLS" } else { "" },
            plugin.location,
            source.plant
        );
    }
    for plant in &c.plants {
        let sink = match &plant.twinzo {
            Some(t) => format!("Twinzo {} branch {}", t.base_url, t.branch),
            None => "dry run".into(),
        };
        println!("  plant {}: {sink}, {} devices", plant.name, plant.devices.len());
    }
    for warning in &loaded.warnings {
        println!("  warning: {warning}");
    }
    for problem in &problems {
        println!("  warning: {problem}");
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct SimArgs {
    /// Broker to publish to, host:port [default: the config's, else 127.0.0.1:1883].
    #[arg(long)]
    broker: Option<String>,
    /// Messages per second per robot [default: the config's, else 10]; with --robots also
    /// `max`: as fast as the broker acknowledges.
    #[arg(long, value_parser = parse_rate)]
    rate: Option<Rate>,
    /// Load generator: this many synthetic robots (r0000, r0001, ...) publishing ATI sherpa
    /// status on ati/amr/<robot>/status, each robot's timestamps unique, and a JSON report of
    /// what was published at the end (for counting loss and duplicates downstream).
    #[arg(long, conflicts_with_all = ["config", "fleet", "formats"])]
    robots: Option<usize>,
    /// Load generator: MQTT connections to spread the robots over.
    #[arg(long, default_value_t = 4, requires = "robots")]
    connections: usize,
    /// Load generator: QoS 1 messages in flight per connection.
    #[arg(long, default_value_t = 100, requires = "robots")]
    inflight: u16,
    /// Load generator: stop after this many seconds...
    #[arg(long, default_value_t = 30.0, requires = "robots")]
    seconds: f64,
    /// ...or this many messages in all.
    #[arg(long, requires = "robots")]
    messages: Option<u64>,
    /// Fleet name in the topics [default: the config's, else "default"].
    #[arg(long)]
    fleet: Option<String>,
    /// Formats to publish: edge-sim, ati (repeatable; default both).
    #[arg(long = "format", value_parser = parse_format)]
    formats: Vec<SimFormat>,
    /// Robots from a simulator section of this config file instead of the default three.
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
}

/// Messages per second per robot, or as fast as the broker takes them.
#[derive(Debug, Clone, Copy)]
pub enum Rate {
    PerRobot(f64),
    Max,
}

fn parse_rate(text: &str) -> Result<Rate, String> {
    match text {
        "max" => Ok(Rate::Max),
        _ => match text.parse::<f64>() {
            Ok(hz) if hz > 0.0 && hz.is_finite() => Ok(Rate::PerRobot(hz)),
            _ => Err(format!("`{text}` is not a rate: messages per second per robot (above 0), or `max`")),
        },
    }
}

fn parse_format(text: &str) -> Result<SimFormat, String> {
    match text {
        "edge-sim" => Ok(SimFormat::EdgeSim),
        "ati" => Ok(SimFormat::Ati),
        other => Err(format!("`{other}` is not a simulator format (edge-sim, ati)")),
    }
}

pub fn sim(args: SimArgs) -> anyhow::Result<ExitCode> {
    if let Some(robots) = args.robots {
        return load(robots, args);
    }
    let rate = match args.rate {
        Some(Rate::Max) => anyhow::bail!("--rate max is for the load generator (--robots N)"),
        Some(Rate::PerRobot(hz)) => Some(hz),
        None => None,
    };
    // Command-line values win over the config file's, which win over the defaults.
    let (mut sim, config_broker): (SimulatorConfig, _) = match &args.config {
        Some(path) => {
            // The simulator needs none of the config's secrets.
            let config = config::load_local(path)?.config;
            let broker = config.simulator_broker();
            let sim = config.simulator.ok_or_else(|| anyhow::anyhow!("{} has no simulator section", path.display()))?;
            (sim, broker)
        }
        None => (serde_json::from_value(serde_json::json!({}))?, None),
    };
    let broker = args.broker.or(config_broker).unwrap_or_else(|| "127.0.0.1:1883".into());
    sim.rate_hz = rate.unwrap_or(sim.rate_hz);
    sim.fleet = args.fleet.unwrap_or(sim.fleet);
    if !args.formats.is_empty() {
        sim.formats = args.formats;
    }
    tokio_runtime()?.block_on(async move {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            let _ = stop.send(true);
        });
        crate::sim::run(sim, broker, stopped).await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `edge sim --robots N`: publishes, then prints what it published as JSON on stdout.
fn load(robots: usize, args: SimArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(robots > 0, "--robots must be at least 1");
    let load = crate::sim::load::Load {
        broker: args.broker.unwrap_or_else(|| "127.0.0.1:1883".into()),
        robots,
        rate_hz: match args.rate {
            Some(Rate::PerRobot(hz)) => Some(hz),
            Some(Rate::Max) => None,
            None => Some(1.0),
        },
        connections: args.connections,
        inflight: args.inflight,
        duration: std::time::Duration::from_secs_f64(args.seconds.max(0.0)),
        messages: args.messages,
    };
    let report = tokio_runtime()?.block_on(crate::sim::load::run(load))?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(if report.acknowledged == report.published { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("edge-rt").build()?)
}
