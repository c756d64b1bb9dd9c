//! `edge run`, `edge check` and `edge sim`: the main job, validating a config without
//! connecting anywhere, and the fleet simulator on its own.

use crate::config::{self, SimFormat, SimulatorConfig};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub fn run(config: &Path) -> anyhow::Result<ExitCode> {
    tokio_runtime()?.block_on(crate::runtime::run(config))?;
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
    let mut problems = Vec::new();
    for source in &c.sources {
        let plugin = &source.plugin;
        let topics = if !source.mqtt.topics.is_empty() {
            source.mqtt.topics.join(", ")
        } else if !plugin.path.exists() {
            "the plugin's default topics, once its file exists".to_string()
        } else {
            match engine.load(&plugin.path, &plugin.options(), plugin.sha256.as_deref()) {
                Ok(loaded) => format!("{} (the plugin's defaults)", loaded.info.default_topics.join(", ")),
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
            source.plugin.path.display(),
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
    /// Messages per second per robot [default: the config's, else 10].
    #[arg(long)]
    rate: Option<f64>,
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

fn parse_format(text: &str) -> Result<SimFormat, String> {
    match text {
        "edge-sim" => Ok(SimFormat::EdgeSim),
        "ati" => Ok(SimFormat::Ati),
        other => Err(format!("`{other}` is not a simulator format (edge-sim, ati)")),
    }
}

pub fn sim(args: SimArgs) -> anyhow::Result<ExitCode> {
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
    sim.rate_hz = args.rate.unwrap_or(sim.rate_hz);
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

fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("edge-rt").build()?)
}
