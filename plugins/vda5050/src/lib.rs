//! VDA 5050 `state` and `visualization` messages (versions 2 and 3) to canonical positions.
//! Device id is `{manufacturer}/{serialNumber}`, from the payload or, failing that, the topic.

use edge_plugin_sdk::json::{Obj, parse_object};
use edge_plugin_sdk::{
    Message, Plugin, PluginInfo, Position, TranslateError, Translation, battery_percent, check_option_names, device_id,
    malformed, position, topic_levels,
};

struct Vda5050;

impl Plugin for Vda5050 {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "vda5050".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            vendor: "VDA 5050 (any manufacturer)".into(),
            description: "VDA 5050 v2/v3 state and visualization messages to positions".into(),
            default_topics: vec!["+/+/+/+/state".into(), "+/+/+/+/visualization".into()],
            options: vec![],
        }
    }

    fn configure(options: Vec<(String, String)>) -> Result<(), String> {
        check_option_names(&options, &[])
    }

    fn translate(msg: Message) -> Translation {
        // {interfaceName}/{majorVersion}/{manufacturer}/{serialNumber}/{topic}
        let levels = topic_levels(&msg.topic);
        let (topic_device, kind) = match levels.as_slice() {
            [.., manufacturer, serial, kind] if levels.len() >= 5 => (Some(format!("{manufacturer}/{serial}")), *kind),
            [.., kind] => (None, *kind),
            [] => (None, ""),
        };
        if kind != "state" && kind != "visualization" {
            return Ok(Vec::new()); // connection, order, instantActions, factsheet
        }
        let map = parse_object(&msg.payload)?;
        Ok(translate_state(&Obj::root(&map), topic_device)?.into_iter().collect())
    }
}

fn translate_state(doc: &Obj, topic_device: Option<String>) -> Result<Option<Position>, TranslateError> {
    // v2 calls it agvPosition (with positionInitialized), v3 mobileRobotPosition (with localized).
    let (pos, initialized_key) = match (doc.obj("agvPosition")?, doc.obj("mobileRobotPosition")?) {
        (Some(p), _) => (p, "positionInitialized"),
        (None, Some(p)) => (p, "localized"),
        (None, None) => return Ok(None), // e.g. a state while the robot is not localised
    };
    if pos.bool(initialized_key)? == Some(false) {
        return Ok(None);
    }
    let device = match (doc.str("manufacturer")?, doc.str("serialNumber")?, topic_device) {
        (Some(m), Some(s), _) if !m.is_empty() && !s.is_empty() => format!("{m}/{s}"),
        (_, _, Some(d)) => d,
        _ => return Err(malformed("manufacturer/serialNumber: missing from payload and topic")),
    };
    let mut p = position(
        device_id(device, "manufacturer/serialNumber")?,
        pos.req_coordinate("x")?,
        pos.req_coordinate("y")?,
        0.0,
    );
    p.heading_rad = pos.num("theta")?;
    p.map_id = pos.str("mapId")?.map(str::to_string);
    p.localization_score = pos.num("localizationScore")?.filter(|s| (0.0..=1.0).contains(s));
    p.timestamp_ms = doc.timestamp_ms("timestamp", None)?;
    if let Some(velocity) = doc.obj("velocity")? {
        let (vx, vy) = (velocity.num("vx")?.unwrap_or(0.0), velocity.num("vy")?.unwrap_or(0.0));
        p.speed_mps = Some(vx.hypot(vy));
    }
    p.moving = doc.bool("driving")?;
    p.battery_percent = battery(doc)?;
    p.status = doc.str("operatingMode")?.map(str::to_ascii_lowercase);
    if let Some(errors) = doc.arr("errors")? {
        if !errors.is_empty() {
            p.attributes.push(("errors".into(), errors.len().to_string()));
        }
    }
    if let Some(header) = doc.text("headerId") {
        p.attributes.push(("header_id".into(), header));
    }
    Ok(Some(p))
}

fn battery(doc: &Obj) -> Result<Option<f32>, TranslateError> {
    if let Some(state) = doc.obj("batteryState")? {
        return Ok(battery_percent(state.num("batteryCharge")?));
    }
    if let Some(supply) = doc.obj("powerSupply")? {
        return Ok(battery_percent(supply.num("stateOfCharge")?));
    }
    Ok(None)
}

edge_plugin_sdk::export!(Vda5050);
