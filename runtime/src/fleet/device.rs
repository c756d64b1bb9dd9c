//! What is known about one configured device: where it was last heard and how, what its vendor
//! says of it, how posting its positions goes, and how it has been used (distance, time moving).

use crate::model::{Position, TwinzoLocation};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Points kept of a device's trail on the map...
const TRAIL_POINTS: usize = 20;
/// ...at most one per this many milliseconds of vendor time.
const TRAIL_SPACING_MS: u64 = 1_000;
/// A device is stale after this many of its own usual gaps without a message...
const STALE_CADENCES: f64 = 5.0;
/// ...but never sooner than this, and this until its cadence is known.
const STALE_FLOOR: Duration = Duration::from_secs(5);
const STALE_UNKNOWN_CADENCE: Duration = Duration::from_secs(30);
/// A step longer than this between two positions is a relocalisation, not travel.
const MAX_STEP_M: f64 = 25.0;

/// The state a device is shown in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceState {
    /// Configured, never heard since edge started.
    Unheard,
    Moving,
    Idle,
    /// Its vendor reports an error or says it is disabled.
    Error,
    /// Not heard for longer than its stale threshold.
    Stale,
}

#[derive(Debug, Default)]
pub struct DeviceWatch {
    view: DeviceView,
    /// Messages at the last tick, for the rate.
    messages_at_tick: u64,
    /// Position in the vendor frame and vendor time of the last step counted as travel.
    last_step: Option<(f64, f64, u64)>,
}

/// One configured device in the fleet view (`/api/devices`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceView {
    pub plant: String,
    pub robot: String,
    pub sector: i64,
    pub state: Option<DeviceState>,
    pub source: Option<String>,
    pub last_received_ms: Option<u64>,
    pub last_vendor_ms: Option<u64>,
    /// Vendor map frame, metres.
    pub vendor_x: Option<f64>,
    pub vendor_y: Option<f64>,
    pub heading_rad: Option<f64>,
    /// Sector millimetres, as posted to Twinzo.
    pub x: Option<f64>,
    pub y: Option<f64>,
    pub battery_percent: Option<f32>,
    pub moving: bool,
    /// The vendor's status or mode word.
    pub status: Option<String>,
    /// The vendor's error text, or why it is disabled.
    pub error: Option<String>,
    pub disabled: bool,
    pub messages: u64,
    pub messages_per_s: f64,
    /// The usual gap between its messages.
    pub cadence_ms: Option<f64>,
    pub stale_after_s: f64,
    pub last_post: Option<PostView>,
    pub posted: u64,
    pub queued: u64,
    pub dead_letters: u64,
    pub trail: Vec<[f64; 2]>,
    pub utilisation: Utilisation,
}

/// How the last post of a device's positions went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PostView {
    pub at_ms: u64,
    /// `accepted`, or the failure's reason code (`http-503`, `auth`, `location-rejected`...).
    pub outcome: String,
    pub detail: Option<String>,
}

/// Since edge started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Utilisation {
    /// Travelled in the vendor frame, metres.
    pub distance_m: f64,
    pub moving_s: f64,
    pub idle_s: f64,
    /// Time heard (not stale).
    pub connected_s: f64,
}

impl DeviceWatch {
    pub fn new(plant: &str, robot: &str, sector: i64) -> Self {
        let view = DeviceView { plant: plant.into(), robot: robot.into(), sector, ..DeviceView::default() };
        DeviceWatch { view, ..DeviceWatch::default() }
    }

    pub fn set_sector(&mut self, sector: i64) {
        self.view.sector = sector;
    }

    /// A position of this device, and what the pipeline made of it.
    pub fn heard(&mut self, source: &str, p: &Position, location: &TwinzoLocation, received_at_ms: u64) {
        let v = &mut self.view;
        if let Some(gap) = v.last_received_ms.map(|last| received_at_ms.saturating_sub(last) as f64)
            && gap > 0.0
            && gap < 600_000.0
        {
            v.cadence_ms = Some(v.cadence_ms.map_or(gap, |c| c * 0.8 + gap * 0.2));
        }
        if v.source.as_deref() != Some(source) {
            v.source = Some(source.into());
        }
        v.messages += 1;
        v.last_received_ms = Some(v.last_received_ms.unwrap_or(0).max(received_at_ms));
        let newest = v.last_vendor_ms.is_none_or(|t| location.timestamp >= t);
        if !newest {
            // A backlog's history: it counts for travel, not for what the device does now.
            return;
        }
        v.last_vendor_ms = Some(location.timestamp);
        (v.vendor_x, v.vendor_y, v.heading_rad) = (Some(p.x), Some(p.y), p.heading_rad);
        (v.x, v.y) = (Some(location.x), Some(location.y));
        v.battery_percent = p.battery_percent.or(v.battery_percent);
        v.moving = location.is_moving;
        if p.status.is_some() {
            v.status.clone_from(&p.status);
        }
        v.disabled = p.attributes.get("disabled").is_some_and(|d| d == "true");
        v.error = vendor_error(p);
        let spaced = self.last_step.is_none_or(|(_, _, t)| location.timestamp >= t + TRAIL_SPACING_MS);
        if let Some((x, y, _)) = self.last_step {
            let step = (p.x - x).hypot(p.y - y);
            if spaced && step < MAX_STEP_M {
                v.utilisation.distance_m += step;
            }
        }
        if spaced {
            self.last_step = Some((p.x, p.y, location.timestamp));
            if v.trail.len() == TRAIL_POINTS {
                v.trail.remove(0);
            }
            // Millimetres are plenty for a map, and keep the view small.
            v.trail.push([location.x.round(), location.y.round()]);
        }
    }

    pub fn posted(&mut self, at_ms: u64, n: u64) {
        self.view.posted += n;
        self.view.last_post = Some(PostView { at_ms, outcome: "accepted".into(), detail: None });
    }

    pub fn post_failed(&mut self, at_ms: u64, reason: &str, detail: &str) {
        let detail = Some(crate::text::sanitize(detail, 200));
        self.view.last_post = Some(PostView { at_ms, outcome: reason.into(), detail });
    }

    pub fn set_spool(&mut self, queued: u64, dead_letters: u64) {
        (self.view.queued, self.view.dead_letters) = (queued, dead_letters);
    }

    /// Once a second (`elapsed` since the last tick): rates, state and utilisation.
    pub fn tick(&mut self, now_ms: u64, elapsed: Duration, stale_after: Option<Duration>) -> &DeviceView {
        let v = &mut self.view;
        let dt = elapsed.as_secs_f64();
        v.messages_per_s = (v.messages - self.messages_at_tick) as f64 / dt.max(0.001);
        self.messages_at_tick = v.messages;
        let threshold = stale_after.unwrap_or_else(|| match v.cadence_ms {
            Some(c) => Duration::from_secs_f64(c * STALE_CADENCES / 1000.0).max(STALE_FLOOR),
            None => STALE_UNKNOWN_CADENCE,
        });
        v.stale_after_s = threshold.as_secs_f64();
        v.state = Some(match v.last_received_ms {
            None => DeviceState::Unheard,
            Some(last) if now_ms.saturating_sub(last) > threshold.as_millis() as u64 => DeviceState::Stale,
            Some(_) if v.error.is_some() || v.disabled => DeviceState::Error,
            Some(_) if v.moving => DeviceState::Moving,
            Some(_) => DeviceState::Idle,
        });
        if !matches!(v.state, Some(DeviceState::Unheard | DeviceState::Stale)) {
            v.utilisation.connected_s += dt;
            if v.moving {
                v.utilisation.moving_s += dt;
            } else {
                v.utilisation.idle_s += dt;
            }
        }
        v
    }
}

/// The vendor's own error, as its plugin passed it on (`error`, `disabled_reason`), or an
/// error status word.
fn vendor_error(p: &Position) -> Option<String> {
    let said = |key: &str| p.attributes.get(key).map(|s| s.trim()).filter(|s| !s.is_empty());
    let no_error = |s: &&str| matches!(s.to_ascii_lowercase().as_str(), "none" | "null" | "false" | "0" | "ok");
    if let Some(error) = said("error").filter(|s| !no_error(s)) {
        return Some(crate::text::sanitize(error, 200));
    }
    if p.attributes.get("disabled").is_some_and(|d| d == "true") {
        return Some(crate::text::sanitize(said("disabled_reason").unwrap_or("disabled"), 200));
    }
    p.status.as_deref().filter(|s| matches!(*s, "error" | "fault" | "emergency")).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(x: f64, t: u64) -> (Position, TwinzoLocation) {
        let p: Position =
            serde_json::from_value(serde_json::json!({"device_id": "r", "x": x, "y": 0.0, "z": 0.0})).unwrap();
        let mut l = TwinzoLocation::test_at(t, x * 1000.0);
        l.is_moving = true;
        (p, l)
    }

    #[test]
    fn travel_state_and_staleness_follow_the_messages() {
        let mut d = DeviceWatch::new("p", "r", 1);
        assert_eq!(d.tick(0, Duration::from_secs(1), None).state, Some(DeviceState::Unheard));
        for i in 0..10u64 {
            let (p, l) = at(i as f64, 1_000 + i * 1_000);
            d.heard("s", &p, &l, 1_000 + i * 1_000);
        }
        let v = d.tick(10_000, Duration::from_secs(1), None);
        assert_eq!(v.state, Some(DeviceState::Moving));
        assert_eq!((v.utilisation.distance_m, v.trail.len(), v.cadence_ms), (9.0, 10, Some(1000.0)));
        assert_eq!(v.stale_after_s, 5.0, "five gaps of a second, and at least 5 s");
        let v = d.tick(16_000, Duration::from_secs(1), None);
        assert_eq!(v.state, Some(DeviceState::Stale));
        assert_eq!(v.utilisation.connected_s, 1.0, "stale time is not connected time");
    }

    #[test]
    fn vendor_errors_and_an_old_position_from_a_backlog() {
        let mut d = DeviceWatch::new("p", "r", 1);
        let (mut p, l) = at(5.0, 10_000);
        p.attributes.insert("disabled".into(), "true".into());
        p.attributes.insert("disabled_reason".into(), "bumper pressed".into());
        d.heard("s", &p, &l, 10_000);
        let (old, old_l) = at(1.0, 2_000);
        d.heard("s", &old, &old_l, 10_100);
        let v = d.tick(10_200, Duration::from_secs(1), None);
        assert_eq!((v.state, v.error.as_deref()), (Some(DeviceState::Error), Some("bumper pressed")));
        assert_eq!(v.vendor_x, Some(5.0), "the newest position stands");
        assert_eq!(v.messages, 2);
    }
}
