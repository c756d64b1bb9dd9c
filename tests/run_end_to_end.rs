//! `edge run` end to end: ATI (MQTT 5) and HiTech (MQTT 3.1.1) through a real mosquitto,
//! their plugins, two plants on two Twinzo branches, into the Twinzo stand-in.

mod support;

use serde_json::Value;
use std::time::Duration;
use support::mosquitto::Mosquitto;
use support::mqtt::Publisher;
use support::ports::free_port;
use support::process::{EdgeProcess, eventually, http_get};
use support::twinzo::{API_KEY, BRANCH_1, BRANCH_2, Device, TwinzoStandIn};

const TUG_PASSWORD: &str = "pw-tug133-Sup3rSecret";
const AMR_PASSWORD: &str = "pw-amr01-Sup3rSecret";
/// The older plant's fitted transform.
const OLDER: [f64; 6] = [999.738230, 22.879501, 22.879501, -999.738230, 95598.77, 167357.60];

fn devices() -> Vec<Device> {
    vec![
        Device { login: "tugger-01".into(), password: TUG_PASSWORD.into(), branch: BRANCH_1.into() },
        Device { login: "tugger-02".into(), password: TUG_PASSWORD.into(), branch: BRANCH_1.into() },
        Device { login: "hitech-amr-01".into(), password: AMR_PASSWORD.into(), branch: BRANCH_2.into() },
    ]
}

fn config(dir: &std::path::Path, broker: u16, twinzo: &str, http: u16) -> std::path::PathBuf {
    let plugins = support::repo().join("plugins/dist");
    let yaml = format!(
        r#"
state_dir: {state}
http: {{ listen: "127.0.0.1:{http}" }}
summary_interval_s: 1
sources:
  - name: ati
    mqtt: {{ host: 127.0.0.1, port: {broker}, protocol: "5", client_id: edge-ati, topics: ["ati_fm/#"] }}
    plugin: {{ path: {plugins}/ati-sherpa.wasm, options: {{ timestamp_offset: "+05:30" }} }}
    plant: older
    transform: {{ affine: {older:?} }}
  - name: hitech
    mqtt: {{ host: 127.0.0.1, port: {broker}, protocol: "3.1.1", client_id: edge-hitech }}
    plugin: {{ path: {plugins}/hitech.wasm }}
    plant: newer
    transform: {{ affine: [1000, 0, 0, 1000, 0, 0] }}
plants:
  - name: older
    twinzo: {{ base_url: "{twinzo}", client: TVSMotor, api_key: "${{TEST_TWINZO_API_KEY}}", branch: {BRANCH_1} }}
    batching: {{ flush_interval_ms: 300 }}
    devices:
      tug-133: {{ login: tugger-01, password: "${{TEST_TUG_PASSWORD}}", sector: 1 }}
      tug-55: {{ login: tugger-02, password: "${{TEST_TUG_PASSWORD}}", sector: 2 }}
  - name: newer
    twinzo: {{ base_url: "{twinzo}", client: TVSMotor, api_key: "${{TEST_TWINZO_API_KEY}}", branch: {BRANCH_2} }}
    devices:
      hitech-amr-001: {{ login: hitech-amr-01, password: "{AMR_PASSWORD}", sector: 2 }}
"#,
        state = dir.join("state").display(),
        plugins = plugins.display(),
        older = OLDER,
    );
    let path = dir.join("edge.yaml");
    support::write_private(&path, yaml);
    path
}

fn ati_status(name: &str, x: f64, y: f64, battery: i64, local_time: &str) -> String {
    serde_json::json!({
        "sherpa_name": name, "mode": "fleet", "pose": [x, y, 0.5], "battery_status": battery,
        "disabled": false, "disabled_reason": "", "error": "", "trip_id": 1, "trip_leg_id": null,
        "message_id": "00000000-0000-4000-8000-000000000000", "timestamp": local_time,
    })
    .to_string()
}

#[test]
fn ati_and_hitech_reach_their_plants() {
    let broker = Mosquitto::start();
    let twinzo = TwinzoStandIn::start(&devices());
    let dir = tempfile::tempdir().unwrap();
    let http = free_port();
    let config = config(dir.path(), broker.port, &twinzo.base_url(), http);
    // SAFETY: tests in this binary do not read these concurrently; the child inherits them.
    unsafe {
        std::env::set_var("TEST_TWINZO_API_KEY", API_KEY);
        std::env::set_var("TEST_TUG_PASSWORD", TUG_PASSWORD);
    }
    let mut edge = EdgeProcess::start(&config);
    edge.wait_for_log("subscribed source=\"ati\"", Duration::from_secs(30));
    edge.wait_for_log("subscribed source=\"hitech\"", Duration::from_secs(30));

    let mut publisher = Publisher::connect(broker.port, "test-publisher");
    for i in 0..20 {
        let (x, y) = (100.0 + i as f64 * 0.5, 60.0);
        let battery = if i < 5 { -1 } else { 80 };
        let local = format!("2025-12-01T13:21:{:02}Z", 10 + i);
        publisher.publish("ati_fm/sherpa/status", ati_status("tug-133", x, y, battery, &local));
        publisher.publish("ati_fm/sherpa/status", ati_status("tug-999", x, y, 50, &local));
        publisher.publish("fleet/trips/info", r#"{"id": 1, "status": "Succeeded"}"#);
        let hitech = serde_json::json!({"device_id": "hitech-amr-001", "timestamp": 1_730_000_000_000u64 + i * 100, "position": {"x": 150000 + i * 10, "y": 150000, "z": 0}, "battery": 85, "status": "moving", "speed": 500});
        publisher.publish("hitech/amr/hitech-amr-001/position", hitech.to_string());
        std::thread::sleep(Duration::from_millis(100));
    }
    publisher.publish("hitech/amr/hitech-amr-001/position", r#"{"device_id": "hitech-amr-001", "x": 1, "y": 2}"#);
    publisher.flush(Duration::from_secs(10));
    twinzo.wait_for("all positions", Duration::from_secs(30), |r| {
        r.locations.get("tugger-01").map_or(0, Vec::len) == 20
            && r.locations.get("hitech-amr-01").map_or(0, Vec::len) == 20
    });

    check_ati_locations(&twinzo.locations("tugger-01"));
    check_hitech_locations(&twinzo.locations("hitech-amr-01"));
    check_wire(&twinzo);
    eventually("the summary line", Duration::from_secs(5), || edge.log_text().contains("summary: "));

    let metrics = http_get(&format!("127.0.0.1:{http}"), "/metrics").1;
    for needle in [
        "edge_messages_received_total{source=\"ati\"}",
        "edge_positions_posted_total{plant=\"older\",device=\"tug-133\"} 20",
        "edge_positions_posted_total{plant=\"newer\",device=\"hitech-amr-001\"} 20",
        "edge_unknown_device_positions_total{plant=\"older\",source=\"ati\"} 20",
        "edge_plugin_errors_total{plugin=\"hitech\",source=\"hitech\",kind=\"malformed\"} 1",
        "edge_plugin_call_seconds_bucket",
    ] {
        assert!(metrics.contains(needle), "/metrics lacks {needle}:\n{metrics}");
    }
    for secret in [TUG_PASSWORD, AMR_PASSWORD, API_KEY] {
        assert!(!metrics.contains(secret), "a secret in /metrics");
    }
    let (status, ready) = http_get(&format!("127.0.0.1:{http}"), "/readyz");
    let ready: Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["sources"]["ati"]["plugin"], "ati-sherpa@1.0.0");
    assert_eq!(http_get(&format!("127.0.0.1:{http}"), "/healthz").0, 200);
    // The fleet view is judged once a second.
    eventually("the robot not in the map listed with its 20 positions", Duration::from_secs(5), || {
        let devices: Value =
            serde_json::from_str(&http_get(&format!("127.0.0.1:{http}"), "/api/devices").1).unwrap_or_default();
        devices["unknown"][0]["robot"] == "tug-999" && devices["unknown"][0]["positions"] == 20
    });
    // The map's sector outline comes from the sizes Twinzo lists for the branch.
    let plants: Value = serde_json::from_str(&http_get(&format!("127.0.0.1:{http}"), "/api/plants").1).unwrap();
    assert_eq!(plants["plants"][1]["name"], "older");
    assert_eq!(plants["plants"][1]["sectors"][0], serde_json::json!([1, 265337.97, 265337.97]), "{plants}");

    assert!(edge.stop().success());
    let log = edge.log_text();
    assert_eq!(
        log.matches("kind=\"unknown_robot\"").count(),
        1,
        "an unknown robot is one event, not a line per position:\n{log}"
    );
    assert!(
        log.contains("sector 2 is not in branch") && log.contains("never appear"),
        "the misplaced sector of tug-55 is reported:\n{log}"
    );
    assert!(
        log.contains("message dropped") && log.contains("position: missing"),
        "the malformed HiTech message is reported:\n{log}"
    );
    for secret in [TUG_PASSWORD, AMR_PASSWORD, API_KEY, "0000000000000000000000000000000000000000001="] {
        assert!(!log.contains(secret), "a secret leaked into the log");
    }
}

fn check_ati_locations(locations: &[Value]) {
    let [a, b, c, d, tx, ty] = OLDER;
    for (i, l) in locations.iter().enumerate() {
        let (x, y) = (100.0 + i as f64 * 0.5, 60.0);
        assert!((l["X"].as_f64().unwrap() - (a * x + b * y + tx)).abs() < 1e-3, "X of {i}: {l}");
        assert!((l["Y"].as_f64().unwrap() - (c * x + d * y + ty)).abs() < 1e-3, "Y of {i}: {l}");
        assert_eq!(l["SectorId"], 1);
        // 13:21:xx "Z" is really +05:30: 07:51:xx UTC.
        assert_eq!(l["Timestamp"].as_u64().unwrap(), 1_764_575_470_000 + i as u64 * 1000, "{l}");
        if i < 5 {
            assert!(l.get("Battery").is_none(), "unknown battery must be left out, not invented: {l}");
        } else {
            assert_eq!(l["Battery"], 80);
        }
        assert_eq!(l["LocalizationAreas"], serde_json::json!([]));
    }
    assert_eq!(locations[0]["IsMoving"], false, "one position is no movement");
    assert!(locations[10..].iter().all(|l| l["IsMoving"] == true), "0.5 m per message is movement");
    let interval = locations[19]["Interval"].as_u64().unwrap();
    assert!((50..=400).contains(&interval), "Interval follows the ~100 ms cadence, got {interval}");
}

fn check_hitech_locations(locations: &[Value]) {
    for (i, l) in locations.iter().enumerate() {
        assert!((l["X"].as_f64().unwrap() - (150000.0 + i as f64 * 10.0)).abs() < 1e-6, "{l}");
        assert_eq!(l["Y"].as_f64().unwrap(), 150000.0);
        assert_eq!(l["Timestamp"].as_u64().unwrap(), 1_730_000_000_000 + i as u64 * 100);
        assert_eq!(l["Battery"], 85);
        assert_eq!(l["IsMoving"], true);
        assert_eq!(l["SectorId"], 2);
    }
}

fn check_wire(twinzo: &TwinzoStandIn) {
    twinzo.with_recorded(|r| {
        let positions: usize = r.locations.values().map(Vec::len).sum();
        assert!(
            r.posts.len() < positions,
            "positions are batched per device: {} posts for {positions} positions",
            r.posts.len()
        );
        for (headers, body) in &r.posts {
            for name in ["Client", "Branch", "Token", "Api-Key"] {
                assert!(headers.contains_key(name), "missing header {name}");
            }
            assert!(!headers.contains_key("Authorization"));
            assert!(headers["content-type"].to_str().unwrap().starts_with("application/json"));
            assert!(body.is_array(), "the body is always an array");
        }
        assert!(r.auth_calls <= 6, "tokens are cached, not fetched per post: {} sign-ins", r.auth_calls);
    });
}

/// `edge sim --config` publishes the config's fleet to the config's broker; the command line
/// overrides the rate.
#[test]
fn edge_sim_publishes_the_configured_fleet_to_the_configured_broker() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sim.yaml");
    support::write_private(
        &config,
        format!(
            "simulator:\n  broker: 127.0.0.1:{}\n  fleet: line-2\n  rate_hz: 1\n  formats: [edge-sim]\n  robots:\n    - {{ name: amr-a, battery: 60, path: {{ loop: {{ center: [5, 5], radius: 2 }} }} }}\n    - {{ name: amr-b, battery: 40, path: {{ line: {{ from: [0, 0], to: [9, 0] }} }} }}\n",
            broker.port
        ),
    );
    let mut options = rumqttc::MqttOptions::new("sim-watcher", "127.0.0.1", broker.port);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut connection) = rumqttc::Client::new(options, 100);
    client.subscribe("#", rumqttc::QoS::AtMostOnce).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for event in connection.iter() {
            match event {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => tx.send(None).unwrap(),
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    let Ok(()) = tx.send(Some((p.topic, p.payload))) else { break };
                }
                Err(_) => break,
                _ => {}
            }
        }
    });
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), None, "subscribed");
    let mut sim = std::process::Command::new(env!("CARGO_BIN_EXE_edge"))
        .args(["sim", "--rate", "20", "--config"])
        .arg(&config)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    while started.elapsed() < Duration::from_secs(2) {
        if let Ok(Some((topic, payload))) = rx.recv_timeout(Duration::from_millis(100)) {
            let doc: Value = serde_json::from_slice(&payload).unwrap();
            assert_eq!(doc["format"], "edge-sim/1", "{doc}");
            *seen.entry(topic).or_default() += 1;
        }
    }
    sim.kill().unwrap();
    sim.wait().unwrap();
    assert_eq!(
        seen.keys().cloned().collect::<Vec<_>>(),
        ["edge-sim/line-2/amr-a/state", "edge-sim/line-2/amr-b/state"],
        "{seen:?}"
    );
    // --rate 20 for about 2 s, not the config's 1 Hz.
    assert!(seen.values().all(|n| *n >= 10), "{seen:?}");
}
