//! Property tests (proptest) of what faces untrusted input: every plugin's `translate` through
//! the real host, and the config loader. Any input gives an answer or a clear error; never a
//! trap, an invalid position or a panic.

mod support;

use edge::model::Message;
use edge::plugin::{CallError, PluginEngine, PluginInstance, SandboxLimits};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::cell::RefCell;

/// Field names the plugins look for, so that generated documents reach deep into them.
const KEYS: &[&str] = &[
    "sherpa_name",
    "pose",
    "battery_status",
    "mode",
    "timestamp",
    "disabled",
    "device_id",
    "position",
    "x",
    "y",
    "z",
    "battery",
    "status",
    "speed",
    "format",
    "robot",
    "time_ms",
    "heading",
    "moving",
    "agvPosition",
    "mobileRobotPosition",
    "theta",
    "mapId",
    "positionInitialized",
    "localized",
    "manufacturer",
    "serialNumber",
    "velocity",
    "vx",
    "vy",
    "batteryState",
    "batteryCharge",
    "powerSupply",
    "stateOfCharge",
    "driving",
    "operatingMode",
    "errors",
    "junk",
];

const TOPICS: &[&str] = &[
    "ati_fm/sherpa/status",
    "ati/amr/tug-1/status",
    "fleet/trips/info",
    "hitech/amr/a-1/position",
    "hitech/amr/a-1/battery",
    "edge-sim/f/r/state",
    "uagv/v2/KIT/0001/state",
    "uagv/v3/KIT/0001/visualization",
    "x",
    "",
];

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("JSON has no NaN", |f| f.is_finite()).prop_map(Value::from),
        prop_oneof![Just(-1.0), Just(0.0), Just(1e300), Just(-1e-300), Just(100.5), Just(1.73e12)]
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        Just(Value::from("edge-sim/1")),
        Just(Value::from("2025-12-01T13:21:52Z")),
        Just(Value::from("disconnected")),
    ]
}

fn document() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..7).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..8)
                .prop_map(|fields| Value::Object(fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        ]
    })
}

thread_local! {
    static INSTANCES: RefCell<Vec<(String, PluginInstance)>> = RefCell::new({
        let engine = PluginEngine::new(SandboxLimits::default(), None).unwrap();
        ["ati-sherpa", "hitech", "simulator", "vda5050"]
            .iter()
            .map(|name| (name.to_string(), engine.load(&support::plugin(name), &[], None).unwrap().instantiate().unwrap()))
            .collect()
    });
}

fn translate_everywhere(topic: &str, payload: &[u8]) {
    INSTANCES.with(|instances| {
        for (name, instance) in instances.borrow_mut().iter_mut() {
            let message =
                Message { topic: topic.into(), payload: payload.to_vec().into(), received_at_ms: 1_700_000_000_000 };
            match instance.translate(&message) {
                Ok(_) | Err(CallError::Malformed(_)) => {}
                Err(other) => panic!("{name} on {topic}: {other:?} for {}", String::from_utf8_lossy(payload)),
            }
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn plugins_answer_any_json(doc in document(), topic in prop::sample::select(TOPICS)) {
        translate_everywhere(topic, doc.to_string().as_bytes());
    }

    #[test]
    fn plugins_answer_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512), topic in prop::sample::select(TOPICS)) {
        translate_everywhere(topic, &bytes);
    }

    #[test]
    fn plugins_answer_near_misses_of_real_messages(cut in 0usize..400, flip in 0usize..400, byte in any::<u8>()) {
        for (topic, sample) in [
            ("ati_fm/sherpa/status", include_str!("../plugins/ati-sherpa/fixtures/live-full.payload.json")),
            ("hitech/amr/a/position", include_str!("../plugins/hitech/fixtures/full.payload.json")),
            ("uagv/v2/KIT/0001/state", include_str!("../plugins/vda5050/fixtures/v2-state.payload.json")),
        ] {
            let mut bytes = sample.as_bytes().to_vec();
            if flip < bytes.len() { bytes[flip] = byte; }
            bytes.truncate(cut.max(1));
            translate_everywhere(topic, &bytes);
        }
    }

    #[test]
    fn config_loader_never_panics_on_mutations(cut in 0usize..2000, flip in 0usize..2000, byte in any::<u8>()) {
        let mut text = include_str!("../examples/two-plants.yaml").as_bytes().to_vec();
        if flip < text.len() { text[flip] = byte; }
        text.truncate(cut.max(1));
        let text = String::from_utf8_lossy(&text);
        let _ = edge::config::parse(&text, std::path::Path::new("."), &|_| Some("x".into()));
    }

    #[test]
    fn config_loader_never_panics_on_any_document(doc in document()) {
        let wrapped = json!({ "sources": [doc.clone()], "plants": [doc.clone()], "spool": doc.clone() });
        for candidate in [doc, wrapped] {
            let _ = edge::config::parse(&candidate.to_string(), std::path::Path::new("."), &|_| None);
        }
    }
}
