//! One plant's pipeline: robot id → configured device, vendor metres → sector millimetres,
//! and the derived Twinzo fields. Unknown robots are counted (the fleet view lists them and
//! raises an `unknown_robot` event).

use super::device_state::{DeviceState, VendorHints};
use super::transform::Transform;
use crate::config::PlantConfig;
use crate::model::{Position, TwinzoLocation};
use std::collections::HashMap;

/// Devices remembered as warned about their clock; a feed of random ids cannot grow memory.
const MAX_SKEW_WARNED: usize = 1000;
/// A vendor clock this far from ours is worth one warning per device.
const SKEW_WARN_MS: u64 = 5 * 60_000;

pub struct PlantPipeline {
    name: String,
    config: PlantConfig,
    states: HashMap<String, DeviceState>,
    skew_warned: std::collections::HashSet<String>,
}

/// What became of one position.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Location {
        robot: String,
        location: TwinzoLocation,
    },
    /// A location Twinzo could not take: dead-lettered, not posted.
    Refused {
        robot: String,
        location: TwinzoLocation,
        why: super::Inadmissible,
    },
    UnknownDevice,
}

impl PlantPipeline {
    pub fn new(config: PlantConfig) -> Self {
        PlantPipeline { name: config.name.clone(), config, states: HashMap::new(), skew_warned: Default::default() }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Applies a new plant configuration; devices that remain keep their motion and battery state.
    pub fn reconfigure(&mut self, config: PlantConfig) {
        self.states.retain(|robot, _| config.devices.contains_key(robot));
        self.config = config;
    }

    pub fn process(&mut self, source: &str, transform: &Transform, p: &Position, received_at_ms: u64) -> Outcome {
        let Some(sector_id) = self.config.devices.get(&p.device_id).map(|d| d.sector) else {
            metrics::counter!("edge_unknown_device_positions_total", "plant" => self.name.clone(), "source" => source.to_string()).increment(1);
            return Outcome::UnknownDevice;
        };
        let at_ms = p.timestamp_ms.unwrap_or(received_at_ms);
        self.check_skew(&p.device_id, at_ms, received_at_ms);
        let (x, y, z) = transform.apply(p.x, p.y, p.z);
        let hints = VendorHints { moving: p.moving, speed_mps: p.speed_mps, battery_percent: p.battery_percent };
        let derived = self.states.entry(p.device_id.clone()).or_default().update(
            at_ms,
            received_at_ms,
            x,
            y,
            hints,
            &self.config.motion,
        );
        let location = TwinzoLocation {
            timestamp: at_ms,
            sector_id,
            x,
            y,
            z,
            interval: derived.interval_ms,
            battery: derived.battery,
            is_moving: derived.is_moving,
            localization_areas: Vec::new(),
            no_go_areas: Vec::new(),
        };
        let robot = p.device_id.clone();
        match super::admit(&location, received_at_ms) {
            Ok(()) => Outcome::Location { robot, location },
            Err(why) => Outcome::Refused { robot, location, why },
        }
    }

    fn check_skew(&mut self, robot: &str, at_ms: u64, received_ms: u64) {
        if at_ms.abs_diff(received_ms) > SKEW_WARN_MS
            && self.skew_warned.len() < MAX_SKEW_WARNED
            && self.skew_warned.insert(robot.to_string())
        {
            tracing::warn!(
                plant = %self.name, robot, skew_s = (at_ms as i64 - received_ms as i64) / 1000,
                "vendor timestamps are far from this machine's clock (the vendor's clock is off, or its feed labels local time as UTC: `edge plugin inspect` shows whether the plugin has an option for that)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BatchingConfig, DeviceConfig, MotionConfig};

    fn plant() -> PlantPipeline {
        let mut devices = std::collections::BTreeMap::new();
        devices
            .insert("tug-133".to_string(), DeviceConfig { login: Some("tugger-01".into()), password: None, sector: 1 });
        PlantPipeline::new(PlantConfig {
            name: "p".into(),
            twinzo: None,
            dry_run: true,
            devices,
            motion: MotionConfig::default(),
            batching: BatchingConfig::default(),
        })
    }

    fn position(id: &str) -> Position {
        serde_json::from_value(
            serde_json::json!({"device_id": id, "x": 1.0, "y": 2.0, "z": 0.0, "battery_percent": 50.0}),
        )
        .unwrap()
    }

    const MM: Transform = Transform { a: 1000.0, b: 0.0, c: 0.0, d: -1000.0, tx: 10.0, ty: 20.0, z_scale: 1000.0 };

    #[test]
    fn known_robot_becomes_a_location_in_its_sector() {
        let mut p = plant();
        let Outcome::Location { robot, location } = p.process("s", &MM, &position("tug-133"), 1_700_000_000_000) else {
            panic!()
        };
        assert_eq!(robot, "tug-133");
        assert_eq!((location.x, location.y, location.sector_id), (1010.0, -1980.0, 1));
        assert_eq!(location.timestamp, 1_700_000_000_000, "receive time stands in for a missing vendor time");
        assert_eq!(location.battery, Some(50));
    }

    #[test]
    fn a_location_twinzo_cannot_take_is_refused() {
        let mut p = plant();
        let mut seconds = position("tug-133");
        seconds.timestamp_ms = Some(1_700_000_000);
        let outcome = p.process("s", &MM, &seconds, 1_700_000_000_000);
        assert!(matches!(outcome, Outcome::Refused { why, .. } if why.reason == "timestamp-out-of-range"));
    }

    #[test]
    fn unknown_robot_is_dropped_and_counted() {
        assert_eq!(plant().process("s", &MM, &position("tug-999"), 0), Outcome::UnknownDevice);
    }

    #[test]
    fn wire_names_are_twinzo_s() {
        let mut p = plant();
        let Outcome::Location { location, .. } = p.process("s", &MM, &position("tug-133"), 1_700_000_000_000) else {
            panic!()
        };
        let json = serde_json::to_value(&location).unwrap();
        let keys: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "Timestamp",
                "SectorId",
                "X",
                "Y",
                "Z",
                "Interval",
                "Battery",
                "IsMoving",
                "LocalizationAreas",
                "NoGoAreas"
            ]
        );
    }
}
