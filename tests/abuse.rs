//! Abuse through `edge run`: a hostile plugin beside a good one, payloads too large for the
//! broker connection, and a pinned plugin replaced by another file. The host stays up, the
//! good source keeps delivering, and each case is reported.

mod support;

use std::path::Path;
use std::time::Duration;
use support::mosquitto::Mosquitto;
use support::mqtt::Publisher;
use support::ports::free_port;
use support::process::{EdgeProcess, eventually, http_get, wait_subscribed};
use support::twinzo::{API_KEY, BRANCH_1, Device, TwinzoStandIn};

const WAIT: Duration = Duration::from_secs(30);

fn config(dir: &Path, broker: u16, twinzo: &str, http: u16, sources: &str) -> std::path::PathBuf {
    let yaml = format!(
        r#"state_dir: {state}
http: {{ listen: "127.0.0.1:{http}" }}
sources:
{sources}
plants:
  - name: p
    twinzo: {{ base_url: "{twinzo}", client: TVSMotor, api_key: {API_KEY}, branch: {BRANCH_1} }}
    batching: {{ flush_interval_ms: 50 }}
    devices:
      amr-1: {{ password: pw-1, sector: 1 }}
"#,
        state = dir.join("state").display(),
    );
    let path = dir.join("edge.yaml");
    support::write_private(&path, yaml.replace("{broker}", &broker.to_string()));
    path
}

fn source(name: &str, plugin: &Path, extra: &str) -> String {
    format!(
        "  - name: {name}\n    mqtt: {{ host: 127.0.0.1, port: {{broker}}, client_id: edge-{name}{extra} }}\n    plugin: {{ path: {} }}\n    plant: p\n    transform: {{ affine: [1000, 0, 0, 1000, 0, 0] }}\n",
        plugin.display()
    )
}

fn amr(i: u64) -> String {
    format!(r#"{{"device_id": "amr-1", "timestamp": {}, "position": {{"x": {i}, "y": 0}}}}"#, 1_730_000_000_000u64 + i)
}

fn twinzo() -> TwinzoStandIn {
    TwinzoStandIn::start(&[Device { login: "amr-1".into(), password: "pw-1".into(), branch: BRANCH_1.into() }])
}

#[test]
fn a_hostile_plugin_does_not_disturb_its_neighbour() {
    let (broker, twinzo, dir, http) = (Mosquitto::start(), twinzo(), tempfile::tempdir().unwrap(), free_port());
    let sources = source("hostile", &support::plugin("hostile"), ", topics: [\"hostile/#\"]")
        + &source("amr", &support::plugin("hitech"), "");
    let mut edge = EdgeProcess::start(&config(dir.path(), broker.port, &twinzo.base_url(), http, &sources));
    let addr = format!("127.0.0.1:{http}");
    wait_subscribed(&addr, &["hostile", "amr"], WAIT);

    let mut publisher = Publisher::connect(broker.port, "abuser");
    let abuse = ["loop", "alloc", "recurse", "panic", "huge:5000", "log:20000", "nan", "not even json"];
    for i in 0..50 {
        publisher.publish("hitech/amr/amr-1/position", amr(i));
        if let Some(payload) = abuse.get(i as usize % 10) {
            publisher.publish("hostile/x", *payload);
        }
    }
    publisher.flush(WAIT);
    twinzo.wait_for("every position of the good source", WAIT, |r| r.locations.get("amr-1").map_or(0, Vec::len) == 50);

    eventually("every hostile case reported", WAIT, || edge.log_text().contains("unknown misbehaviour"));
    let log = edge.log_text();
    for cause in [
        "exceeded its CPU deadline",
        "memory limit of 64 MiB exceeded",
        "panicked: ",
        "5000 positions from one message",
        "x is not a finite number",
    ] {
        assert!(log.contains(cause), "no report of {cause:?}:\n{log}");
    }
    assert!(log.contains("stack overflow") || log.contains("out of bounds"), "no report of the deep recursion:\n{log}");
    let metrics = http_get(&format!("127.0.0.1:{http}"), "/metrics").1;
    assert!(
        metrics.contains("edge_plugin_errors_total{plugin=\"hostile\",source=\"hostile\",kind=\"trapped\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("edge_plugin_errors_total{plugin=\"hostile\",source=\"hostile\",kind=\"invalid-output\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("edge_plugin_log_suppressed_total{plugin=\"hostile\"}"),
        "the log flood was rate-limited: {metrics}"
    );
    assert!(log.matches("log flood line").count() <= 25, "plugin logs are rate-limited");
    assert_eq!(http_get(&format!("127.0.0.1:{http}"), "/healthz").0, 200);
    assert!(edge.stop().success());
}

#[test]
fn an_oversized_payload_is_refused_and_intake_goes_on() {
    // MQTT 5 tells the broker the limit; MQTT 3.1.1 cannot, so edge takes the message once, to
    // drop it and acknowledge it, instead of reconnecting forever.
    for protocol in ["5", "3.1.1"] {
        let (broker, twinzo, dir, http) = (Mosquitto::start(), twinzo(), tempfile::tempdir().unwrap(), free_port());
        let extra = format!(", protocol: \"{protocol}\", max_packet_bytes: 65536");
        let sources = source("amr", &support::plugin("hitech"), &extra);
        let mut edge = EdgeProcess::start(&config(dir.path(), broker.port, &twinzo.base_url(), http, &sources));
        edge.wait_for_log("subscribed", WAIT);
        let mut publisher = Publisher::connect(broker.port, "big");
        publisher.publish("hitech/amr/amr-1/position", amr(0));
        let huge =
            format!(r#"{{"device_id": "amr-1", "junk": "{}", "position": {{"x": 1, "y": 1}}}}"#, "x".repeat(2 << 20));
        publisher.publish("hitech/amr/amr-1/position", huge);
        for i in 1..20 {
            publisher.publish("hitech/amr/amr-1/position", amr(i));
        }
        publisher.flush(WAIT);
        // Distinct ones: the reconnect over 3.1.1 may deliver an unacknowledged one again.
        twinzo.wait_for(&format!("MQTT {protocol}: the normal positions around the huge one"), WAIT, |r| {
            r.stamps.get("amr-1").map_or(0, |s| s.iter().collect::<std::collections::BTreeSet<_>>().len()) == 20
        });
        if protocol == "3.1.1" {
            let (_, metrics) = http_get(&format!("127.0.0.1:{http}"), "/metrics");
            assert!(
                metrics.lines().any(|l| l.starts_with("edge_messages_dropped_total")
                    && l.contains("oversized")
                    && l.ends_with(" 1")),
                "{metrics}"
            );
        }
        assert_eq!(http_get(&format!("127.0.0.1:{http}"), "/healthz").0, 200);
        assert!(edge.stop().success());
    }
}

#[test]
fn a_pinned_plugin_is_not_replaced_by_another_file() {
    let (broker, twinzo, dir, http) = (Mosquitto::start(), twinzo(), tempfile::tempdir().unwrap(), free_port());
    let plugin = dir.path().join("hitech.wasm");
    let original = std::fs::read(support::plugin("hitech")).unwrap();
    std::fs::write(&plugin, &original).unwrap();
    let digest = edge::plugin::sha256_hex(&original);
    let sources = source("amr", &plugin, "").replace(
        &format!("path: {} }}", plugin.display()),
        &format!("path: {}, sha256: {digest} }}", plugin.display()),
    );
    let mut edge = EdgeProcess::start(&config(dir.path(), broker.port, &twinzo.base_url(), http, &sources));
    edge.wait_for_log("subscribed", WAIT);

    // Someone drops another build on the box.
    let tmp = dir.path().join("hitech.tmp");
    std::fs::write(&tmp, support::wasm_variant(&original, 7)).unwrap();
    std::fs::rename(&tmp, &plugin).unwrap();
    edge.wait_for_log("but edge.yaml pins", WAIT);
    assert!(edge.log_text().contains("rejected the new plugin file, keeping the running version"));

    let mut publisher = Publisher::connect(broker.port, "pin");
    for i in 0..10 {
        publisher.publish("hitech/amr/amr-1/position", amr(i));
    }
    publisher.flush(WAIT);
    twinzo
        .wait_for("positions through the pinned plugin", WAIT, |r| r.locations.get("amr-1").map_or(0, Vec::len) == 10);
    assert!(edge.stop().success());

    // Started with a file that does not match the pin, the source does not start.
    let mut edge = EdgeProcess::start(&dir.path().join("edge.yaml"));
    edge.wait_for_log("cannot load the plugin; the source waits for a good file", WAIT);
    assert!(!edge.log_text().contains("subscribed"));
    edge.stop();
}
