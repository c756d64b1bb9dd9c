//! Process-wide counters behind the periodic one-line summary (the Prometheus metrics carry
//! the same facts with labels; these are the totals an operator reads at a glance).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct Stats {
    pub messages_in: AtomicU64,
    pub plugin_errors: AtomicU64,
    pub positions: AtomicU64,
    pub unknown_devices: AtomicU64,
    pub posted: AtomicU64,
    pub post_failures: AtomicU64,
}

pub static STATS: Stats = Stats {
    messages_in: AtomicU64::new(0),
    plugin_errors: AtomicU64::new(0),
    positions: AtomicU64::new(0),
    unknown_devices: AtomicU64::new(0),
    posted: AtomicU64::new(0),
    post_failures: AtomicU64::new(0),
};

impl Stats {
    /// `in=… plugin_errors=… positions=… unknown=… posted=… post_failures=…` since `previous`.
    pub fn summary(&self, previous: &mut [u64; 6]) -> String {
        let now = [
            &self.messages_in,
            &self.plugin_errors,
            &self.positions,
            &self.unknown_devices,
            &self.posted,
            &self.post_failures,
        ]
        .map(|c| c.load(Relaxed));
        let d: Vec<u64> = now.iter().zip(previous.iter()).map(|(n, p)| n - p).collect();
        *previous = now;
        format!(
            "messages in {}, plugin errors {}, positions {}, unknown robots {}, posted {}, post failures {}",
            d[0], d[1], d[2], d[3], d[4], d[5]
        )
    }
}
