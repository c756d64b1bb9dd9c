//! Hot reload under traffic: the plugin file is replaced (good, broken, good again) and the
//! config is edited (transform, device map, then an invalid edit) while messages stream in.
//! Every message is delivered exactly once.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;
use support::mosquitto::{Mosquitto, free_port};
use support::mqtt::Publisher;
use support::process::EdgeProcess;
use support::twinzo::{API_KEY, BRANCH_1, Device, TwinzoStandIn};

const MESSAGES: u64 = 600;
const T0: u64 = 1_730_000_000_000;

fn config_text(
    state: &Path,
    plugin: &Path,
    broker: u16,
    twinzo: &str,
    http: u16,
    tx: f64,
    second_device: bool,
) -> String {
    let second =
        if second_device { "      hitech-amr-002: { login: hitech-amr-02, password: pw-2, sector: 1 }\n" } else { "" };
    format!(
        r#"state_dir: {state}
http: {{ listen: "127.0.0.1:{http}" }}
sources:
  - name: hitech
    mqtt: {{ host: 127.0.0.1, port: {broker}, client_id: edge-reload }}
    plugin: {{ path: {plugin} }}
    plant: p
    transform: {{ affine: [1000, 0, 0, 1000, {tx}, 0] }}
plants:
  - name: p
    twinzo: {{ base_url: "{twinzo}", client: TVSMotor, api_key: {API_KEY}, branch: {BRANCH_1} }}
    batching: {{ flush_interval_ms: 100 }}
    devices:
      hitech-amr-001: {{ login: hitech-amr-01, password: pw-1, sector: 1 }}
{second}"#,
        state = state.display(),
        plugin = plugin.display()
    )
}

/// Replaces a file the way deployment tools do: write beside it, then rename over it.
fn replace(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    support::write_private(&tmp, bytes);
    std::fs::rename(&tmp, path).unwrap();
}

fn message(device: &str, i: u64) -> String {
    serde_json::json!({"device_id": device, "timestamp": T0 + i, "position": {"x": 1000 + i, "y": 2000}, "battery": 50})
        .to_string()
}

#[test]
fn plugin_and_config_reload_under_traffic_lose_nothing() {
    let broker = Mosquitto::start();
    let twinzo = TwinzoStandIn::start(&[
        Device { login: "hitech-amr-01".into(), password: "pw-1".into(), branch: BRANCH_1.into() },
        Device { login: "hitech-amr-02".into(), password: "pw-2".into(), branch: BRANCH_1.into() },
    ]);
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("plugins").join("hitech.wasm");
    std::fs::create_dir_all(plugin.parent().unwrap()).unwrap();
    let original = std::fs::read(support::plugin("hitech")).unwrap();
    std::fs::write(&plugin, &original).unwrap();
    let http = free_port();
    let state = dir.path().join("state");
    let config = dir.path().join("edge.yaml");
    let write_config = |tx: f64, second: bool| {
        replace(&config, config_text(&state, &plugin, broker.port, &twinzo.base_url(), http, tx, second).as_bytes())
    };
    write_config(0.0, false);

    let mut edge = EdgeProcess::start(&config);
    edge.wait_for_log("subscribed source=\"hitech\"", Duration::from_secs(30));

    let port = broker.port;
    let traffic = std::thread::spawn(move || {
        let mut publisher = Publisher::connect(port, "reload-publisher");
        for i in 0..MESSAGES {
            publisher.publish("hitech/amr/hitech-amr-001/position", message("hitech-amr-001", i));
            publisher.publish("hitech/amr/hitech-amr-002/position", message("hitech-amr-002", i));
            std::thread::sleep(Duration::from_millis(5));
        }
        publisher.flush(Duration::from_secs(20));
    });

    let step = || std::thread::sleep(Duration::from_millis(400));
    step();
    replace(&plugin, &support::wasm_variant(&original, 1));
    edge.wait_for_log("plugin loaded; new messages use it", Duration::from_secs(10));
    step();
    replace(&plugin, &original[..original.len() / 3]);
    edge.wait_for_log("rejected the new plugin file, keeping the running version", Duration::from_secs(10));
    step();
    replace(&plugin, &support::wasm_variant(&original, 2));
    step();
    write_config(5000.0, true);
    edge.wait_for_log("configuration reloaded", Duration::from_secs(10));
    step();
    replace(&config, b"sources: [ this is not: valid yaml\n");
    edge.wait_for_log("rejected the edit, still running the previous configuration", Duration::from_secs(10));
    traffic.join().unwrap();

    twinzo.wait_for("every message of the first robot", Duration::from_secs(30), |r| {
        r.locations.get("hitech-amr-01").map_or(0, Vec::len) as u64 >= MESSAGES
    });
    std::thread::sleep(Duration::from_millis(500));
    let first = twinzo.locations("hitech-amr-01");
    let stamps: Vec<u64> = first.iter().map(|l| l["Timestamp"].as_u64().unwrap()).collect();
    let unique: BTreeSet<u64> = stamps.iter().copied().collect();
    assert_eq!(
        stamps.len() as u64,
        MESSAGES,
        "every message exactly once (duplicates: {})",
        stamps.len() - unique.len()
    );
    assert_eq!(unique, (0..MESSAGES).map(|i| T0 + i).collect::<BTreeSet<_>>());

    // The transform edit applies from one message on; before it, none had the offset.
    // x is (1000 + i) mm, so X is 1000 + i before the edit and 6000 + i after it.
    let shifted: Vec<bool> = first
        .iter()
        .map(|l| l["X"].as_f64().unwrap() - 1000.0 - (l["Timestamp"].as_u64().unwrap() - T0) as f64 > 2500.0)
        .collect();
    let switch = shifted.iter().position(|s| *s).expect("the new transform was applied");
    assert!(switch > 0 && shifted[switch..].iter().all(|s| *s), "one switch from the old transform to the new");
    // The second robot was unknown until the edit mapped it, then delivered.
    let second = twinzo.locations("hitech-amr-02");
    assert!(
        !second.is_empty() && (second.len() as u64) < MESSAGES,
        "{} positions of the newly mapped robot",
        second.len()
    );

    assert!(edge.stop().success());
    let log = edge.log_text();
    assert!(log.contains("plugin loaded; new messages use it"), "{log}");
    assert!(!log.contains("pw-1") && !log.contains(API_KEY));
}
