//! ATI Fleet Manager ("sherpa") status to canonical positions.
//! Reads both the specification (6-element pose, float battery) and the live feed (3-element pose, -1 battery, local-time `Z` stamps).

use edge_plugin_sdk::json::{Obj, Value, coordinate, parse_object};
use edge_plugin_sdk::time::parse_utc_offset;
use edge_plugin_sdk::{
    Message, Plugin, PluginInfo, Position, Translation, battery_percent, check_option_names, device_id, malformed,
    position, topic_levels,
};
use std::cell::Cell;

const TIMESTAMP_OFFSET: &str = "timestamp_offset";

thread_local! {
    // The real UTC offset of the feed's `...Z` timestamps; `None` trusts the `Z`.
    static Z_MEANS: Cell<Option<i64>> = const { Cell::new(None) };
}

struct AtiSherpa;

impl Plugin for AtiSherpa {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "ati-sherpa".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            vendor: "ATI Motors".into(),
            description: "ATI Fleet Manager sherpa status (spec and live feed) to positions".into(),
            default_topics: vec!["ati/amr/+/status".into(), "ati_fm/#".into(), "fleet/trips/info".into()],
            options: vec![(
                TIMESTAMP_OFFSET.into(),
                "real UTC offset of timestamps the feed labels Z, e.g. +05:30 (default: trust the Z)".into(),
            )],
        }
    }

    fn configure(options: Vec<(String, String)>) -> Result<(), String> {
        check_option_names(&options, &[TIMESTAMP_OFFSET])?;
        let mut z_means = None;
        for (_, value) in &options {
            z_means = Some(parse_utc_offset(value).map_err(|e| format!("{TIMESTAMP_OFFSET}: {e}"))?);
        }
        Z_MEANS.set(z_means);
        Ok(())
    }

    fn translate(msg: Message) -> Translation {
        let Some(topic_name) = status_topic(&msg.topic) else {
            return Ok(Vec::new()); // trips, legs, alerts: no positions
        };
        let map = parse_object(&msg.payload)?;
        translate_status(&Obj::root(&map), topic_name).map(|p| p.into_iter().collect())
    }
}

/// `Some(robot name from the topic, if any)` for the topics that carry sherpa status.
fn status_topic(topic: &str) -> Option<Option<&str>> {
    match topic_levels(topic).as_slice() {
        ["ati_fm", "sherpa", "status"] => Some(None),
        ["ati", "amr", name, "status"] if !name.is_empty() => Some(Some(*name)),
        _ => None,
    }
}

fn translate_status(
    status: &Obj,
    topic_name: Option<&str>,
) -> Result<Option<Position>, edge_plugin_sdk::TranslateError> {
    let mode = status.str("mode")?.map(str::to_ascii_lowercase);
    if mode.as_deref() == Some("disconnected") {
        return Ok(None);
    }
    let Some(pose) = status.arr("pose")? else {
        return Ok(None);
    };
    let device = match (status.str("sherpa_name")?, topic_name) {
        (Some(name), _) if !name.is_empty() => name,
        (_, Some(name)) => name,
        _ => return Err(malformed("sherpa_name: missing (and the topic names no robot)")),
    };
    let (x, y, z, heading) = read_pose(pose)?;
    let mut p = position(device_id(device, "sherpa_name")?, x, y, z);
    p.heading_rad = Some(heading);
    p.battery_percent = battery_percent(status.num("battery_status")?);
    p.timestamp_ms = status.timestamp_ms("timestamp", Z_MEANS.get())?;
    p.status = mode;
    for key in ["trip_id", "trip_leg_id", "message_id", "error", "disabled_reason"] {
        if let Some(text) = status.text(key) {
            p.attributes.push((key.to_string(), text));
        }
    }
    if status.bool("disabled")? == Some(true) {
        p.attributes.push(("disabled".into(), "true".into()));
    }
    Ok(Some(p))
}

/// `[x, y, heading]` (live feed) or `[x, y, z, roll, pitch, yaw]` (specification).
fn read_pose(pose: &[Value]) -> Result<(f64, f64, f64, f64), edge_plugin_sdk::TranslateError> {
    let n = |i: usize| coordinate(&pose[i], format_args!("pose[{i}]"));
    match pose.len() {
        3 => Ok((n(0)?, n(1)?, 0.0, n(2)?)),
        6 => Ok((n(0)?, n(1)?, n(2)?, n(5)?)),
        len => Err(malformed(format!(
            "pose: expected 3 numbers [x, y, heading] or 6 [x, y, z, roll, pitch, yaw], found {len}"
        ))),
    }
}

edge_plugin_sdk::export!(AtiSherpa);
