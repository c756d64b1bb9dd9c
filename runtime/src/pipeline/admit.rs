//! What Twinzo can take, checked before a location reaches the spool: a location Twinzo
//! would refuse is dead-lettered at once (counted, with why), never posted again and again.

use crate::model::TwinzoLocation;

/// Epoch milliseconds before September 2001 are a clock that was never set, or seconds a
/// plugin passed on as milliseconds (Twinzo refuses them; captured replays of recent years pass).
const EARLIEST_MS: u64 = 1_000_000_000_000;
/// Further ahead than any time zone offset: a wrong clock.
const MAX_FUTURE_MS: u64 = 24 * 3_600_000;
/// Sector millimetres beyond 1,000 km: a transform or unit mistake.
const MAX_COORDINATE_MM: f64 = 1e9;

/// Why Twinzo could not take a location: a stable reason and what was wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct Inadmissible {
    pub reason: &'static str,
    pub detail: String,
}

/// Checks `location` against what Twinzo accepts, at time `now_ms`.
pub fn admit(location: &TwinzoLocation, now_ms: u64) -> Result<(), Inadmissible> {
    let t = location.timestamp;
    if t < EARLIEST_MS || t > now_ms.saturating_add(MAX_FUTURE_MS) {
        return Err(Inadmissible {
            reason: "timestamp-out-of-range",
            detail: format!(
                "Timestamp {t} is before 2001 (a clock never set?) or more than 24 hours after this machine's clock ({now_ms}); \
                 check the vendor's clock, and the plugin's options (`edge plugin inspect`)"
            ),
        });
    }
    for (name, value) in [("X", location.x), ("Y", location.y), ("Z", location.z)] {
        if !value.is_finite() || value.abs() > MAX_COORDINATE_MM {
            return Err(Inadmissible {
                reason: "coordinate-out-of-range",
                detail: format!("{name} = {value} mm is beyond 1,000 km: check the source's transform"),
            });
        }
    }
    if i32::try_from(location.interval).is_err() {
        return Err(Inadmissible {
            reason: "interval-out-of-range",
            detail: format!("Interval {} ms does not fit Twinzo's integer", location.interval),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_795_000_000_000;

    fn at(timestamp: u64, x: f64) -> TwinzoLocation {
        TwinzoLocation::test_at(timestamp, x)
    }

    #[test]
    fn plausible_locations_pass() {
        assert_eq!(admit(&at(NOW - 3_600_000, 265_000.0), NOW), Ok(()));
        assert_eq!(admit(&at(1_730_000_000_000, 0.0), NOW), Ok(()), "a replay of last year's capture");
        assert_eq!(admit(&at(NOW + 5 * 3_600_000, -1.0), NOW), Ok(()), "a plant-local clock labelled UTC");
    }

    #[test]
    fn what_twinzo_cannot_take_is_named() {
        assert_eq!(admit(&at(NOW / 1000, 0.0), NOW).unwrap_err().reason, "timestamp-out-of-range");
        assert_eq!(admit(&at(u64::MAX, 0.0), NOW).unwrap_err().reason, "timestamp-out-of-range");
        assert_eq!(admit(&at(NOW, f64::INFINITY), NOW).unwrap_err().reason, "coordinate-out-of-range");
        assert_eq!(admit(&at(NOW, 2e12), NOW).unwrap_err().reason, "coordinate-out-of-range");
    }
}
