//! Plugin fixtures: `<case>.payload.*` files with a `<case>.expected.json` beside each, run
//! through a real plugin instance and compared field by field (`edge plugin test <dir>`).

use super::{CallError, LoadedPlugin, PluginInstance};
use crate::model::{Message, Position};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The receive time fixtures use unless they set one, so that outputs are reproducible.
pub const FIXTURE_RECEIVED_AT_MS: u64 = 1_700_000_000_000;

/// What a case expects, and the conditions it runs under.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expected {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The topic the payload arrives on (default: derived from the plugin's topics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Plugin options for this case, on top of any given on the command line.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_at_ms: Option<u64>,
    /// The positions the plugin must return (exactly these, in order)...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub positions: Option<Vec<Value>>,
    /// ...or the error it must return.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ExpectedError>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedError {
    /// `malformed`, `unavailable`, `trapped` or `invalid-output`.
    pub kind: String,
    /// Text the error message must contain, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_contains: Option<String>,
}

/// One case found in a fixtures folder.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub payload_path: PathBuf,
    pub expected_path: PathBuf,
}

/// How one case went.
#[derive(Debug, Clone)]
pub struct CaseReport {
    pub name: String,
    pub problems: Vec<String>,
    /// The expected file was (re)written from the actual outcome.
    pub blessed: bool,
}

impl CaseReport {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Finds the cases in `dir`: every `<case>.payload` or `<case>.payload.<ext>` file.
pub fn discover(dir: &Path) -> std::io::Result<Vec<Case>> {
    let mut cases = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(file) = path.file_name().and_then(|f| f.to_str()) else { continue };
        let name = match file.split_once(".payload") {
            Some((name, rest)) if rest.is_empty() || rest.starts_with('.') => name.to_string(),
            _ => continue,
        };
        cases.push(Case { expected_path: dir.join(format!("{name}.expected.json")), payload_path: path, name });
    }
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(cases)
}

/// A topic for a payload when nobody named one: the plugin's first default topic with
/// wildcards filled in.
pub fn sample_topic(plugin: &LoadedPlugin) -> String {
    let Some(filter) = plugin.info.default_topics.first() else { return "test".into() };
    filter
        .split('/')
        .map(|level| if level == "+" || level == "#" { "test" } else { level })
        .collect::<Vec<_>>()
        .join("/")
}

/// A translation outcome as JSON: `{"positions": [...]}` or `{"error": {"kind", "message"}}`.
pub fn outcome_json(outcome: &Result<Vec<Position>, CallError>) -> Value {
    match outcome {
        Ok(positions) => serde_json::json!({ "positions": positions }),
        Err(e) => serde_json::json!({ "error": { "kind": e.kind(), "message": e.detail() } }),
    }
}

/// Runs every case with `plugin` (configured with `base_options` plus each case's own).
/// With `bless`, writes each case's actual outcome as its expected file instead of comparing.
pub fn run(
    plugin: &Arc<LoadedPlugin>,
    base_options: &[(String, String)],
    cases: &[Case],
    bless: bool,
) -> Vec<CaseReport> {
    let mut instances: BTreeMap<Vec<(String, String)>, Result<PluginInstance, String>> = BTreeMap::new();
    cases
        .iter()
        .map(|case| {
            let problems = match run_case(plugin, base_options, case, bless, &mut instances) {
                Ok(problems) => problems,
                Err(problem) => vec![problem],
            };
            CaseReport { name: case.name.clone(), blessed: bless && problems.is_empty(), problems }
        })
        .collect()
}

fn run_case(
    plugin: &Arc<LoadedPlugin>,
    base_options: &[(String, String)],
    case: &Case,
    bless: bool,
    instances: &mut BTreeMap<Vec<(String, String)>, Result<PluginInstance, String>>,
) -> Result<Vec<String>, String> {
    let expected = read_expected(case, bless)?;
    let payload =
        std::fs::read(&case.payload_path).map_err(|e| format!("cannot read {}: {e}", case.payload_path.display()))?;
    let mut options: BTreeMap<String, String> = base_options.iter().cloned().collect();
    options.extend(expected.config.clone());
    let options: Vec<(String, String)> = options.into_iter().collect();
    let instance = instances
        .entry(options.clone())
        .or_insert_with(|| plugin.with_options(&options).and_then(|p| p.instantiate()).map_err(|e| e.to_string()))
        .as_mut()
        .map_err(|e| e.clone())?;
    let message = Message {
        topic: expected.topic.clone().unwrap_or_else(|| sample_topic(plugin)),
        payload: payload.into(),
        received_at_ms: expected.received_at_ms.unwrap_or(FIXTURE_RECEIVED_AT_MS),
    };
    let outcome = instance.translate(&message);
    if bless {
        bless_case(case, expected, &outcome)?;
        return Ok(Vec::new());
    }
    Ok(compare(&expected, &outcome))
}

fn read_expected(case: &Case, bless: bool) -> Result<Expected, String> {
    let text = match std::fs::read_to_string(&case.expected_path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && bless => return Ok(Expected::default()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "no {} (run with --bless to write it from the actual output)",
                case.expected_path.display()
            ));
        }
        Err(e) => return Err(format!("cannot read {}: {e}", case.expected_path.display())),
    };
    let expected: Expected =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", case.expected_path.display()))?;
    if !bless && expected.positions.is_some() == expected.error.is_some() {
        return Err(format!("{}: give exactly one of `positions` and `error`", case.expected_path.display()));
    }
    Ok(expected)
}

fn bless_case(case: &Case, mut expected: Expected, outcome: &Result<Vec<Position>, CallError>) -> Result<(), String> {
    match outcome {
        Ok(positions) => {
            expected.positions =
                Some(positions.iter().map(|p| serde_json::to_value(p).expect("positions serialize")).collect());
            expected.error = None;
        }
        Err(e) => {
            expected.positions = None;
            expected.error = Some(ExpectedError { kind: e.kind().into(), message_contains: Some(e.detail().into()) });
        }
    }
    let text = serde_json::to_string_pretty(&expected).expect("expected serializes") + "\n";
    std::fs::write(&case.expected_path, text).map_err(|e| format!("cannot write {}: {e}", case.expected_path.display()))
}

fn compare(expected: &Expected, outcome: &Result<Vec<Position>, CallError>) -> Vec<String> {
    let mut problems = Vec::new();
    match (&expected.positions, &expected.error, outcome) {
        (Some(want), _, Ok(got)) => {
            let got: Vec<Value> = got.iter().map(|p| serde_json::to_value(p).expect("positions serialize")).collect();
            diff(&Value::Array(want.clone()), &Value::Array(got), "positions", &mut problems);
        }
        (Some(_), _, Err(e)) => problems.push(format!("expected positions, got error ({}): {}", e.kind(), e.detail())),
        (_, Some(want), Err(e)) => {
            if want.kind != e.kind() {
                problems.push(format!("expected a {} error, got {}: {}", want.kind, e.kind(), e.detail()));
            } else if let Some(text) = want.message_contains.as_deref().filter(|t| !e.detail().contains(t)) {
                problems.push(format!("error message {:?} does not contain {text:?}", e.detail()));
            }
        }
        (_, Some(want), Ok(got)) => {
            problems.push(format!("expected a {} error, got {} position(s)", want.kind, got.len()))
        }
        (None, None, _) => problems.push("the expected file gives neither positions nor error".into()),
    }
    problems
}

/// Position fields the contract (wit/plugin.wit) carries as `f32`, compared at that precision.
const F32_FIELDS: [&str; 1] = [".battery_percent"];

/// Lists every difference between two JSON values, naming the path of each.
pub fn diff(want: &Value, got: &Value, path: &str, out: &mut Vec<String>) {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (key, wv) in w {
                match g.get(key) {
                    Some(gv) => diff(wv, gv, &format!("{path}.{key}"), out),
                    None => out.push(format!("{path}.{key}: expected {wv}, missing")),
                }
            }
            for (key, gv) in g.iter().filter(|(k, _)| !w.contains_key(*k)) {
                out.push(format!("{path}.{key}: not expected, got {gv}"));
            }
        }
        (Value::Array(w), Value::Array(g)) => {
            for (i, (wv, gv)) in w.iter().zip(g).enumerate() {
                diff(wv, gv, &format!("{path}[{i}]"), out);
            }
            if w.len() != g.len() {
                out.push(format!("{path}: expected {} item(s), got {}", w.len(), g.len()));
            }
        }
        (Value::Number(w), Value::Number(g)) => {
            let (w, g) = (w.as_f64().unwrap_or(f64::NAN), g.as_f64().unwrap_or(f64::NAN));
            // The contract carries these as f32: 85.45 comes back as 85.44999694824219.
            let same = if F32_FIELDS.iter().any(|f| path.ends_with(f)) {
                w as f32 == g as f32
            } else {
                (w - g).abs() <= 1e-9 * w.abs().max(g.abs()).max(1.0)
            };
            if !same {
                out.push(format!("{path}: expected {w}, got {g}"));
            }
        }
        (w, g) if w != g => out.push(format!("{path}: expected {w}, got {g}")),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn diff_names_each_path() {
        let mut out = Vec::new();
        diff(&json!([{"x": 1.0, "id": "a"}]), &json!([{"x": 1.5, "id": "a", "extra": true}]), "positions", &mut out);
        assert_eq!(out, vec!["positions[0].x: expected 1, got 1.5", "positions[0].extra: not expected, got true"]);
    }

    #[test]
    fn diff_tolerates_float_noise_only() {
        let mut out = Vec::new();
        diff(&json!(79.3), &json!(79.30000000000001), "b", &mut out);
        assert!(out.is_empty());
        diff(&json!(79.3), &json!(79.31), "b", &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn battery_is_compared_at_the_contracts_f32_precision() {
        let mut out = Vec::new();
        diff(&json!({"battery_percent": 85.45}), &json!({"battery_percent": 85.44999694824219}), "p", &mut out);
        assert!(out.is_empty(), "{out:?}");
        diff(&json!({"battery_percent": 85.45}), &json!({"battery_percent": 85.46}), "p", &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn discovers_payload_files_only() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["b.payload.json", "a.payload", "a.expected.json", "notes.md", "c.payloadx"] {
            std::fs::write(dir.path().join(f), "{}").unwrap();
        }
        let names: Vec<_> = discover(dir.path()).unwrap().into_iter().map(|c| c.name).collect();
        assert_eq!(names, vec!["a", "b"]);
    }
}
