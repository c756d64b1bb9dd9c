//! The `edge` command line: global options, logging set-up and dispatch to subcommands.
//! Each subcommand lives in its own file and returns an exit code.

mod calibrate;
mod plugin;
mod publish;
mod run;
mod scaffold;
mod spool;
mod status;

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "edge", version = version(), about = "WASM-pluggable edge runtime: robot fleets over MQTT to Twinzo")]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human, env = "EDGE_LOG_FORMAT")]
    log_format: LogFormat,
    /// Where compiled plugins are cached (default: $XDG_CACHE_HOME/edge or ~/.cache/edge).
    #[arg(long, global = true, env = "EDGE_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Compile plugins afresh and cache nothing.
    #[arg(long, global = true)]
    no_cache: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the configuration: MQTT in, plugins, Twinzo out, with hot reload.
    Run {
        #[command(flatten)]
        flag: ConfigFlag,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Validate a configuration without connecting anywhere.
    Check {
        #[command(flatten)]
        flag: ConfigFlag,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Fit a source's transform from reference points read off the vendor's and Twinzo's maps.
    Calibrate(calibrate::CalibrateArgs),
    /// Publish payload files or a folder of plugin fixtures to an MQTT broker, at a rate.
    Publish(publish::PublishArgs),
    /// Publish a simulated fleet to an MQTT broker.
    Sim(run::SimArgs),
    /// The fleet as a running edge sees it: devices, sources, plants, active conditions.
    /// Exits 1 when something is unhealthy, 2 when edge cannot be reached.
    Status(status::StatusArgs),
    /// Inspect the durable spool: queued positions, dead letters; retry or purge them.
    Spool(spool::SpoolArgs),
    /// Test, inspect and create plugins.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Print a shell completion script: `edge completions bash > /etc/bash_completion.d/edge`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `edge man > /usr/local/share/man/man1/edge.1`.
    Man,
    /// Internal to `edge run`: compile the plugin component on stdin for this host, its native
    /// code to stdout (the compiler's memory then leaves with this process).
    #[command(name = "compile-plugin", hide = true)]
    CompilePlugin {
        #[arg(long)]
        max_wasm_stack: usize,
    },
}

/// `edge --version`: the build, and the plugin contract it accepts (what a vendor asks first).
fn version() -> &'static str {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION.get_or_init(|| {
        use crate::plugin::{CONTRACT_PACKAGE, CONTRACT_VERSION};
        let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
        let major = CONTRACT_VERSION.split('.').next().unwrap_or("?");
        format!(
            "{} (plugin contract {CONTRACT_PACKAGE}@{CONTRACT_VERSION}, accepts {major}.x; wasmtime 48; {}-{}, {profile} build)",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::ARCH,
            std::env::consts::OS
        )
    })
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let cache_dir = if cli.no_cache { None } else { cli.cache_dir.clone().or_else(default_cache_dir) };
    let result = match cli.command {
        Command::Run { flag, config } => flag.resolve(&config).and_then(|path| run::run(&path)),
        Command::Check { flag, config } => flag.resolve(&config).and_then(|path| run::check(&path, cache_dir)),
        Command::Calibrate(args) => calibrate::run(args),
        Command::Publish(args) => publish::run(args),
        Command::Sim(args) => run::sim(args),
        Command::Status(args) => status::run(args),
        Command::Spool(args) => spool::run(args),
        Command::Plugin(cmd) => plugin::run(cmd, cache_dir),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "edge",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::CompilePlugin { max_wasm_stack } => crate::plugin::compiler_main(max_wasm_stack),
        Command::Man => clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
            .render(&mut std::io::stdout())
            .map(|()| ExitCode::SUCCESS)
            .map_err(Into::into),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The configuration file as `-c/--config`, accepted anywhere on the command line.
#[derive(Args)]
pub struct ConfigFlag {
    /// The configuration file [default: edge.yaml].
    #[arg(long = "config", short = 'c', global = true, value_name = "CONFIG")]
    flag: Option<PathBuf>,
}

/// The configuration file as the command's argument, as `edge run edge.yaml` takes it.
#[derive(Args)]
pub struct ConfigArg {
    /// The configuration file [default: edge.yaml].
    #[arg(value_name = "CONFIG")]
    file: Option<PathBuf>,
}

impl ConfigFlag {
    /// The file named either way (both ways: the same file), else `edge.yaml`.
    pub fn resolve(&self, arg: &ConfigArg) -> anyhow::Result<PathBuf> {
        match (&self.flag, &arg.file) {
            (Some(a), Some(b)) if a != b => {
                anyhow::bail!("two configuration files named ({} and {}): name one", a.display(), b.display())
            }
            (Some(path), _) | (None, Some(path)) => Ok(path.clone()),
            (None, None) => Ok(PathBuf::from("edge.yaml")),
        }
    }
}

fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    // The embedded broker (rumqttd) narrates every connection at info: keep its warnings. Its
    // router reports each client's ordinary DISCONNECT as an ERROR ("no-connection id N is
    // already gone", the network close after the packet): silenced. EDGE_LOG overrides both.
    let filter = tracing_subscriber::EnvFilter::try_from_env("EDGE_LOG")
        .unwrap_or_else(|_| "info,rumqttd=warn,rumqttd::router::routing=off".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(base.join("edge").join("components"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compiler_child_command_is_the_one_edge_run_spawns() {
        let cli = Cli::try_parse_from(["edge", crate::plugin::COMPILER_COMMAND, "--max-wasm-stack", "4096"]).unwrap();
        assert!(matches!(cli.command, Command::CompilePlugin { max_wasm_stack: 4096 }));
    }
}
