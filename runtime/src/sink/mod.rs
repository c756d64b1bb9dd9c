//! Where locations go: per plant, one worker per device that batches its locations and
//! posts them (to Twinzo, or to the log in a dry run), retrying with backoff on failure.

mod device;
mod dry_run;
pub mod twinzo;

pub use device::{DeviceHandle, DeviceWorker, PostResult, Poster};
pub use dry_run::DryRun;
