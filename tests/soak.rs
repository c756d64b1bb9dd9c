//! The soak, run by `bench/soak` (not by scripts/test): `edge run` with the shipped defaults for
//! SOAK_MINUTES (default 30) at 1,000 messages/s from 200 robots through a real mosquitto into
//! the Twinzo stand-in, which goes down for 60 s every 5 minutes. Every 10 s it samples edge's
//! resident memory, CPU, open file descriptors and spool size into target/soak/samples.csv;
//! at the end it accounts for every message the broker accepted, as tests/faults.rs does.

mod support;

use serde_json::json;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::mosquitto::Mosquitto;
use support::mqtt::Publisher;
use support::ports::free_port;
use support::process::EdgeProcess;
use support::twinzo::{API_KEY, BRANCH_1, Device, TwinzoStandIn};

const ROBOTS: usize = 200;
const RATE_HZ: u64 = 5;
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// Twinzo goes down this often (SOAK_OUTAGE_EVERY_S), for this long (SOAK_OUTAGE_S).
fn outages() -> (Duration, Duration) {
    let secs = |var: &str, default| std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    (Duration::from_secs(secs("SOAK_OUTAGE_EVERY_S", 300)), Duration::from_secs(secs("SOAK_OUTAGE_S", 60)))
}
const T0: u64 = 1_790_000_000_000;

#[test]
#[ignore = "a 30-minute soak: bench/soak runs it"]
fn soak() {
    let minutes: u64 = std::env::var("SOAK_MINUTES").ok().and_then(|m| m.parse().ok()).unwrap_or(30);
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::persistent(dir.path());
    let robots: Vec<String> = (0..ROBOTS).map(|i| format!("r{i:03}")).collect();
    let devices: Vec<Device> = robots
        .iter()
        .map(|r| Device { login: r.clone(), password: format!("pw-{r}"), branch: BRANCH_1.into() })
        .collect();
    let twinzo = TwinzoStandIn::start(&devices);
    twinzo.lean();
    let config = write_config(dir.path(), broker.port, &twinzo.base_url(), &robots);
    let edge = EdgeProcess::start(&config);
    edge.wait_for_log("subscribed", Duration::from_secs(30));

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(Mutex::new(BTreeSet::new()));
    let publisher = publish(broker.port, robots.clone(), stop.clone(), sent.clone());
    let samples = sample(edge.pid(), dir.path().join("state/spool"), stop.clone());
    let started = Instant::now();
    let run = Duration::from_secs(minutes * 60);
    let (every, outage) = outages();
    let mut outages = 0;
    while started.elapsed() < run {
        std::thread::sleep(every.min(run.saturating_sub(started.elapsed())));
        if started.elapsed() + outage < run {
            twinzo.go_down();
            std::thread::sleep(outage);
            twinzo.come_back();
            outages += 1;
        }
    }
    stop.store(true, Ordering::SeqCst);
    publisher.join().unwrap();
    let samples = samples.join().unwrap();

    // Accounting, independent of edge's counters: the broker's PUBACKs against the stand-in.
    let sent = sent.lock().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(600);
    let delivered = loop {
        let delivered = twinzo.arrivals();
        if sent.iter().all(|k| delivered.contains_key(k)) || Instant::now() > deadline {
            break delivered;
        }
        std::thread::sleep(Duration::from_secs(5));
    };
    let lost = sent.iter().filter(|k| !delivered.contains_key(*k)).count();
    let duplicated: usize = delivered.values().map(|n| n - 1).sum();
    let report = json!({
        "minutes": minutes, "robots": ROBOTS, "rate_per_s": ROBOTS as u64 * RATE_HZ, "outages": outages,
        "outage_s": outage.as_secs(),
        "sent": sent.len(), "delivered": sent.len() - lost, "duplicated": duplicated, "lost": lost,
    });
    let out = support::repo().join("target/soak");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("samples.csv"), samples).unwrap();
    std::fs::write(out.join("report.json"), report.to_string()).unwrap();
    println!("{report}");
    assert_eq!(lost, 0, "positions lost");
}

fn write_config(dir: &Path, broker: u16, twinzo: &str, robots: &[String]) -> PathBuf {
    let devices: String = robots.iter().map(|r| format!("      {r}: {{ password: pw-{r}, sector: 1 }}\n")).collect();
    let yaml = format!(
        r#"state_dir: {state}
http: {{ listen: "127.0.0.1:{http}" }}
summary_interval_s: 60
sources:
  - name: fleet
    mqtt: {{ host: 127.0.0.1, port: {broker}, topics: ["hitech/amr/#"] }}
    plugin: {{ path: {plugin} }}
    plant: p
    transform: {{ affine: [1000, 0, 0, 1000, 0, 0] }}
plants:
  - name: p
    twinzo: {{ base_url: "{twinzo}", client: TVSMotor, api_key: {API_KEY}, branch: {BRANCH_1} }}
    devices:
{devices}"#,
        state = dir.join("state").display(),
        http = free_port(),
        plugin = support::plugin("hitech").display(),
    );
    let path = dir.join("edge.yaml");
    support::write_private(&path, yaml);
    path
}

/// 200 robots at 5 Hz each, at QoS 1, until `stop`; records what the broker acknowledged.
fn publish(
    port: u16,
    robots: Vec<String>,
    stop: Arc<AtomicBool>,
    sent: Arc<Mutex<BTreeSet<(String, u64)>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut publisher = Publisher::connect(port, "soak-publisher");
        let tick = Duration::from_millis(1000 / RATE_HZ);
        let started = Instant::now();
        let mut i = 0u64;
        while !stop.load(Ordering::SeqCst) {
            for (n, robot) in robots.iter().enumerate() {
                let payload = json!({"device_id": robot, "timestamp": T0 + i * tick.as_millis() as u64, "position": {"x": n * 1000 + (i % 1000) as usize, "y": 500}, "battery": 70});
                publisher.publish(&format!("hitech/amr/{robot}/position"), payload.to_string());
            }
            let mut sent = sent.lock().unwrap();
            sent.extend(robots.iter().map(|r| (r.clone(), T0 + i * tick.as_millis() as u64)));
            drop(sent);
            i += 1;
            if let Some(wait) = (tick * i as u32).checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        publisher.flush(Duration::from_secs(120));
    })
}

/// Every 10 s until `stop`: seconds, RSS (MB), CPU (% of one core), open fds, spool (MB).
fn sample(pid: u32, spool: PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let mut csv = String::from("seconds,rss_mb,cpu_percent,open_fds,spool_mb\n");
        let started = Instant::now();
        let mut last = (Instant::now(), support::process::cpu_ticks(pid));
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(SAMPLE_EVERY);
            let (now, cpu) = (Instant::now(), support::process::cpu_ticks(pid));
            let percent = (cpu - last.1) as f64 / ticks / (now - last.0).as_secs_f64() * 100.0;
            last = (now, cpu);
            let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0);
            let spool_bytes: u64 = std::fs::read_dir(&spool)
                .map(|d| d.filter_map(|f| f.ok()?.metadata().ok()).map(|m| m.len()).sum())
                .unwrap_or(0);
            let line = format!(
                "{:.0},{:.1},{:.1},{fds},{:.2}\n",
                started.elapsed().as_secs_f64(),
                support::process::rss_kb(pid) as f64 / 1024.0,
                percent,
                spool_bytes as f64 / 1048576.0
            );
            print!("soak sample: {line}");
            let _ = std::io::stdout().flush();
            csv += &line;
        }
        csv
    })
}
