//! Fault injection with exact accounting. Each scenario streams positions from robots (3 unless
//! it says otherwise) through a real mosquitto and `edge run` with the shipped defaults into
//! the Twinzo stand-in, breaks something on the way, and then checks that every position the
//! broker accepted either reached the stand-in or sits in the spool or its dead letters: lost
//! must be 0. Duplicates (allowed by at-least-once) are counted. Each scenario writes its row
//! to target/reliability/, from which `scripts/reliability-report` renders docs/reliability.md.

mod support;

use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::mosquitto::Mosquitto;
use support::mqtt::Publisher;
use support::ports::free_port;
use support::process::EdgeProcess;
use support::proxy::Proxy;
use support::tmpfs::Tmpfs;
use support::twinzo::{API_KEY, BRANCH_1, Device, Faults, TwinzoStandIn};

const T0: u64 = 1_730_000_000_000;

/// The vendor timestamp of a robot's `i`-th position: 10 Hz, as the fleets publish.
fn stamp(i: u64) -> u64 {
    T0 + i * 100
}
const SETTLE: Duration = Duration::from_secs(90);
/// SIGTERM must end edge within this, whatever it holds (the budget is 10 s; the rest is slack
/// for a busy machine).
const STOP_WITHIN: Duration = Duration::from_secs(15);

#[derive(Clone, Default)]
struct Options {
    /// Robots streaming (default 3).
    robots: Option<usize>,
    /// A second source runs the hostile plugin on `hostile/#`.
    hostile_source: bool,
    /// A second plant `q` (robot `q-1`, source on `site-q/#`) whose spool cannot be opened.
    broken_plant: bool,
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

/// A position in the spool: (robot, timestamp).
type Spooled = (String, u64);

struct Harness {
    name: &'static str,
    robots: Vec<String>,
    http_port: u16,
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
    /// The sources edge runs, by name.
    sources: Vec<&'static str>,
}

impl Harness {
    fn new(name: &'static str, options: Options) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let broker = Mosquitto::persistent(dir.path());
        let robots: Vec<String> = (1..=options.robots.unwrap_or(3)).map(|i| format!("amr-{i}")).collect();
        let logins = robots.iter().cloned().chain(options.broken_plant.then(|| "q-1".to_string()));
        let devices: Vec<Device> =
            logins.map(|r| Device { password: format!("pw-{r}"), login: r, branch: BRANCH_1.into() }).collect();
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
            robots.iter().map(|r| format!("      {r}: {{ password: pw-{r}, sector: 1 }}\n")).collect();
        let twinzo_line = format!(
            r#"twinzo: {{ base_url: "{url}", client: TVSMotor, api_key: {API_KEY}, branch: {BRANCH_1}, timeout_ms: {timeout} }}"#,
            url = twinzo.base_url(),
            timeout = options.timeout_ms.unwrap_or(5000),
        );
        let mut extra_sources = String::new();
        let mut extra_plants = String::new();
        if options.hostile_source {
            let hostile = dir.path().join("hostile.wasm");
            std::fs::copy(support::plugin("hostile"), &hostile).unwrap();
            extra_sources += &format!(
                "  - name: hostile\n    mqtt: {{ host: 127.0.0.1, port: {port} }}\n    plugin: {{ path: {} }}\n    plant: p\n    transform: {{ affine: [1000, 0, 0, 1000, 0, 0] }}\n",
                hostile.display()
            );
        }
        if options.broken_plant {
            extra_sources += &format!(
                "  - name: q-src\n    mqtt: {{ host: 127.0.0.1, port: {port}, topics: [\"site-q/#\"] }}\n    plugin: {{ path: {} }}\n    plant: q\n    transform: {{ affine: [1000, 0, 0, 1000, 0, 0] }}\n",
                plugin.display()
            );
            extra_plants =
                format!("  - name: q\n    {twinzo_line}\n    devices:\n      q-1: {{ password: pw-q-1, sector: 1 }}\n");
            // A folder where the spool file should be: SQLite cannot open it.
            std::fs::create_dir_all(edge::spool::path_for(&dir.path().join("state"), "q")).unwrap();
        }
        let http_port = free_port();
        // The shipped defaults for the MQTT session (persistent, stable client id) and batching.
        let yaml = format!(
            r#"state_dir: {state}
http: {{ listen: "127.0.0.1:{http}" }}
summary_interval_s: 2
spool: {{ replay_per_second: 400{cap} }}
sources:
  - name: amr
    mqtt: {{ host: 127.0.0.1, port: {port}, topics: ["hitech/amr/#"] }}
    plugin: {{ path: {plugin} }}
    plant: p
    transform: {{ affine: [1000, 0, 0, 1000, 0, 0] }}
{extra_sources}plants:
  - name: p
    {twinzo_line}
    devices:
{devices}{extra_plants}"#,
            state = dir.path().join("state").display(),
            http = http_port,
            cap = [("hard_cap_mb", options.hard_cap_mb), ("min_free_mb", options.min_free_mb)]
                .iter()
                .filter_map(|(key, value)| value.map(|v| format!(", {key}: {v}")))
                .collect::<String>(),
            plugin = plugin.display(),
        );
        let config = dir.path().join("edge.yaml");
        support::write_private(&config, yaml);
        let mut harness = Harness {
            name,
            robots,
            http_port,
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
            sources: [
                Some("amr"),
                options.hostile_source.then_some("hostile"),
                options.broken_plant.then_some("q-src"),
            ]
            .into_iter()
            .flatten()
            .collect(),
        };
        harness.start_edge();
        harness
    }

    fn start_edge(&mut self) {
        let edge = EdgeProcess::start(&self.config);
        edge.wait_for_log("connected to MQTT broker", Duration::from_secs(30));
        // Only needed at the first start: after a restart the broker still has the session.
        support::process::wait_subscribed(&self.http_addr(), &self.sources, Duration::from_secs(30));
        self.edge = Some(edge);
    }

    fn http_addr(&self) -> String {
        format!("127.0.0.1:{}", self.http_port)
    }

    fn edge(&self) -> &EdgeProcess {
        self.edge.as_ref().unwrap()
    }

    /// Publishes `per_robot` positions per robot at `rate_hz` each, in the background.
    fn stream(&self, per_robot: u64, rate_hz: f64, from: u64) -> std::thread::JoinHandle<()> {
        self.stream_to(self.robots.clone(), "hitech/amr", per_robot, rate_hz, from)
    }

    fn stream_to(
        &self,
        robots: Vec<String>,
        prefix: &str,
        per_robot: u64,
        rate_hz: f64,
        from: u64,
    ) -> std::thread::JoinHandle<()> {
        let (port, sent, prefix) = (self.broker.port, self.sent.clone(), prefix.to_string());
        let client_id = format!("faults-publisher-{prefix}-{from}");
        std::thread::spawn(move || {
            let mut publisher = Publisher::connect(port, &client_id);
            let gap = Duration::from_secs_f64(1.0 / rate_hz);
            for i in from..from + per_robot {
                for robot in &robots {
                    let payload = json!({"device_id": robot, "timestamp": stamp(i), "position": {"x": 1000 + i, "y": 500}, "battery": 70});
                    publisher.publish(&format!("{prefix}/{robot}/position"), payload.to_string());
                    sent.lock().unwrap().insert((robot.to_string(), stamp(i)));
                }
                std::thread::sleep(gap);
            }
            publisher.flush(Duration::from_secs(120));
        })
    }

    /// SIGTERM, as an operator or systemd would: edge must be gone within [`STOP_WITHIN`].
    fn stop_edge(&mut self) -> Duration {
        let started = Instant::now();
        let status = self.edge.as_mut().unwrap().stop();
        let took = started.elapsed();
        assert!(status.success(), "{}: edge exited with {status}", self.name);
        assert!(took < STOP_WITHIN, "{}: edge took {took:?} to stop", self.name);
        self.edge = None;
        took
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
    fn spooled(&self) -> (BTreeSet<Spooled>, BTreeMap<Spooled, String>) {
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
        self.settle_within(SETTLE);
    }

    fn settle_within(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
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
        let log_path = self.edge().log.clone();
        self.stop_edge();
        let log = std::fs::read_to_string(log_path).unwrap_or_default();
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
    for robot in &h.robots {
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
    let traffic = h.stream(240, 20.0, 0);
    pause(1500);
    let before: usize = h.robots.iter().map(|r| h.twinzo.locations(r).len()).min().unwrap();
    h.twinzo.go_down();
    // Longer than one batch (100 positions) of each robot: a backlog.
    pause(7000);
    h.twinzo.come_back();
    traffic.join().unwrap();
    h.settle();
    assert_latest_first(&h, before);
    assert!(h.edge().log_text().contains("posting to Twinzo works again"));
    h.finish("Twinzo down (connection refused)", "7 s").print();
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
    // The operator sees it: the plant's spool problem, and a critical condition.
    let unwritable = || {
        let (_, body) = support::process::http_get(&h.http_addr(), "/api/status");
        let view: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let problem = view["plants"][0]["spool_problem"].is_string();
        let condition = view["conditions"].as_array().into_iter().flatten().any(|c| c["kind"] == "spool_unwritable");
        (problem, condition)
    };
    support::process::eventually("the fleet view to show the spool unwritable", Duration::from_secs(5), || {
        unwritable() == (true, true)
    });
    pause(1000);
    h.twinzo.come_back();
    traffic.join().unwrap();
    h.settle();
    h.edge().wait_for_log("spool writable again", Duration::from_secs(20));
    support::process::eventually("the spool problem cleared", Duration::from_secs(5), || {
        unwritable() == (false, false)
    });
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

/// An upgrade or a reboot: SIGTERM under load with the shipped session settings, down for a
/// while, started again. What the broker received meanwhile is in its session for edge.
#[test]
fn sigterm_restart_with_defaults() {
    let mut h = Harness::new("sigterm-restart", Options::default());
    let traffic = h.stream(200, 20.0, 0);
    let mut slowest = Duration::ZERO;
    for down_ms in [2000, 500] {
        pause(2500);
        slowest = slowest.max(h.stop_edge());
        pause(down_ms);
        h.start_edge();
    }
    traffic.join().unwrap();
    println!("slowest stop under load: {slowest:?}");
    h.finish("SIGTERM under load, restarted with the default session settings; twice", "0.5–2 s down").print();
}

/// A broker that kept 100,000 messages for edge while it was away: all of them arrive, and each
/// robot's newest position goes out before its history (which is replayed after).
#[test]
fn broker_backlog_of_100k() {
    const PER_ROBOT: u64 = 2000;
    let mut h = Harness::new("broker-backlog", Options { robots: Some(50), ..Options::default() });
    h.stop_edge();
    let started = Instant::now();
    h.stream(PER_ROBOT, 1e6, 0).join().unwrap();
    println!("broker accepted {} messages in {:?}", h.sent.lock().unwrap().len(), started.elapsed());
    let drain = Instant::now();
    h.start_edge();
    h.settle_within(Duration::from_secs(300));
    println!("delivered after {:?}", drain.elapsed());
    for line in h.edge().log_text().lines().filter(|l| l.contains("backlog")) {
        println!("{line}");
    }
    let newest = stamp(PER_ROBOT - 1);
    let mut worst = 0;
    for robot in &h.robots {
        let stamps: Vec<u64> = h.twinzo.locations(robot).iter().map(|l| l["Timestamp"].as_u64().unwrap()).collect();
        let at = stamps.iter().position(|t| *t == newest).unwrap();
        // Before the newest, only ever-newer positions (the twin following the backlog in),
        // never the history in time order.
        assert!(
            stamps[..=at].windows(2).all(|w| w[0] < w[1]),
            "{robot}: history before the newest: {:?}",
            &stamps[..=at]
        );
        worst = worst.max(at);
    }
    println!("the newest position of each robot was at most its arrival #{}", worst + 1);
    assert!(worst < PER_ROBOT as usize / 10, "the newest positions came late: arrival #{}", worst + 1);
    h.finish("100,000 messages queued at the broker for 50 robots while edge was down", "until drained").print();
}

/// Twinzo refuses one location with 400: it is found by splitting its batch and dead-lettered
/// with Twinzo's reason; the rest of every batch arrives. A position Twinzo could not take (from
/// a robot whose clock was never set: 1990) is dead-lettered before it is ever posted.
#[test]
fn twinzo_refuses_one_location() {
    let h = Harness::new("twinzo-400-location", Options::default());
    h.twinzo.set_faults(Faults { poison_x: Some(1017.0), ..Faults::default() });
    let traffic = h.stream(60, 10.0, 0);
    let unset_clock: u64 = 631_152_000_000;
    let mut publisher = Publisher::connect(h.broker.port, "unset-clock");
    let payload = json!({"device_id": "amr-1", "timestamp": unset_clock, "position": {"x": 5, "y": 5}});
    publisher.publish("hitech/amr/amr-1/position", payload.to_string());
    publisher.flush(Duration::from_secs(10));
    h.sent.lock().unwrap().insert(("amr-1".into(), unset_clock));
    traffic.join().unwrap();
    h.settle();
    let (_, dead) = h.spooled();
    let reasons: BTreeMap<u64, &str> = dead.iter().map(|((_, ts), reason)| (*ts, reason.as_str())).collect();
    assert_eq!(reasons, BTreeMap::from([(unset_clock, "timestamp-out-of-range"), (stamp(17), "http-4xx")]), "{dead:?}");
    let posted = |body: &serde_json::Value| {
        body.as_array().is_some_and(|a| a.iter().any(|l| l["Timestamp"].as_u64() == Some(unset_clock)))
    };
    assert!(!h.twinzo.with_recorded(|r| r.posts.iter().any(|(_, body)| posted(body))), "never posted");
    let report = h.finish("400 naming one location in a batch; a timestamp from 1990", "every post");
    assert_eq!(report.dead_lettered, 4);
    report.print();
}

/// Batches too large for Twinzo (413) are split until they fit; nothing is dead-lettered.
#[test]
fn twinzo_payload_too_large() {
    let h = Harness::new("twinzo-413", Options::default());
    h.twinzo.set_faults(Faults { max_batch: Some(3), ..Faults::default() });
    // A backlog, so that batches are large.
    h.twinzo.go_down();
    let traffic = h.stream(60, 20.0, 0);
    pause(2000);
    h.twinzo.come_back();
    traffic.join().unwrap();
    let report = h.finish("413 for batches over 3 locations", "every post");
    assert_eq!(report.dead_lettered, 0);
    report.print();
}

/// 429 with `Retry-After: 1`: edge waits as told and loses nothing.
#[test]
fn twinzo_too_many_requests() {
    let h = Harness::new("twinzo-429", Options::default());
    let traffic = h.stream(60, 10.0, 0);
    pause(1500);
    h.twinzo.set_faults(Faults { too_many_requests: 10, ..Faults::default() });
    traffic.join().unwrap();
    let report = h.finish("10 posts answered 429 with Retry-After: 1", "burst");
    assert_eq!(report.dead_lettered, 0);
    report.print();
}

/// `Success: true` with fewer location results than locations: which were stored cannot be
/// told, so the batch is dead-lettered (`count-mismatch`) rather than posted again and again.
#[test]
fn twinzo_answers_a_wrong_count() {
    let h = Harness::new("twinzo-count-mismatch", Options::default());
    let traffic = h.stream(60, 10.0, 0);
    pause(1500);
    h.twinzo.set_faults(Faults { short_results: 3, ..Faults::default() });
    traffic.join().unwrap();
    h.settle();
    let (_, dead) = h.spooled();
    assert!(!dead.is_empty() && dead.values().all(|r| r == "count-mismatch"), "{dead:?}");
    let posts = h.twinzo.with_recorded(|r| r.posts.len());
    let report = h.finish("Success with one location result too few, 3 posts", "3 posts");
    assert_eq!(report.duplicated, 0, "a mismatched batch was posted again ({posts} posts)");
    report.print();
}

/// A second plant whose spool cannot be opened: it is reported and kept away from its broker
/// (which keeps its messages), the first plant flows, and once the spool can be opened the
/// second plant starts on its own and takes what waited.
#[test]
fn a_plant_whose_spool_cannot_open() {
    let h = Harness::new("plant-spool-unopenable", Options { broken_plant: true, ..Options::default() });
    let traffic = h.stream(60, 10.0, 0);
    let q = h.stream_to(vec!["q-1".into()], "site-q", 30, 10.0, 0);
    h.edge().wait_for_log("cannot start the plant", Duration::from_secs(10));
    pause(1500);
    let (status, body) = support::process::http_get(&h.http_addr(), "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"q\"") && body.contains("cannot be opened"), "{body}");
    assert!(!h.twinzo.locations("amr-1").is_empty(), "the healthy plant flows meanwhile");
    assert!(h.twinzo.locations("q-1").is_empty());
    std::fs::remove_dir(edge::spool::path_for(&h.dir.path().join("state"), "q")).unwrap();
    traffic.join().unwrap();
    q.join().unwrap();
    h.finish("a second plant's spool cannot be opened, then can", "until repaired (10 s retry)").print();
}

/// A plugin that waits in a host call (a WASI sleep) on some messages, beside a good source:
/// each such call ends at the deadline and counts as a fault, the good source flows, and SIGTERM
/// ends edge in bounded time.
#[test]
fn plugin_sleeping_in_translate() {
    let mut h = Harness::new("plugin-sleeps-in-translate", Options { hostile_source: true, ..Options::default() });
    let traffic = h.stream(60, 10.0, 0);
    let mut publisher = Publisher::connect(h.broker.port, "sleeper");
    for _ in 0..5 {
        publisher.publish("hostile/x", "sleep:60000");
    }
    publisher.flush(Duration::from_secs(10));
    support::process::eventually("the sleeping calls counted as faults", Duration::from_secs(30), || {
        let (_, metrics) = support::process::http_get(&h.http_addr(), "/metrics");
        metrics.lines().any(|l| l.starts_with("edge_plugin_errors_total") && l.contains("hostile") && l.ends_with(" 5"))
    });
    let (status, ready) = support::process::http_get(&h.http_addr(), "/readyz");
    assert_eq!(status, 503, "{ready}");
    assert!(
        ready.contains("plugin faults in a row") && ready.contains("did not return within its deadline"),
        "{ready}"
    );
    // Stopped while sleeping calls are queued: bounded all the same.
    for _ in 0..3 {
        publisher.publish("hostile/x", "sleep:60000");
    }
    publisher.flush(Duration::from_secs(10));
    h.stop_edge();
    h.start_edge();
    traffic.join().unwrap();
    h.finish("a plugin sleeping 60 s in translate beside a good one; SIGTERM meanwhile", "60 s per call").print();
}

/// A plugin file whose describe() sleeps, dropped in for a running source: the load ends at the
/// deadline, the file is rejected, the running plugin stays and keeps delivering.
#[test]
fn plugin_sleeping_in_describe_on_reload() {
    let h = Harness::new("plugin-sleeps-in-describe", Options::default());
    let traffic = h.stream(60, 10.0, 0);
    pause(1500);
    replace(&h.plugin, &std::fs::read(support::plugin("sleepy")).unwrap());
    h.edge().wait_for_log("rejected the new plugin file", Duration::from_secs(10));
    traffic.join().unwrap();
    h.finish("a plugin whose describe() sleeps dropped in under load", "60 s").print();
}
