//! The edge simulator's own format (`edge-sim/{fleet}/{robot}/state`) to canonical positions.
//! The format is defined in docs/simulator.md; metres, radians and m/s in the simulator's frame.

use edge_plugin_sdk::json::{Obj, parse_object};
use edge_plugin_sdk::{
    Message, Plugin, PluginInfo, Translation, battery_percent, check_option_names, device_id, malformed, position,
    topic_levels,
};

struct Simulator;

impl Plugin for Simulator {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "simulator".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            vendor: "edge".into(),
            description: "Positions from the edge simulator (`edge sim`, simulator sources)".into(),
            default_topics: vec!["edge-sim/+/+/state".into()],
            options: vec![],
        }
    }

    fn configure(options: Vec<(String, String)>) -> Result<(), String> {
        check_option_names(&options, &[])
    }

    fn translate(msg: Message) -> Translation {
        let topic_robot = match topic_levels(&msg.topic).as_slice() {
            ["edge-sim", _, robot, "state"] => Some(robot.to_string()),
            _ => return Ok(Vec::new()),
        };
        let map = parse_object(&msg.payload)?;
        let doc = Obj::root(&map);
        match doc.str("format")? {
            Some("edge-sim/1") => {}
            Some(other) => return Err(malformed(format!("format: `{other}` is not edge-sim/1"))),
            None => return Err(malformed("format: missing (expected \"edge-sim/1\")")),
        }
        let robot = match (doc.str("robot")?, topic_robot) {
            (Some(r), _) if !r.is_empty() => r.to_string(),
            (_, Some(r)) => r,
            _ => return Err(malformed("robot: missing")),
        };
        let mut p = position(device_id(robot, "robot")?, doc.req_coordinate("x")?, doc.req_coordinate("y")?, 0.0);
        p.timestamp_ms = doc.timestamp_ms("time_ms", None)?;
        p.heading_rad = doc.num("heading")?;
        p.speed_mps = doc.num("speed")?;
        p.moving = doc.bool("moving")?;
        p.battery_percent = battery_percent(doc.num("battery")?);
        p.status = doc.str("status")?.map(str::to_string);
        if let Some(path) = doc.text("path") {
            p.attributes.push(("path".into(), path));
        }
        Ok(vec![p])
    }
}

edge_plugin_sdk::export!(Simulator);
