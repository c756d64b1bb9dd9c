//! Hot reload under traffic: the plugin file is replaced (good, broken, good again) and the
//! config is edited (transform, device map, then an invalid edit) while messages stream in.
//! Every message is delivered exactly once.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;
use support::mosquitto::Mosquitto;
use support::mqtt::Publisher;
use support::ports::free_port;
use support::process::{EdgeProcess, eventually, get_json};
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

/// `path` with its one occurrence of `from` replaced by `to` (same length): the same
/// component saying another version of itself.
fn with_version(wasm: &[u8], from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let at: Vec<usize> =
        wasm.windows(from.len()).enumerate().filter(|(_, w)| *w == from.as_bytes()).map(|(i, _)| i).collect();
    assert_eq!(at.len(), 1, "`{from}` occurs once in the component");
    let mut out = wasm.to_vec();
    out[at[0]..at[0] + to.len()].copy_from_slice(to.as_bytes());
    out
}

fn readyz(http: u16) -> serde_json::Value {
    get_json(&format!("127.0.0.1:{http}"), "/readyz")
}

/// The plugin a source runs, as /readyz names it.
fn running(http: u16) -> Option<String> {
    readyz(http)["sources"]["hitech"]["plugin"].as_str().map(str::to_string)
}

/// A vendor's `.wasm` dropped into `plugins_dir` is picked up by the source that names it,
/// without a restart; a newer version dropped beside it takes over, and the older one again
/// when it is removed; every component is listed with who runs it, and none of the messages
/// published meanwhile is lost or doubled.
#[test]
fn plugins_dir_runs_what_is_dropped_into_it_by_name() {
    let broker = Mosquitto::start();
    let twinzo = TwinzoStandIn::start(&[Device {
        login: "hitech-amr-01".into(),
        password: "pw-1".into(),
        branch: BRANCH_1.into(),
    }]);
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let http = free_port();
    let config = dir.path().join("edge.yaml");
    let text =
        config_text(&dir.path().join("state"), Path::new("unused"), broker.port, &twinzo.base_url(), http, 0.0, false)
            .replace("plugin: { path: unused }", "plugin: { name: hitech }");
    support::write_private(&config, format!("plugins_dir: plugins\n{text}"));
    let mut edge = EdgeProcess::start(&config);
    eventually("the source set up", Duration::from_secs(30), || readyz(http)["sources"]["hitech"].is_object());
    assert_eq!(running(http), None, "nothing to run yet");

    let original = std::fs::read(support::plugin("hitech")).unwrap();
    replace(&plugins.join("hitech.wasm"), &original);
    eventually("the dropped plugin running", Duration::from_secs(10), || {
        running(http).as_deref() == Some("hitech@1.1.0")
    });
    let mut publisher = Publisher::connect(broker.port, "plugins-dir-publisher");
    let mut sent = 0;
    let mut publish = |n: u64| {
        for _ in 0..n {
            publisher.publish("hitech/amr/hitech-amr-001/position", message("hitech-amr-001", sent));
            sent += 1;
        }
        publisher.flush(Duration::from_secs(20));
    };
    eventually("the subscription", Duration::from_secs(10), || {
        let sources = get_json(&format!("127.0.0.1:{http}"), "/api/sources");
        sources["sources"][0]["subscribed"].as_array().is_some_and(|s| !s.is_empty())
    });
    publish(100);

    replace(&plugins.join("hitech-1.2.wasm"), &with_version(&original, "1.1.0", "1.2.0"));
    std::fs::write(plugins.join("half-copied.wasm"), b"\0asm").unwrap();
    eventually("the newer version running", Duration::from_secs(10), || {
        running(http).as_deref() == Some("hitech@1.2.0")
    });
    publish(100);
    let listed = readyz(http)["plugins"].clone();
    let files: Vec<(&str, &str, Vec<&str>)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let file = f["file"].as_str().unwrap().rsplit('/').next().unwrap();
            let users = f["used_by"].as_array().unwrap().iter().map(|u| u.as_str().unwrap()).collect();
            (file, f["version"].as_str().unwrap(), users)
        })
        .collect();
    assert_eq!(
        files,
        vec![
            ("half-copied.wasm", "", vec![]),
            ("hitech-1.2.wasm", "1.2.0", vec!["hitech"]),
            ("hitech.wasm", "1.1.0", vec![])
        ],
        "{listed}"
    );
    assert!(listed[0]["error"].as_str().is_some_and(|e| e.contains("half-copied.wasm")), "{listed}");

    std::fs::remove_file(plugins.join("hitech-1.2.wasm")).unwrap();
    eventually("the remaining version running", Duration::from_secs(10), || {
        running(http).as_deref() == Some("hitech@1.1.0")
    });
    publish(100);

    twinzo.wait_for("every message", Duration::from_secs(30), |r| {
        r.locations.get("hitech-amr-01").map_or(0, Vec::len) as u64 >= sent
    });
    std::thread::sleep(Duration::from_millis(500));
    let stamps: Vec<u64> = twinzo.locations("hitech-amr-01").iter().map(|l| l["Timestamp"].as_u64().unwrap()).collect();
    assert_eq!(stamps.len() as u64, sent, "every message exactly once");
    assert_eq!(stamps.iter().copied().collect::<BTreeSet<_>>(), (0..sent).map(|i| T0 + i).collect());
    assert!(edge.stop().success());
}
