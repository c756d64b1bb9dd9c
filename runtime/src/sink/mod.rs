//! Where locations go: per plant, one worker per device that takes its locations from the
//! spool, posts them in batches (to Twinzo, or to the log in a dry run) and retries with backoff.

mod device;
mod dry_run;
pub mod twinzo;

pub use device::{DeviceHandle, DeviceWorker, Pacing, PlantLinks, PostResult, Poster};
pub use dry_run::DryRun;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Whether a plant is taking a backlog (a broker delivering what it queued while edge was away,
/// or intake held up): its device workers then post each device's newest position and hold
/// its history until the backlog is in, so that the newest positions reach Twinzo first.
#[derive(Debug)]
pub struct Backlog {
    epoch: std::time::Instant,
    /// Milliseconds since `epoch` until which the plant counts as taking a backlog.
    until_ms: AtomicU64,
}

impl Default for Backlog {
    fn default() -> Self {
        Backlog { epoch: std::time::Instant::now(), until_ms: AtomicU64::new(0) }
    }
}

impl Backlog {
    /// A backlog lasts this long past the last sign of one. The signs come with every message
    /// taken from a backlog (intake held back over half-second windows, a full group) or with
    /// every write while the devices' vendor time runs fast (over two-second windows), so a
    /// second without one is the end, not a gap between a broker's bursts.
    pub const LINGER: Duration = Duration::from_secs(1);

    /// Intake just took a message from a backlog.
    pub fn seen(&self) {
        let until = (self.epoch.elapsed() + Self::LINGER).as_millis() as u64;
        self.until_ms.fetch_max(until, Ordering::Relaxed);
    }

    pub fn taking(&self) -> bool {
        self.left().is_some()
    }

    /// How long the backlog lasts from now unless another sign comes (None: not taking one).
    pub fn left(&self) -> Option<Duration> {
        let until = self.until_ms.load(Ordering::Relaxed);
        let now = self.epoch.elapsed().as_millis() as u64;
        (until > 0 && now <= until).then(|| Duration::from_millis(until - now + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backlog_lasts_a_linger_past_its_last_sign() {
        let backlog = Backlog::default();
        assert!(!backlog.taking());
        assert_eq!(backlog.left(), None);
        backlog.seen();
        let left = backlog.left().expect("taking one");
        assert!(left <= Backlog::LINGER + Duration::from_millis(1), "{left:?}");
        assert!(backlog.taking());
    }
}
