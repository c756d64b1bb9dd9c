//! A plant at run time: one task that runs the plant's pipeline over incoming positions, writes
//! them to the plant's durable spool (then, and only then, acknowledges their MQTT messages),
//! and wakes the device workers that post them. Reconfiguration arrives in-band, so a config
//! reload happens between two messages, never in the middle of one.

use crate::backoff::Backoff;
use crate::config::{Config, DeviceConfig, PlantConfig};
use crate::model::{Position, TwinzoLocation};
use crate::pipeline::{Outcome, PlantPipeline, Transform};
use crate::sink::twinzo::{TwinzoApi, TwinzoDevice};
use crate::sink::{DeviceHandle, DeviceWorker, DryRun, Pacing, Poster, Reachability};
use crate::source::Ack;
use crate::spool::{DiskLimits, Spool, SpoolLimits};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Messages written to the spool in one transaction, at most (group commit).
const GROUP_COMMIT: usize = 256;
/// How often the spool's size and age policy runs.
const ENFORCE_EVERY: Duration = Duration::from_secs(5);
/// A spool write failure episode ends after this long without a failure.
const WRITABLE_AGAIN_AFTER: Duration = Duration::from_secs(5);
/// While writes keep failing, a reminder this often.
const STILL_FAILING_EVERY: Duration = Duration::from_secs(60);

/// Positions of one message on their way to a plant.
pub struct PlantInput {
    pub source: Arc<str>,
    pub positions: Vec<Position>,
    pub transform: Transform,
    pub received_at_ms: u64,
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
    pub reach: Arc<Reachability>,
    task: tokio::task::JoinHandle<()>,
}

impl PlantRuntime {
    /// Opens the plant's spool and starts its task and device workers.
    pub async fn start(settings: PlantSettings, config: &Config) -> anyhow::Result<Self> {
        let path = crate::spool::path_for(&config.state_dir, &settings.plant.name);
        let disk = DiskLimits {
            hard_cap_bytes: config.spool.hard_cap_mb.map(|mb| mb << 20),
            min_free_bytes: config.spool.min_free_mb << 20,
        };
        let spool = Arc::new(tokio::task::spawn_blocking(move || Spool::open(&path, disk)).await??);
        let reach = Arc::new(Reachability::default());
        let sink = PlantSink::new(&settings, spool.clone(), reach.clone())?;
        let (tx, rx) = mpsc::channel(1024);
        let task =
            tokio::spawn(run(PlantPipeline::new(settings.plant.clone()), settings.limits.clone(), spool, sink, rx));
        Ok(PlantRuntime { tx, settings, reach, task })
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

async fn run(
    mut pipeline: PlantPipeline,
    mut limits: SpoolLimits,
    spool: Arc<Spool>,
    mut sink: PlantSink,
    mut rx: mpsc::Receiver<PlantMsg>,
) {
    let mut batch = Batch::default();
    let mut enforce = tokio::time::interval(ENFORCE_EVERY);
    loop {
        let first = tokio::select! {
            msg = rx.recv() => match msg {
                Some(msg) => msg,
                None => break,
            },
            _ = enforce.tick() => {
                enforce_limits(&spool, &limits, pipeline.name()).await;
                batch.trouble.check_over(pipeline.name());
                continue;
            }
        };
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(msg) = next.take() {
            match msg {
                PlantMsg::Input(input) => batch.add(&mut pipeline, input),
                PlantMsg::Reconfigure(settings) => {
                    batch.commit(&spool, &sink, pipeline.name()).await;
                    if let Err(e) = sink.reconfigure(&settings) {
                        tracing::error!(plant = %settings.plant.name, "cannot apply the new sink settings, keeping the old: {e:#}");
                        continue;
                    }
                    limits = settings.limits.clone();
                    pipeline.reconfigure(settings.plant);
                }
            }
            taken += 1;
            if taken < GROUP_COMMIT {
                next = rx.try_recv().ok();
            }
        }
        batch.commit(&spool, &sink, pipeline.name()).await;
    }
    sink.finish().await;
}

/// Positions and acks gathered for one spool transaction.
#[derive(Default)]
struct Batch {
    items: Vec<(String, TwinzoLocation)>,
    acks: Vec<Ack>,
    trouble: WriteTrouble,
}

impl Batch {
    fn add(&mut self, pipeline: &mut PlantPipeline, input: PlantInput) {
        for position in &input.positions {
            match pipeline.process(&input.source, &input.transform, position, input.received_at_ms) {
                Outcome::Location { robot, location } => {
                    crate::stats::STATS.positions.fetch_add(1, Relaxed);
                    self.items.push((robot, location));
                }
                Outcome::UnknownDevice => {
                    crate::stats::STATS.unknown_devices.fetch_add(1, Relaxed);
                }
            }
        }
        self.acks.push(input.ack);
    }

    /// Writes the positions durably (waiting, and so holding intake, while the spool cannot
    /// be written), then acknowledges their messages and wakes their devices.
    async fn commit(&mut self, spool: &Arc<Spool>, sink: &PlantSink, plant: &str) {
        if !self.items.is_empty() {
            let items = Arc::new(std::mem::take(&mut self.items));
            let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
            loop {
                let (spool, items) = (spool.clone(), items.clone());
                let started = Instant::now();
                // A failed write tries to make room (delivered positions' pages back to the
                // disk) for the next attempt.
                let append = move || spool.append(&items).inspect_err(|_| drop(spool.reclaim()));
                match tokio::task::spawn_blocking(append).await.expect("spool calls do not panic") {
                    Ok(()) => {
                        metrics::histogram!("edge_spool_write_seconds", "plant" => plant.to_string())
                            .record(started.elapsed().as_secs_f64());
                        self.trouble.check_over(plant);
                        break;
                    }
                    Err(e) => {
                        metrics::counter!("edge_spool_write_failures_total", "plant" => plant.to_string()).increment(1);
                        self.trouble.failed(plant, &e);
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                }
            }
            let devices: BTreeSet<&str> = items.iter().map(|(robot, _)| robot.as_str()).collect();
            for device in devices {
                sink.wake(device);
            }
        }
        for ack in self.acks.drain(..) {
            ack.send();
        }
    }
}

/// Failing spool writes, tracked as episodes so that a disk hovering at its limit gives one
/// error line, a reminder a minute, and one recovery line, not a line per transaction.
#[derive(Default)]
struct WriteTrouble {
    episode: Option<Episode>,
}

struct Episode {
    since: Instant,
    failures: u64,
    last_failure: Instant,
    last_line: Instant,
}

impl WriteTrouble {
    fn failed(&mut self, plant: &str, error: &crate::spool::SpoolError) {
        let now = Instant::now();
        let Some(episode) = &mut self.episode else {
            tracing::error!(
                plant,
                "cannot write the spool; holding intake (nothing is acknowledged until it is written): {error}"
            );
            self.episode = Some(Episode { since: now, failures: 1, last_failure: now, last_line: now });
            return;
        };
        episode.failures += 1;
        episode.last_failure = now;
        if now - episode.last_line >= STILL_FAILING_EVERY {
            episode.last_line = now;
            let (failures, since) = (episode.failures, episode.since.elapsed());
            tracing::error!(
                plant,
                failures,
                ?since,
                "still cannot write the spool at times; holding intake meanwhile: {error}"
            );
        }
    }

    /// Ends the episode once writes have worked for a while.
    fn check_over(&mut self, plant: &str) {
        if let Some(episode) = self.episode.take_if(|e| e.last_failure.elapsed() >= WRITABLE_AGAIN_AFTER) {
            tracing::info!(plant, failures = episode.failures, after = ?episode.since.elapsed(), "spool writable again");
        }
    }
}

async fn enforce_limits(spool: &Arc<Spool>, limits: &SpoolLimits, plant: &str) {
    let (spool, limits) = (spool.clone(), limits.clone());
    let enforce = move || (spool.enforce(&limits), spool.reclaim());
    let (dropped, reclaimed) = tokio::task::spawn_blocking(enforce).await.expect("spool calls do not panic");
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
}

/// The device workers of one plant.
struct PlantSink {
    plant: String,
    settings: SinkSettings,
    api: Option<Arc<TwinzoApi>>,
    spool: Arc<Spool>,
    devices: HashMap<String, (DeviceConfig, DeviceHandle)>,
    workers: JoinSet<()>,
    reach: Arc<Reachability>,
}

/// What, when changed, means every device worker must be replaced.
#[derive(PartialEq, Clone)]
struct SinkSettings {
    twinzo: Option<crate::config::TwinzoConfig>,
    pacing: Pacing,
}

impl PlantSink {
    fn new(settings: &PlantSettings, spool: Arc<Spool>, reach: Arc<Reachability>) -> anyhow::Result<Self> {
        let plant = &settings.plant;
        let api = plant.twinzo.as_ref().map(TwinzoApi::new).transpose()?.map(Arc::new);
        if plant.dry_run {
            reach.set(true);
        }
        let sink_settings = SinkSettings { twinzo: plant.twinzo.clone(), pacing: settings.pacing.clone() };
        let mut sink = PlantSink {
            plant: plant.name.clone(),
            settings: sink_settings,
            api,
            spool,
            devices: HashMap::new(),
            workers: JoinSet::new(),
            reach,
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
        let (handle, worker) = DeviceWorker::new(
            &self.plant,
            robot,
            self.spool.clone(),
            poster,
            self.settings.pacing.clone(),
            self.reach.clone(),
        );
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
