//! One device's worker: takes that device's positions from the plant's spool, posts them as
//! soon as nothing is in flight (what arrives meanwhile makes the next batch), and removes them
//! only once Twinzo confirmed them. With a backlog (after an outage,
//! or while the plant takes one from the broker) the newest position goes first, so the twin
//! is current at once, and the history follows in time order at a bounded rate. A batch Twinzo
//! refuses is split until the locations it will not take are found and dead-lettered. One
//! failing device never holds up another.

use super::twinzo::TwinzoDevice;
use super::{Backlog, DryRun};
use crate::backoff::Backoff;
use crate::config::BatchingConfig;
use crate::episode::{Episode, News};
use crate::fleet::PlantWatch;
use crate::model::TwinzoLocation;
use crate::spool::{BatchRequest, Row, Spool, SpoolError};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// Without a wake-up, look at the spool this often (`edge spool retry` adds rows from outside).
const POLL: Duration = Duration::from_secs(5);
/// At shutdown, one last post may take this long; what is left stays in the spool.
const LAST_POST: Duration = Duration::from_secs(3);
/// While the plant takes a backlog, a device's newest position is posted this often.
const BACKLOG_CADENCE: Duration = Duration::from_secs(1);
/// While posts keep failing, a reminder this often.
const STILL_FAILING_EVERY: Duration = Duration::from_secs(600);
/// Longest wait a `Retry-After` is followed for; a longer one is capped.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// How a post went.
#[derive(Debug, Clone, PartialEq)]
pub enum PostResult {
    /// Every location was confirmed (`Success` true, each `Locations[].Success` true).
    Accepted,
    /// Confirmed except these locations (indexes into the batch), which Twinzo refused.
    Partial { rejected: Vec<usize>, reason: &'static str, detail: String },
    /// Twinzo refused the whole batch for a reason that retrying will not change.
    Rejected { reason: &'static str, detail: String },
    /// Twinzo refused the request for its content (a 4xx such as 400 or 413): some location
    /// in it cannot be taken. Split, a batch shows which; alone, that location is dead-lettered.
    Refused { reason: &'static str, detail: String },
    /// Not delivered now (network, timeout, 5xx, 429, authentication): try again later, after
    /// `after` when Twinzo said so.
    Retry { reason: &'static str, detail: String, after: Option<Duration> },
}

/// Where a device's posts go. (Nearly every poster is the large variant: boxing it would only add
/// an allocation per device.)
#[allow(clippy::large_enum_variant)]
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

    /// Twinzo answers again: forget any sign-in backoff.
    fn retry_now(&mut self) {
        if let Poster::Twinzo(device) = self {
            device.retry_now();
        }
    }
}

/// What a worker needs to know about pacing.
#[derive(Debug, Clone, PartialEq)]
pub struct Pacing {
    pub batching: BatchingConfig,
    /// Backlog replay rate, positions per second.
    pub replay_per_second: u32,
}

/// How to reach a running worker: wake it when positions arrive, stop it.
pub struct DeviceHandle {
    wake: Arc<Notify>,
    stop: watch::Sender<bool>,
}

impl DeviceHandle {
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

impl Drop for DeviceHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// What a plant's device workers share.
#[derive(Clone)]
pub struct PlantLinks {
    pub spool: Arc<Spool>,
    /// Where workers report how posting goes (Twinzo reachable, last result per device).
    pub watch: Arc<PlantWatch>,
    pub backlog: Arc<Backlog>,
    /// Told when positions are delivered (their messages may be acknowledged).
    pub settled: Arc<Notify>,
    /// Told when a device that could not post posts again: Twinzo is back, and the others
    /// waiting out a backoff try at once.
    pub answering: Arc<Notify>,
}

impl PlantLinks {
    pub fn new(spool: Arc<Spool>, watch: Arc<PlantWatch>) -> Self {
        PlantLinks { spool, watch, backlog: Arc::default(), settled: Arc::default(), answering: Arc::default() }
    }
}

pub struct DeviceWorker {
    plant: String,
    robot: String,
    /// This device's metrics, looked up once (a lookup with labels costs more than the update).
    meters: Meters,
    /// When the last post started (`batching.flush_interval_ms` apart at the least).
    last_post: Option<tokio::time::Instant>,
    links: PlantLinks,
    wake: Arc<Notify>,
    stop: watch::Receiver<bool>,
    poster: Poster,
    pacing: Pacing,
    retry: Backoff,
    /// Posts failing, as one episode: a warning, a reminder every 10 minutes, a recovery line.
    failing: Episode,
    /// The newest timestamp posted (delivered or dead-lettered): a newer one jumps the queue.
    posted_up_to: Option<u64>,
    /// Spool errors, as one episode: a line at the first, one a minute, one when it works again.
    spool_trouble: Episode,
}

/// A device's metrics.
struct Meters {
    posted: metrics::Counter,
    post_seconds: metrics::Histogram,
}

impl Meters {
    fn new(plant: &str, robot: &str) -> Self {
        let labels = [("plant", plant.to_string()), ("device", robot.to_string())];
        Meters {
            posted: metrics::counter!("edge_positions_posted_total", &labels),
            post_seconds: metrics::histogram!("edge_twinzo_post_seconds", "plant" => plant.to_string()),
        }
    }
}

/// What to do after one post.
enum Next {
    Idle,
    After(Duration),
    /// Backing off after a failure: until then, or until another device posts again.
    Backoff(Duration),
}

/// How the rows of one batch fared.
enum Delivery {
    /// Every row was confirmed or dead-lettered.
    Done,
    /// Twinzo is not taking posts now: the rest stays queued.
    Retry(Option<Duration>),
}

impl DeviceWorker {
    pub fn new(
        plant: &str,
        robot: &str,
        poster: Poster,
        pacing: Pacing,
        links: PlantLinks,
    ) -> (DeviceHandle, DeviceWorker) {
        let (wake, (stop_tx, stop)) = (Arc::new(Notify::new()), watch::channel(false));
        let worker = DeviceWorker {
            plant: plant.into(),
            robot: robot.into(),
            meters: Meters::new(plant, robot),
            last_post: None,
            links,
            wake: wake.clone(),
            stop,
            poster,
            pacing,
            retry: Backoff::new(Duration::from_millis(250), Duration::from_secs(30)),
            failing: Episode::new(STILL_FAILING_EVERY, Duration::MAX),
            posted_up_to: None,
            spool_trouble: Episode::new(Duration::from_secs(60), Duration::MAX),
        };
        (DeviceHandle { wake, stop: stop_tx }, worker)
    }

    /// Runs until its handle is dropped, then tries one last post. Starts with whatever the
    /// spool holds (a restart).
    pub async fn run(mut self) {
        let mut next = Next::After(Duration::ZERO);
        loop {
            let wait = match next {
                Next::Idle => {
                    tokio::select! {
                        () = self.wake.notified() => {}
                        () = tokio::time::sleep(POLL) => {}
                        _ = self.stop.wait_for(|s| *s) => break,
                    }
                    self.until_next_post_may_start()
                }
                Next::After(wait) => wait.max(self.until_next_post_may_start()),
                Next::Backoff(wait) => {
                    let answering = self.links.answering.clone();
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = answering.notified() => self.poster.retry_now(),
                        _ = self.stop.wait_for(|s| *s) => break,
                    }
                    Duration::ZERO
                }
            };
            // Not even a zero sleep otherwise: the timer wheel would make it a millisecond.
            if !wait.is_zero() {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = self.stop.wait_for(|s| *s) => break,
                }
            }
            next = self.post_once().await;
        }
        let _ = tokio::time::timeout(LAST_POST, self.post_once()).await;
    }

    /// With `batching.flush_interval_ms` above 0 (50 by default), posts start that far apart
    /// at the least; with 0, a post starts as soon as the one before it ended.
    fn until_next_post_may_start(&self) -> Duration {
        let interval = Duration::from_millis(self.pacing.batching.flush_interval_ms);
        self.last_post
            .map_or(Duration::ZERO, |at| (at + interval).saturating_duration_since(tokio::time::Instant::now()))
    }

    /// Posts one batch from the spool.
    async fn post_once(&mut self) -> Next {
        match self.try_post().await {
            Ok(next) => {
                if let Some(News::Ended { count, .. }) = self.spool_trouble.end() {
                    tracing::info!(plant = %self.plant, robot = %self.robot, failures = count, "the spool works again");
                }
                next
            }
            Err(e) => {
                if let Some(News::Started | News::Ongoing { .. }) = self.spool_trouble.occurred() {
                    tracing::error!(plant = %self.plant, robot = %self.robot, "cannot use the spool, trying again every second: {e}");
                }
                Next::After(Duration::from_secs(1))
            }
        }
    }

    async fn try_post(&mut self) -> Result<Next, SpoolError> {
        let holding = self.links.backlog.taking();
        let want =
            BatchRequest { max: self.pacing.batching.max_batch, posted_up_to: self.posted_up_to, history: !holding };
        let batch = match self.links.spool.next_batch_from_memory(&self.robot, want) {
            Some(batch) => batch,
            None => {
                let robot = self.robot.clone();
                self.spool(move |s| s.next_batch(&robot, want)).await?
            }
        };
        if batch.quarantined > 0 {
            tracing::error!(plant = %self.plant, robot = %self.robot, rows = batch.quarantined, "unreadable positions in the spool moved to the dead letters (reason undecodable)");
            metrics::counter!("edge_spool_dead_letters_total", "plant" => self.plant.clone(), "device" => self.robot.clone(), "reason" => "undecodable").increment(batch.quarantined);
        }
        if batch.pending == 0 {
            return Ok(Next::Idle);
        }
        if batch.rows.is_empty() {
            // History held while the plant takes a backlog; nothing newer to show yet.
            return Ok(Next::After(self.backlog_cadence()));
        }
        let sent = batch.rows.len() as u64;
        self.last_post = Some(tokio::time::Instant::now());
        if let Delivery::Retry(after) = self.deliver(batch.rows).await? {
            // Told how long to wait (Retry-After): that long. Else back off, or less if
            // another device finds Twinzo answering again.
            return Ok(match after {
                Some(after) => Next::After(after.min(MAX_RETRY_AFTER)),
                None => Next::Backoff(self.retry.next_delay()),
            });
        }
        let left = batch.pending.saturating_sub(sent);
        Ok(match left {
            0 => Next::Idle,
            _ if self.links.backlog.taking() => Next::After(self.backlog_cadence()),
            // Catching up: bounded replay rate.
            _ if batch.pending > self.pacing.batching.max_batch as u64 => {
                Next::After(Duration::from_secs_f64(sent as f64 / self.pacing.replay_per_second.max(1) as f64))
            }
            // What arrived while this post was in flight goes next.
            _ => Next::After(Duration::ZERO),
        })
    }

    /// While the plant takes a backlog, the next look: a cadence later, or as soon as the
    /// backlog ends, when the history held back goes.
    fn backlog_cadence(&self) -> Duration {
        self.links.backlog.left().unwrap_or(BACKLOG_CADENCE).min(BACKLOG_CADENCE)
    }

    /// Posts `rows`; a part Twinzo refuses for its content is split in halves until the
    /// locations it will not take stand alone, and those are dead-lettered with its answer.
    async fn deliver(&mut self, rows: Vec<Row>) -> Result<Delivery, SpoolError> {
        let mut parts = vec![rows];
        while let Some(part) = parts.pop() {
            let batch: Vec<TwinzoLocation> = part.iter().map(|r| r.location.clone()).collect();
            let ids: Vec<i64> = part.iter().map(|r| r.id).collect();
            let started = std::time::Instant::now();
            let result = self.poster.post(&batch).await;
            self.meters.post_seconds.record(started.elapsed().as_secs_f64());
            match result {
                PostResult::Accepted => {
                    self.delivered(batch.len());
                    self.links.spool.remove(&self.robot, &ids);
                    self.links.settled.notify_one();
                }
                PostResult::Partial { rejected, reason, detail } => {
                    let refused: Vec<i64> = rejected.iter().filter_map(|i| ids.get(*i).copied()).collect();
                    let kept: Vec<i64> = ids.iter().copied().filter(|id| !refused.contains(id)).collect();
                    tracing::warn!(plant = %self.plant, robot = %self.robot, rejected = refused.len(), "Twinzo refused some locations (dead-lettered): {detail}");
                    self.delivered(batch.len() - rejected.len());
                    self.links.spool.remove(&self.robot, &kept);
                    self.links.settled.notify_one();
                    self.dead_letter(refused, reason, &detail).await?;
                }
                PostResult::Refused { reason, .. } if part.len() > 1 => {
                    tracing::debug!(plant = %self.plant, robot = %self.robot, reason, size = part.len(), "Twinzo refused a batch: splitting it to find the locations it will not take");
                    let mut first = part;
                    let second = first.split_off(first.len() / 2);
                    parts.extend([second, first]);
                    continue;
                }
                PostResult::Refused { reason, detail } | PostResult::Rejected { reason, detail } => {
                    self.failed(reason, &detail, true);
                    self.dead_letter(ids, reason, &detail).await?;
                }
                PostResult::Retry { reason, detail, after } => {
                    self.failed(reason, &detail, false);
                    return Ok(Delivery::Retry(after));
                }
            }
            // Delivered or dead-lettered: either way these went out.
            self.posted_up_to = self.posted_up_to.max(batch.iter().map(|l| l.timestamp).max());
        }
        Ok(Delivery::Done)
    }

    async fn spool<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Spool) -> Result<T, SpoolError> + Send + 'static,
    ) -> Result<T, SpoolError> {
        let spool = self.links.spool.clone();
        tokio::task::spawn_blocking(move || f(&spool)).await.expect("spool calls do not panic")
    }

    async fn dead_letter(&self, ids: Vec<i64>, reason: &'static str, detail: &str) -> Result<(), SpoolError> {
        let n = ids.len() as u64;
        let (robot, detail) = (self.robot.clone(), detail.to_string());
        self.spool(move |s| s.dead_letter(&robot, &ids, reason, &detail)).await?;
        metrics::counter!("edge_spool_dead_letters_total", "plant" => self.plant.clone(), "device" => self.robot.clone(), "reason" => reason).increment(n);
        Ok(())
    }

    fn delivered(&mut self, n: usize) {
        self.links.watch.reach.set(true);
        self.links.watch.posted(&self.robot, n as u64);
        self.meters.posted.increment(n as u64);
        crate::stats::STATS.posted.fetch_add(n as u64, Relaxed);
        self.retry.reset();
        if let Some(News::Ended { count, lasted }) = self.failing.end() {
            tracing::info!(plant = %self.plant, robot = %self.robot, failures = count, after = ?lasted, "posting to Twinzo works again");
            self.links.answering.notify_waiters();
        }
    }

    // The first failure of a run is a warning, then a reminder now and then: a Twinzo outage
    // gives one line per device, not one per retry.
    fn failed(&mut self, reason: &'static str, detail: &str, permanent: bool) {
        // A refusal is an answer: Twinzo is reachable. Everything else counts as unreachable.
        self.links.watch.reach.set(permanent);
        self.links.watch.post_failed(&self.robot, reason, detail);
        crate::stats::STATS.post_failures.fetch_add(1, Relaxed);
        metrics::counter!("edge_post_failures_total", "plant" => self.plant.clone(), "device" => self.robot.clone(), "reason" => reason).increment(1);
        let (robot, plant) = (&self.robot, &self.plant);
        match self.failing.occurred() {
            Some(News::Started) => {
                let what = if permanent {
                    "Twinzo rejected a batch (dead-lettered, see `edge spool dead`)"
                } else {
                    "posting to Twinzo failed; positions stay in the spool and are retried with backoff"
                };
                tracing::warn!(%plant, %robot, reason, "{what}: {detail}");
            }
            Some(News::Ongoing { count, lasted, .. }) => {
                tracing::warn!(%plant, %robot, reason, failures = count, since = ?lasted, "posting to Twinzo still fails: {detail}");
            }
            _ => tracing::debug!(%plant, %robot, reason, "posting failed again: {detail}"),
        }
    }
}
