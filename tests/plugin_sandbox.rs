//! The sandbox holds against a hostile plugin: infinite loops, memory bombs, deep recursion,
//! panics, huge outputs, log floods and escape attempts each fail one call, and the host goes on.

mod support;

use edge::model::Message;
use edge::plugin::{CacheOutcome, CallError, LoadError, PluginEngine, PluginInstance, SandboxLimits};
use std::time::{Duration, Instant};

fn engine() -> PluginEngine {
    PluginEngine::new(SandboxLimits::default(), None).unwrap()
}

fn hostile() -> PluginInstance {
    engine().load(&support::plugin("hostile"), &[], None).unwrap().instantiate().unwrap()
}

fn send(instance: &mut PluginInstance, payload: &str) -> Result<Vec<edge::model::Position>, CallError> {
    instance.translate(&Message {
        topic: "hostile/x".into(),
        payload: payload.as_bytes().to_vec().into(),
        received_at_ms: 0,
    })
}

/// After any failure, the same instance handle answers the next message normally.
fn assert_recovers(instance: &mut PluginInstance) {
    let positions = send(instance, "ok").expect("the plugin works again after the failure");
    assert_eq!(positions[0].device_id, "hostile-1");
}

fn assert_trapped(outcome: Result<Vec<edge::model::Position>, CallError>, needle: &str) {
    match outcome {
        Err(CallError::Trapped(why)) => assert!(why.contains(needle), "trap reason {why:?} lacks {needle:?}"),
        other => panic!("expected a trap mentioning {needle:?}, got {other:?}"),
    }
}

#[test]
fn infinite_loop_hits_the_cpu_deadline() {
    let mut instance = hostile();
    let started = Instant::now();
    assert_trapped(send(&mut instance, "loop"), "CPU deadline");
    // Generous bound for a loaded machine; the deadline itself is 100 ms.
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_recovers(&mut instance);
}

#[test]
fn memory_bomb_hits_the_memory_cap() {
    let mut instance = hostile();
    assert_trapped(send(&mut instance, "alloc"), "memory limit of 64 MiB exceeded");
    assert_recovers(&mut instance);
}

#[test]
fn smaller_memory_cap_is_enforced() {
    let limits = SandboxLimits { memory_bytes: 8 << 20, ..SandboxLimits::default() };
    let engine = PluginEngine::new(limits, None).unwrap();
    let mut instance = engine.load(&support::plugin("hostile"), &[], None).unwrap().instantiate().unwrap();
    assert_trapped(send(&mut instance, "alloc"), "memory limit of 8 MiB exceeded");
}

#[test]
fn deep_recursion_traps() {
    let mut instance = hostile();
    match send(&mut instance, "recurse") {
        Err(CallError::Trapped(why)) => {
            assert!(why.contains("stack overflow") || why.contains("out of bounds"), "{why}")
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    assert_recovers(&mut instance);
}

#[test]
fn panic_is_reported_with_its_message() {
    let mut instance = hostile();
    assert_trapped(send(&mut instance, "panic"), "hostile plugin panicked on purpose");
    assert_recovers(&mut instance);
}

#[test]
fn huge_output_is_refused_and_normal_output_passes() {
    let mut instance = hostile();
    match send(&mut instance, "huge:5000") {
        Err(CallError::InvalidOutput(why)) => assert!(why.contains("5000 positions"), "{why}"),
        other => panic!("expected invalid output, got {other:?}"),
    }
    assert_eq!(send(&mut instance, "huge:1000").unwrap().len(), 1000);
}

#[test]
fn non_finite_coordinates_are_refused() {
    let mut instance = hostile();
    match send(&mut instance, "nan") {
        Err(CallError::InvalidOutput(why)) => assert!(why.contains("x is not a finite number"), "{why}"),
        other => panic!("expected invalid output, got {other:?}"),
    }
}

#[test]
fn log_flood_is_rate_limited_not_fatal() {
    let mut instance = hostile();
    // 1,000 times the burst; about 12 ms of host calls, well inside the CPU deadline even on
    // a machine busy with the other sandbox tests (the deadline is wall-clock).
    let positions = send(&mut instance, "log:20000").unwrap();
    assert_eq!(positions[0].device_id, "logger");
}

#[test]
fn no_filesystem_and_no_environment() {
    // SAFETY: set before any thread of this test reads the environment.
    unsafe { std::env::set_var("EDGE_SANDBOX_SECRET", "hunter2") };
    let mut instance = hostile();
    let fs = &send(&mut instance, "fs").unwrap()[0];
    assert!(fs.attributes.contains_key("denied"), "plugin could read /etc/passwd: {fs:?}");
    let env = &send(&mut instance, "env").unwrap()[0];
    assert_eq!(env.attributes.get("reached").map(String::as_str), Some("0"), "plugin saw environment variables");
}

#[test]
fn configure_rejection_is_a_load_error_naming_the_file() {
    let err = engine().load(&support::plugin("hostile"), &[("fail".into(), "yes".into())], None).unwrap_err();
    assert!(matches!(err, LoadError::Configure { .. }), "{err:?}");
    assert!(err.to_string().contains("hostile.wasm") && err.to_string().contains("configured to fail"), "{err}");
}

#[test]
fn unknown_option_is_refused_by_name() {
    let err = engine().load(&support::plugin("ati-sherpa"), &[("colour".into(), "red".into())], None).unwrap_err();
    assert!(err.to_string().contains("unknown option `colour`"), "{err}");
}

#[test]
fn bad_option_value_is_refused_by_name() {
    let err =
        engine().load(&support::plugin("ati-sherpa"), &[("timestamp_offset".into(), "IST".into())], None).unwrap_err();
    assert!(err.to_string().contains("timestamp_offset: `IST` is not a UTC offset"), "{err}");
}

fn load_bytes(bytes: &[u8]) -> LoadError {
    engine().load_bytes("broken.wasm".as_ref(), bytes, &[], None).unwrap_err()
}

#[test]
fn truncated_file_is_not_a_component() {
    let wasm = std::fs::read(support::plugin("ati-sherpa")).unwrap();
    let err = load_bytes(&wasm[..wasm.len() / 2]);
    assert!(matches!(err, LoadError::NotAComponent { .. }), "{err:?}");
    assert!(err.to_string().starts_with("plugin broken.wasm is not a WebAssembly component"), "{err}");
}

#[test]
fn text_file_and_core_module_are_not_components() {
    assert!(matches!(load_bytes(b"#!/bin/sh\necho hi\n"), LoadError::NotAComponent { .. }));
    let core_module = wat::parse_str("(module)").unwrap();
    assert!(matches!(load_bytes(&core_module), LoadError::NotAComponent { .. }));
}

#[test]
fn component_without_translator_is_not_a_plugin() {
    let err = load_bytes(&wat::parse_str("(component)").unwrap());
    assert!(matches!(err, LoadError::NotAPlugin { .. }), "{err:?}");
    assert!(err.to_string().contains("exports no `edge:plugin/translator@1.0.0`"), "{err}");
}

#[test]
fn other_major_contract_version_is_refused_with_both_versions() {
    let wat = r#"(component
        (instance $translator)
        (export "edge:plugin/translator@2.0.0" (instance $translator)))"#;
    let err = load_bytes(&wat::parse_str(wat).unwrap());
    assert_eq!(
        err.to_string(),
        "plugin broken.wasm was built against edge:plugin@2.0.0; this host accepts 1.0.0 to 1.0.x"
    );
}

#[test]
fn digest_pin_refuses_another_file() {
    let path = support::plugin("hitech");
    let err = engine().load(&path, &[], Some(&"0".repeat(64))).unwrap_err();
    assert!(matches!(err, LoadError::DigestMismatch { .. }), "{err:?}");
    let right = edge::plugin::sha256_hex(&std::fs::read(&path).unwrap());
    engine().load(&path, &[], Some(&right)).unwrap();
}

#[test]
fn compiled_components_are_cached_on_disk() {
    let cache = tempfile::tempdir().unwrap();
    let engine = PluginEngine::new(SandboxLimits::default(), Some(cache.path().into())).unwrap();
    let first = engine.load(&support::plugin("hitech"), &[], None).unwrap();
    assert_eq!(first.cache, CacheOutcome::Compiled);
    let again = PluginEngine::new(SandboxLimits::default(), Some(cache.path().into())).unwrap();
    let second = again.load(&support::plugin("hitech"), &[], None).unwrap();
    assert_eq!(second.cache, CacheOutcome::Hit);
    // A corrupted entry is discarded and recompiled, not trusted.
    for entry in std::fs::read_dir(cache.path()).unwrap() {
        std::fs::write(entry.unwrap().path(), b"garbage").unwrap();
    }
    let third = again.load(&support::plugin("hitech"), &[], None).unwrap();
    assert_eq!(third.cache, CacheOutcome::Compiled);
}

#[test]
fn megabyte_payloads_are_errors_not_crashes() {
    let engine = engine();
    for name in ["ati-sherpa", "hitech", "simulator", "vda5050"] {
        let plugin = engine.load(&support::plugin(name), &[], None).unwrap();
        let mut instance = plugin.instantiate().unwrap();
        let topic = edge::plugin::fixtures::sample_topic(&plugin);
        let big_string = format!("{{\"junk\": \"{}\"}}", "x".repeat(1 << 20));
        let deep = "[".repeat(1 << 20);
        let garbage: Vec<u8> = (0..1u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
        for payload in [big_string.into_bytes(), deep.into_bytes(), garbage] {
            let outcome =
                instance.translate(&Message { topic: topic.clone(), payload: payload.into(), received_at_ms: 0 });
            match outcome {
                Ok(positions) => assert!(positions.is_empty(), "{name} invented positions from junk"),
                Err(CallError::Malformed(_)) => {}
                Err(other) => panic!("{name}: a 1 MB payload should be malformed, got {other:?}"),
            }
        }
    }
}
