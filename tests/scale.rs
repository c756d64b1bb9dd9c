//! Scale benchmarks, run by `bench/scale` (not by scripts/test): `edge run` with the shipped
//! defaults at a plant's loads, through a real mosquitto, the ATI plugin and the Twinzo stand-in,
//! fed by the load generator `edge sim --robots N` in its own process. What arrives is counted at
//! the stand-in against what the broker acknowledged; latency is the stand-in's arrival time
//! minus the position's timestamp (the generator's send time); edge's CPU and memory come from
//! /proc. Each scenario writes target/scale/<scenario>.json.

mod support;

use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use support::mosquitto::Mosquitto;
use support::ports::free_port;
use support::process::{EdgeProcess, context_switches, cpu_ticks, eventually, get_json, memory_kb};
use support::twinzo::{API_KEY, BRANCH_1, Device, TENANT, TwinzoStandIn};

/// What the load generator reported (`edge sim --robots`).
struct Published {
    acknowledged: u64,
    per_robot: HashMap<String, u64>,
    seconds: f64,
}

struct Bench {
    name: &'static str,
    dir: tempfile::TempDir,
    broker: Mosquitto,
    twinzo: TwinzoStandIn,
    config: PathBuf,
    http: u16,
    edge: Option<EdgeProcess>,
}

impl Bench {
    /// mosquitto as a plant's broker should be, the stand-in with `robots` devices, and edge
    /// with the ATI source feeding them (plus idle HiTech and simulator sources: three plugins).
    fn start(name: &'static str, robots: usize) -> Self {
        Self::start_with(name, robots, &Setup::default())
    }

    /// As [`start`](Self::start), with the ATI source and the broker set up as `setup` says.
    fn start_with(name: &'static str, robots: usize, setup: &Setup) -> Self {
        let protocol = setup.protocol;
        let dir = tempfile::tempdir().unwrap();
        let broker = Mosquitto::persistent_with(dir.path(), setup.broker);
        let names: Vec<String> = (0..robots).map(|i| format!("r{i:04}")).collect();
        let devices: Vec<Device> = names
            .iter()
            .map(|r| Device { login: r.clone(), password: format!("pw-{r}"), branch: BRANCH_1.into() })
            .collect();
        let twinzo = TwinzoStandIn::start(&devices);
        twinzo.lean();
        twinzo.measure_latency();
        let http = free_port();
        let device_map: String =
            names.iter().map(|r| format!("      {r}: {{ password: pw-{r}, sector: 1 }}\n")).collect();
        // Copies, so that a scenario may replace one.
        let plugins = dir.path().join("plugins");
        std::fs::create_dir(&plugins).unwrap();
        let source = |name: &str, plugin: &str, topics: &str| {
            let copy = plugins.join(format!("{plugin}.wasm"));
            std::fs::copy(support::plugin(plugin), &copy).unwrap();
            format!(
                "  - name: {name}\n    mqtt: {{ host: 127.0.0.1, port: {}, protocol: \"{protocol}\", topics: [\"{topics}\"] }}\n    plugin: {{ path: {} }}\n    plant: p\n    transform: {{ affine: [1000, 0, 0, 1000, 0, 0] }}\n",
                broker.port,
                copy.display()
            )
        };
        let yaml = format!(
            "state_dir: {state}\nhttp: {{ listen: \"127.0.0.1:{http}\" }}\nsources:\n{ati}{hitech}{sim}plants:\n  - name: p\n    twinzo: {{ base_url: \"{url}\", client: TVSMotor, api_key: {API_KEY}, branch: {BRANCH_1} }}\n    devices:\n{device_map}",
            state = dir.path().join("state").display(),
            ati = source("ati", "ati-sherpa", "ati/amr/+/status"),
            hitech = source("hitech", "hitech", "hitech/amr/#"),
            sim = source("sim", "simulator", "edge-sim/#"),
            url = twinzo.base_url(),
        );
        let config = dir.path().join("edge.yaml");
        support::write_private(&config, yaml);
        let mut bench = Bench { name, dir, broker, twinzo, config, http, edge: None };
        if setup.bare_bridge {
            bench.start_bare_bridge(&names);
            return bench;
        }
        bench.start_edge();
        if setup.restarted {
            bench.edge.take().unwrap().stop();
            bench.start_edge();
        }
        bench
    }

    fn start_edge(&mut self) {
        let edge = EdgeProcess::start(&self.config);
        let http = self.http;
        eventually("every source subscribed", Duration::from_secs(120), || {
            let view = get_json(&format!("127.0.0.1:{http}"), "/api/sources");
            view["sources"].as_array().is_some_and(|s| {
                s.len() == 3 && s.iter().all(|s| s["subscribed"].as_array().is_some_and(|t| !t.is_empty()))
            })
        });
        self.edge = Some(edge);
    }

    /// runtime/examples/bare_bridge.rs in edge's place, taking the ATI source's topics.
    fn start_bare_bridge(&mut self, robots: &[String]) {
        let program = std::env::current_exe().unwrap().parent().unwrap().join("../examples/bare_bridge");
        assert!(program.exists(), "{} is missing: cargo build --release --example bare_bridge", program.display());
        let devices = self.dir.path().join("devices.json");
        let passwords: HashMap<&String, String> = robots.iter().map(|r| (r, format!("pw-{r}"))).collect();
        support::write_private(&devices, serde_json::to_string(&passwords).unwrap());
        let mut command = Command::new(program);
        command
            .args(["--broker", &format!("127.0.0.1:{}", self.broker.port), "--twinzo", &self.twinzo.base_url()])
            .args(["--client", TENANT, "--api-key", API_KEY, "--devices"])
            .arg(&devices)
            // e.g. `--worker-threads 0`, to see what the runtime's shape costs.
            .args(std::env::var("BARE_BRIDGE_ARGS").unwrap_or_default().split_whitespace());
        let bridge = EdgeProcess::spawn(command, self.dir.path().join("bare_bridge.log"));
        bridge.wait_for_log("subscribed", Duration::from_secs(60));
        self.edge = Some(bridge);
    }

    /// The process under measurement: edge, or the bare bridge in its place.
    fn edge(&self) -> &EdgeProcess {
        self.edge.as_ref().expect("edge runs")
    }

    /// Runs the load generator to the end.
    fn publish(&self, robots: usize, rate: &str, seconds: f64, messages: Option<u64>) -> Published {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_edge"));
        cmd.args(["sim", "--broker", &format!("127.0.0.1:{}", self.broker.port)]).args([
            "--robots",
            &robots.to_string(),
            "--rate",
            rate,
            "--seconds",
            &seconds.to_string(),
        ]);
        if let Some(n) = messages {
            cmd.args(["--messages", &n.to_string()]);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "edge sim: {}", String::from_utf8_lossy(&out.stderr));
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        Published {
            acknowledged: report["acknowledged"].as_u64().unwrap(),
            per_robot: serde_json::from_value(report["per_robot"].clone()).unwrap(),
            seconds: report["seconds"].as_f64().unwrap(),
        }
    }

    /// Unique positions delivered and duplicates, per the stand-in.
    fn delivered(&self) -> (u64, u64) {
        self.twinzo.with_recorded(|r| {
            let mut unique = 0;
            let mut all = 0;
            for stamps in r.stamps.values() {
                all += stamps.len() as u64;
                let mut sorted = stamps.clone();
                sorted.sort_unstable();
                sorted.dedup();
                unique += sorted.len() as u64;
            }
            (unique, all - unique)
        })
    }

    /// Waits until `expected` unique positions arrived (or `timeout`); returns when the last did.
    /// Polls the stand-in's plain count and counts unique positions only once that is reached:
    /// sorting every timestamp while holding the stand-in's lock would slow what is measured.
    fn wait_delivered(&self, expected: u64, timeout: Duration) -> Instant {
        let deadline = Instant::now() + timeout;
        loop {
            let (accepted, last) = self.twinzo.with_recorded(|r| (r.accepted, r.last_accepted));
            if (accepted >= expected && self.delivered().0 >= expected) || Instant::now() > deadline {
                return last.unwrap_or_else(Instant::now);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn latency_ms(&self) -> Value {
        let mut us = self.twinzo.with_recorded(|r| r.latencies_us.clone());
        us.sort_unstable();
        let at = |q: f64| us.get(((us.len() as f64 - 1.0) * q).round() as usize).map(|v| *v as f64 / 1000.0);
        json!({ "p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": at(1.0) })
    }

    fn save(&self, mut result: Value) {
        result["scenario"] = self.name.into();
        let pid = self.edge().pid();
        result["rss_mb"] = (memory_kb(pid, "VmRSS") as f64 / 1024.0).into();
        result["peak_rss_mb"] = (memory_kb(pid, "VmHWM") as f64 / 1024.0).into();
        // What edge itself holds, without the binary's code pages the kernel may drop.
        result["private_mb"] = (memory_kb(pid, "RssAnon") as f64 / 1024.0).into();
        let out = support::repo().join("target/scale");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join(format!("{}.json", self.name)), result.to_string()).unwrap();
        // edge's log beside it, for a run that needs explaining.
        let _ = std::fs::copy(&self.edge().log, out.join(format!("{}.log", self.name)));
        println!("{result}");
    }
}

/// With SCALE_PERF set, `perf record` of edge for the load's duration, into
/// target/scale/<scenario>.perf.data (`perf report -i` it). `SCALE_PERF=dwarf` unwinds
/// through DWARF, so user-space time is charged to its callers (the release build has no
/// frame pointers, and `-g` stops at the first user-space frame).
struct Profile(Option<std::process::Child>);

impl Profile {
    fn start(name: &str, pid: u32) -> Self {
        let Some(mode) = std::env::var_os("SCALE_PERF") else {
            return Profile(None);
        };
        let call_graph = if mode == "dwarf" { "dwarf,32768" } else { "fp" };
        let out = support::repo().join("target/scale");
        std::fs::create_dir_all(&out).unwrap();
        let child = Command::new("perf")
            .args(["record", "-e", "cpu-clock", "-F", "999", "--call-graph", call_graph])
            .args(["-p", &pid.to_string(), "-o"])
            .arg(out.join(format!("{name}.perf.data")))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("perf (linux-perf) is installed");
        std::thread::sleep(Duration::from_millis(300));
        Profile(Some(child))
    }
}

impl Drop for Profile {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            let _ = child.wait();
        }
    }
}

fn ticks_per_s() -> f64 {
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// How the broker and the source are set up: the shipped defaults unless a scenario says.
struct Setup {
    protocol: &'static str,
    /// mosquitto.conf lines.
    broker: &'static str,
    /// Restarted once before the load, so that the plugins come from the compiled-plugin cache
    /// as on every start but a plant's first.
    restarted: bool,
    /// The bare bridge (runtime/examples/bare_bridge.rs) in edge's place: what one request per
    /// position costs with the same crates and nothing else, the floor edge is measured against.
    bare_bridge: bool,
}

const SHIPPED: Setup = Setup { protocol: "3.1.1", broker: "", restarted: false, bare_bridge: false };
const BARE_BRIDGE: Setup = Setup { bare_bridge: true, ..SHIPPED };

impl Default for Setup {
    fn default() -> Self {
        SHIPPED
    }
}

/// A live load: `robots` at `rate` for `seconds`; everything counted, timed and costed.
fn live(name: &'static str, robots: usize, rate: &str, seconds: f64) {
    live_over(name, robots, rate, seconds, &Setup::default())
}

fn live_over(name: &'static str, robots: usize, rate: &str, seconds: f64, setup: &Setup) {
    let bench = Bench::start_with(name, robots, setup);
    let protocol = setup.protocol;
    let pid = bench.edge().pid();
    // Settle after start-up (device sign-ins, the first fleet judgements).
    std::thread::sleep(Duration::from_secs(3));
    let profile = Profile::start(name, pid);
    let (cpu0, switches0, t0) = (cpu_ticks(pid), context_switches(pid), Instant::now());
    let published = bench.publish(robots, rate, seconds, None);
    let last = bench.wait_delivered(published.acknowledged, Duration::from_secs(120));
    let cpu_s = (cpu_ticks(pid) - cpu0) as f64 / ticks_per_s();
    let switches = context_switches(pid).saturating_sub(switches0);
    drop(profile);
    let wall = last.saturating_duration_since(t0).as_secs_f64().max(published.seconds);
    let (unique, duplicates) = bench.delivered();
    assert_eq!(published.per_robot.values().sum::<u64>(), published.acknowledged, "the broker acknowledged everything");
    bench.save(json!({
        "robots": robots, "rate": rate, "seconds": seconds, "protocol": protocol, "broker": setup.broker.trim(), "restarted": setup.restarted, "bare_bridge": setup.bare_bridge,
        "published": published.acknowledged, "delivered": unique, "duplicates": duplicates,
        "lost": published.acknowledged.saturating_sub(unique),
        "delivered_per_s": unique as f64 / wall,
        "latency_ms": bench.latency_ms(),
        "cpu_us_per_position": cpu_s * 1e6 / unique.max(1) as f64,
        "cpu_percent": cpu_s / wall * 100.0,
        "switches_per_position": switches as f64 / unique.max(1) as f64,
    }));
}

#[test]
#[ignore = "a benchmark: bench/scale runs it"]
fn live_3_robots_10_hz() {
    live("live_3x10hz", 3, "10", 30.0);
}

#[test]
#[ignore = "a benchmark: bench/scale runs it"]
fn live_200_robots_1_hz() {
    live("live_200x1hz", 200, "1", 30.0);
}

#[test]
#[ignore = "a benchmark: bench/scale runs it"]
fn live_1000_robots_1_hz() {
    live("live_1000x1hz", 1000, "1", 30.0);
    let restarted = Setup { restarted: true, ..Setup::default() };
    live_over("live_1000x1hz_restarted", 1000, "1", 30.0, &restarted);
}

/// The floor under the live rows: the bare bridge at the same loads, one request per position
/// with edge's crates and nothing else.
#[test]
#[ignore = "a benchmark: bench/scale runs it"]
fn live_floor_bare_bridge() {
    live_over("live_200x1hz_bare_bridge", 200, "1", 30.0, &BARE_BRIDGE);
    live_over("live_1000x1hz_bare_bridge", 1000, "1", 30.0, &BARE_BRIDGE);
}

/// 20,000 positions a second from 50 robots: with the shipped defaults, and with a broker that
/// sends up to 1,000 messages before it waits for their acknowledgements (mosquitto sends 20
/// by default, whatever the client's MQTT 5 Receive Maximum).
#[test]
#[ignore = "a benchmark: bench/scale runs it"]
fn high_rate_50_robots_400_hz() {
    live("high_50x400hz", 50, "400", 20.0);
    let window = Setup { protocol: "5", broker: "max_inflight_messages 1000\n", ..Setup::default() };
    live_over("high_50x400hz_inflight1000", 50, "400", 20.0, &window);
}

#[test]
#[ignore = "a benchmark: bench/scale runs it"]
fn many_devices_10000_robots() {
    live("devices_10000x0.2hz", 10_000, "0.2", 30.0);
}

/// How fast a backlog drains, and whether each robot's newest position came first: `index` of
/// the newest position among the robot's arrivals, at most.
fn drained(bench: &Bench, published: &Published, started: Instant) -> Value {
    let last = bench.wait_delivered(published.acknowledged, Duration::from_secs(300));
    let seconds = last.saturating_duration_since(started).as_secs_f64();
    let (unique, duplicates) = bench.delivered();
    let newest_at = bench.twinzo.with_recorded(|r| {
        r.stamps.values().map(|s| s.iter().position(|t| Some(t) == s.iter().max()).unwrap_or(0)).max().unwrap_or(0)
    });
    // Until a robot's newest position arrived, what came before it should only ever be newer
    // than the one before (the newest so far, while the backlog comes in): count what was older.
    let history_before_newest: usize =
        bench.twinzo.with_recorded(|r| r.stamps.values().map(|s| older_before_newest(s)).sum());
    // From the first position's arrival to the last's: the drain itself, without edge's start.
    let flowing = bench.twinzo.with_recorded(|r| match (r.first_accepted, r.last_accepted) {
        (Some(first), Some(last)) => (last - first).as_secs_f64(),
        _ => seconds,
    });
    json!({
        "published": published.acknowledged, "delivered": unique, "duplicates": duplicates,
        "lost": published.acknowledged.saturating_sub(unique),
        "drain_seconds": seconds, "drained_per_s": unique as f64 / seconds.max(0.001),
        "first_to_last_s": flowing, "first_to_last_per_s": unique as f64 / flowing.max(0.001),
        "newest_position_arrived_at_most_as": newest_at + 1,
        "history_before_newest": history_before_newest,
    })
}

/// Arrivals older than one that came before them, up to the newest's arrival.
fn older_before_newest(stamps: &[u64]) -> usize {
    let newest = stamps.iter().max().copied().unwrap_or(0);
    let mut latest = 0;
    let mut older = 0;
    for &t in stamps {
        older += usize::from(t < latest);
        latest = latest.max(t);
        if t == newest {
            break;
        }
    }
    older
}

/// 100,000 positions queued at the broker while edge is stopped, then taken: with the shipped
/// defaults, and with a broker that sends 1,000 in flight over MQTT 5.
#[test]
#[ignore = "a benchmark: bench/scale runs it"]
fn catch_up_broker_backlog() {
    broker_backlog("backlog_broker_100k", &Setup::default());
    let window = Setup { protocol: "5", broker: "max_inflight_messages 1000\n", ..Setup::default() };
    broker_backlog("backlog_broker_100k_inflight1000", &window);
}

fn broker_backlog(name: &'static str, setup: &Setup) {
    const ROBOTS: usize = 50;
    let mut bench = Bench::start_with(name, ROBOTS, setup);
    bench.edge.take().unwrap().stop();
    let published = bench.publish(ROBOTS, "max", 600.0, Some(100_000));
    let started = Instant::now();
    bench.start_edge();
    let mut result = drained(&bench, &published, started);
    result["protocol"] = setup.protocol.into();
    result["broker"] = setup.broker.trim().into();
    bench.save(result);
}

#[test]
#[ignore = "a benchmark: bench/scale runs it"]
fn catch_up_spool_backlog() {
    const ROBOTS: usize = 50;
    let bench = Bench::start("backlog_spool_100k", ROBOTS);
    bench.twinzo.go_down();
    let published = bench.publish(ROBOTS, "max", 600.0, Some(100_000));
    // Everything spooled (acknowledged to the broker only once in the spool).
    std::thread::sleep(Duration::from_secs(3));
    let started = Instant::now();
    bench.twinzo.come_back();
    let result = drained(&bench, &published, started);
    bench.save(result);
}

#[test]
#[ignore = "a benchmark: bench/scale runs it"]
fn reload_under_load() {
    const ROBOTS: usize = 200;
    let bench = Bench::start("reload_200x1hz", ROBOTS);
    let plugin = bench.dir.path().join("plugins/ati-sherpa.wasm");
    let addr = format!("127.0.0.1:{}", bench.http);
    // /readyz is read live (the fleet view only once a second).
    let running = || get_json(&addr, "/readyz")["sources"]["ati"]["sha256"].as_str().unwrap_or_default().to_string();
    std::thread::sleep(Duration::from_secs(2));
    let (published, swapped_ms) = std::thread::scope(|scope| {
        let publishing = scope.spawn(|| bench.publish(ROBOTS, "1", 20.0, None));
        std::thread::sleep(Duration::from_secs(8));
        let before = running();
        let variant = support::wasm_variant(&std::fs::read(&plugin).unwrap(), 7);
        let tmp = plugin.with_extension("tmp");
        std::fs::write(&tmp, &variant).unwrap();
        let written = Instant::now();
        std::fs::rename(&tmp, &plugin).unwrap();
        eventually("the new plugin", Duration::from_secs(10), || {
            let now = running();
            !now.is_empty() && now != before
        });
        let swapped_ms = written.elapsed().as_secs_f64() * 1000.0;
        (publishing.join().unwrap(), swapped_ms)
    });
    bench.wait_delivered(published.acknowledged, Duration::from_secs(60));
    let (unique, duplicates) = bench.delivered();
    bench.save(json!({
        "robots": ROBOTS, "published": published.acknowledged, "delivered": unique, "duplicates": duplicates,
        "lost": published.acknowledged.saturating_sub(unique), "file_written_to_new_plugin_ms": swapped_ms,
    }));
}
