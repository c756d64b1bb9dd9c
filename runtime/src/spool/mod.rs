//! The durable spool between a plant's pipeline and its Twinzo sink: one SQLite file per plant
//! (WAL, synchronous=FULL), a queue per device, and a dead-letter table with reasons.
//!
//! A position enters the spool before its MQTT message is acknowledged and leaves it only when
//! Twinzo confirmed it (or it was dead-lettered, or dropped by the size/age policy, counted).
//! SQLite was chosen over redb and friends for its decades of power-loss testing, its
//! inspectability with the `sqlite3` shell at 3 a.m., and concurrent access by `edge spool`
//! while `edge run` holds the file.

mod store;
mod tails;

pub use store::{
    BatchRequest, DeadRow, DeviceCounts, DiskLimits, NextBatch, Purge, Refused, Row, Spool, SpoolError, SpoolLimits,
};

use std::path::{Path, PathBuf};

/// The spool file of a plant: a readable name plus a short hash, so any plant name is safe.
pub fn path_for(state_dir: &Path, plant: &str) -> PathBuf {
    use sha2::Digest;
    let readable: String = plant
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .take(40)
        .collect();
    let hash = hex::encode(&sha2::Sha256::digest(plant.as_bytes())[..4]);
    state_dir.join("spool").join(format!("{readable}-{hash}.sqlite"))
}
