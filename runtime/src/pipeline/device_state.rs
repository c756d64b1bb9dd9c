//! What the pipeline remembers per device to fill Twinzo's fields honestly: recent positions
//! (is it moving?), its real update cadence (`Interval`) and its last known battery.

use crate::config::MotionConfig;
use std::collections::VecDeque;

/// Cadence bounds: faster than 50 ms or slower than 10 min is noise, not a cadence.
const MIN_INTERVAL_MS: f64 = 50.0;
const MAX_INTERVAL_MS: f64 = 600_000.0;
/// Until a device has sent twice we do not know its cadence; assume this.
const FIRST_INTERVAL_MS: u64 = 1000;
/// A previous point older than this says nothing about movement now.
const STALE_MS: u64 = 30_000;
/// Speeds at or below this (m/s) count as standing still.
const STILL_MPS: f64 = 0.05;

#[derive(Debug, Default)]
pub struct DeviceState {
    /// (time ms, X mm, Y mm), oldest first.
    recent: VecDeque<(u64, f64, f64)>,
    last_arrival_ms: Option<u64>,
    interval_ms: Option<f64>,
    battery: Option<u8>,
}

/// The derived fields of one location.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Derived {
    pub is_moving: bool,
    pub interval_ms: u64,
    pub battery: Option<u8>,
}

/// What the vendor said about one position, beyond its coordinates.
#[derive(Debug, Clone, Copy, Default)]
pub struct VendorHints {
    pub moving: Option<bool>,
    pub speed_mps: Option<f64>,
    pub battery_percent: Option<f32>,
}

impl DeviceState {
    /// Records a position at sector (x, y) mm measured at `at_ms`, arrived at `arrived_ms`.
    pub fn update(
        &mut self,
        at_ms: u64,
        arrived_ms: u64,
        x: f64,
        y: f64,
        hints: VendorHints,
        motion: &MotionConfig,
    ) -> Derived {
        let moved = self.moved(at_ms, x, y, motion);
        let is_moving = match (hints.moving, hints.speed_mps) {
            (Some(flag), _) => flag,
            (None, Some(speed)) => speed > STILL_MPS,
            (None, None) => moved,
        };
        if let Some(b) = hints.battery_percent {
            self.battery = Some(b.round().clamp(0.0, 100.0) as u8);
        }
        Derived { is_moving, interval_ms: self.cadence(arrived_ms), battery: self.battery }
    }

    fn moved(&mut self, at_ms: u64, x: f64, y: f64, motion: &MotionConfig) -> bool {
        let window_start = at_ms.saturating_sub(motion.window_ms);
        // Keep the window, plus the newest point before it, so sparse feeds (one message
        // every few seconds) are still compared with their previous position.
        while self.recent.len() > 1 && self.recent[1].0 <= window_start {
            self.recent.pop_front();
        }
        if self.recent.front().is_some_and(|p| at_ms.saturating_sub(p.0) > STALE_MS.max(motion.window_ms)) {
            self.recent.pop_front();
        }
        let moved = self.recent.iter().any(|&(_, px, py)| (x - px).hypot(y - py) > motion.threshold_mm);
        self.recent.push_back((at_ms, x, y));
        moved
    }

    fn cadence(&mut self, arrived_ms: u64) -> u64 {
        if let Some(last) = self.last_arrival_ms {
            let delta = (arrived_ms.saturating_sub(last) as f64).clamp(MIN_INTERVAL_MS, MAX_INTERVAL_MS);
            self.interval_ms = Some(match self.interval_ms {
                Some(avg) => 0.7 * avg + 0.3 * delta,
                None => delta,
            });
        }
        self.last_arrival_ms = Some(arrived_ms);
        self.interval_ms.map_or(FIRST_INTERVAL_MS, |ms| ms.round() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOTION: MotionConfig = MotionConfig { threshold_mm: 250.0, window_ms: 2000 };

    fn at(state: &mut DeviceState, t: u64, x: f64, hints: VendorHints) -> Derived {
        state.update(t, t, x, 0.0, hints, &MOTION)
    }

    #[test]
    fn moving_from_distance_over_the_window() {
        let mut s = DeviceState::default();
        let none = VendorHints::default();
        assert!(!at(&mut s, 0, 0.0, none).is_moving, "one point is not movement");
        assert!(!at(&mut s, 100, 100.0, none).is_moving, "100 mm is jitter");
        assert!(at(&mut s, 200, 300.0, none).is_moving, "300 mm over 200 ms is movement");
        // Standing still for longer than the window ends movement.
        for t in (300..=3000).step_by(100) {
            at(&mut s, t, 300.0, none);
        }
        assert!(!at(&mut s, 3100, 300.0, none).is_moving);
    }

    #[test]
    fn sparse_feed_compares_with_previous_point() {
        let mut s = DeviceState::default();
        let none = VendorHints::default();
        at(&mut s, 0, 0.0, none);
        assert!(at(&mut s, 4000, 2000.0, none).is_moving, "2 m in 4 s with a 2 s window");
        assert!(!at(&mut s, 8000, 2000.0, none).is_moving);
        assert!(!at(&mut s, 70_000, 9000.0, none).is_moving, "a jump after a minute of silence is not motion");
    }

    #[test]
    fn vendor_flag_and_speed_win() {
        let mut s = DeviceState::default();
        assert!(at(&mut s, 0, 0.0, VendorHints { moving: Some(true), ..Default::default() }).is_moving);
        assert!(!at(&mut s, 100, 5000.0, VendorHints { speed_mps: Some(0.0), ..Default::default() }).is_moving);
    }

    #[test]
    fn interval_follows_the_real_cadence() {
        let mut s = DeviceState::default();
        let none = VendorHints::default();
        assert_eq!(at(&mut s, 0, 0.0, none).interval_ms, FIRST_INTERVAL_MS);
        let mut last = 0;
        for i in 1..30 {
            last = at(&mut s, i * 4000, 0.0, none).interval_ms;
        }
        assert_eq!(last, 4000, "ATI every 4 s is not 100 ms");
    }

    #[test]
    fn battery_stays_unknown_or_last_known() {
        let mut s = DeviceState::default();
        let none = VendorHints::default();
        assert_eq!(at(&mut s, 0, 0.0, none).battery, None, "never invented");
        assert_eq!(
            at(&mut s, 1, 0.0, VendorHints { battery_percent: Some(82.5), ..Default::default() }).battery,
            Some(83)
        );
        assert_eq!(at(&mut s, 2, 0.0, none).battery, Some(83), "last known");
    }
}
