//! The load generator (`edge sim --robots N`): synthetic robots publishing ATI sherpa status at
//! a set rate or as fast as the broker takes it, over several connections, at QoS 1 with a
//! bounded in-flight window. Each robot's timestamps are unique and increasing (its sequence),
//! so whoever receives the positions can count what was lost and what came twice.

use super::fleet::RobotState;
use super::publisher::message;
use crate::config::SimFormat;
use crate::model::now_ms;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// What to publish.
#[derive(Debug, Clone)]
pub struct Load {
    /// `host:port`.
    pub broker: String,
    pub robots: usize,
    /// Messages per second per robot; `None`: as fast as the broker acknowledges.
    pub rate_hz: Option<f64>,
    pub connections: usize,
    /// QoS 1 messages published and not yet acknowledged, per connection, at most.
    pub inflight: u16,
    /// Stop after this long...
    pub duration: Duration,
    /// ...or after this many messages in all, whichever comes first.
    pub messages: Option<u64>,
}

/// The generated robots' names: `r0000`, `r0001`, ...
pub fn robot_name(i: usize) -> String {
    format!("r{i:04}")
}

/// What was published, for the receiving side's accounting.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub robots: usize,
    pub connections: usize,
    /// Handed to the MQTT client.
    pub published: u64,
    /// Acknowledged by the broker (PUBACK): the messages the broker is responsible for.
    pub acknowledged: u64,
    pub seconds: f64,
    pub per_second: f64,
    /// Published per robot.
    pub per_robot: BTreeMap<String, u64>,
}

/// Publishes until the duration or message count is reached, then waits (up to 30 s) for the
/// broker to acknowledge everything, and reports.
pub async fn run(load: Load) -> anyhow::Result<LoadReport> {
    let (host, port) =
        load.broker.rsplit_once(':').ok_or_else(|| anyhow::anyhow!("broker `{}` is not host:port", load.broker))?;
    let port: u16 = port.parse().map_err(|_| anyhow::anyhow!("broker `{}`: bad port", load.broker))?;
    let connections = load.connections.clamp(1, load.robots.max(1));
    let budget =
        Arc::new(Budget { left: AtomicU64::new(load.messages.unwrap_or(u64::MAX)), over: AtomicBool::new(false) });
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..connections {
        let robots: Vec<usize> = (c..load.robots).step_by(connections).collect();
        let options = options(host, port, c, load.inflight);
        tasks.spawn(connection(options, robots, load.clone(), budget.clone(), started));
    }
    let mut report = LoadReport {
        robots: load.robots,
        connections,
        published: 0,
        acknowledged: 0,
        seconds: 0.0,
        per_second: 0.0,
        per_robot: BTreeMap::new(),
    };
    while let Some(done) = tasks.join_next().await {
        let (per_robot, acknowledged) = done??;
        report.acknowledged += acknowledged;
        for (robot, n) in per_robot {
            report.published += n;
            report.per_robot.insert(robot_name(robot), n);
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    report.per_second = report.acknowledged as f64 / report.seconds.max(0.001);
    Ok(report)
}

/// The messages left to send in all, shared by the connections.
struct Budget {
    left: AtomicU64,
    over: AtomicBool,
}

impl Budget {
    fn take(&self) -> bool {
        let taken = self.left.fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1)).is_ok();
        if !taken {
            self.over.store(true, Relaxed);
        }
        taken
    }
}

fn options(host: &str, port: u16, connection: usize, inflight: u16) -> MqttOptions {
    let mut options = MqttOptions::new(format!("edge-load-{}-{connection}", std::process::id()), host, port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_inflight(inflight.max(1))
        .set_request_channel_capacity(usize::from(inflight.max(1)))
        .set_max_packet_size(1 << 20, 1 << 20);
    options
}

/// One connection publishing for its share of the robots; returns what it published per robot
/// and how many the broker acknowledged.
async fn connection(
    options: MqttOptions,
    robots: Vec<usize>,
    load: Load,
    budget: Arc<Budget>,
    started: Instant,
) -> anyhow::Result<(Vec<(usize, u64)>, u64)> {
    let (client, mut events) = AsyncClient::new(options, usize::from(load.inflight.max(1)));
    let published = Arc::new(AtomicU64::new(0));
    let mut publisher =
        tokio::spawn(publish(client.clone(), robots.clone(), load.clone(), budget, started, published.clone()));
    let mut acknowledged = 0u64;
    let mut finishing: Option<Instant> = None;
    let mut counts = None;
    loop {
        if counts.is_none() && publisher.is_finished() {
            counts = Some((&mut publisher).await?);
            finishing = Some(Instant::now());
        }
        if counts.is_some() && acknowledged >= published.load(Relaxed) {
            break;
        }
        if finishing.is_some_and(|t| t.elapsed() > Duration::from_secs(30)) {
            tracing::warn!("the broker did not acknowledge every message within 30 s");
            break;
        }
        match tokio::time::timeout(Duration::from_millis(100), events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acknowledged += 1,
            Ok(Ok(Event::Outgoing(Outgoing::Disconnect))) => break,
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(e)) => {
                tracing::warn!("load connection: {e}; reconnecting");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let _ = client.try_disconnect();
    let counts = match counts {
        Some(counts) => counts,
        None => publisher.await?,
    };
    Ok((counts, acknowledged))
}

/// Publishes round-robin over `robots` at the load's rate (paced per millisecond, so a thousand
/// robots at 1 Hz are a steady stream, not a burst a second) or as fast as the client takes them.
async fn publish(
    client: AsyncClient,
    robots: Vec<usize>,
    load: Load,
    budget: Arc<Budget>,
    started: Instant,
    published: Arc<AtomicU64>,
) -> Vec<(usize, u64)> {
    let names: Vec<String> = robots.iter().map(|i| robot_name(*i)).collect();
    let mut last_ts = vec![0u64; robots.len()];
    let mut counts = vec![0u64; robots.len()];
    let per_second = load.rate_hz.map(|hz| hz * robots.len() as f64);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut next = 0usize;
    'run: while started.elapsed() < load.duration && !budget.over.load(Relaxed) {
        let due = match per_second {
            Some(rate) => {
                tick.tick().await;
                ((started.elapsed().as_secs_f64() * rate) as u64).saturating_sub(published.load(Relaxed))
            }
            None => 64,
        };
        for _ in 0..due {
            if !budget.take() {
                break 'run;
            }
            let i = next % robots.len();
            next += 1;
            // Unique and increasing per robot: the robot's sequence, at the clock's pace.
            let ts = now_ms().max(last_ts[i] + 1);
            last_ts[i] = ts;
            let state = robot_state(&names[i], robots[i], started.elapsed().as_secs_f64());
            let (topic, payload) = message(SimFormat::Ati, "", &state, ts);
            if client.publish(topic, QoS::AtLeastOnce, false, payload).await.is_err() {
                break 'run;
            }
            counts[i] += 1;
            published.fetch_add(1, Relaxed);
        }
    }
    robots.into_iter().zip(counts).collect()
}

/// Robot `i` driving a 4 m circle of its own at 1 m/s, battery from 50 to 99 %.
fn robot_state(name: &str, i: usize, elapsed_s: f64) -> RobotState {
    let (cx, cy) = ((i % 40) as f64 * 10.0, (i / 40) as f64 * 10.0);
    let angle = elapsed_s / 4.0 + i as f64;
    RobotState {
        name: name.to_string(),
        x: cx + 4.0 * angle.cos(),
        y: cy + 4.0 * angle.sin(),
        heading: angle + std::f64::consts::FRAC_PI_2,
        speed_mps: 1.0,
        battery: 50.0 + (i % 50) as f64,
    }
}
