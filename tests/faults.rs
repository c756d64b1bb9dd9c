//! Fault injection with exact accounting. Each scenario streams positions from 3 robots through
//! a real mosquitto and `edge run` into the Twinzo stand-in, breaks something on the way, and
//! then checks that every position the broker accepted either reached the stand-in or sits in
//! the spool or its dead letters: lost must be 0. Duplicates (allowed by at-least-once) are
//! counted. Each scenario writes its row to target/reliability/, from which
//! `scripts/reliability-report` renders docs/reliability.md.

mod support;

use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::mosquitto::{Mosquitto, free_port};
use support::mqtt::Publisher;
use support::process::EdgeProcess;
use support::proxy::Proxy;
use support::tmpfs::Tmpfs;
use support::twinzo::{API_KEY, BRANCH_1, Device, Faults, TwinzoStandIn};

const ROBOTS: [&str; 3] = ["amr-1", "amr-2", "amr-3"];
const T0: u64 = 1_730_000_000_000;
const SETTLE: Duration = Duration::from_secs(90);

#[derive(Clone, Default)]
struct Options {
    /// Twinzo request timeout.
    timeout_ms: Option<u64>,
    hard_cap_mb: Option<u64>,
    /// Edge reaches the broker through a proxy that can be cut.
    proxy: bool,
    token_lifetime: Option<Duration>,
    /// The spool folder is a tmpfs of this many KiB: a disk that really fills up.
    spool_disk_kib: Option<u64>,
    min_free_mb: Option<u64>,
}

struct Harness {
    name: &'static str,
    broker: Mosquitto,
    proxy: Option<Proxy>,
    twinzo: TwinzoStandIn,
    // Before `dir`: unmounted before the folder is removed.
    _spool_disk: Option<Tmpfs>,
    dir: tempfile::TempDir,
    config: PathBuf,
    plugin: PathBuf,
    edge: Option<EdgeProcess>,
    sent: Arc<Mutex<BTreeSet<(String, u64)>>>,
    started: Instant,
}

impl Harness {
    fn new(name: &'static str, options: Options) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // mosquitto started as root drops to its own user: its database folder must be writable.
        let db = dir.path().join("mosquitto-db");
        std::fs::create_dir(&db).unwrap();
        std::fs::set_permissions(&db, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        // Unlimited queue per client: the broker must hold what edge does not take while it
        // holds intake (the default of 1000 would drop messages, not edge).
        let broker = Mosquitto::with_config(&format!(
            "persistence true\npersistence_location {}/\nmax_queued_messages 0\n",
            db.display()
        ));
        let devices: Vec<Device> = ROBOTS
            .iter()
            .map(|r| Device { login: r.to_string(), password: format!("pw-{r}"), branch: BRANCH_1.into() })
            .collect();
        let twinzo = TwinzoStandIn::start(&devices);
        if let Some(lifetime) = options.token_lifetime {
            twinzo.set_token_lifetime(lifetime);
        }
        let proxy = options.proxy.then(|| Proxy::start(broker.port));
        let _spool_disk = options.spool_disk_kib.map(|kib| Tmpfs::mount(&dir.path().join("state/spool"), kib).unwrap());
        let plugin = dir.path().join("hitech.wasm");
        std::fs::copy(support::plugin("hitech"), &plugin).unwrap();
        let port = proxy.as_ref().map_or(broker.port, |p| p.port);
        let devices: String =
            ROBOTS.iter().map(|r| format!("      {r}: {{ password: pw-{r}, sector: 1 }}\n")).collect();
        let yaml = format!(
            r#"state_dir: {state}
http: {{ listen: "127.0.0.1:{http}" }}
summary_interval_s: 2
spool: {{ replay_per_second: 400{cap} }}
sources:
  - name: amr
    mqtt: {{ host: 127.0.0.1, port: {port}, client_id: edge-faults, clean_start: false }}
    plugin: {{ path: {plugin} }}
    plant: p
    transform: {{ affine: [1000, 0, 0, 1000, 0, 0] }}
plants:
  - name: p
    twinzo: {{ base_url: "{url}", client: TVSMotor, api_key: {API_KEY}, branch: {BRANCH_1}, timeout_ms: {timeout} }}
    batching: {{ flush_interval_ms: 100, max_batch: 10 }}
    devices:
{devices}"#,
            state = dir.path().join("state").display(),
            http = free_port(),
            cap = [("hard_cap_mb", options.hard_cap_mb), ("min_free_mb", options.min_free_mb)]
                .iter()
                .filter_map(|(key, value)| value.map(|v| format!(", {key}: {v}")))
                .collect::<String>(),
            plugin = plugin.display(),
            url = twinzo.base_url(),
            timeout = options.timeout_ms.unwrap_or(5000),
        );
        let config = dir.path().join("edge.yaml");
        support::write_private(&config, yaml);
        let mut harness = Harness {
            name,
            broker,
            proxy,
            twinzo,
            _spool_disk,
            dir,
            config,
            plugin,
            edge: None,
            sent: Arc::default(),
            started: Instant::now(),
        };
        harness.start_edge();
        harness
    }

    fn start_edge(&mut self) {
        let edge = EdgeProcess::start(&self.config);
        // After a restart the broker still has the session: edge connects without resubscribing.
        edge.wait_for_log("connected to MQTT broker", Duration::from_secs(30));
        pause(300);
        self.edge = Some(edge);
    }

    fn edge(&self) -> &EdgeProcess {
        self.edge.as_ref().unwrap()
    }

    /// Publishes `per_robot` positions per robot at `rate_hz` each, in the background.
    fn stream(&self, per_robot: u64, rate_hz: f64, from: u64) -> std::thread::JoinHandle<()> {
        let (port, sent) = (self.broker.port, self.sent.clone());
        let client_id = format!("faults-publisher-{from}");
        std::thread::spawn(move || {
            let mut publisher = Publisher::connect(port, &client_id);
            let gap = Duration::from_secs_f64(1.0 / rate_hz);
            for i in from..from + per_robot {
                for robot in ROBOTS {
                    let payload = json!({"device_id": robot, "timestamp": T0 + i, "position": {"x": 1000 + i, "y": 500}, "battery": 70});
                    publisher.publish(&format!("hitech/amr/{robot}/position"), payload.to_string());
                    sent.lock().unwrap().insert((robot.to_string(), T0 + i));
                }
                std::thread::sleep(gap);
            }
            publisher.flush(Duration::from_secs(60));
        })
    }

    fn delivered(&self) -> BTreeMap<(String, u64), usize> {
        let mut seen = BTreeMap::new();
        self.twinzo.with_recorded(|r| {
            for (login, locations) in &r.locations {
                for l in locations {
                    *seen.entry((login.clone(), l["Timestamp"].as_u64().unwrap())).or_default() += 1;
                }
            }
        });
        seen
    }

    /// (queued, dead) positions in the spool file, by (robot, timestamp).
    fn spooled(&self) -> (BTreeSet<(String, u64)>, BTreeMap<(String, u64), String>) {
        let path = edge::spool::path_for(&self.dir.path().join("state"), "p");
        let db = rusqlite::Connection::open(path).unwrap();
        let queued = db
            .prepare("SELECT device, ts FROM queue")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let dead = db
            .prepare("SELECT device, ts, reason FROM dead_letter")
            .unwrap()
            .query_map([], |r| Ok(((r.get(0)?, r.get::<_, i64>(1)? as u64), r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        (queued, dead)
    }

    /// Waits until everything sent was delivered or dead-lettered.
    fn settle(&self) {
        let deadline = Instant::now() + SETTLE;
        loop {
            let sent = self.sent.lock().unwrap().clone();
            let delivered = self.delivered();
            let (_, dead) = self.spooled();
            if sent.iter().all(|k| delivered.contains_key(k) || dead.contains_key(k)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: not settled: {} sent, {} delivered, {} dead; log:\n{}",
                self.name,
                sent.len(),
                delivered.len(),
                dead.len(),
                self.edge().log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops edge and does the accounting; writes the report row.
    fn finish(mut self, fault: &str, duration: &str) -> Report {
        self.settle();
        let status = self.edge.as_mut().unwrap().stop();
        assert!(status.success(), "{}: edge exited with {status}", self.name);
        let log = self.edge().log_text();
        assert!(!log.contains(API_KEY) && !log.contains("pw-amr"), "{}: a secret leaked into the log", self.name);
        let sent = self.sent.lock().unwrap().clone();
        let delivered = self.delivered();
        let (queued, dead) = self.spooled();
        let report = Report {
            scenario: self.name.to_string(),
            fault: fault.to_string(),
            duration: duration.to_string(),
            sent: sent.len(),
            delivered: sent.iter().filter(|k| delivered.contains_key(*k)).count(),
            spooled: sent.iter().filter(|k| queued.contains(*k) && !delivered.contains_key(*k)).count(),
            dead_lettered: sent.iter().filter(|k| dead.contains_key(*k) && !delivered.contains_key(*k)).count(),
            duplicated: delivered.values().map(|n| n - 1).sum(),
            lost: sent
                .iter()
                .filter(|k| !delivered.contains_key(*k) && !queued.contains(*k) && !dead.contains_key(*k))
                .count(),
            seconds: self.started.elapsed().as_secs_f64(),
            dead_reasons: dead.values().cloned().collect::<BTreeSet<_>>().into_iter().collect(),
        };
        report.write();
        assert_eq!(report.lost, 0, "{}: positions lost", self.name);
        report
    }
}

#[derive(serde::Serialize, Debug)]
struct Report {
    scenario: String,
    fault: String,
    duration: String,
    sent: usize,
    delivered: usize,
    spooled: usize,
    dead_lettered: usize,
    duplicated: usize,
    lost: usize,
    seconds: f64,
    dead_reasons: Vec<String>,
}

impl Report {
    fn write(&self) {
        let dir = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| support::repo().join("target"))
            .join("reliability");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{}.json", self.scenario)), serde_json::to_string_pretty(self).unwrap())
            .unwrap();
    }
}

fn pause(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// The first positions after an outage: each robot's latest goes first, the backlog follows.
fn assert_latest_first(h: &Harness, outage_end: usize) {
    for robot in ROBOTS {
        let stamps: Vec<u64> = h.twinzo.locations(robot)[outage_end.min(h.twinzo.locations(robot).len())..]
            .iter()
            .map(|l| l["Timestamp"].as_u64().unwrap())
            .collect();
        assert!(
            stamps.windows(2).any(|w| w[0] > w[1]),
            "{robot}: after the outage the latest position should jump the queue: {stamps:?}"
        );
    }
}

#[test]
fn twinzo_down() {
    let h = Harness::new("twinzo-down", Options::default());
    let traffic = h.stream(60, 10.0, 0);
    pause(1500);
    let before: usize = ROBOTS.iter().map(|r| h.twinzo.locations(r).len()).min().unwrap();
    h.twinzo.go_down();
    pause(4000);
    h.twinzo.come_back();
    traffic.join().unwrap();
    h.settle();
    assert_latest_first(&h, before);
    assert!(h.edge().log_text().contains("posting to Twinzo works again"));
    h.finish("Twinzo down (connection refused)", "4 s").print();
}

#[test]
fn twinzo_slow() {
    let h = Harness::new("twinzo-slow", Options { timeout_ms: Some(800), ..Options::default() });
    let traffic = h.stream(60, 10.0, 0);
    pause(1500);
    h.twinzo.set_faults(Faults { delay: Some(Duration::from_millis(1500)), ..Faults::default() });
    pause(3000);
    h.twinzo.set_faults(Faults::default());
    traffic.join().unwrap();
    h.finish("Twinzo slower than the 800 ms timeout", "3 s").print();
}

#[test]
fn twinzo_503_burst() {
    let h = Harness::new("twinzo-503", Options::default());
    let traffic = h.stream(60, 10.0, 0);
    pause(1500);
    h.twinzo.set_faults(Faults { unavailable_posts: 15, ..Faults::default() });
    traffic.join().unwrap();
    h.finish("15 posts in a row answered 503", "burst").print();
}

#[test]
fn twinzo_success_false() {
    let h = Harness::new("twinzo-success-false", Options::default());
    let traffic = h.stream(60, 10.0, 0);
    pause(1500);
    h.twinzo.set_faults(Faults { success_false: true, ..Faults::default() });
    pause(2000);
    h.twinzo.set_faults(Faults::default());
    traffic.join().unwrap();
    h.settle();
    let (_, dead) = h.spooled();
    assert!(!dead.is_empty() && dead.values().all(|r| r == "success-false"), "{dead:?}");
    // The operator fixes the cause and puts the dead letters back.
    let retry = std::process::Command::new(env!("CARGO_BIN_EXE_edge"))
        .args(["spool", "--config"])
        .arg(&h.config)
        .arg("retry")
        .output()
        .unwrap();
    assert!(retry.status.success(), "{}", String::from_utf8_lossy(&retry.stderr));
    let delivered_before = h.delivered().len();
    support::process::eventually("the retried dead letters", SETTLE, || {
        let (queued, dead) = h.spooled();
        queued.is_empty() && dead.is_empty() && h.delivered().len() > delivered_before
    });
    let report = h.finish("200 with Success:false, then `edge spool retry`", "2 s");
    assert_eq!(report.dead_lettered, 0);
    assert_eq!(report.delivered, report.sent);
    report.print();
}

#[test]
fn tokens_revoked() {
    let h = Harness::new("tokens-revoked", Options::default());
    let traffic = h.stream(60, 10.0, 0);
    for _ in 0..3 {
        pause(1500);
        h.twinzo.revoke_tokens();
    }
    traffic.join().unwrap();
    h.finish("every token revoked (401), three times", "instant").print();
}

#[test]
fn tokens_expiring() {
    let h = Harness::new(
        "tokens-expiring",
        Options { token_lifetime: Some(Duration::from_millis(1500)), ..Options::default() },
    );
    let traffic = h.stream(60, 10.0, 0);
    traffic.join().unwrap();
    let auth_calls = h.twinzo.with_recorded(|r| r.auth_calls);
    assert!(auth_calls >= 6, "tokens of 1.5 s are renewed: {auth_calls} sign-ins");
    h.finish("tokens expiring every 1.5 s", "6 s").print();
}

#[test]
fn auth_endpoint_down() {
    let h = Harness::new("auth-down", Options::default());
    let traffic = h.stream(60, 10.0, 0);
    pause(1500);
    let calls_before = h.twinzo.with_recorded(|r| r.auth_calls);
    h.twinzo.set_faults(Faults { auth_down: true, ..Faults::default() });
    h.twinzo.revoke_tokens();
    pause(4000);
    let calls_during = h.twinzo.with_recorded(|r| r.auth_calls) - calls_before;
    h.twinzo.set_faults(Faults::default());
    traffic.join().unwrap();
    // 3 devices for 4 s: backoff, not a sign-in per post.
    assert!(calls_during <= 3 * 5, "{calls_during} sign-in attempts in 4 s");
    h.finish("tokens revoked and sign-in refused", "4 s").print();
}

#[test]
fn broker_restart() {
    let mut h = Harness::new("broker-restart", Options::default());
    // A burst the broker has accepted but edge has not finished taking when the broker
    // restarts: the broker keeps it in edge's persistent session.
    h.stream(300, 2000.0, 0).join().unwrap();
    h.broker.restart_gracefully(Duration::from_millis(1500));
    h.stream(30, 10.0, 300).join().unwrap();
    h.finish("broker restarted mid-stream (persistent sessions)", "1.5 s").print();
}

#[test]
fn network_drop() {
    let h = Harness::new("network-drop", Options { proxy: true, ..Options::default() });
    let traffic = h.stream(60, 10.0, 0);
    pause(2000);
    h.proxy.as_ref().unwrap().cut();
    pause(2000);
    h.proxy.as_ref().unwrap().restore();
    traffic.join().unwrap();
    h.finish("network between edge and broker dropped", "2 s").print();
}

#[test]
fn sigkill_under_load() {
    let mut h = Harness::new("sigkill", Options::default());
    let traffic = h.stream(200, 20.0, 0);
    // At different points of the spool's life: while positions arrive, while a backlog from
    // the previous kill is being replayed.
    for down_ms in [1000, 300, 2000] {
        pause(1500);
        let pid = h.edge().pid();
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        drop(h.edge.take());
        pause(down_ms);
        h.start_edge();
    }
    traffic.join().unwrap();
    h.finish("edge killed with SIGKILL under load, restarted; three times", "0.3–2 s each").print();
}

#[test]
fn disk_full() {
    let h = Harness::new("disk-full", Options { hard_cap_mb: Some(1), ..Options::default() });
    fill_then_drain(h, "cannot write the spool; holding intake", "spool full (1 MB cap) while Twinzo was down");
}

/// While Twinzo is down, streams faster than the spool can hold until `full_line` shows it
/// holding intake; then Twinzo comes back and everything drains.
fn fill_then_drain(h: Harness, full_line: &str, fault: &str) {
    h.twinzo.go_down();
    let traffic = h.stream(3000, 500.0, 0);
    support::process::eventually("the spool to fill", SETTLE, || h.edge().log_text().contains(full_line));
    pause(1000);
    h.twinzo.come_back();
    traffic.join().unwrap();
    h.settle();
    h.edge().wait_for_log("spool writable again", Duration::from_secs(20));
    h.finish(fault, "until drained").print();
}

/// Whether this machine lets the tests mount a tmpfs (a disk that really fills up); says why not.
fn tmpfs_available(test: &str) -> bool {
    let probe = tempfile::tempdir().unwrap();
    match Tmpfs::mount(probe.path(), 64) {
        Ok(_) => true,
        Err(why) => {
            eprintln!("{test}: not run here: {why}");
            false
        }
    }
}

/// The spool fills its own filesystem: it stops taking positions while less than
/// `spool.min_free_mb` is free, goes on delivering, gives the space back, and takes again.
#[test]
fn spool_filesystem_full() {
    if !tmpfs_available("spool_filesystem_full") {
        return;
    }
    let h = Harness::new(
        "spool-filesystem-full",
        Options { spool_disk_kib: Some(4096), min_free_mb: Some(2), ..Options::default() },
    );
    fill_then_drain(
        h,
        "less than spool.min_free_mb",
        "spool's filesystem full (4 MB, keep 2 MB free) while Twinzo was down",
    );
}

/// Another program fills the disk to the last byte: nothing more is taken, delivery and its
/// deletes go on (the write-ahead log is reused in place), no position is posted twice, and
/// intake resumes once space is freed.
#[test]
fn disk_filled_by_another_program() {
    if !tmpfs_available("disk_filled_by_another_program") {
        return;
    }
    let h =
        Harness::new("disk-filled", Options { spool_disk_kib: Some(4096), min_free_mb: Some(1), ..Options::default() });
    let traffic = h.stream(60, 10.0, 0);
    pause(1500);
    // A backlog to deliver while the disk is full.
    h.twinzo.go_down();
    pause(1500);
    let filler = fill_disk(&h.dir.path().join("state/spool"));
    h.edge().wait_for_log("cannot write the spool; holding intake", Duration::from_secs(10));
    h.twinzo.come_back();
    pause(2000);
    std::fs::remove_file(filler).unwrap();
    traffic.join().unwrap();
    h.settle();
    h.edge().wait_for_log("spool writable again", Duration::from_secs(20));
    let report = h.finish("disk filled to the last byte by another program, then freed", "2 s");
    assert_eq!(report.duplicated, 0, "delivered positions were posted again");
    report.print();
}

/// Writes a file into `dir` until its filesystem has no byte left.
fn fill_disk(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    for chunk in [1 << 16, 1 << 12, 1 << 9] {
        while file.write(&vec![0u8; chunk]).is_ok_and(|n| n > 0) {}
    }
    path
}

#[test]
fn plugin_swap_and_broken_plugin_under_load() {
    let h = Harness::new("plugin-swap", Options::default());
    let original = std::fs::read(&h.plugin).unwrap();
    let traffic = h.stream(60, 10.0, 0);
    pause(1500);
    replace(&h.plugin, &support::wasm_variant(&original, 1));
    h.edge().wait_for_log("plugin loaded; new messages use it", Duration::from_secs(10));
    pause(1000);
    replace(&h.plugin, &original[..original.len() / 2]);
    h.edge().wait_for_log("rejected the new plugin file", Duration::from_secs(10));
    traffic.join().unwrap();
    h.finish("plugin replaced, then a truncated plugin dropped in", "under load").print();
}

fn replace(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

impl Report {
    fn print(&self) {
        println!("{self:?}");
    }
}
