//! `edge spool`: what the durable spool holds per plant and device, the dead letters and their
//! reasons, and putting dead letters back in the queue or purging. Safe while `edge run` runs.

use crate::config;
use crate::spool::{DiskLimits, Purge, Spool};
use clap::{Args, Subcommand};
use std::process::ExitCode;

#[derive(Args)]
pub struct SpoolArgs {
    #[command(flatten)]
    config: super::ConfigFlag,
    #[command(subcommand)]
    command: SpoolCommand,
}

#[derive(Subcommand)]
enum SpoolCommand {
    /// Queued and dead-lettered positions per plant and device.
    Status {
        #[command(flatten)]
        config: super::ConfigArg,
        #[arg(long)]
        json: bool,
    },
    /// The dead letters, newest first, with the reason Twinzo gave.
    Dead {
        #[command(flatten)]
        config: super::ConfigArg,
        #[command(flatten)]
        filter: Filter,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Puts dead letters back in the queue (after fixing what made Twinzo refuse them).
    Retry {
        #[command(flatten)]
        config: super::ConfigArg,
        #[command(flatten)]
        filter: Filter,
    },
    /// Deletes queued positions (--queue) or dead letters (--dead).
    Purge {
        #[command(flatten)]
        config: super::ConfigArg,
        #[command(flatten)]
        filter: Filter,
        #[arg(long, conflicts_with = "dead", required_unless_present = "dead")]
        queue: bool,
        #[arg(long)]
        dead: bool,
    },
}

#[derive(Args)]
struct Filter {
    /// Only this plant.
    #[arg(long)]
    plant: Option<String>,
    /// Only this device (robot id).
    #[arg(long)]
    device: Option<String>,
}

pub fn run(args: SpoolArgs) -> anyhow::Result<ExitCode> {
    let (plant_filter, positional) = match &args.command {
        SpoolCommand::Dead { filter, config, .. }
        | SpoolCommand::Retry { filter, config }
        | SpoolCommand::Purge { filter, config, .. } => (filter.plant.clone(), config),
        SpoolCommand::Status { config, .. } => (None, config),
    };
    let path = args.config.resolve(positional)?;
    // The spool is local: no Twinzo secret is needed to read it.
    let loaded = config::load_local(&path)?;
    if let Some(name) = &plant_filter {
        anyhow::ensure!(loaded.config.plant(name).is_some(), "{} has no plant named `{name}`", path.display());
    }
    let mut status = serde_json::Map::new();
    for plant in loaded.config.plants.iter().filter(|p| plant_filter.as_ref().is_none_or(|f| *f == p.name)) {
        let path = crate::spool::path_for(&loaded.config.state_dir, &plant.name);
        if !path.exists() {
            status.insert(plant.name.clone(), serde_json::json!({}));
            continue;
        }
        let spool = Spool::open(&path, DiskLimits::default())?;
        match &args.command {
            SpoolCommand::Status { .. } => {
                status.insert(plant.name.clone(), serde_json::to_value(spool.counts()?)?);
            }
            SpoolCommand::Dead { filter, limit, .. } => {
                for row in spool.dead(filter.device.as_deref(), *limit)? {
                    println!(
                        "{} {} {} ts={} {}: {}",
                        plant.name, row.device, row.id, row.timestamp, row.reason, row.detail
                    );
                }
            }
            SpoolCommand::Retry { filter, .. } => {
                println!(
                    "{}: {} dead letters back in the queue",
                    plant.name,
                    spool.retry_dead(filter.device.as_deref())?
                );
            }
            SpoolCommand::Purge { filter, queue, .. } => {
                let what = if *queue { Purge::Queue } else { Purge::Dead };
                println!("{}: {} deleted", plant.name, spool.purge(what, filter.device.as_deref())?);
            }
        }
    }
    if let SpoolCommand::Status { json, .. } = args.command {
        print_status(&status, json)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_status(status: &serde_json::Map<String, serde_json::Value>, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(status)?);
        return Ok(());
    }
    println!("{:<20} {:<28} {:>10} {:>12} {:>12} {:>8}", "plant", "device", "queued", "bytes", "oldest", "dead");
    for (plant, devices) in status {
        let Some(devices) = devices.as_object().filter(|d| !d.is_empty()) else {
            println!("{plant:<20} (empty)");
            continue;
        };
        for (device, c) in devices {
            let age = c["oldest_ms"]
                .as_u64()
                .map(|t| format!("{}s ago", crate::model::now_ms().saturating_sub(t) / 1000))
                .unwrap_or_else(|| "-".into());
            println!(
                "{plant:<20} {device:<28} {:>10} {:>12} {age:>12} {:>8}",
                c["queued"], c["queued_bytes"], c["dead"]
            );
        }
    }
    Ok(())
}
