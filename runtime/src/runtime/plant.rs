//! A plant at run time: one task that runs the plant's pipeline over incoming positions and
//! feeds its sink, which owns one worker per device. Reconfiguration arrives in-band, so a
//! config reload happens between two messages, never in the middle of one.

use crate::config::{DeviceConfig, PlantConfig};
use crate::model::Position;
use crate::pipeline::{Outcome, PlantPipeline, Transform};
use crate::sink::twinzo::{TwinzoApi, TwinzoDevice};
use crate::sink::{DeviceHandle, DeviceWorker, DryRun, Poster, Reachability};
use crate::source::Ack;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Positions of one message on their way to a plant.
pub struct PlantInput {
    pub source: Arc<str>,
    pub positions: Vec<Position>,
    pub transform: Transform,
    pub received_at_ms: u64,
    /// Sent once every position of the message is with its device worker.
    pub ack: Ack,
}

pub enum PlantMsg {
    Input(PlantInput),
    Reconfigure(PlantConfig),
}

pub struct PlantRuntime {
    pub tx: mpsc::Sender<PlantMsg>,
    pub config: PlantConfig,
    pub reach: Arc<Reachability>,
    task: tokio::task::JoinHandle<()>,
}

impl PlantRuntime {
    pub fn start(config: PlantConfig) -> anyhow::Result<Self> {
        let reach = Arc::new(Reachability::default());
        let sink = PlantSink::new(&config, reach.clone())?;
        let (tx, rx) = mpsc::channel(1024);
        let task = tokio::spawn(run(PlantPipeline::new(config.clone()), sink, rx));
        Ok(PlantRuntime { tx, config, reach, task })
    }

    /// Applies a changed configuration in order with the messages already queued.
    pub async fn reconfigure(&mut self, config: PlantConfig) {
        self.config = config.clone();
        let _ = self.tx.send(PlantMsg::Reconfigure(config)).await;
    }

    /// Waits for the plant to deliver what it holds, once every sender is gone.
    pub async fn finish(self) {
        drop(self.tx);
        let _ = self.task.await;
    }
}

async fn run(mut pipeline: PlantPipeline, mut sink: PlantSink, mut rx: mpsc::Receiver<PlantMsg>) {
    while let Some(msg) = rx.recv().await {
        match msg {
            PlantMsg::Input(input) => {
                for position in &input.positions {
                    match pipeline.process(&input.source, &input.transform, position, input.received_at_ms) {
                        Outcome::Location { robot, location } => {
                            crate::stats::STATS.positions.fetch_add(1, Relaxed);
                            sink.send(&robot, location).await;
                        }
                        Outcome::UnknownDevice => {
                            crate::stats::STATS.unknown_devices.fetch_add(1, Relaxed);
                        }
                    }
                }
                input.ack.send();
            }
            PlantMsg::Reconfigure(config) => {
                if let Err(e) = sink.reconfigure(&config) {
                    tracing::error!(plant = %config.name, "cannot apply the new sink settings, keeping the old: {e:#}");
                    continue;
                }
                pipeline.reconfigure(config);
            }
        }
    }
    sink.finish().await;
}

/// The device workers of one plant.
struct PlantSink {
    plant: String,
    settings: SinkSettings,
    api: Option<Arc<TwinzoApi>>,
    devices: HashMap<String, (DeviceConfig, DeviceHandle)>,
    workers: JoinSet<()>,
    reach: Arc<Reachability>,
}

/// What, when changed, means every device worker must be replaced.
#[derive(PartialEq, Clone)]
struct SinkSettings {
    twinzo: Option<crate::config::TwinzoConfig>,
    batching: crate::config::BatchingConfig,
}

impl PlantSink {
    fn new(config: &PlantConfig, reach: Arc<Reachability>) -> anyhow::Result<Self> {
        let api = config.twinzo.as_ref().map(TwinzoApi::new).transpose()?.map(Arc::new);
        if config.dry_run {
            reach.set(true);
        }
        let settings = SinkSettings { twinzo: config.twinzo.clone(), batching: config.batching.clone() };
        let mut sink = PlantSink { plant: config.name.clone(), settings, api, devices: HashMap::new(), workers: JoinSet::new(), reach };
        for (robot, device) in &config.devices {
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
        let (handle, worker) = DeviceWorker::new(&self.plant, robot, poster, self.settings.batching.clone(), self.reach.clone());
        self.workers.spawn(worker.run());
        self.devices.insert(robot.to_string(), (device.clone(), handle));
    }

    async fn send(&mut self, robot: &str, location: crate::model::TwinzoLocation) {
        if let Some((_, handle)) = self.devices.get(robot) {
            handle.send(location).await;
        }
    }

    /// Replaces the workers whose settings changed; the old ones deliver what they hold first.
    fn reconfigure(&mut self, config: &PlantConfig) -> anyhow::Result<()> {
        let settings = SinkSettings { twinzo: config.twinzo.clone(), batching: config.batching.clone() };
        if settings != self.settings {
            self.api = config.twinzo.as_ref().map(TwinzoApi::new).transpose()?.map(Arc::new);
            self.settings = settings;
            self.devices.clear();
        }
        self.devices.retain(|robot, (device, _)| config.devices.get(robot) == Some(device));
        for (robot, device) in &config.devices {
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
