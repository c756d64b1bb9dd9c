//! The MQTT side of `edge run` against a real mosquitto: TLS (CA, client certificates,
//! wrong CA, insecure), broker restarts, refused subscriptions, and session takeover.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;
use support::mosquitto::Mosquitto;
use support::mqtt::Publisher;
use support::ports::free_port;
use support::process::{EdgeProcess, eventually, http_get, wait_subscribed};
use support::tls::TestCa;

const WAIT: Duration = Duration::from_secs(30);

/// A config with one HiTech source (its `mqtt:` block given) feeding a dry-run plant.
fn config(dir: &Path, mqtt: &str, http: u16) -> PathBuf {
    let yaml = format!(
        r#"state_dir: {state}
http: {{ listen: "127.0.0.1:{http}" }}
sources:
  - name: amr
    mqtt: {mqtt}
    plugin: {{ path: {plugin} }}
    plant: p
    transform: {{ affine: [1000, 0, 0, 1000, 0, 0] }}
plants:
  - name: p
    dry_run: true
    batching: {{ flush_interval_ms: 50 }}
    devices:
      r1: {{ sector: 1 }}
"#,
        state = dir.join("state").display(),
        plugin = support::plugin("hitech").display()
    );
    let path = dir.join("edge.yaml");
    support::write_private(&path, yaml);
    path
}

fn publish(port: u16, n: u64, from: u64) {
    let mut publisher = Publisher::connect(port, &format!("pub-{from}"));
    for i in from..from + n {
        publisher.publish(
            "hitech/amr/r1/position",
            format!(
                r#"{{"device_id": "r1", "timestamp": {}, "position": {{"x": {i}, "y": 0}}}}"#,
                1_730_000_000_000u64 + i
            ),
        );
    }
    publisher.flush(WAIT);
}

/// Positions the dry-run plant has "posted", from /metrics.
fn posted(http: u16) -> u64 {
    let metrics = http_get(&format!("127.0.0.1:{http}"), "/metrics").1;
    metrics
        .lines()
        .find(|l| l.starts_with("edge_positions_posted_total{plant=\"p\",device=\"r1\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn tls_with_ca_and_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("edge test CA");
    let ca_file = ca.write_ca(dir.path(), "test");
    let (server_cert, server_key) = ca.issue(dir.path(), "server", &["localhost", "127.0.0.1"]);
    let (client_cert, client_key) = ca.issue(dir.path(), "client", &["edge-client"]);
    let broker = Mosquitto::with_config(&format!(
        "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
        ca_file.display(),
        server_cert.display(),
        server_key.display()
    ));
    let http = free_port();
    let mqtt = format!(
        "{{ host: localhost, port: {}, tls: {{ ca_file: {}, client_cert: {}, client_key: {} }} }}",
        broker.port,
        ca_file.display(),
        client_cert.display(),
        client_key.display()
    );
    let mut edge = EdgeProcess::start(&config(dir.path(), &mqtt, http));
    edge.wait_for_log("subscribed", WAIT);
    // The test publisher cannot speak TLS to this broker; the subscription is the proof,
    // so check what reached the broker: a verified TLS session with a client certificate.
    assert!(edge.log_text().contains("connected to MQTT broker"));
    assert!(!edge.log_text().contains("WITHOUT verifying"));
    assert!(edge.stop().success());
}

#[test]
fn tls_with_the_wrong_ca_is_refused_and_insecure_is_loud() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("real CA");
    let ca_file = ca.write_ca(dir.path(), "real");
    let other_ca = TestCa::new("some other CA").write_ca(dir.path(), "other");
    let (cert, key) = ca.issue(dir.path(), "server", &["localhost"]);
    let broker = Mosquitto::with_config(&format!(
        "cafile {}\ncertfile {}\nkeyfile {}\n",
        ca_file.display(),
        cert.display(),
        key.display()
    ));

    let wrong = format!("{{ host: localhost, port: {}, tls: {{ ca_file: {} }} }}", broker.port, other_ca.display());
    let wrong_dir = tempfile::tempdir().unwrap();
    let mut edge = EdgeProcess::start(&config(wrong_dir.path(), &wrong, free_port()));
    edge.wait_for_log("MQTT connection lost or refused", WAIT);
    assert!(!edge.log_text().contains("connected to MQTT broker"), "{}", edge.log_text());
    edge.stop();

    let insecure = format!("{{ host: localhost, port: {}, tls: {{ insecure: true }} }}", broker.port);
    let mut edge = EdgeProcess::start(&config(dir.path(), &insecure, free_port()));
    edge.wait_for_log("subscribed", WAIT);
    assert!(edge.log_text().contains("connected WITHOUT verifying the broker's certificate"), "{}", edge.log_text());
    edge.stop();
}

#[test]
fn broker_restart_reconnects_and_resubscribes() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Mosquitto::start();
    let http = free_port();
    let mqtt = format!("{{ host: 127.0.0.1, port: {}, protocol: \"5\" }}", broker.port);
    let mut edge = EdgeProcess::start(&config(dir.path(), &mqtt, http));
    let addr = format!("127.0.0.1:{http}");
    wait_subscribed(&addr, &["amr"], WAIT);
    publish(broker.port, 10, 0);
    eventually("10 positions before the restart", WAIT, || posted(http) == 10);

    broker.stop();
    eventually("the source shown down, with nothing subscribed", WAIT, || {
        let (status, body) = http_get(&addr, "/readyz");
        let ready: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        status == 503
            && ready["sources"]["amr"]["connected"] == false
            && ready["sources"]["amr"]["subscribed"] == serde_json::json!([])
    });
    broker.restart(Duration::from_secs(1));
    eventually("a second connection", WAIT, || edge.log_text().matches("connected to MQTT broker").count() >= 2);
    // The broker restarted without its sessions: what is published before edge has subscribed
    // again reaches nobody.
    wait_subscribed(&addr, &["amr"], WAIT);
    publish(broker.port, 10, 10);
    eventually("10 more positions after the restart", WAIT, || posted(http) == 20);
    assert!(edge.log_text().contains("MQTT connection lost or refused"));
    assert!(edge.stop().success());
}

#[test]
fn refused_subscription_names_topic_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    // mosquitto refuses subscriptions at SUBACK time only through its dynamic security
    // plugin: anonymous clients may subscribe to allowed/# and nothing else.
    let dynsec = dir.path().join("dynsec.json");
    std::fs::write(&dynsec, serde_json::json!({
        "defaultACLAccess": {"publishClientSend": true, "publishClientReceive": true, "subscribe": false, "unsubscribe": true},
        "clients": [],
        "groups": [{"groupname": "anonymous", "roles": [{"rolename": "reader"}], "clients": []}],
        "roles": [{"rolename": "reader", "acls": [{"acltype": "subscribePattern", "topic": "allowed/#", "priority": 0, "allow": true}]}],
        "anonymousGroup": "anonymous"
    }).to_string()).unwrap();
    let plugin = ["/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so", "/usr/lib/mosquitto_dynamic_security.so"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("mosquitto's dynamic security plugin ships with the Debian package");
    let broker = Mosquitto::with_config(&format!("plugin {plugin}\nplugin_opt_config_file {}\n", dynsec.display()));
    for (protocol, reason) in [("5", "reason 135 (not authorized)"), ("3.1.1", "reason 128 (failure)")] {
        let run_dir = tempfile::tempdir().unwrap();
        let http = free_port();
        let mqtt = format!(
            "{{ host: 127.0.0.1, port: {}, protocol: \"{protocol}\", topics: [\"forbidden/#\"] }}",
            broker.port
        );
        let mut edge = EdgeProcess::start(&config(run_dir.path(), &mqtt, http));
        edge.wait_for_log("refused the subscription", WAIT);
        let log = edge.log_text();
        assert!(log.contains(&format!("the broker refused the subscription to `forbidden/#`: {reason}")), "{log}");
        let (status, body) = http_get(&format!("127.0.0.1:{http}"), "/readyz");
        assert_eq!(status, 503, "not ready while a subscription is refused: {body}");
        assert!(body.contains("forbidden/#"), "{body}");
        edge.stop();
    }
}

#[test]
fn session_takeover_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start();
    let mqtt = format!("{{ host: 127.0.0.1, port: {}, protocol: \"5\", client_id: shared-id }}", broker.port);
    let mut edge = EdgeProcess::start(&config(dir.path(), &mqtt, free_port()));
    edge.wait_for_log("subscribed", WAIT);
    // Another client with the same id (a second bridge left running somewhere).
    let options = rumqttc::v5::MqttOptions::new("shared-id", "127.0.0.1", broker.port);
    let (_client, mut connection) = rumqttc::v5::Client::new(options, 10);
    std::thread::spawn(move || for _ in connection.iter().take(20) {});
    edge.wait_for_log("session takeover", WAIT);
    edge.stop();
}

/// `edge publish` sends a fixture folder, each case on its own topic, and fails clearly when
/// there is no broker.
#[test]
fn edge_publish_sends_fixtures_on_their_topics() {
    let broker = Mosquitto::start();
    let mut options = rumqttc::MqttOptions::new("publish-watcher", "127.0.0.1", broker.port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut connection) = rumqttc::Client::new(options, 64);
    client.subscribe("#", rumqttc::QoS::AtLeastOnce).unwrap();
    let (seen_tx, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for event in connection.iter() {
            match event {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => seen_tx.send(None).unwrap(),
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => seen_tx.send(Some(p.topic)).unwrap(),
                Err(_) => break,
                _ => {}
            }
        }
    });
    assert_eq!(seen.recv_timeout(WAIT).unwrap(), None, "subscribed");
    let fixtures = support::repo().join("plugins/ati-sherpa/fixtures");
    let cases = std::fs::read_dir(&fixtures)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().contains(".payload"))
        .count();
    let cache = tempfile::tempdir().unwrap();
    let out = support::edge(cache.path())
        .args(["publish", "--rate", "100", "--repeat", "2", "--broker", &format!("127.0.0.1:{}", broker.port)])
        .arg(&fixtures)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let topics: Vec<String> = (0..2 * cases).map(|_| seen.recv_timeout(WAIT).unwrap().unwrap()).collect();
    assert!(topics.iter().any(|t| t == "ati_fm/sherpa/status"), "{topics:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("published {} messages", 2 * cases)));

    let out = support::edge(cache.path())
        .args(["publish", "--topic", "t", "--broker", &format!("127.0.0.1:{}", free_port())])
        .arg(fixtures.join("live-full.payload.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot publish to 127.0.0.1:"));
}
