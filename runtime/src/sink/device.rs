//! One device's worker: gathers its locations for a flush interval, posts them as one batch,
//! and retries with backoff when the post fails. One failing device never holds up another.

use super::{DryRun, Reachability};
use super::twinzo::TwinzoDevice;
use crate::backoff::Backoff;
use crate::config::BatchingConfig;
use crate::model::TwinzoLocation;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Locations held in memory per device while Twinzo is unreachable; the oldest go first.
const QUEUE_LIMIT: usize = 100_000;
/// Attempts to deliver what is left when the runtime shuts down.
const SHUTDOWN_ATTEMPTS: usize = 3;

/// How a post went.
#[derive(Debug, Clone, PartialEq)]
pub enum PostResult {
    /// Every location was confirmed (`Success` true, each `Locations[].Success` true).
    Accepted,
    /// Confirmed except these locations (indexes into the batch), which Twinzo refused.
    Partial { rejected: Vec<usize>, reason: &'static str, detail: String },
    /// Twinzo refused the whole batch for a reason that retrying will not change.
    Rejected { reason: &'static str, detail: String },
    /// Not delivered now (network, timeout, 5xx, authentication): try again later.
    Retry { reason: &'static str, detail: String },
}

pub enum Poster {
    Twinzo(TwinzoDevice),
    DryRun(DryRun),
}

impl Poster {
    async fn post(&mut self, batch: &[TwinzoLocation]) -> PostResult {
        match self {
            Poster::Twinzo(device) => device.post(batch).await,
            Poster::DryRun(dry) => dry.post(batch),
        }
    }
}

/// The sending side of a device worker.
#[derive(Clone)]
pub struct DeviceHandle {
    tx: mpsc::Sender<TwinzoLocation>,
}

impl DeviceHandle {
    /// Hands a location to the worker; waits while its inbox is full (backpressure).
    pub async fn send(&self, location: TwinzoLocation) -> bool {
        self.tx.send(location).await.is_ok()
    }
}

pub struct DeviceWorker {
    plant: String,
    robot: String,
    rx: mpsc::Receiver<TwinzoLocation>,
    pending: VecDeque<TwinzoLocation>,
    poster: Poster,
    batching: BatchingConfig,
    retry: Backoff,
    failing_since: Option<(Instant, u64)>,
    reach: Arc<Reachability>,
}

impl DeviceWorker {
    pub fn new(plant: &str, robot: &str, poster: Poster, batching: BatchingConfig, reach: Arc<Reachability>) -> (DeviceHandle, DeviceWorker) {
        let (tx, rx) = mpsc::channel(1024);
        let worker = DeviceWorker {
            plant: plant.into(),
            robot: robot.into(),
            rx,
            pending: VecDeque::new(),
            poster,
            batching,
            retry: Backoff::new(Duration::from_millis(500), Duration::from_secs(60)),
            failing_since: None,
            reach,
        };
        (DeviceHandle { tx }, worker)
    }

    /// Runs until every handle is dropped, then makes a last attempt to deliver what it holds.
    pub async fn run(mut self) {
        let mut next_post: Option<Instant> = None;
        loop {
            tokio::select! {
                received = self.rx.recv() => match received {
                    Some(location) => {
                        self.enqueue(location);
                        let window = Instant::now() + Duration::from_millis(self.batching.flush_interval_ms);
                        next_post = Some(match next_post {
                            _ if self.pending.len() >= self.batching.max_batch && self.failing_since.is_none() => Instant::now(),
                            Some(at) => at,
                            None => window,
                        });
                    }
                    None => break,
                },
                () = sleep_until(next_post) => {
                    next_post = self.post_once().await;
                }
            }
        }
        self.drain_on_shutdown().await;
    }

    fn enqueue(&mut self, location: TwinzoLocation) {
        if self.pending.len() >= QUEUE_LIMIT {
            self.pending.pop_front();
            self.count_dropped("queue-full", 1);
        }
        self.pending.push_back(location);
    }

    /// Posts one batch; returns when to post next (`None`: nothing left).
    async fn post_once(&mut self) -> Option<Instant> {
        let n = self.pending.len().min(self.batching.max_batch);
        let batch: Vec<TwinzoLocation> = self.pending.iter().take(n).cloned().collect();
        let started = std::time::Instant::now();
        let result = self.poster.post(&batch).await;
        metrics::histogram!("edge_twinzo_post_seconds", "plant" => self.plant.clone()).record(started.elapsed().as_secs_f64());
        match result {
            PostResult::Accepted => self.delivered(n, 0),
            PostResult::Partial { rejected, reason, detail } => {
                self.count_dropped(reason, rejected.len() as u64);
                tracing::warn!(plant = %self.plant, robot = %self.robot, rejected = rejected.len(), "Twinzo refused some locations: {detail}");
                self.delivered(n, rejected.len());
            }
            PostResult::Rejected { reason, detail } => {
                self.pending.drain(..n);
                self.count_dropped(reason, n as u64);
                self.failed(reason, &detail, true);
            }
            PostResult::Retry { reason, detail } => {
                self.failed(reason, &detail, false);
                return Some(Instant::now() + self.retry.next_delay());
            }
        }
        match self.pending.len() {
            0 => None,
            backlog if backlog >= self.batching.max_batch => Some(Instant::now()),
            _ => Some(Instant::now() + Duration::from_millis(self.batching.flush_interval_ms)),
        }
    }

    fn delivered(&mut self, n: usize, rejected: usize) {
        self.pending.drain(..n);
        self.reach.set(true);
        metrics::counter!("edge_positions_posted_total", "plant" => self.plant.clone(), "device" => self.robot.clone()).increment((n - rejected) as u64);
        crate::stats::STATS.posted.fetch_add((n - rejected) as u64, Relaxed);
        self.retry.reset();
        if let Some((since, failures)) = self.failing_since.take() {
            tracing::info!(plant = %self.plant, robot = %self.robot, failures, after = ?since.elapsed(), "posting to Twinzo works again");
        }
    }

    // The first failure of a run is a warning, repeats are debug lines: a Twinzo outage
    // gives one line per device, not one per retry.
    fn failed(&mut self, reason: &'static str, detail: &str, permanent: bool) {
        // A refusal is an answer: Twinzo is reachable. Everything else counts as unreachable.
        self.reach.set(permanent);
        crate::stats::STATS.post_failures.fetch_add(1, Relaxed);
        metrics::counter!("edge_post_failures_total", "plant" => self.plant.clone(), "device" => self.robot.clone(), "reason" => reason).increment(1);
        let (pending, robot, plant) = (self.pending.len(), &self.robot, &self.plant);
        match &mut self.failing_since {
            Some((_, failures)) => {
                *failures += 1;
                tracing::debug!(%plant, %robot, reason, pending, "posting failed again: {detail}");
            }
            None => {
                let what = if permanent { "Twinzo rejected a batch (dropped)" } else { "posting to Twinzo failed; retrying with backoff" };
                tracing::warn!(%plant, %robot, reason, pending, "{what}: {detail}");
                self.failing_since = Some((Instant::now(), 1));
            }
        }
    }

    fn count_dropped(&self, reason: &'static str, n: u64) {
        metrics::counter!("edge_positions_dropped_total", "plant" => self.plant.clone(), "device" => self.robot.clone(), "reason" => reason).increment(n);
    }

    async fn drain_on_shutdown(&mut self) {
        for _ in 0..SHUTDOWN_ATTEMPTS {
            if self.pending.is_empty() {
                return;
            }
            if let Some(at) = self.post_once().await {
                tokio::time::sleep_until(at.min(Instant::now() + Duration::from_secs(1))).await;
            }
        }
        if !self.pending.is_empty() {
            tracing::error!(plant = %self.plant, robot = %self.robot, undelivered = self.pending.len(), "shutting down with positions Twinzo did not confirm");
            self.count_dropped("shutdown", self.pending.len() as u64);
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
