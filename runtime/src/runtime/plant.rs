//! A plant at run time: one task that runs the plant's pipeline over incoming positions, gives
//! them to the plant's spool, wakes the device workers that post them, and acknowledges their
//! MQTT messages only once the spool wrote them (or Twinzo confirmed them first). Writes go in
//! groups, one fsync each. Reconfiguration arrives in-band, so a config reload happens between
//! two messages, never in the middle of one.

use crate::backoff::Backoff;
use crate::config::{Config, DeviceConfig, PlantConfig};
use crate::episode::{Episode, News};
use crate::fleet::PlantWatch;
use crate::model::{Position, now_ms};
use crate::pipeline::{Outcome, PlantPipeline, Transform};
use crate::sink::twinzo::{TwinzoApi, TwinzoDevice};
use crate::sink::{Backlog, DeviceHandle, DeviceWorker, DryRun, Pacing, PlantLinks, Poster};
use crate::source::Ack;
use crate::spool::{DiskLimits, Refused, Spool, SpoolLimits};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// What the spool was given is written (one fsync for all) when half of the messages a broker
/// sends before it waits for acknowledgements are waiting (20 for mosquitto and an MQTT 3.1.1
/// client; `receive_maximum` over MQTT 5), so that the write is done before the feed stalls...
fn write_when_waiting(unacknowledged_limit: usize) -> usize {
    (unacknowledged_limit / 2).max(1)
}
/// ...or when the first of them waited this long. Positions Twinzo confirms meanwhile are
/// acknowledged at once and never written.
const COMMIT_WINDOW: Duration = Duration::from_millis(50);
/// A plant that received this many positions since its last write, with as many again waiting
/// in its channel, is behind: it takes a backlog.
const GROUP_COMMIT: usize = 256;
/// How often the spool's size and age policy runs.
const ENFORCE_EVERY: Duration = Duration::from_secs(5);
/// What device workers leave for the spool (deletes, dead letters) rides on the next write;
/// without one, it is written this often.
const FLUSH_REMOVED_EVERY: Duration = Duration::from_secs(1);
/// A spool write failure episode ends after this long without a failure.
const WRITABLE_AGAIN_AFTER: Duration = Duration::from_secs(5);
/// While writes keep failing, a reminder this often.
const STILL_FAILING_EVERY: Duration = Duration::from_secs(60);
/// While a backlog is taken, its progress this often.
const BACKLOG_PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// Devices whose vendor time runs this much faster than the clock (on average) are being
/// replayed from a queue (a broker delivering what it kept), not heard live...
const REPLAY_SPEED: f64 = 1.3;
/// ...measured over windows this long.
const PACE_WINDOW: Duration = Duration::from_secs(2);

/// Positions of one message on their way to a plant.
pub struct PlantInput {
    pub source: Arc<str>,
    pub positions: Vec<Position>,
    pub transform: Transform,
    pub received_at_ms: u64,
    /// The source took it from a backlog (see [`crate::source::Inbound::backlog`]).
    pub backlog: bool,
    /// Messages its broker sends before it waits for their acknowledgements.
    pub unacknowledged_limit: usize,
    /// Sent once every position of the message is in the spool.
    pub ack: Ack,
}

/// Everything a plant needs from the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct PlantSettings {
    pub plant: PlantConfig,
    pub limits: SpoolLimits,
    pub pacing: Pacing,
}

impl PlantSettings {
    pub fn of(plant: &PlantConfig, config: &Config) -> Self {
        PlantSettings {
            plant: plant.clone(),
            limits: SpoolLimits {
                max_bytes: config.spool.max_mb << 20,
                max_age_ms: config.spool.max_age_h * 3_600_000,
            },
            pacing: Pacing { batching: plant.batching.clone(), replay_per_second: config.spool.replay_per_second },
        }
    }
}

pub enum PlantMsg {
    Input(PlantInput),
    Reconfigure(Box<PlantSettings>),
}

pub struct PlantRuntime {
    pub tx: mpsc::Sender<PlantMsg>,
    pub settings: PlantSettings,
    /// What the fleet view shows of this plant and its devices.
    pub watch: Arc<PlantWatch>,
    task: tokio::task::JoinHandle<()>,
}

/// Why a plant cannot start. It then takes nothing (its sources stay away from the broker,
/// which keeps their messages) while the other plants run on.
#[derive(Debug, thiserror::Error)]
pub enum PlantDown {
    #[error("plant {plant}: {source}")]
    Spool { plant: String, source: crate::spool::SpoolError },
    #[error("plant {plant}: cannot set up the Twinzo client: {reason}")]
    Twinzo { plant: String, reason: String },
}

impl PlantRuntime {
    /// Opens the plant's spool and starts its task and device workers.
    pub async fn start(settings: PlantSettings, config: &Config) -> Result<Self, PlantDown> {
        let path = crate::spool::path_for(&config.state_dir, &settings.plant.name);
        let disk = DiskLimits {
            hard_cap_bytes: config.spool.hard_cap_mb.map(|mb| mb << 20),
            min_free_bytes: config.spool.min_free_mb << 20,
        };
        let opened = tokio::task::spawn_blocking(move || Spool::open(&path, disk)).await;
        let spool = Arc::new(
            opened
                .expect("opening a spool does not panic")
                .map_err(|source| PlantDown::Spool { plant: settings.plant.name.clone(), source })?,
        );
        let watch = Arc::new(PlantWatch::new(&settings.plant.name, settings.plant.dry_run));
        watch.set_devices(settings.plant.devices.iter().map(|(robot, d)| (robot, d.sector)));
        let links = PlantLinks::new(spool.clone(), watch.clone());
        let (backlog, settled) = (links.backlog.clone(), links.settled.clone());
        let sink = PlantSink::new(&settings, links)
            .map_err(|e| PlantDown::Twinzo { plant: settings.plant.name.clone(), reason: format!("{e:#}") })?;
        let (tx, rx) = mpsc::channel(1024);
        let state = PlantState {
            pipeline: PlantPipeline::new(settings.plant.clone()),
            limits: settings.limits.clone(),
            spool,
            sink,
            backlog,
            settled,
            taking_backlog: Episode::new(BACKLOG_PROGRESS_EVERY, Backlog::LINGER),
            pace: Pace::default(),
        };
        let task = tokio::spawn(run(state, rx));
        Ok(PlantRuntime { tx, settings, watch, task })
    }

    /// Applies changed settings in order with the messages already queued.
    pub async fn reconfigure(&mut self, settings: PlantSettings) {
        self.settings = settings.clone();
        let _ = self.tx.send(PlantMsg::Reconfigure(Box::new(settings))).await;
    }

    /// Waits for the plant to spool what it holds and its workers to stop, once every sender is gone.
    pub async fn finish(self) {
        drop(self.tx);
        let _ = self.task.await;
    }
}

/// What the plant task owns.
struct PlantState {
    pipeline: PlantPipeline,
    limits: SpoolLimits,
    spool: Arc<Spool>,
    sink: PlantSink,
    backlog: Arc<Backlog>,
    /// Device workers signal here when they delivered positions.
    settled: Arc<tokio::sync::Notify>,
    taking_backlog: Episode,
    pace: Pace,
}

async fn run(mut plant: PlantState, mut rx: mpsc::Receiver<PlantMsg>) {
    let mut group = Group::new();
    let mut writing: Option<Write> = None;
    let mut enforce = tokio::time::interval(ENFORCE_EVERY);
    let mut flush = tokio::time::interval(FLUSH_REMOVED_EVERY);
    let mut open = true;
    while open || !group.is_empty() || writing.is_some() {
        let due = if writing.is_none() { group.due(!open) } else { None };
        tokio::select! {
            msg = rx.recv(), if open => match msg {
                Some(PlantMsg::Input(input)) => {
                    group.add(&mut plant, input);
                    // A full group with as much again waiting: intake is behind.
                    if group.staged >= GROUP_COMMIT && rx.len() >= GROUP_COMMIT {
                        plant.backlog.seen();
                    }
                }
                Some(PlantMsg::Reconfigure(settings)) => {
                    if let Some(write) = writing.take() {
                        group.finished(&plant, write.wait().await);
                    }
                    plant.reconfigure(*settings);
                }
                None => open = false,
            },
            () = plant.settled.notified() => group.settle(&plant.spool),
            finished = wait(&mut writing), if writing.is_some() => {
                writing = None;
                group.finished(&plant, finished);
            }
            () = sleep_until(due), if due.is_some() => writing = group.write(&mut plant),
            _ = enforce.tick(), if writing.is_none() => {
                let devices: Vec<String> = plant.sink.devices.keys().cloned().collect();
                enforce_limits(&plant.spool, &plant.limits, &plant.sink.watch, &devices).await;
                group.trouble_over(&plant.sink.watch);
                plant.report_backlog(0, None);
            }
            _ = flush.tick(), if writing.is_none() => write_owed(&plant.spool).await,
        }
    }
    plant.sink.finish().await;
    write_owed(&plant.spool).await;
}

async fn sleep_until(due: Option<tokio::time::Instant>) {
    if let Some(due) = due {
        tokio::time::sleep_until(due).await;
    }
}

/// The spool's write in flight, and the last generation of messages it covers.
struct Write {
    task: tokio::task::JoinHandle<Result<(), crate::spool::SpoolError>>,
    covers: u64,
    started: Instant,
}

/// How a write ended.
struct Written {
    result: Result<(), crate::spool::SpoolError>,
    covers: u64,
    took: Duration,
}

impl Write {
    async fn wait(self) -> Written {
        let result = self.task.await.expect("spool calls do not panic");
        Written { result, covers: self.covers, took: self.started.elapsed() }
    }
}

async fn wait(writing: &mut Option<Write>) -> Written {
    let write = writing.as_mut().expect("guarded by the select");
    let result = (&mut write.task).await.expect("spool calls do not panic");
    Written { result, covers: write.covers, took: write.started.elapsed() }
}

impl PlantState {
    fn reconfigure(&mut self, settings: PlantSettings) {
        if let Err(e) = self.sink.reconfigure(&settings) {
            tracing::error!(plant = %settings.plant.name, "cannot apply the new sink settings, keeping the old: {e:#}");
            return;
        }
        self.limits = settings.limits.clone();
        self.sink.watch.set_devices(settings.plant.devices.iter().map(|(robot, d)| (robot, d.sector)));
        self.pipeline.reconfigure(settings.plant);
    }
}

/// Writes what the device workers left for the spool since the last write: deletes of
/// delivered positions, refused ones for the dead letters (a failure keeps them owed).
async fn write_owed(spool: &Arc<Spool>) {
    if !spool.owes_a_write() {
        return;
    }
    let spool = spool.clone();
    if let Err(e) = tokio::task::spawn_blocking(move || spool.commit()).await.expect("spool calls do not panic") {
        tracing::debug!("cannot write to the spool yet (the next write tries again): {e}");
    }
}

impl PlantState {
    /// Reports a backlog being taken as one episode: its start, its rate every 10 s, its end.
    fn report_backlog(&mut self, positions: u64, newest_ms: Option<u64>) {
        let plant = self.pipeline.name();
        let news = if self.backlog.taking() {
            self.taking_backlog.occurred_n(positions)
        } else {
            self.taking_backlog.check_over()
        };
        metrics::gauge!("edge_backlog_taking", "plant" => plant.to_string())
            .set(f64::from(u8::from(self.taking_backlog.active())));
        let behind_s = newest_ms.map(|t| now_ms().saturating_sub(t) / 1000);
        match news {
            Some(News::Started) => tracing::info!(
                plant,
                "taking a backlog at full speed: each device's newest position goes to Twinzo first, its history once the backlog is in"
            ),
            Some(News::Ongoing { count, recent, window, .. }) => tracing::info!(
                plant,
                taken = count,
                per_second = (recent as f64 / window.as_secs_f64()).round(),
                newest_taken_behind_s = behind_s,
                "taking a backlog"
            ),
            Some(News::Ended { count, lasted }) => tracing::info!(
                plant,
                taken = count,
                seconds = (lasted.as_secs_f64() * 10.0).round() / 10.0,
                per_second = (count as f64 / lasted.as_secs_f64().max(0.001)).round(),
                "backlog taken; history follows in time order"
            ),
            None => {}
        }
    }
}

/// How fast each device's vendor time advances against the clock. Clock-skew does not
/// matter (it is the rate that counts), and a broker delivering a backlog through a small
/// in-flight window shows here even when edge is mostly idle between its bursts.
struct Pace {
    window_start: Instant,
    /// Per device, the earliest and latest vendor time seen in this window.
    spans: HashMap<String, (u64, u64)>,
    replaying: bool,
}

impl Default for Pace {
    fn default() -> Self {
        Pace { window_start: Instant::now(), spans: HashMap::new(), replaying: false }
    }
}

impl Pace {
    /// Takes the positions of one commit; whether, over the last full window, the devices'
    /// vendor time ran [`REPLAY_SPEED`] times faster than the clock, on average. (A broker
    /// releasing a backlog through a small in-flight window, 20 messages at a time, still
    /// advances vendor time about 1.6 times faster than live.)
    fn replaying(&mut self, items: &[(String, u64)]) -> bool {
        for (robot, t) in items {
            let t = *t;
            match self.spans.get_mut(robot) {
                Some(span) => *span = (span.0.min(t), span.1.max(t)),
                None => drop(self.spans.insert(robot.clone(), (t, t))),
            }
        }
        let elapsed = self.window_start.elapsed();
        if elapsed >= PACE_WINDOW {
            let spans: Vec<u64> = self.spans.values().map(|(first, last)| last - first).filter(|s| *s > 0).collect();
            let vendor_ms = spans.iter().sum::<u64>() as f64;
            let wall_ms = elapsed.as_millis() as f64 * spans.len() as f64;
            self.replaying = !spans.is_empty() && vendor_ms > wall_ms * REPLAY_SPEED;
            self.spans.clear();
            self.window_start = Instant::now();
        }
        self.replaying
    }
}

/// The messages not yet acknowledged, in the order they came: each waits until its positions
/// are delivered (Twinzo confirmed them) or written, whichever comes first.
struct Group {
    waiting: VecDeque<Waiting>,
    /// Write when this many messages wait (the smallest of their sources' limits).
    write_at: usize,
    /// Counts writes: a message is covered by the first write that starts after it came.
    generation: u64,
    /// Positions staged since the last write started.
    staged: usize,
    /// (robot, vendor time) of those positions, for the pace of the plant's devices.
    seen: Vec<(String, u64)>,
    /// When the first message since the last write started came.
    opened: Option<tokio::time::Instant>,
    /// After a failed write, the next attempt waits until then.
    retry_at: Option<tokio::time::Instant>,
    retry: Backoff,
    /// Failing writes, as one episode: an error line, a reminder a minute, a recovery line.
    trouble: Episode,
}

/// One message waiting for its acknowledgement.
struct Waiting {
    ack: Ack,
    /// Its positions not delivered yet.
    rows: Vec<i64>,
    /// It has a position for the dead letters, which only a write keeps.
    refused: bool,
    generation: u64,
}

impl Group {
    fn new() -> Self {
        Group {
            waiting: VecDeque::new(),
            write_at: usize::MAX,
            generation: 0,
            staged: 0,
            seen: Vec::new(),
            opened: None,
            retry_at: None,
            retry: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
            trouble: Episode::new(STILL_FAILING_EVERY, WRITABLE_AGAIN_AFTER),
        }
    }

    fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// When the spool is to be written: after a failure, when retrying; with enough messages
    /// waiting ([`write_when_waiting`]), or when the plant stops, at once; else when the window
    /// of the first message since the last write closes.
    fn due(&self, stopping: bool) -> Option<tokio::time::Instant> {
        let opened = self.opened?;
        Some(match self.retry_at {
            Some(at) => at,
            None if stopping || self.waiting.len() >= self.write_at => tokio::time::Instant::now(),
            None => opened + COMMIT_WINDOW,
        })
    }

    /// Runs one message through the pipeline and gives its positions to the spool, where their
    /// devices' workers can post them at once.
    fn add(&mut self, plant: &mut PlantState, input: PlantInput) {
        if input.backlog {
            plant.backlog.seen();
        }
        let mut items = Vec::with_capacity(input.positions.len());
        let mut refused = Vec::new();
        // What became of each position, for the fleet view.
        let mut became = Vec::with_capacity(input.positions.len());
        for position in &input.positions {
            let outcome = plant.pipeline.process(&input.source, &input.transform, position, input.received_at_ms);
            became.push(match &outcome {
                Outcome::Location { location, .. } | Outcome::Refused { location, .. } => Some(location.clone()),
                Outcome::UnknownDevice => None,
            });
            match outcome {
                Outcome::Location { robot, location } => {
                    crate::stats::STATS.positions.fetch_add(1, Relaxed);
                    items.push((robot, location));
                }
                Outcome::Refused { robot, location, why } => {
                    metrics::counter!("edge_spool_dead_letters_total", "plant" => plant.pipeline.name().to_string(), "device" => robot.clone(), "reason" => why.reason).increment(1);
                    tracing::warn!(plant = plant.pipeline.name(), %robot, reason = why.reason, "a position Twinzo cannot take, dead-lettered: {}", why.detail);
                    refused.push(Refused { device: robot, location, reason: why.reason, detail: why.detail });
                }
                Outcome::UnknownDevice => {
                    crate::stats::STATS.unknown_devices.fetch_add(1, Relaxed);
                }
            }
        }
        let heard = input.positions.iter().zip(became.iter().map(Option::as_ref));
        plant.sink.watch.heard(&input.source, input.received_at_ms, heard);
        let has_refused = !refused.is_empty();
        let rows = plant.spool.stage(&items, refused);
        let devices: BTreeSet<&str> = items.iter().map(|(robot, _)| robot.as_str()).collect();
        for device in devices {
            plant.sink.wake(device);
        }
        self.staged += items.len();
        self.seen.extend(items.into_iter().map(|(robot, location)| (robot, location.timestamp)));
        if self.waiting.is_empty() {
            self.write_at = usize::MAX;
        }
        self.write_at = self.write_at.min(write_when_waiting(input.unacknowledged_limit));
        self.waiting.push_back(Waiting { ack: input.ack, rows, refused: has_refused, generation: self.generation });
        self.opened.get_or_insert_with(tokio::time::Instant::now);
        self.acknowledge_settled();
    }

    /// Takes what the device workers delivered: messages whose positions all reached Twinzo need
    /// no write and are acknowledged (in order: an earlier message still waiting holds later ones
    /// back, for at most a window).
    fn settle(&mut self, spool: &Spool) {
        let delivered = spool.take_settled();
        if !delivered.is_empty() {
            let delivered: std::collections::HashSet<i64> = delivered.into_iter().collect();
            for waiting in &mut self.waiting {
                waiting.rows.retain(|id| !delivered.contains(id));
            }
        }
        self.acknowledge_settled();
    }

    /// Acknowledges the messages a write of generation `covers` made durable, and those
    /// delivered since.
    fn acknowledge_through(&mut self, covers: u64) {
        while self.waiting.front().is_some_and(|w| w.generation <= covers) {
            self.waiting.pop_front().expect("just looked").ack.acknowledge();
        }
        self.acknowledge_settled();
    }

    fn acknowledge_settled(&mut self) {
        while self.waiting.front().is_some_and(|w| w.rows.is_empty() && !w.refused) {
            self.waiting.pop_front().expect("just looked").ack.acknowledge();
        }
    }

    /// Starts writing what the spool was given and Twinzo has not confirmed yet; the messages
    /// that came before are acknowledged once it is written. With nothing to write (Twinzo
    /// confirmed it all within the window, the common case of live traffic) they are
    /// acknowledged at once, without a transaction or a blocking thread.
    fn write(&mut self, plant: &mut PlantState) -> Option<Write> {
        if plant.pace.replaying(&self.seen) {
            plant.backlog.seen();
        }
        let newest = self.seen.iter().map(|(_, t)| *t).max();
        plant.report_backlog(self.staged as u64, newest);
        let covers = self.generation;
        self.generation += 1;
        (self.staged, self.opened, self.retry_at) = (0, None, None);
        self.seen.clear();
        if !plant.spool.owes_a_write() {
            self.acknowledge_through(covers);
            return None;
        }
        let spool = plant.spool.clone();
        // A failed write tries to make room (delivered positions' pages back to the disk) for
        // the next attempt.
        let task = tokio::task::spawn_blocking(move || spool.commit().inspect_err(|_| drop(spool.reclaim())));
        Some(Write { task, covers, started: Instant::now() })
    }

    /// A write ended: the messages it covers are acknowledged, or, when it failed, wait for the
    /// next attempt (nothing is acknowledged before it is delivered or written).
    fn finished(&mut self, plant: &PlantState, written: Written) {
        let name = plant.pipeline.name();
        match written.result {
            Ok(()) => {
                metrics::histogram!("edge_spool_write_seconds", "plant" => name.to_string())
                    .record(written.took.as_secs_f64());
                self.retry.reset();
                self.trouble_over(&plant.sink.watch);
                self.acknowledge_through(written.covers);
            }
            Err(e) => {
                metrics::counter!("edge_spool_write_failures_total", "plant" => name.to_string()).increment(1);
                self.write_failed(&plant.sink.watch, &e);
                // The failed write's messages go with the next one.
                for waiting in self.waiting.iter_mut().filter(|w| w.generation <= written.covers) {
                    waiting.generation = self.generation;
                }
                self.opened.get_or_insert_with(tokio::time::Instant::now);
                self.retry_at = Some(tokio::time::Instant::now() + self.retry.next_delay());
            }
        }
    }

    fn write_failed(&mut self, watch: &PlantWatch, error: &crate::spool::SpoolError) {
        let plant = watch.name.as_str();
        match self.trouble.occurred() {
            Some(News::Started) => {
                tracing::error!(
                    plant,
                    "cannot write the spool; holding intake (nothing is acknowledged until it is written): {error}"
                );
                watch.set_spool_trouble(Some(error.to_string()));
            }
            Some(News::Ongoing { count, lasted, .. }) => tracing::error!(
                plant,
                failures = count,
                since = ?lasted,
                "still cannot write the spool at times; holding intake meanwhile: {error}"
            ),
            _ => {}
        }
    }

    /// Ends the write-failure episode once writes have worked for a while.
    fn trouble_over(&mut self, watch: &PlantWatch) {
        if let Some(News::Ended { count, lasted }) = self.trouble.check_over() {
            tracing::info!(plant = %watch.name, failures = count, after = ?lasted, "spool writable again");
            watch.set_spool_trouble(None);
        }
    }
}

/// Every 5 s: the size and age policy, free pages back to the disk, and what the spool holds
/// per device (for the fleet view and `edge_spool_queued`, of each of `devices`).
async fn enforce_limits(spool: &Arc<Spool>, limits: &SpoolLimits, watch: &PlantWatch, devices: &[String]) {
    let plant = watch.name.as_str();
    let (spool, limits, max_bytes) = (spool.clone(), limits.clone(), limits.max_bytes);
    let enforce = move || (spool.enforce(&limits), spool.reclaim(), spool.counts());
    let (dropped, reclaimed, counts) = tokio::task::spawn_blocking(enforce).await.expect("spool calls do not panic");
    if let Err(e) = reclaimed {
        // Expected on a full disk, which the write path reports.
        tracing::debug!(plant, "cannot give the spool's free pages back to the disk: {e}");
    }
    match dropped {
        Ok(dropped) => {
            for ((device, reason), n) in dropped {
                metrics::counter!("edge_spool_dropped_total", "plant" => plant.to_string(), "device" => device.clone(), "reason" => reason).increment(n);
                tracing::warn!(plant, robot = %device, reason, dropped = n, "spool limit reached: dropped the oldest queued positions (the latest is kept)");
            }
        }
        Err(e) => tracing::error!(plant, "cannot apply the spool limits: {e}"),
    }
    if let Ok(counts) = counts {
        for device in devices {
            let queued = counts.get(device).map_or(0, |c| c.queued);
            metrics::gauge!("edge_spool_queued", "plant" => plant.to_string(), "device" => device.clone())
                .set(queued as f64);
        }
        let depths = counts.iter().map(|(device, c)| (device.clone(), (c.queued, c.dead))).collect();
        let bytes = counts.values().map(|c| c.queued_bytes).sum();
        watch.set_spool(&depths, bytes, max_bytes);
    }
}

/// The device workers of one plant.
struct PlantSink {
    plant: String,
    settings: SinkSettings,
    api: Option<Arc<TwinzoApi>>,
    devices: HashMap<String, (DeviceConfig, DeviceHandle)>,
    workers: JoinSet<()>,
    watch: Arc<PlantWatch>,
    links: PlantLinks,
}

/// What, when changed, means every device worker must be replaced.
#[derive(PartialEq, Clone)]
struct SinkSettings {
    twinzo: Option<crate::config::TwinzoConfig>,
    pacing: Pacing,
}

impl PlantSink {
    fn new(settings: &PlantSettings, links: PlantLinks) -> anyhow::Result<Self> {
        let plant = &settings.plant;
        let api = plant.twinzo.as_ref().map(TwinzoApi::new).transpose()?.map(Arc::new);
        if plant.dry_run {
            links.watch.reach.set(true);
        }
        let sink_settings = SinkSettings { twinzo: plant.twinzo.clone(), pacing: settings.pacing.clone() };
        let mut sink = PlantSink {
            plant: plant.name.clone(),
            settings: sink_settings,
            api,
            devices: HashMap::new(),
            workers: JoinSet::new(),
            watch: links.watch.clone(),
            links,
        };
        for (robot, device) in &plant.devices {
            sink.spawn(robot, device);
        }
        Ok(sink)
    }

    fn spawn(&mut self, robot: &str, device: &DeviceConfig) {
        let login = device.login.clone().unwrap_or_else(|| robot.to_string());
        let poster = match (&self.api, &self.settings.twinzo) {
            (Some(api), Some(twinzo)) => Poster::Twinzo(TwinzoDevice::new(
                api.clone(),
                &self.plant,
                robot,
                &login,
                device.password.clone().unwrap_or_default(),
                &twinzo.branch,
            )),
            _ => Poster::DryRun(DryRun::new(&self.plant, robot, &login)),
        };
        let (handle, worker) =
            DeviceWorker::new(&self.plant, robot, poster, self.settings.pacing.clone(), self.links.clone());
        self.workers.spawn(worker.run());
        self.devices.insert(robot.to_string(), (device.clone(), handle));
    }

    fn wake(&self, robot: &str) {
        if let Some((_, handle)) = self.devices.get(robot) {
            handle.wake();
        }
    }

    /// Replaces the workers whose settings changed. Their positions stay in the spool, so
    /// the new worker carries on where the old one stopped.
    fn reconfigure(&mut self, settings: &PlantSettings) -> anyhow::Result<()> {
        let plant = &settings.plant;
        let sink_settings = SinkSettings { twinzo: plant.twinzo.clone(), pacing: settings.pacing.clone() };
        if sink_settings != self.settings {
            self.api = plant.twinzo.as_ref().map(TwinzoApi::new).transpose()?.map(Arc::new);
            self.settings = sink_settings;
            self.devices.clear();
        }
        self.devices.retain(|robot, (device, _)| plant.devices.get(robot) == Some(device));
        for (robot, device) in &plant.devices {
            if !self.devices.contains_key(robot) {
                self.spawn(robot, device);
            }
        }
        Ok(())
    }

    async fn finish(mut self) {
        self.devices.clear();
        while self.workers.join_next().await.is_some() {}
    }
}
