//! `cargo bench`: the per-message costs on the hot path, measured on real sample payloads.
//! A plain harness (no criterion): each figure is the median of 7 rounds; these machines are
//! shared and noisy, so read the numbers as orders of magnitude. Results: docs/performance.md.

use edge::config::{BatchingConfig, DeviceConfig, MotionConfig, PlantConfig};
use edge::fleet::{Fleet, Judgement, PlantWatch};
use edge::model::{Message, Position, TwinzoLocation};
use edge::pipeline::{PlantPipeline, Transform};
use edge::plugin::{PluginEngine, SandboxLimits};
use edge::spool::{BatchRequest, DiskLimits, Spool};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

// The plugin SDK's own JSON reader and time parser (the same source files the plugins build
// with), compiled natively: the baseline a plugin call is compared with (`native_ati`).
#[allow(dead_code)]
#[path = "../../plugins/sdk/src/json.rs"]
mod json;
#[allow(dead_code, unused_imports)]
#[path = "../../plugins/sdk/src/time.rs"]
mod time;

/// What `json.rs` expects from the SDK around it.
#[derive(Debug)]
pub enum TranslateError {
    Malformed(String),
}

pub fn malformed(why: impl Into<String>) -> TranslateError {
    TranslateError::Malformed(why.into())
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Median time per operation over 7 rounds of `n` operations.
fn measure(n: u32, mut op: impl FnMut()) -> Duration {
    let mut rounds: Vec<Duration> = (0..7)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..n {
                op();
            }
            started.elapsed() / n
        })
        .collect();
    rounds.sort();
    rounds[3]
}

fn report(what: &str, per_op: Duration) {
    println!("{what:<58} {:>12.2?}/op  {:>12.0} ops/s", per_op, 1.0 / per_op.as_secs_f64());
}

fn main() {
    let engine = PluginEngine::new(SandboxLimits::default(), None).unwrap();
    let samples = [
        ("ati-sherpa", "ati_fm/sherpa/status", "plugins/ati-sherpa/fixtures/live-full.payload.json"),
        ("hitech", "hitech/amr/hitech-amr-001/position", "plugins/hitech/fixtures/full.payload.json"),
        ("simulator", "edge-sim/default/tugger-01/state", "plugins/simulator/fixtures/state.payload.json"),
        ("vda5050", "uagv/v2/KIT/0001/state", "plugins/vda5050/fixtures/v2-state.payload.json"),
    ];
    for (name, topic, payload) in samples {
        let path = repo().join("plugins/dist").join(format!("{name}.wasm"));
        let started = Instant::now();
        let plugin = engine.load(&path, &[], None).expect("run scripts/build-plugins first");
        report(&format!("{name}: load (compile + checks, no cache)"), started.elapsed());
        report(
            &format!("{name}: instantiate + configure"),
            measure(200, || drop(black_box(plugin.instantiate().unwrap()))),
        );
        let mut instance = plugin.instantiate().unwrap();
        let message = Message {
            topic: topic.into(),
            payload: std::fs::read(repo().join(payload)).unwrap().into(),
            received_at_ms: 0,
        };
        report(
            &format!("{name}: translate one message"),
            measure(20_000, || drop(black_box(instance.translate(&message).unwrap()))),
        );
        if name == "ati-sherpa" {
            // HOT_PATHS_PROFILE=1: only this loop, for `perf record` (docs/performance.md).
            if std::env::var_os("HOT_PATHS_PROFILE").is_some() {
                let until = Instant::now() + Duration::from_secs(5);
                while Instant::now() < until {
                    drop(black_box(instance.translate(&message).unwrap()));
                }
                return;
            }
            plugin_call_parts(&mut instance, &message);
        }
    }

    let cache = tempfile::tempdir().unwrap();
    let cached = PluginEngine::new(SandboxLimits::default(), Some(cache.path().into())).unwrap();
    cached.load(&repo().join("plugins/dist/ati-sherpa.wasm"), &[], None).unwrap();
    let started = Instant::now();
    cached.load(&repo().join("plugins/dist/ati-sherpa.wasm"), &[], None).unwrap();
    report("ati-sherpa: load from the compiled-plugin cache", started.elapsed());

    let mut devices = std::collections::BTreeMap::new();
    devices.insert("tug-133".to_string(), DeviceConfig { login: None, password: None, sector: 1 });
    let mut pipeline = PlantPipeline::new(PlantConfig {
        name: "p".into(),
        twinzo: None,
        dry_run: true,
        devices,
        motion: MotionConfig::default(),
        batching: BatchingConfig::default(),
    });
    let transform = Transform {
        a: 999.73823,
        b: 22.879501,
        c: 22.879501,
        d: -999.73823,
        tx: 95598.77,
        ty: 167357.6,
        z_scale: 1000.0,
    };
    let position: Position = serde_json::from_value(
        serde_json::json!({"device_id": "tug-133", "x": 110.9, "y": 62.4, "z": 0.0, "battery_percent": 80.0}),
    )
    .unwrap();
    let mut t = 0u64;
    report(
        "pipeline: map + transform + motion + cadence",
        measure(200_000, || {
            t += 100;
            black_box(pipeline.process("s", &transform, &position, 1_700_000_000_000 + t));
        }),
    );

    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(
        &dir.path().join("bench.sqlite"),
        // As `edge run` opens it by default (spool.min_free_mb: 64).
        DiskLimits { hard_cap_bytes: None, min_free_bytes: 64 << 20 },
    )
    .unwrap();
    let location = location();
    let one = vec![("tug-133".to_string(), location.clone())];
    let group: Vec<(String, TwinzoLocation)> = (0..256).map(|i| (format!("tug-{}", i % 8), location.clone())).collect();
    report("spool: durable append, 1 position per transaction", measure(50, || spool.append(&one).unwrap()));
    let per_group = measure(10, || spool.append(&group).unwrap());
    report("spool: durable append, per position in groups of 256", per_group / 256);
    // A backlog (more than memory keeps per device) is read from SQLite.
    let reopened = Spool::open(&dir.path().join("bench.sqlite"), DiskLimits::default()).unwrap();
    report(
        "spool: next batch of 100 from SQLite (a backlog: count + newest + read)",
        measure(200, || {
            let want = BatchRequest { max: 100, posted_up_to: Some(u64::MAX), history: true };
            drop(black_box(reopened.next_batch("tug-1", want).unwrap()))
        }),
    );
    // Live traffic: the device's queue is in memory (deletes ride on the next append).
    let live = Spool::open(&dir.path().join("live.sqlite"), DiskLimits::default()).unwrap();
    live.append(&one).unwrap();
    live.next_batch("tug-133", BatchRequest { max: 100, posted_up_to: None, history: true }).unwrap();
    report(
        "spool: next batch from memory (live traffic, no SQLite)",
        measure(200_000, || {
            let want = BatchRequest { max: 100, posted_up_to: Some(0), history: true };
            drop(black_box(live.next_batch_from_memory("tug-133", want).expect("in memory")))
        }),
    );

    fleet_view();
    per_device();
    twinzo_answer();
}

/// Decoding one of Twinzo's brotli answers to a post of one location, as reqwest does for
/// every response: a fresh decoder each time (its state, Huffman tables and ring buffer).
fn twinzo_answer() {
    let answer = serde_json::json!({"Login": "tugger-01", "Success": true,
        "Locations": [{"Timestamp": 1_762_488_626_815u64, "Action": "Create", "Success": true}]});
    let mut compressed = Vec::new();
    {
        // As the service (and tests/support/twinzo.rs) compresses: quality 5, a 4 MiB window.
        let mut writer = brotli::CompressorWriter::new(&mut compressed, 4096, 5, 22);
        std::io::Write::write_all(&mut writer, answer.to_string().as_bytes()).unwrap();
    }
    report(
        &format!("Twinzo answer: brotli decode, fresh decoder ({} B)", compressed.len()),
        measure(100_000, || {
            let mut body = Vec::with_capacity(256);
            std::io::Read::read_to_end(&mut brotli::Decompressor::new(&compressed[..], 4096), &mut body).unwrap();
            black_box(body);
        }),
    );
}

/// What each device costs in memory while nothing happens: its worker's task (a future that
/// holds a whole post in its state) and its watch in the fleet view.
fn per_device() {
    let dir = tempfile::tempdir().unwrap();
    let spool = std::sync::Arc::new(Spool::open(&dir.path().join("d.sqlite"), DiskLimits::default()).unwrap());
    let watch = std::sync::Arc::new(PlantWatch::new("p", true));
    let links = edge::sink::PlantLinks::new(spool, watch);
    let poster = edge::sink::Poster::DryRun(edge::sink::DryRun::new("p", "tug-0001", "tug-0001"));
    let pacing = edge::sink::Pacing { batching: BatchingConfig::default(), replay_per_second: 1000 };
    let (_handle, worker) = edge::sink::DeviceWorker::new("p", "tug-0001", poster, pacing, links);
    let task = worker.run();
    println!(
        "{:<58} {:>12} bytes",
        "device worker: its task (dry run), before the HTTP client",
        std::mem::size_of_val(&task)
    );
}

/// Where an ATI translation's time goes: the call across the boundary without parsing (a
/// topic the plugin skips), and the same parsing natively, measured in alternation so that
/// the ratio holds however busy the machine is.
fn plugin_call_parts(instance: &mut edge::plugin::PluginInstance, message: &Message) {
    let skipped = Message { topic: "fleet/trips/info".into(), ..message.clone() };
    let (mut wasm, mut native, mut call) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..7 {
        wasm.push(
            measure(1, || {
                for _ in 0..5_000 {
                    drop(black_box(instance.translate(message).unwrap()));
                }
            }) / 5_000,
        );
        call.push(
            measure(1, || {
                for _ in 0..5_000 {
                    drop(black_box(instance.translate(&skipped).unwrap()));
                }
            }) / 5_000,
        );
        native.push(
            measure(1, || {
                for _ in 0..5_000 {
                    drop(black_box(native_ati(&message.payload)));
                }
            }) / 5_000,
        );
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (wasm, call, native) = (median(&mut wasm), median(&mut call), median(&mut native));
    report("ati-sherpa: plugin call that returns at once (a skipped topic)", call);
    report("ati-sherpa: the same parsing natively (SDK reader, same fields)", native);
    println!(
        "{:<58} {:>12.1}x",
        "ati-sherpa: translate in wasm / the same natively",
        wasm.as_secs_f64() / native.as_secs_f64()
    );
}

/// The ATI plugin's reading of a live status (`translate_status`), natively: the SDK's reader
/// over the same fields, with the position as the host receives it.
fn native_ati(payload: &[u8]) -> Result<Position, TranslateError> {
    let map = json::parse_object(payload)?;
    let status = json::Obj::root(&map);
    let mode = status.str("mode")?.map(str::to_ascii_lowercase);
    let pose = status.arr("pose")?.ok_or_else(|| malformed("pose: missing"))?;
    let n = |i: usize| json::coordinate(&pose[i], format_args!("pose[{i}]"));
    let (x, y, heading) = (n(0)?, n(1)?, n(2)?);
    let mut attributes = std::collections::BTreeMap::new();
    for key in ["trip_id", "trip_leg_id", "message_id", "error", "disabled_reason"] {
        if let Some(text) = status.text(key) {
            attributes.insert(key.to_string(), text);
        }
    }
    Ok(Position {
        device_id: status.req_str("sherpa_name")?.to_string(),
        timestamp_ms: status.timestamp_ms("timestamp", None)?,
        x,
        y,
        z: 0.0,
        heading_rad: Some(heading),
        battery_percent: status.num("battery_status")?.filter(|b| (0.0..=100.0).contains(b)).map(|b| b as f32),
        moving: None,
        speed_mps: None,
        status: mode,
        map_id: None,
        localization_score: None,
        attributes,
    })
}

/// A plain moving location with a battery.
fn location() -> TwinzoLocation {
    TwinzoLocation {
        timestamp: 1,
        sector_id: 1,
        x: 1.0,
        y: 2.0,
        z: 0.0,
        interval: 100,
        battery: Some(80),
        is_moving: true,
        localization_areas: vec![],
        no_go_areas: vec![],
    }
}

/// The fleet view at a plant's scale: recording each message, and the once-a-second judgement
/// of 1,000 devices (with their trails) into the view the page and the API serve.
fn fleet_view() {
    let watch = std::sync::Arc::new(PlantWatch::new("p", true));
    let robots: Vec<String> = (0..1000).map(|i| format!("tug-{i:04}")).collect();
    watch.set_devices(robots.iter().map(|r| (r, 1)));
    let mut position: Position = serde_json::from_value(
        serde_json::json!({"device_id": "tug-0000", "x": 1.0, "y": 2.0, "z": 0.0, "battery_percent": 80.0, "status": "fleet"}),
    )
    .unwrap();
    let mut location = location();
    let mut t = 1_700_000_000_000u64;
    let mut i = 0usize;
    report(
        "fleet: record one message's position (1,000 devices)",
        measure(200_000, || {
            i = (i + 1) % robots.len();
            t += 1;
            position.device_id.clone_from(&robots[i]);
            position.x += 0.01;
            location.timestamp = t;
            watch.heard("s", t, std::iter::once((&position, Some(&location))));
        }),
    );
    let fleet = Fleet::new(Judgement::default());
    fleet.set_plant(watch);
    report("fleet: judge 1,000 devices into the view (once a second)", measure(20, || drop(black_box(fleet.tick()))));
    let json = serde_json::to_vec(&*fleet.latest()).unwrap();
    report(
        "fleet: the view as JSON (one SSE event per client per second)",
        measure(20, || drop(black_box(serde_json::to_vec(&*fleet.latest()).unwrap()))),
    );
    println!("{:<58} {:>12} bytes", "fleet: view of 1,000 devices with 20-point trails", json.len());
}
