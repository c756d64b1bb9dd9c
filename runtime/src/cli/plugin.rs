//! `edge plugin test | inspect | new`: a plugin in isolation, with sample payloads and
//! fixtures, without a broker or Twinzo.

use crate::model::{Message, now_ms};
use crate::plugin::fixtures::{self, outcome_json};
use crate::plugin::{LoadedPlugin, PluginEngine, SandboxLimits};
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Subcommand)]
pub enum PluginCommand {
    /// Run payload files or fixture folders through a plugin.
    ///
    /// A payload file prints the plugin's answer as JSON. A folder runs every case in it
    /// (`<case>.payload.*` with `<case>.expected.json`), prints PASS/FAIL per case and a
    /// summary, and exits 1 if any case failed.
    Test(TestArgs),
    /// Show what a plugin is: name, version, contract, topics, options, imports.
    Inspect {
        plugin: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Every component in a folder: name, version, contract, topics, sha256; the files that are
    /// not usable plugins with the reason. Exit 1 when any is not usable.
    List {
        /// The folder, e.g. /opt/edge/plugins [default: the config's plugins_dir with -c,
        /// else plugins/dist].
        dir: Option<PathBuf>,
        /// List the `plugins_dir` of this configuration.
        #[arg(long, short = 'c', value_name = "CONFIG", conflicts_with = "dir")]
        config: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Create a new plugin crate (with passing fixtures): in the plugins workspace, or with
    /// --standalone in a folder of its own (the vendor's repository).
    New {
        /// Kebab-case plugin name, e.g. `acme-agv`.
        name: String,
        /// The plugins workspace to add it to.
        #[arg(long, default_value = "plugins", conflicts_with = "standalone")]
        workspace: PathBuf,
        /// Create a crate of its own in this folder instead.
        #[arg(long, value_name = "DIR", requires = "sdk")]
        standalone: Option<PathBuf>,
        /// With --standalone: edge's `plugins/sdk` folder, or the URL of edge's git repository.
        #[arg(long, value_name = "PATH_OR_GIT_URL")]
        sdk: Option<String>,
    },
}

#[derive(Args)]
pub struct TestArgs {
    /// The plugin component (.wasm).
    plugin: PathBuf,
    /// Payload files and/or fixture folders.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Topic for payload files (default: derived from the plugin's default topics).
    #[arg(long)]
    topic: Option<String>,
    /// A plugin option, `name=value`; repeatable.
    #[arg(long = "config", value_parser = parse_option)]
    options: Vec<(String, String)>,
    /// Write each fixture's actual outcome as its expected file.
    #[arg(long)]
    bless: bool,
}

fn parse_option(text: &str) -> Result<(String, String), String> {
    let (name, value) = text.split_once('=').ok_or_else(|| format!("`{text}` is not name=value"))?;
    Ok((name.trim().to_string(), value.to_string()))
}

pub fn run(cmd: PluginCommand, cache_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    match cmd {
        PluginCommand::Test(args) => test(args, cache_dir),
        PluginCommand::Inspect { plugin, json } => inspect(&plugin, json, cache_dir),
        PluginCommand::List { dir, config, json } => list(&plugins_dir(dir, config)?, json, cache_dir),
        PluginCommand::New { name, workspace, standalone, sdk } => match (standalone, sdk) {
            (Some(dir), Some(sdk)) => super::scaffold::new_standalone(&name, &dir, &sdk),
            _ => super::scaffold::new_plugin(&name, &workspace),
        }
        .map(|()| ExitCode::SUCCESS),
    }
}

fn load(path: &Path, options: &[(String, String)], cache_dir: Option<PathBuf>) -> anyhow::Result<Arc<LoadedPlugin>> {
    let engine = PluginEngine::new(SandboxLimits::default(), cache_dir)?;
    Ok(engine.load(path, options, None)?)
}

fn test(args: TestArgs, cache_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let plugin = load(&args.plugin, &args.options, cache_dir)?;
    let mut failed = false;
    for input in &args.inputs {
        failed |= if input.is_dir() {
            run_fixtures(&plugin, &args, input)?
        } else {
            run_payload(&plugin, args.topic.as_deref(), input)?
        };
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Prints the outcome of one payload file; true when the plugin returned an error.
fn run_payload(plugin: &Arc<LoadedPlugin>, topic: Option<&str>, path: &Path) -> anyhow::Result<bool> {
    let payload = std::fs::read(path).with_context(|| format!("cannot read payload {}", path.display()))?;
    let topic = topic.map(str::to_string).unwrap_or_else(|| fixtures::sample_topic(plugin));
    let topics = &plugin.info.default_topics;
    if !topics.is_empty() && !topics.iter().any(|filter| rumqttc::matches(&topic, filter)) {
        // An empty answer would otherwise look like a heartbeat the plugin skips on purpose.
        eprintln!(
            "note: topic `{topic}` matches none of the plugin's default topics ({}): a source with those topics never hands it this message",
            topics.join(", ")
        );
    }
    let message = Message { topic: topic.clone(), payload: payload.into(), received_at_ms: now_ms() };
    let outcome = plugin.instantiate()?.translate(&message);
    let mut json = outcome_json(&outcome);
    json["payload"] = path.display().to_string().into();
    json["topic"] = topic.into();
    println!("{}", serde_json::to_string_pretty(&json)?);
    Ok(outcome.is_err())
}

/// Runs a fixtures folder; true when any case failed.
fn run_fixtures(plugin: &Arc<LoadedPlugin>, args: &TestArgs, dir: &Path) -> anyhow::Result<bool> {
    let cases = fixtures::discover(dir).with_context(|| format!("cannot list fixtures in {}", dir.display()))?;
    if cases.is_empty() {
        bail!("{} holds no fixture cases (files named <case>.payload.<ext>)", dir.display());
    }
    let reports = fixtures::run(plugin, &args.options, &cases, args.bless);
    for report in &reports {
        let verdict = match (report.passed(), report.blessed) {
            (true, true) => "BLESSED",
            (true, false) => "PASS",
            (false, _) => "FAIL",
        };
        println!("{verdict} {}/{}", dir.display(), report.name);
        for problem in &report.problems {
            println!("    {problem}");
        }
    }
    let failed = reports.iter().filter(|r| !r.passed()).count();
    println!("{}: {} passed, {failed} failed", dir.display(), reports.len() - failed);
    Ok(failed > 0)
}

/// The folder `edge plugin list` lists: given, or a configuration's `plugins_dir`.
fn plugins_dir(dir: Option<PathBuf>, config: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let Some(config) = config else { return Ok(dir.unwrap_or_else(|| "plugins/dist".into())) };
    // Listing needs none of the configuration's secrets.
    let loaded = crate::config::load_local(&config)?;
    loaded.config.plugins_dir.with_context(|| format!("{} has no plugins_dir", config.display()))
}

fn list(dir: &Path, json: bool, cache_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let engine = PluginEngine::new(SandboxLimits::default(), cache_dir)?;
    let catalog = crate::plugin::Catalog::scan(&engine, dir);
    if let Some(why) = &catalog.unreadable {
        bail!("cannot list {}: {why}", dir.display());
    }
    let files = crate::runtime::plugins::listing(&catalog);
    let unusable = files.iter().filter(|f| f.error.is_some()).count();
    if json {
        println!("{}", serde_json::to_string_pretty(&files)?);
    } else {
        for f in &files {
            match &f.error {
                Some(error) => println!("{}: NOT USABLE: {error}", f.file),
                None => println!(
                    "{}: {} {} ({}), contract {}, topics {}, sha256 {}",
                    f.file,
                    f.name,
                    f.version,
                    f.vendor,
                    f.contract,
                    f.topics.join(", "),
                    &f.sha256[..12]
                ),
            }
        }
        println!("{}: {} components, {unusable} not usable", dir.display(), files.len());
    }
    Ok(if unusable > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn inspect(path: &Path, json: bool, cache_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let plugin = load(path, &[], cache_dir)?;
    let report = serde_json::json!({
        "path": plugin.path,
        "sha256": plugin.sha256,
        "size_bytes": std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
        "contract": format!("{}@{}", crate::plugin::CONTRACT_PACKAGE, plugin.contract),
        "plugin": plugin.info,
        "imports": plugin.summary.imports,
        "exports": plugin.summary.exports,
        "compile": { "source": plugin.cache, "ms": plugin.compile_time.as_secs_f64() * 1e3 },
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    let info = &plugin.info;
    println!("{} {} by {}", info.name, info.version, info.vendor);
    println!("  {}", info.description);
    println!("file:      {} ({} bytes, sha256 {})", plugin.path.display(), report["size_bytes"], plugin.sha256);
    println!("contract:  {}", report["contract"].as_str().unwrap_or_default());
    println!("topics:    {}", info.default_topics.join(", "));
    println!("options:   {}", if info.options.is_empty() { "none" } else { "" });
    for option in &info.options {
        println!("  {} - {}", option.name, option.description);
    }
    println!("imports:");
    for import in &plugin.summary.imports {
        println!("  {import}");
    }
    println!("exports:   {}", plugin.summary.exports.join(", "));
    println!(
        "compiled:  {:.1} ms ({})",
        plugin.compile_time.as_secs_f64() * 1e3,
        report["compile"]["source"].as_str().unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}
