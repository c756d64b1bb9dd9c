//! A deliberately misbehaving plugin for the host's sandbox tests; never deploy it.
//! The payload text picks the misbehaviour: loop, alloc, recurse, panic, huge:N, log:N, nan,
//! sleep:MS (waits in a WASI host call, out of reach of the epoch deadline), ok, or an escape
//! attempt (fs, env) that reports what it could reach.

use edge_plugin_sdk::{Level, Message, Plugin, PluginInfo, Translation, log, malformed, position};
use std::hint::black_box;

struct Hostile;

impl Plugin for Hostile {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "hostile".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            vendor: "edge test suite".into(),
            description: "misbehaves on request, to test the sandbox".into(),
            default_topics: vec!["hostile/#".into()],
            options: vec![("fail".into(), "any value makes configure fail".into())],
        }
    }

    fn configure(options: Vec<(String, String)>) -> Result<(), String> {
        match options.iter().find(|(name, _)| name == "fail") {
            Some(_) => Err("configured to fail".into()),
            None => Ok(()),
        }
    }

    fn translate(msg: Message) -> Translation {
        let text = String::from_utf8_lossy(&msg.payload).trim().to_string();
        let (verb, count) = match text.split_once(':') {
            Some((verb, n)) => (verb, n.parse::<usize>().unwrap_or(1)),
            None => (text.as_str(), 1),
        };
        match verb {
            "loop" => spin(),
            "alloc" => hoard(),
            "recurse" => Ok(vec![position("deep", recurse(black_box(1)) as f64, 0.0, 0.0)]),
            "panic" => panic!("hostile plugin panicked on purpose"),
            "huge" => Ok((0..count).map(|i| position(format!("robot-{i}"), i as f64, 0.0, 0.0)).collect()),
            "log" => {
                for i in 0..count {
                    log(Level::Warn, &format!("log flood line {i}"));
                }
                Ok(vec![position("logger", 0.0, 0.0, 0.0)])
            }
            "nan" => Ok(vec![position("nan", f64::NAN, 0.0, 0.0)]),
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_millis(count as u64));
                Ok(vec![position("sleeper", 0.0, 0.0, 0.0)])
            }
            "ok" => Ok(vec![position("hostile-1", 1.0, 2.0, 0.0)]),
            "fs" => Ok(vec![reach(
                "fs",
                std::fs::read_to_string("/etc/passwd").map(|s| s.len()).map_err(|e| e.to_string()),
            )]),
            "env" => Ok(vec![reach("env", Ok::<usize, String>(std::env::vars().count()))]),
            other => Err(malformed(format!("unknown misbehaviour `{other}`"))),
        }
    }
}

/// A position whose attributes say what an escape attempt reached.
fn reach(what: &str, outcome: Result<usize, String>) -> edge_plugin_sdk::Position {
    let mut p = position(what, 0.0, 0.0, 0.0);
    p.attributes.push(match outcome {
        Ok(n) => ("reached".into(), n.to_string()),
        Err(e) => ("denied".into(), e),
    });
    p
}

fn spin() -> Translation {
    let mut n: u64 = 0;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

// Grows memory a mebibyte at a time, touching one byte of each: the memory cap, not the time
// spent writing 64 MiB (past the CPU deadline on a busy machine), is what stops it.
fn hoard() -> Translation {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut block = Vec::with_capacity(1 << 20);
        block.push(1u8);
        hoard.push(block);
        black_box(&hoard);
    }
}

fn recurse(depth: u64) -> u64 {
    let frame = black_box([depth; 64]);
    if black_box(depth) == 0 { frame[0] } else { recurse(depth + 1) + frame[1] }
}

edge_plugin_sdk::export!(Hostile);
