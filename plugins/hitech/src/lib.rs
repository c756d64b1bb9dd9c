//! HiTech AMRs (via HiveMQ) to canonical positions. Two documented shapes, both millimetres:
//! the position message (`device_id`, `position{x,y,z}`, epoch ms) and the event message
//! (`headerId`, ISO `timestamp`, `event{type, amrId, location.current{x,y,z}, status,
//! batteryPercentage}`). A message without a position is an error, never (0, 0).

use edge_plugin_sdk::json::{Obj, parse_object};
use edge_plugin_sdk::{
    Message, Plugin, PluginInfo, Position, TranslateError, Translation, battery_percent, check_option_names,
    device_id, malformed, position, topic_levels,
};

struct HiTech;

impl Plugin for HiTech {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "hitech".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            vendor: "HiTech".into(),
            description: "HiTech AMR position and event messages (millimetres) to positions".into(),
            default_topics: vec!["hitech/amr/+/position".into(), "hitech/amr/+/event".into()],
            options: vec![],
        }
    }

    fn configure(options: Vec<(String, String)>) -> Result<(), String> {
        check_option_names(&options, &[])
    }

    fn translate(msg: Message) -> Translation {
        let topic_id = match topic_levels(&msg.topic).as_slice() {
            ["hitech", "amr", id, "position" | "event"] => Some(id.to_string()),
            ["hitech", "amr", _, _] => return Ok(Vec::new()), // battery, status: no position
            _ if msg.topic.starts_with("hitech/") => return Ok(Vec::new()),
            _ => None,
        };
        let map = parse_object(&msg.payload)?;
        let doc = Obj::root(&map);
        if let Some(event) = doc.obj("event")? {
            return translate_event(&doc, &event, topic_id).map(|p| vec![p]);
        }
        let device = robot(doc.str("device_id")?, topic_id, "device_id")?;
        let pos = doc
            .obj("position")?
            .ok_or_else(|| malformed("position: missing (a HiTech message needs position {x, y} in millimetres)"))?;
        let mut p = millimetres(device, &pos)?;
        p.timestamp_ms = doc.timestamp_ms("timestamp", None)?;
        p.battery_percent = battery_percent(doc.num("battery")?);
        p.speed_mps = doc.num("speed")?.map(|mm_per_s| mm_per_s / 1000.0);
        if let Some(status) = doc.str("status")? {
            let status = status.to_ascii_lowercase();
            p.moving = match status.as_str() {
                "moving" => Some(true),
                "idle" | "charging" | "stopped" | "error" => Some(false),
                _ => None,
            };
            p.status = Some(status);
        }
        for key in ["mac_address", "sector_id"] {
            if let Some(text) = doc.text(key) {
                p.attributes.push((key.to_string(), text));
            }
        }
        Ok(vec![p])
    }
}

/// The event-style message: the robot's id and position under `event`.
fn translate_event(doc: &Obj, event: &Obj, topic_id: Option<String>) -> Result<Position, TranslateError> {
    let device = robot(event.str("amrId")?, topic_id, "event.amrId")?;
    let location = event.obj("location")?.map(|l| l.req_obj("current")).transpose()?;
    let current = location
        .ok_or_else(|| malformed("event.location.current: missing (an event message needs {x, y} in millimetres)"))?;
    let mut p = millimetres(device, &current)?;
    p.timestamp_ms = doc.timestamp_ms("timestamp", None)?;
    p.battery_percent = battery_percent(event.num("batteryPercentage")?);
    // A numeric status code whose meanings are not documented: kept, not interpreted.
    p.status = event.text("status");
    for (key, value) in [("event_type", event.text("type")), ("header_id", doc.text("headerId"))] {
        if let Some(value) = value {
            p.attributes.push((key.to_string(), value));
        }
    }
    Ok(p)
}

/// The robot's id as the message gives it under `field`, else as its topic names it.
fn robot(given: Option<&str>, topic_id: Option<String>, field: &str) -> Result<String, TranslateError> {
    let id = match (given, topic_id) {
        (Some(id), _) if !id.is_empty() => id.to_string(),
        (_, Some(id)) if !id.is_empty() => id,
        _ => return Err(malformed(format!("{field}: missing (and the topic names no device)"))),
    };
    device_id(id, field)
}

/// A position from `{x, y, z?}` in millimetres.
fn millimetres(device: String, at: &Obj) -> Result<Position, TranslateError> {
    let mm = |key: &str| at.req_coordinate(key).map(|v| v / 1000.0);
    let z = if at.has("z") { mm("z")? } else { 0.0 };
    Ok(position(device, mm("x")?, mm("y")?, z))
}

edge_plugin_sdk::export!(HiTech);
