//! What is known about one plant: its devices (heard or not), the robots it hears that are not
//! in its device map, how posting goes (counts, failures by reason, Twinzo reachable) and its spool.

use super::device::{DeviceView, DeviceWatch};
use crate::model::{Position, TwinzoLocation, now_ms};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

/// Distinct unknown robots listed; a feed of random ids cannot grow memory beyond it.
const MAX_UNKNOWN: usize = 200;

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

    pub fn state(&self) -> TwinzoState {
        match self.get() {
            Some(true) => TwinzoState::Reachable,
            Some(false) => TwinzoState::Unreachable,
            None => TwinzoState::NotYetChecked,
        }
    }
}

/// Whether a plant runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlantState {
    Running,
    /// Could not start (see `problem`).
    Down,
}

/// Whether a plant's posts reach Twinzo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TwinzoState {
    #[serde(rename = "reachable")]
    Reachable,
    #[serde(rename = "unreachable")]
    Unreachable,
    #[serde(rename = "not yet checked")]
    NotYetChecked,
    /// The plant is down.
    #[serde(rename = "not running")]
    NotRunning,
}

/// Whether a plant's devices can sign in to Twinzo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenState {
    Ok,
    /// A device's last post failed for its credentials (`auth`, `http-401`, `wrong-branch`).
    Failing,
    /// No post yet.
    Unknown,
    /// A dry run signs nobody in.
    #[serde(rename = "n/a")]
    NotApplicable,
}

/// Shared by the plant task (what it hears), its device workers (what they post) and the view.
#[derive(Debug)]
pub struct PlantWatch {
    pub name: String,
    pub reach: Reachability,
    dry_run: bool,
    state: Mutex<PlantRecord>,
}

#[derive(Debug, Default)]
struct PlantRecord {
    devices: BTreeMap<String, DeviceWatch>,
    unknown: BTreeMap<String, UnknownRobot>,
    posted: u64,
    posted_at_tick: u64,
    posted_per_s: f64,
    post_failures: BTreeMap<String, u64>,
    /// Sector sizes in millimetres (width, height), as Twinzo listed them.
    sectors: BTreeMap<i64, (f64, f64)>,
    spool_queued: u64,
    spool_dead: u64,
    spool_percent: f64,
    /// Why the spool cannot be written, while it cannot (intake is held meanwhile).
    spool_trouble: Option<String>,
}

/// A robot heard that the plant's device map does not name (`/api/status` `unknown`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnknownRobot {
    pub plant: String,
    pub robot: String,
    pub source: String,
    pub first_heard_ms: u64,
    pub last_heard_ms: u64,
    pub positions: u64,
    /// What to add under the plant's `devices:` to post its positions.
    pub suggested: String,
}

/// One plant in the fleet view (`/api/plants`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlantView {
    pub name: String,
    pub state: PlantState,
    pub problem: Option<String>,
    pub dry_run: bool,
    pub twinzo: TwinzoState,
    pub tokens: TokenState,
    pub posted: u64,
    pub posted_per_s: f64,
    pub post_failures: BTreeMap<String, u64>,
    pub spool_queued: u64,
    pub spool_dead: u64,
    /// Queued bytes as a share of `spool.max_mb`.
    pub spool_percent: f64,
    /// Why the spool cannot be written, while it cannot (intake is held meanwhile).
    pub spool_problem: Option<String>,
    pub devices: usize,
    /// Sector outlines (id, width mm, height mm) where Twinzo listed them.
    pub sectors: Vec<(i64, f64, f64)>,
}

/// Post failure reasons that mean a device's credentials are not accepted.
const AUTH_REASONS: [&str; 3] = ["auth", "http-401", "wrong-branch"];

impl PlantWatch {
    pub fn new(name: &str, dry_run: bool) -> Self {
        PlantWatch { name: name.into(), reach: Reachability::default(), dry_run, state: Mutex::default() }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, PlantRecord> {
        self.state.lock().expect("plant watch lock")
    }

    /// The configured devices (robot → sector); devices no longer configured are forgotten.
    pub fn set_devices<'a>(&self, devices: impl Iterator<Item = (&'a String, i64)>) {
        let mut state = self.state();
        let mut kept = BTreeMap::new();
        for (robot, sector) in devices {
            let mut device = state.devices.remove(robot).unwrap_or_else(|| DeviceWatch::new(&self.name, robot, sector));
            device.set_sector(sector);
            state.unknown.remove(robot);
            kept.insert(robot.clone(), device);
        }
        state.devices = kept;
    }

    pub fn set_sectors(&self, sectors: impl Iterator<Item = (i64, f64, f64)>) {
        self.state().sectors = sectors.map(|(id, w, h)| (id, (w, h))).collect();
    }

    /// Records what one message brought: each position with the location it became, if it
    /// became one (`None`: the robot is not in the device map).
    pub fn heard<'a>(
        &self,
        source: &str,
        received_at_ms: u64,
        positions: impl Iterator<Item = (&'a Position, Option<&'a TwinzoLocation>)>,
    ) {
        let mut state = self.state();
        for (p, location) in positions {
            match (location, state.devices.get_mut(&p.device_id)) {
                (Some(location), Some(device)) => device.heard(source, p, location, received_at_ms),
                _ => state.unknown_robot(&self.name, source, &p.device_id, received_at_ms),
            }
        }
    }

    pub fn posted(&self, robot: &str, n: u64) {
        let mut state = self.state();
        state.posted += n;
        if let Some(device) = state.devices.get_mut(robot) {
            device.posted(now_ms(), n);
        }
    }

    pub fn post_failed(&self, robot: &str, reason: &str, detail: &str) {
        let mut state = self.state();
        *state.post_failures.entry(reason.to_string()).or_default() += 1;
        if let Some(device) = state.devices.get_mut(robot) {
            device.post_failed(now_ms(), reason, detail);
        }
    }

    /// Queued and dead-lettered positions per device, and the queued bytes against the limit.
    pub fn set_spool(&self, depths: &BTreeMap<String, (u64, u64)>, bytes: u64, max_bytes: u64) {
        let mut state = self.state();
        for (robot, device) in &mut state.devices {
            let (queued, dead) = depths.get(robot).copied().unwrap_or_default();
            device.set_spool(queued, dead);
        }
        state.spool_queued = depths.values().map(|d| d.0).sum();
        state.spool_dead = depths.values().map(|d| d.1).sum();
        state.spool_percent = bytes as f64 * 100.0 / max_bytes.max(1) as f64;
    }

    pub fn set_spool_trouble(&self, why: Option<String>) {
        self.state().spool_trouble = why;
    }

    /// Once a second: updates every device; returns the plant's view, its devices' and its
    /// unknown robots.
    pub fn tick(
        &self,
        now_ms: u64,
        elapsed: Duration,
        stale_after: Option<Duration>,
    ) -> (PlantView, Vec<DeviceView>, Vec<UnknownRobot>) {
        let mut state = self.state();
        state.posted_per_s = (state.posted - state.posted_at_tick) as f64 / elapsed.as_secs_f64().max(0.001);
        state.posted_at_tick = state.posted;
        let devices: Vec<DeviceView> =
            state.devices.values_mut().map(|d| d.tick(now_ms, elapsed, stale_after).clone()).collect();
        let signing_in_fails =
            |d: &DeviceView| d.last_post.as_ref().is_some_and(|p| AUTH_REASONS.contains(&p.outcome.as_str()));
        let tokens = if self.dry_run {
            TokenState::NotApplicable
        } else if devices.iter().any(signing_in_fails) {
            TokenState::Failing
        } else if devices.iter().any(|d| d.last_post.is_some()) {
            TokenState::Ok
        } else {
            TokenState::Unknown
        };
        let view = PlantView {
            name: self.name.clone(),
            state: PlantState::Running,
            problem: None,
            dry_run: self.dry_run,
            twinzo: self.reach.state(),
            tokens,
            posted: state.posted,
            posted_per_s: state.posted_per_s,
            post_failures: state.post_failures.clone(),
            spool_queued: state.spool_queued,
            spool_dead: state.spool_dead,
            spool_percent: state.spool_percent,
            spool_problem: state.spool_trouble.clone(),
            devices: devices.len(),
            sectors: state.sectors.iter().map(|(id, (w, h))| (*id, *w, *h)).collect(),
        };
        (view, devices, state.unknown.values().cloned().collect())
    }
}

impl PlantView {
    /// A plant that could not start.
    pub fn down(name: &str, problem: &str) -> Self {
        PlantView {
            name: name.into(),
            state: PlantState::Down,
            problem: Some(problem.into()),
            dry_run: false,
            twinzo: TwinzoState::NotRunning,
            tokens: TokenState::Unknown,
            posted: 0,
            posted_per_s: 0.0,
            post_failures: BTreeMap::new(),
            spool_queued: 0,
            spool_dead: 0,
            spool_percent: 0.0,
            spool_problem: None,
            devices: 0,
            sectors: Vec::new(),
        }
    }
}

impl PlantRecord {
    fn unknown_robot(&mut self, plant: &str, source: &str, robot: &str, at_ms: u64) {
        if let Some(known) = self.unknown.get_mut(robot) {
            known.last_heard_ms = at_ms;
            known.positions += 1;
            return;
        }
        if self.unknown.len() >= MAX_UNKNOWN {
            return;
        }
        let robot = crate::text::sanitize(robot, 80);
        let suggested = format!(
            "devices:\n  {}:\n    login: <twinzo device login>\n    password: ${{<ENV_VAR>}}\n    sector: <sector id>",
            serde_json::to_string(&robot).unwrap_or_default()
        );
        self.unknown.insert(
            robot.clone(),
            UnknownRobot {
                plant: plant.into(),
                robot,
                source: source.into(),
                first_heard_ms: at_ms,
                last_heard_ms: at_ms,
                positions: 1,
                suggested,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heard_devices_unknown_robots_and_posting() {
        let watch = PlantWatch::new("p", false);
        watch.set_devices([("tug-1".to_string(), 7)].iter().map(|(r, s)| (r, *s)));
        let known: Position =
            serde_json::from_value(serde_json::json!({"device_id": "tug-1", "x": 1.0, "y": 2.0, "z": 0.0})).unwrap();
        let stranger = Position { device_id: "tug-9".into(), ..known.clone() };
        let location = TwinzoLocation::test_at(1_000, 1000.0);
        watch.heard("ati", 1_000, [(&known, Some(&location)), (&stranger, None), (&stranger, None)].into_iter());
        watch.post_failed("tug-1", "auth", "refused");
        let (plant, devices, unknown) = watch.tick(1_500, Duration::from_secs(1), None);
        assert_eq!((devices.len(), devices[0].messages, devices[0].x), (1, 1, Some(1000.0)));
        assert_eq!(plant.tokens, TokenState::Failing);
        assert_eq!((unknown.len(), unknown[0].positions, unknown[0].robot.as_str()), (1, 2, "tug-9"));
        assert!(unknown[0].suggested.starts_with("devices:\n  \"tug-9\":"));
        watch.posted("tug-1", 3);
        let (plant, devices, _) = watch.tick(2_500, Duration::from_secs(1), None);
        assert_eq!((plant.posted, plant.posted_per_s, plant.tokens), (3, 3.0, TokenState::Ok));
        assert_eq!(devices[0].last_post.as_ref().map(|p| p.outcome.as_str()), Some("accepted"));
    }
}
