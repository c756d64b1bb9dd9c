//! Reading vendor JSON with errors that say what and where (`pose[1]: expected a number`).
//! Every number is checked to be finite and of a plausible size before it can become a position.
//!
//! A payload is parsed into a tree that borrows its strings and keys from the payload and keeps
//! an object's members in a vector (`serde_json_borrow`): a status message of a dozen fields
//! then costs a handful of allocations instead of one per key and string, which is most of what
//! a translation costs inside wasm. Paths for error messages are only written out on an error.

use crate::{TranslateError, malformed};
use std::fmt::{self, Display};

pub use serde_json_borrow::Value;

/// A JSON object's members in the order the payload has them, borrowing from the payload.
pub type Map<'a> = serde_json_borrow::Map<'a>;

/// Coordinates beyond this many units are rejected as garbage (it is 10,000 km in metres,
/// still far beyond any plant in millimetres).
pub const MAX_COORDINATE: f64 = 1e10;

/// Parses a payload that must be one JSON object.
pub fn parse_object(payload: &[u8]) -> Result<Map<'_>, TranslateError> {
    if payload.is_empty() {
        return Err(malformed("payload is empty, expected a JSON object"));
    }
    let text = std::str::from_utf8(payload)
        .map_err(|e| malformed(format!("payload is not UTF-8 (invalid byte at offset {})", e.valid_up_to())))?;
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(malformed(format!("payload: expected a JSON object, found {}", kind(&other)))),
        Err(e) => Err(malformed(format!("payload is not valid JSON: {e}"))),
    }
}

/// A JSON object together with its path in the message, for error messages.
pub struct Obj<'a> {
    map: &'a Map<'a>,
    path: String,
}

/// `key` inside the object at `parent` (the root when empty), written out only when shown.
struct PathOf<'p> {
    parent: &'p str,
    key: &'p str,
}

impl Display for PathOf<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.parent {
            "" => f.write_str(self.key),
            parent => write!(f, "{parent}.{}", self.key),
        }
    }
}

impl<'a> Obj<'a> {
    /// The top-level object of a message.
    pub fn root(map: &'a Map<'a>) -> Self {
        Obj { map, path: String::new() }
    }

    fn path_of<'p>(&'p self, key: &'p str) -> PathOf<'p> {
        PathOf { parent: &self.path, key }
    }

    /// The value at `key`; JSON `null` counts as absent. With a key given twice, the last counts.
    pub fn get(&self, key: &str) -> Option<&'a Value<'a>> {
        let map: &'a Map<'a> = self.map;
        // From the end: the last of a repeated key counts, and the first match found is it.
        map.as_vec().iter().rev().find(|(k, _)| &**k == key).map(|(_, v)| v).filter(|v| !v.is_null())
    }

    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn str(&self, key: &str) -> Result<Option<&'a str>, TranslateError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Str(s)) => Ok(Some(s.as_ref())),
            Some(other) => Err(wrong_type(self.path_of(key), "a string", other)),
        }
    }

    pub fn req_str(&self, key: &str) -> Result<&'a str, TranslateError> {
        self.str(key)?.ok_or_else(|| missing(self.path_of(key)))
    }

    /// A finite number (integers and floats alike).
    pub fn num(&self, key: &str) -> Result<Option<f64>, TranslateError> {
        self.get(key).map(|v| number(v, self.path_of(key))).transpose()
    }

    pub fn req_num(&self, key: &str) -> Result<f64, TranslateError> {
        self.num(key)?.ok_or_else(|| missing(self.path_of(key)))
    }

    /// A coordinate: a finite number no larger than [`MAX_COORDINATE`].
    pub fn req_coordinate(&self, key: &str) -> Result<f64, TranslateError> {
        coordinate(self.get(key).ok_or_else(|| missing(self.path_of(key)))?, self.path_of(key))
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>, TranslateError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(wrong_type(self.path_of(key), "true or false", other)),
        }
    }

    pub fn obj(&self, key: &str) -> Result<Option<Obj<'a>>, TranslateError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(Obj { map, path: self.path_of(key).to_string() })),
            Some(other) => Err(wrong_type(self.path_of(key), "an object", other)),
        }
    }

    /// An object that must be there: missing or null is `malformed` naming its path.
    pub fn req_obj(&self, key: &str) -> Result<Obj<'a>, TranslateError> {
        self.obj(key)?.ok_or_else(|| missing(self.path_of(key)))
    }

    pub fn arr(&self, key: &str) -> Result<Option<&'a [Value<'a>]>, TranslateError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => Ok(Some(items)),
            Some(other) => Err(wrong_type(self.path_of(key), "an array", other)),
        }
    }

    /// A time as RFC 3339 text or an epoch number (s, ms, µs or ns), to UTC epoch ms.
    /// `z_means` reinterprets text labelled `Z` (see [`crate::time::parse_rfc3339_ms`]).
    pub fn timestamp_ms(&self, key: &str, z_means: Option<i64>) -> Result<Option<u64>, TranslateError> {
        let path = self.path_of(key);
        match self.get(key) {
            None => Ok(None),
            Some(Value::Str(text)) => {
                crate::time::parse_rfc3339_ms(text, z_means).map(Some).map_err(|e| malformed(format!("{path}: {e}")))
            }
            Some(value) => {
                let n = number(value, &path)?;
                crate::time::epoch_ms_from_number(n)
                    .map(Some)
                    .ok_or_else(|| malformed(format!("{path}: {n} is not an epoch time")))
            }
        }
    }

    /// A scalar rendered as text for `position.attributes` (strings unquoted, numbers as
    /// JSON writes them, booleans as `true`/`false`); `None` for absent, null, empty, arrays
    /// and objects.
    pub fn text(&self, key: &str) -> Option<String> {
        match self.get(key)? {
            Value::Str(s) if s.is_empty() => None,
            Value::Str(s) => Some(s.to_string()),
            Value::Number(n) => Some(number_text(n)),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
}

/// A number as JSON writes it: integers without a fraction, floats always with one (`95.0`).
fn number_text(n: &serde_json_borrow::Number) -> String {
    match (n.as_u64(), n.as_i64(), n.as_f64().and_then(serde_json::Number::from_f64)) {
        (Some(u), _, _) => u.to_string(),
        (_, Some(i), _) => i.to_string(),
        (_, _, Some(f)) => f.to_string(),
        _ => n.to_string(),
    }
}

/// A finite JSON number at `path`.
pub fn number(v: &Value, path: impl Display) -> Result<f64, TranslateError> {
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(n) if n.is_finite() => Ok(n),
            _ => Err(malformed(format!("{path}: number is not finite"))),
        },
        other => Err(wrong_type(path, "a number", other)),
    }
}

/// A finite number of plausible size for a coordinate.
pub fn coordinate(v: &Value, path: impl Display) -> Result<f64, TranslateError> {
    let n = number(v, &path)?;
    if n.abs() > MAX_COORDINATE {
        return Err(malformed(format!("{path}: {n:e} is too large to be a coordinate")));
    }
    Ok(n)
}

pub fn missing(path: impl Display) -> TranslateError {
    malformed(format!("{path}: missing"))
}

pub fn wrong_type(path: impl Display, expected: &str, found: &Value) -> TranslateError {
    malformed(format!("{path}: expected {expected}, found {}", kind(found)))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::Str(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(result: Result<impl std::fmt::Debug, TranslateError>) -> String {
        match result {
            Err(TranslateError::Malformed(why)) => why,
            other => panic!("expected malformed, got {other:?}"),
        }
    }

    #[test]
    fn reads_fields_borrowed_from_the_payload() {
        let payload = br#"{"name": "tug-1", "esc\u0061ped": "a\"b", "n": 3, "f": 95.0, "ok": true, "pose": [1, -2.5]}"#;
        let map = parse_object(payload).unwrap();
        let doc = Obj::root(&map);
        assert_eq!(doc.str("name").unwrap(), Some("tug-1"));
        assert_eq!(doc.str("escaped").unwrap(), Some("a\"b"));
        assert_eq!(doc.num("n").unwrap(), Some(3.0));
        assert_eq!(doc.bool("ok").unwrap(), Some(true));
        let pose = doc.arr("pose").unwrap().unwrap();
        assert_eq!(coordinate(&pose[1], "pose[1]").unwrap(), -2.5);
        assert_eq!(doc.text("n").as_deref(), Some("3"));
        assert_eq!(doc.text("f").as_deref(), Some("95.0"), "a float keeps its fraction, as JSON writes it");
        assert_eq!(doc.text("ok").as_deref(), Some("true"));
        assert_eq!(doc.text("pose"), None);
    }

    #[test]
    fn null_is_absent_and_the_last_of_a_repeated_key_counts() {
        let map = parse_object(br#"{"a": null, "b": 1, "b": 2}"#).unwrap();
        let doc = Obj::root(&map);
        assert!(!doc.has("a") && !doc.has("missing"));
        assert_eq!(doc.num("b").unwrap(), Some(2.0));
    }

    #[test]
    fn errors_name_the_path() {
        let map = parse_object(br#"{"position": {"x": "1", "y": 1e11}, "pose": [1, true]}"#).unwrap();
        let doc = Obj::root(&map);
        let position = doc.req_obj("position").unwrap();
        assert_eq!(error(position.req_coordinate("x")), "position.x: expected a number, found a string");
        assert_eq!(error(position.req_coordinate("y")), "position.y: 1e11 is too large to be a coordinate");
        assert_eq!(error(position.req_num("z")), "position.z: missing");
        assert_eq!(error(doc.str("position")), "position: expected a string, found an object");
        let pose = doc.arr("pose").unwrap().unwrap();
        assert_eq!(
            error(coordinate(&pose[1], format_args!("pose[{}]", 1))),
            "pose[1]: expected a number, found a boolean"
        );
    }

    #[test]
    fn payloads_that_are_not_one_object() {
        assert_eq!(error(parse_object(b"")), "payload is empty, expected a JSON object");
        assert_eq!(error(parse_object(b"{\"a\": \"\xff\"}")), "payload is not UTF-8 (invalid byte at offset 7)");
        assert_eq!(error(parse_object(b"[1]")), "payload: expected a JSON object, found an array");
        assert!(error(parse_object(b"{\"a\": 1e999}")).starts_with("payload is not valid JSON: number out of range"));
    }
}
