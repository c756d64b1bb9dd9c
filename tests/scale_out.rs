//! Scaling out through the plant's broker: two `edge` instances in one MQTT share group
//! (`mqtt.share_group`) on a real mosquitto split one feed. Each message is handled by one of
//! them, and when one is killed and restarted (as systemd does) nothing is lost: mosquitto
//! keeps the killed instance's share in its persistent session until it is back. Counted at
//! the Twinzo stand-in.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;
use support::mosquitto::Mosquitto;
use support::mqtt::Publisher;
use support::ports::free_port;
use support::process::{EdgeProcess, eventually, get_json};
use support::twinzo::{API_KEY, BRANCH_1, Device, TwinzoStandIn};

const ROBOTS: usize = 20;
const T0: u64 = 1_790_000_000_000;

fn robot(i: usize) -> String {
    format!("amr-{i:02}")
}

/// One instance's config: its own state folder, HTTP port and client id, the shared group.
fn config(dir: &Path, instance: &str, broker: u16, twinzo: &str, http: u16) -> PathBuf {
    let devices: String = (0..ROBOTS).map(|i| format!("      {}: {{ password: pw, sector: 1 }}\n", robot(i))).collect();
    let yaml = format!(
        r#"state_dir: {state}
http: {{ listen: "127.0.0.1:{http}" }}
sources:
  - name: hitech
    mqtt: {{ host: 127.0.0.1, port: {broker}, protocol: "5", client_id: edge-hitech-{instance}, share_group: plant-1 }}
    plugin: {{ path: {plugin} }}
    plant: p
    transform: {{ affine: [1000, 0, 0, 1000, 0, 0] }}
plants:
  - name: p
    twinzo: {{ base_url: "{twinzo}", client: TVSMotor, api_key: {API_KEY}, branch: {BRANCH_1} }}
    devices:
{devices}"#,
        state = dir.join(format!("state-{instance}")).display(),
        plugin = support::plugin("hitech").display(),
    );
    let path = dir.join(format!("edge-{instance}.yaml"));
    support::write_private(&path, yaml);
    path
}

/// Messages the instance has taken from the broker, and whether it subscribed in the group.
fn taken(http: u16) -> (u64, bool) {
    let view = get_json(&format!("127.0.0.1:{http}"), "/api/sources");
    let source = &view["sources"][0];
    let shared = source["subscribed"]
        .as_array()
        .is_some_and(|t| t.iter().any(|t| t.as_str().is_some_and(|t| t.starts_with("$share/plant-1/hitech/"))));
    (source["messages"].as_u64().unwrap_or(0), shared)
}

fn publish(publisher: &mut Publisher, from: u64, to: u64) {
    for i in from..to {
        for r in 0..ROBOTS {
            let payload = serde_json::json!({"device_id": robot(r), "timestamp": T0 + i, "position": {"x": 1000 + i, "y": r * 1000}, "battery": 60});
            publisher.publish(&format!("hitech/amr/{}/position", robot(r)), payload.to_string());
        }
    }
}

#[test]
fn two_instances_in_a_share_group_split_a_feed_and_lose_nothing_when_one_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::persistent(dir.path());
    let devices: Vec<Device> =
        (0..ROBOTS).map(|i| Device { login: robot(i), password: "pw".into(), branch: BRANCH_1.into() }).collect();
    let twinzo = TwinzoStandIn::start(&devices);
    let (http_a, http_b) = (free_port(), free_port());
    let config_a = config(dir.path(), "a", broker.port, &twinzo.base_url(), http_a);
    let config_b = config(dir.path(), "b", broker.port, &twinzo.base_url(), http_b);
    let mut a = EdgeProcess::start(&config_a);
    let mut b = EdgeProcess::start(&config_b);
    for http in [http_a, http_b] {
        eventually("both instances subscribed in the group", Duration::from_secs(30), || taken(http).1);
    }

    // Split: every message handled once, by one of the two.
    let mut publisher = Publisher::connect(broker.port, "share-publisher");
    publish(&mut publisher, 0, 50);
    publisher.flush(Duration::from_secs(20));
    let sent = 50 * ROBOTS;
    twinzo.wait_for("the first messages", Duration::from_secs(30), |r| {
        r.stamps.values().map(Vec::len).sum::<usize>() >= sent
    });
    std::thread::sleep(Duration::from_millis(500));
    let seen = twinzo.arrivals();
    assert_eq!((seen.len(), seen.values().filter(|n| **n > 1).count()), (sent, 0), "each once");
    eventually("the fleet views counted", Duration::from_secs(5), || taken(http_a).0 + taken(http_b).0 >= sent as u64);
    let (by_a, by_b) = (taken(http_a).0, taken(http_b).0);
    assert_eq!(by_a + by_b, sent as u64, "each message taken by one instance");
    assert!(by_a >= sent as u64 / 5 && by_b >= sent as u64 / 5, "both took a share: {by_a} and {by_b}");

    // One instance killed mid-stream and restarted: its share waits in its session.
    let publishing = std::thread::spawn(move || {
        for step in 0..30u64 {
            publish(&mut publisher, 50 + step * 5, 55 + step * 5);
            std::thread::sleep(Duration::from_millis(100));
        }
        publisher.flush(Duration::from_secs(30));
    });
    std::thread::sleep(Duration::from_millis(800));
    unsafe { libc::kill(a.pid() as i32, libc::SIGKILL) };
    drop(a);
    std::thread::sleep(Duration::from_secs(2));
    a = EdgeProcess::start(&config_a);
    publishing.join().unwrap();
    let sent = 200 * ROBOTS;
    twinzo.wait_for("every message", Duration::from_secs(60), |r| {
        let mut unique: Vec<(&String, &u64)> =
            r.stamps.iter().flat_map(|(l, s)| s.iter().map(move |t| (l, t))).collect();
        unique.sort_unstable();
        unique.dedup();
        unique.len() >= sent
    });
    let seen = twinzo.arrivals();
    assert_eq!(seen.len(), sent, "none lost");
    // At least once: what the killed instance had written but not yet acknowledged comes again.
    let twice = seen.values().filter(|n| **n > 1).count();
    assert!(twice <= 1024, "duplicates only from the kill: {twice}");
    assert!(a.stop().success() && b.stop().success());
}
