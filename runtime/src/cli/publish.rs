//! `edge publish`: sends payload files (or a folder of plugin fixtures, each on the topic its
//! case names) to an MQTT broker at a rate, so that the whole path from broker to Twinzo can
//! be watched with nothing but edge installed.

use crate::plugin::fixtures::{self, Expected};
use anyhow::{Context, bail};
use clap::Args;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args)]
pub struct PublishArgs {
    /// Payload files, or fixture folders (every `<case>.payload.<ext>`, on the topic its
    /// `<case>.expected.json` names unless --topic is given).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// The broker, host:port.
    #[arg(long, default_value = "127.0.0.1:1883")]
    broker: String,
    /// The topic of every message (needed for plain files).
    #[arg(long)]
    topic: Option<String>,
    /// Messages per second.
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// Send the whole set this many times.
    #[arg(long, default_value_t = 1)]
    repeat: u32,
    /// MQTT username; the password comes from EDGE_PUBLISH_PASSWORD.
    #[arg(long)]
    username: Option<String>,
}

/// Waiting this long for the broker to acknowledge the last messages, at most.
const LAST_ACKS: Duration = Duration::from_secs(10);

pub fn run(args: PublishArgs) -> anyhow::Result<ExitCode> {
    let messages = collect(&args)?;
    anyhow::ensure!(
        args.rate.is_finite() && args.rate > 0.0,
        "--rate must be a positive number of messages per second"
    );
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let sent = runtime.block_on(publish(&args, &messages))?;
    println!("published {sent} messages to {}, each acknowledged by the broker", args.broker);
    Ok(ExitCode::SUCCESS)
}

/// (topic, payload) of every message, in order.
fn collect(args: &PublishArgs) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut messages = Vec::new();
    for input in &args.inputs {
        if input.is_dir() {
            let cases = fixtures::discover(input).with_context(|| format!("cannot list {}", input.display()))?;
            if cases.is_empty() {
                bail!("{} holds no fixture cases (files named <case>.payload.<ext>)", input.display());
            }
            for case in cases {
                let topic = match &args.topic {
                    Some(topic) => topic.clone(),
                    None => case_topic(&case.expected_path)?.with_context(|| {
                        format!("{}: no topic in the case; give --topic", case.payload_path.display())
                    })?,
                };
                messages.push((topic, read(&case.payload_path)?));
            }
        } else {
            let topic =
                args.topic.clone().with_context(|| format!("{}: give --topic for a payload file", input.display()))?;
            messages.push((topic, read(input)?));
        }
    }
    Ok(messages)
}

fn case_topic(expected: &Path) -> anyhow::Result<Option<String>> {
    if !expected.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(expected).with_context(|| format!("cannot read {}", expected.display()))?;
    let case: Expected =
        serde_json::from_str(&text).with_context(|| format!("{}: not a fixture", expected.display()))?;
    Ok(case.topic)
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

async fn publish(args: &PublishArgs, messages: &[(String, Vec<u8>)]) -> anyhow::Result<usize> {
    let (host, port) = args.broker.rsplit_once(':').context("--broker must be host:port")?;
    let port: u16 = port.parse().context("--broker: the port is not a number")?;
    let mut options = MqttOptions::new(format!("edge-publish-{}", std::process::id()), host, port);
    options.set_keep_alive(Duration::from_secs(30));
    if let Some(user) = &args.username {
        options.set_credentials(user, std::env::var("EDGE_PUBLISH_PASSWORD").unwrap_or_default());
    }
    let (client, mut events) = AsyncClient::new(options, 64);
    let total = messages.len() * args.repeat as usize;
    let sending = async {
        let mut every = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate));
        for _ in 0..args.repeat {
            for (topic, payload) in messages {
                every.tick().await;
                client.publish(topic, QoS::AtLeastOnce, false, payload.clone()).await?;
            }
        }
        anyhow::Ok(())
    };
    // The event loop is what talks to the broker: it runs until every message is acknowledged.
    let acknowledged = async {
        let mut acks = 0;
        while acks < total {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acks += 1,
                Ok(Event::Incoming(Packet::ConnAck(ack))) if ack.code != rumqttc::ConnectReturnCode::Success => {
                    bail!("the broker at {} refused the connection: {:?}", args.broker, ack.code)
                }
                Ok(_) => {}
                Err(e) => bail!("cannot publish to {}: {e}", args.broker),
            }
        }
        anyhow::Ok(acks)
    };
    let limit = LAST_ACKS + Duration::from_secs_f64(total as f64 / args.rate);
    let acknowledged = async {
        tokio::time::timeout(limit, acknowledged)
            .await
            .map_err(|_| anyhow::anyhow!("the broker at {} did not acknowledge every message", args.broker))?
    };
    // The first failure (a refused connection, say) ends both.
    let ((), acks) = tokio::try_join!(sending, acknowledged)?;
    Ok(acks)
}
