//! From a YAML value tree to a checked [`Config`]: each source, plant and device is read on
//! its own so that one bad entry does not hide the problems of the others.

use super::*;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, HashMap};

pub(super) fn build(mut root: Value, base: &Path, errors: &mut Vec<ConfigError>) -> Option<Config> {
    // Sources and plants are read even when the rest has a problem, so one unknown key at
    // the top does not hide every problem below it.
    // Each keeps its key path: later checks must name `sources[3]` even if `sources[2]` failed.
    let sources: Vec<(String, SourceConfig)> = list(&mut root, "sources", errors)
        .into_iter()
        .enumerate()
        .filter_map(|(i, v)| source(v, &format!("sources[{i}]"), errors).map(|s| (format!("sources[{i}]"), s)))
        .collect();
    let plants: Vec<(String, PlantConfig)> = list(&mut root, "plants", errors)
        .into_iter()
        .enumerate()
        .filter_map(|(i, v)| plant(v, &format!("plants[{i}]"), errors).map(|p| (format!("plants[{i}]"), p)))
        .collect();
    let health: HealthConfig = section(&mut root, "health", errors);
    let alerts: AlertsConfig = section(&mut root, "alerts", errors);
    let (source_paths, sources): (Vec<String>, Vec<SourceConfig>) = sources.into_iter().unzip();
    let (plant_paths, plants): (Vec<String>, Vec<PlantConfig>) = plants.into_iter().unzip();
    // With a problem at the top, carry on with defaults to find the problems below it.
    let top: TopLevel = typed(root, "", errors).unwrap_or_else(|| {
        serde_json::from_value(Value::Object(Default::default())).expect("every top-level key has a default")
    });
    let mut config = Config {
        state_dir: base.join(&top.state_dir),
        plugins_dir: top.plugins_dir.map(|dir| base.join(dir)),
        http: top.http,
        summary_interval: Duration::from_secs(top.summary_interval_s.max(1)),
        sandbox: top.sandbox,
        spool: top.spool,
        health,
        alerts,
        embedded_broker: top.embedded_broker,
        simulator: top.simulator,
        sources,
        plants,
    };
    resolve_paths(&mut config, base);
    check(&config, &source_paths, &plant_paths, errors);
    alerts::check(&config.health, &config.alerts, errors);
    Some(config)
}

/// Deserializes `value`, recording a failure with its full key path.
fn typed<T: DeserializeOwned>(value: Value, path: &str, errors: &mut Vec<ConfigError>) -> Option<T> {
    match serde_path_to_error::deserialize(value) {
        Ok(v) => Some(v),
        Err(e) => {
            let mut at = path.to_string();
            for segment in e.path().iter() {
                at = match segment {
                    serde_path_to_error::Segment::Seq { index } => format!("{at}[{index}]"),
                    serde_path_to_error::Segment::Map { key } => join_key(&at, key),
                    serde_path_to_error::Segment::Enum { variant } => join_key(&at, variant),
                    serde_path_to_error::Segment::Unknown => at,
                };
            }
            errors.push(ConfigError::new(at.clone(), redact_if_secret(&at, e.into_inner().to_string())));
            None
        }
    }
}

/// serde quotes the offending value in its messages; never for a secret's key.
fn redact_if_secret(path: &str, message: String) -> String {
    let secret = ["password", "api_key", "token", "secret", "webhooks"].iter().any(|k| path.contains(k));
    if !secret {
        return message;
    }
    let mut out = String::new();
    let mut quoted = false;
    for c in message.chars() {
        if c == '"' {
            if !quoted {
                out.push_str("\"<redacted>");
            }
            quoted = !quoted;
        }
        if !quoted {
            out.push(c);
        }
    }
    out
}

/// Takes the list at `key` out of an object (a missing key is an empty list).
fn list(root: &mut Value, key: &str, errors: &mut Vec<ConfigError>) -> Vec<Value> {
    match root.as_object_mut().and_then(|m| m.remove(key)) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items,
        Some(_) => {
            errors.push(ConfigError::new(key, "expected a list"));
            Vec::new()
        }
    }
}

/// Takes the top-level section `key` out of `root` and reads it on its own (its default when
/// absent or wrong), so that a problem elsewhere does not hide its problems.
fn section<T: DeserializeOwned + Default>(root: &mut Value, key: &str, errors: &mut Vec<ConfigError>) -> T {
    match root.as_object_mut().and_then(|m| m.remove(key)) {
        None | Some(Value::Null) => T::default(),
        Some(value) => typed(value, key, errors).unwrap_or_default(),
    }
}

/// Reads the part at `key` of an object on its own, under its own key path.
fn part<T: DeserializeOwned>(value: &Value, key: &str, path: &str, errors: &mut Vec<ConfigError>) -> Option<Option<T>> {
    match value.get(key) {
        None | Some(Value::Null) => Some(None),
        Some(part) => typed(part.clone(), &join_key(path, key), errors).map(Some),
    }
}

// The parts are read on their own by `part`; naming them here makes unknown keys errors.
#[allow(dead_code)]
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    name: String,
    mqtt: Value,
    plugin: Value,
    plant: String,
    transform: Value,
}

fn source(value: Value, path: &str, errors: &mut Vec<ConfigError>) -> Option<SourceConfig> {
    let mqtt = part::<MqttConfig>(&value, "mqtt", path, errors);
    let plugin = part::<PluginRef>(&value, "plugin", path, errors);
    let transform = part::<TransformConfig>(&value, "transform", path, errors);
    let raw: RawSource = typed(value, path, errors)?;
    Some(SourceConfig { name: raw.name, plant: raw.plant, mqtt: mqtt??, plugin: plugin??, transform: transform?? })
}

#[allow(dead_code)]
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlant {
    name: String,
    twinzo: Option<Value>,
    #[serde(default)]
    dry_run: bool,
    devices: Option<Value>,
    motion: Option<Value>,
    batching: Option<Value>,
}

fn plant(value: Value, path: &str, errors: &mut Vec<ConfigError>) -> Option<PlantConfig> {
    let twinzo = part::<TwinzoConfig>(&value, "twinzo", path, errors);
    let motion = part::<MotionConfig>(&value, "motion", path, errors);
    let batching = part::<BatchingConfig>(&value, "batching", path, errors);
    let devices = devices(value.get("devices").cloned(), path, errors);
    let raw: RawPlant = typed(value, path, errors)?;
    Some(PlantConfig {
        name: raw.name,
        twinzo: twinzo?,
        dry_run: raw.dry_run,
        devices,
        motion: motion?.unwrap_or_default(),
        batching: batching?.unwrap_or_default(),
    })
}

fn devices(value: Option<Value>, path: &str, errors: &mut Vec<ConfigError>) -> BTreeMap<String, DeviceConfig> {
    let mut devices = BTreeMap::new();
    match value {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (robot, device) in map {
                let at = join_key(&format!("{path}.devices"), &robot);
                if device.get("sector").is_some_and(Value::is_string) {
                    errors.push(ConfigError::new(
                        format!("{at}.sector"),
                        "expected Twinzo's integer sector id, found text (Twinzo refuses a sector GUID)",
                    ));
                    continue;
                }
                if let Some(device) = typed::<DeviceConfig>(device, &at, errors) {
                    devices.insert(robot, device);
                }
            }
        }
        Some(_) => errors.push(ConfigError::new(format!("{path}.devices"), "expected a map of robot id to device")),
    }
    devices
}

fn resolve_paths(config: &mut Config, base: &Path) {
    for source in &mut config.sources {
        if let PluginLocation::File(path) = &mut source.plugin.location {
            *path = base.join(&*path);
        }
        if let Some(tls) = &mut source.mqtt.tls {
            for file in [&mut tls.ca_file, &mut tls.client_cert, &mut tls.client_key].into_iter().flatten() {
                *file = base.join(&*file);
            }
        }
    }
}

fn check(config: &Config, source_paths: &[String], plant_paths: &[String], errors: &mut Vec<ConfigError>) {
    let mut err = |path: String, message: String| errors.push(ConfigError::new(path, message));
    unique_names(config.sources.iter().map(|s| s.name.as_str()).zip(source_paths), &mut err);
    unique_names(config.plants.iter().map(|p| p.name.as_str()).zip(plant_paths), &mut err);
    for (source, path) in config.sources.iter().zip(source_paths) {
        check_source(config, source, path, &mut err);
    }
    for (plant, path) in config.plants.iter().zip(plant_paths) {
        check_plant(plant, path, &mut err);
    }
    let spool = &config.spool;
    if spool.max_mb == 0 || spool.max_age_h == 0 || spool.replay_per_second == 0 || spool.hard_cap_mb == Some(0) {
        err("spool".into(), "max_mb, max_age_h, replay_per_second and hard_cap_mb must be above 0".into());
    }
    let s = &config.sandbox;
    if s.memory_mb == 0 || s.call_timeout_ms == 0 || s.max_positions_per_message == 0 {
        err("sandbox".into(), "memory_mb, call_timeout_ms and max_positions_per_message must be above 0".into());
    }
    if let Some(sim) = &config.simulator {
        if !(sim.rate_hz > 0.0 && sim.rate_hz <= 100.0) {
            err("simulator.rate_hz".into(), format!("{} is not between 0 and 100", sim.rate_hz));
        }
        if sim.broker.is_none() && config.embedded_broker.is_none() {
            err("simulator.broker".into(), "missing (and there is no embedded_broker to default to)".into());
        }
        let paths: Vec<String> = (0..sim.robots.len()).map(|i| format!("simulator.robots[{i}]")).collect();
        unique_names(sim.robots.iter().map(|r| r.name.as_str()).zip(&paths), &mut err);
    }
}

/// Names must be unique and not empty; each item comes with its key path.
fn unique_names<'a>(names: impl Iterator<Item = (&'a str, &'a String)>, err: &mut impl FnMut(String, String)) {
    let mut seen = HashMap::new();
    for (name, path) in names {
        if name.trim().is_empty() {
            err(format!("{path}.name"), "must not be empty".into());
        } else if let Some(first) = seen.insert(name, path) {
            err(format!("{path}.name"), format!("`{name}` is already the name of {first}"));
        }
    }
}

fn check_source(config: &Config, source: &SourceConfig, path: &str, err: &mut impl FnMut(String, String)) {
    if config.plant(&source.plant).is_none() {
        let known: Vec<&str> = config.plants.iter().map(|p| p.name.as_str()).collect();
        err(format!("{path}.plant"), format!("no plant is named `{}` (plants: {})", source.plant, known.join(", ")));
    }
    let mqtt = &source.mqtt;
    if mqtt.qos > 2 {
        err(format!("{path}.mqtt.qos"), format!("{} is not an MQTT QoS (0, 1 or 2)", mqtt.qos));
    }
    for (i, topic) in mqtt.topics.iter().enumerate() {
        if let Err(why) = check_topic_filter(topic) {
            err(format!("{path}.mqtt.topics[{i}]"), why);
        } else if mqtt.share_group.is_some() && topic.starts_with("$share/") {
            err(
                format!("{path}.mqtt.topics[{i}]"),
                "already a shared subscription: with share_group, give the plain filter".into(),
            );
        }
    }
    if let Some(group) = &mqtt.share_group
        && (group.is_empty() || group.contains(['/', '+', '#']))
    {
        err(
            format!("{path}.mqtt.share_group"),
            format!("`{group}` is not a share name (not empty, no `/`, `+` or `#`)"),
        );
    }
    if mqtt.host.trim().is_empty() {
        err(format!("{path}.mqtt.host"), "must not be empty".into());
    }
    if mqtt.password.is_some() && mqtt.username.is_none() {
        err(format!("{path}.mqtt.password"), "a password needs a username".into());
    }
    if mqtt.receive_maximum == 0 {
        err(format!("{path}.mqtt.receive_maximum"), "must be at least 1".into());
    }
    if !(1024..=256 << 20).contains(&mqtt.max_packet_bytes) {
        err(format!("{path}.mqtt.max_packet_bytes"), "must be between 1 KiB and 256 MiB".into());
    }
    if let Some(tls) = &mqtt.tls {
        if tls.client_cert.is_some() != tls.client_key.is_some() {
            err(format!("{path}.mqtt.tls"), "client_cert and client_key go together".into());
        }
        for (key, file) in
            [("ca_file", &tls.ca_file), ("client_cert", &tls.client_cert), ("client_key", &tls.client_key)]
        {
            if let Some(file) = file.as_ref().filter(|f| !f.is_file()) {
                err(format!("{path}.mqtt.tls.{key}"), format!("{} does not exist", file.display()));
            }
        }
    }
    if matches!(source.plugin.location, PluginLocation::Named(_)) && config.plugins_dir.is_none() {
        err(format!("{path}.plugin.name"), "names a plugin, but there is no `plugins_dir` to find it in".into());
    }
    if let Some(digest) = &source.plugin.sha256
        && (digest.len() != 64 || !digest.chars().all(|c| c.is_ascii_hexdigit()))
    {
        err(format!("{path}.plugin.sha256"), "expected 64 hex digits".into());
    }
    check_transform(&source.transform, &format!("{path}.transform"), err);
}

fn check_transform(t: &TransformConfig, path: &str, err: &mut impl FnMut(String, String)) {
    let [a, b, c, d, _, _] = t.affine;
    if !t.affine.iter().chain([&t.z_scale]).all(|v| v.is_finite()) {
        err(path.into(), "every number must be finite".into());
        return;
    }
    let det = a * d - b * c;
    if det.abs() < 1e-9 {
        err(
            format!("{path}.affine"),
            format!(
                "[a, b, c, d] = [{a}, {b}, {c}, {d}] is singular (a·d − b·c = 0): it would fold the map onto a line"
            ),
        );
    }
}

/// MQTT filter rules: `#` only as the last level, `+` and `#` only as whole levels.
pub(crate) fn check_topic_filter(topic: &str) -> Result<(), String> {
    if topic.is_empty() {
        return Err("an empty topic filter".into());
    }
    let levels: Vec<&str> = topic.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i != levels.len() - 1) {
            return Err(format!("`{topic}`: `#` must be a whole level and the last one"));
        }
        if level.contains('+') && *level != "+" {
            return Err(format!("`{topic}`: `+` must be a whole level"));
        }
    }
    Ok(())
}

fn check_plant(plant: &PlantConfig, path: &str, err: &mut impl FnMut(String, String)) {
    match (&plant.twinzo, plant.dry_run) {
        (Some(_), true) => err(path.into(), "give either twinzo or dry_run: true, not both".into()),
        (None, false) => err(path.into(), "needs a sink: a `twinzo` section, or `dry_run: true`".into()),
        _ => {}
    }
    if let Some(twinzo) = &plant.twinzo {
        if !(twinzo.base_url.starts_with("https://") || twinzo.base_url.starts_with("http://")) {
            err(format!("{path}.twinzo.base_url"), format!("`{}` is not an http(s) URL", twinzo.base_url));
        }
        if !looks_like_guid(&twinzo.branch) {
            err(format!("{path}.twinzo.branch"), format!("`{}` is not a branch GUID", twinzo.branch));
        }
        if twinzo.client.trim().is_empty() {
            err(format!("{path}.twinzo.client"), "must not be empty".into());
        }
    }
    let mut logins: BTreeMap<String, &str> = BTreeMap::new();
    for (robot, device) in &plant.devices {
        let at = join_key(&format!("{path}.devices"), robot);
        if device.sector <= 0 || device.sector > i64::from(i32::MAX) {
            err(format!("{at}.sector"), format!("{} is not a Twinzo sector id", device.sector));
        }
        if plant.twinzo.is_some() && device.password.is_none() {
            err(format!("{at}.password"), "missing (each Twinzo device signs in with its own login)".into());
        }
        let login = device.login.clone().unwrap_or_else(|| robot.clone());
        if let Some(other) = logins.insert(login.clone(), robot) {
            err(
                format!("{at}.login"),
                format!("login `{login}` is already used by device {other:?}: one Twinzo device per robot"),
            );
        }
    }
    if plant.batching.flush_interval_ms > 60_000 {
        err(format!("{path}.batching.flush_interval_ms"), "must be between 0 and 60000".into());
    }
    if !(1..=1000).contains(&plant.batching.max_batch) {
        err(format!("{path}.batching.max_batch"), "must be between 1 and 1000".into());
    }
    // NaN is refused too: it is not above 0.
    let threshold_above_0 = plant.motion.threshold_mm.partial_cmp(&0.0) == Some(std::cmp::Ordering::Greater);
    if !threshold_above_0 || plant.motion.window_ms == 0 {
        err(format!("{path}.motion"), "threshold_mm and window_ms must be above 0".into());
    }
}

fn looks_like_guid(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12]) && parts.iter().all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Things that will not stop the runtime but that an operator should hear about.
/// Why a restart of edge (an upgrade, a reboot) would lose what the broker received meanwhile.
fn lossy_restarts(mqtt: &super::MqttConfig) -> Option<String> {
    const SHORT_S: u32 = 600;
    if mqtt.clean_start {
        return Some(
            "clean_start: true discards edge's session at every connect: a restart loses what was published meanwhile"
                .into(),
        );
    }
    match mqtt.protocol {
        super::MqttProtocol::V5 if mqtt.session_expiry_s == 0 => Some(
            "session_expiry_s: 0 ends the session with the connection: a restart loses what was published meanwhile"
                .into(),
        ),
        super::MqttProtocol::V5 if mqtt.session_expiry_s < SHORT_S => Some(format!(
            "session_expiry_s: {} keeps the session only that long: a longer reboot or upgrade loses what was published meanwhile",
            mqtt.session_expiry_s
        )),
        _ => None,
    }
}

pub(super) fn warnings(config: &Config) -> Vec<ConfigError> {
    let mut out = Vec::new();
    for (i, source) in config.sources.iter().enumerate() {
        if let Some(file) = source.plugin.file().filter(|f| !f.exists()) {
            out.push(ConfigError::new(
                format!("sources[{i}].plugin.path"),
                format!("{} does not exist yet; the source will wait for it", file.display()),
            ));
        }
        if source.mqtt.tls.as_ref().is_some_and(|t| t.insecure) {
            out.push(ConfigError::new(
                format!("sources[{i}].mqtt.tls.insecure"),
                "the broker's certificate will NOT be verified",
            ));
        }
        if source.mqtt.qos == 0 {
            out.push(ConfigError::new(
                format!("sources[{i}].mqtt.qos"),
                "QoS 0 loses messages on any hiccup, and some brokers (ATI) refuse it",
            ));
        }
        out.extend(lossy_restarts(&source.mqtt).map(|why| ConfigError::new(format!("sources[{i}].mqtt"), why)));
        let plant = config.plant(&source.plant);
        if plant.is_some_and(|p| p.devices.is_empty()) {
            out.push(ConfigError::new(
                format!("sources[{i}].plant"),
                format!("plant `{}` maps no devices: every robot will be unknown", source.plant),
            ));
        }
    }
    if let Some(dir) = config.plugins_dir.as_ref().filter(|d| !d.is_dir()) {
        out.push(ConfigError::new(
            "plugins_dir",
            format!("{} is not a folder (yet); sources naming a plugin wait for it", dir.display()),
        ));
    }
    if !config.http.listen.ip().is_loopback() {
        out.push(ConfigError::new("http.listen", format!("{} is reachable from other machines", config.http.listen)));
    }
    out
}
