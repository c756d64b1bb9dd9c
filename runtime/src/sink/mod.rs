//! Where locations go: per plant, one worker per device that takes its locations from the
//! spool, posts them in batches (to Twinzo, or to the log in a dry run) and retries with backoff.

mod device;
mod dry_run;
pub mod twinzo;

pub use device::{DeviceHandle, DeviceWorker, Pacing, PostResult, Poster};
pub use dry_run::DryRun;

use std::sync::atomic::{AtomicU8, Ordering};

/// Whether a plant's sink can reach Twinzo, as its device workers last found.
#[derive(Debug, Default)]
pub struct Reachability(AtomicU8);

impl Reachability {
    const UNKNOWN: u8 = 0;
    const OK: u8 = 1;
    const FAILING: u8 = 2;

    pub fn set(&self, ok: bool) {
        self.0.store(if ok { Self::OK } else { Self::FAILING }, Ordering::Relaxed);
    }

    /// `None` until the first post or check.
    pub fn get(&self) -> Option<bool> {
        match self.0.load(Ordering::Relaxed) {
            Self::UNKNOWN => None,
            state => Some(state == Self::OK),
        }
    }
}
