//! Reading vendor JSON with errors that say what and where (`pose[1]: expected a number`).
//! Every number is checked to be finite and of a plausible size before it can become a position.

use crate::{TranslateError, malformed};
use serde_json::{Map, Value};

/// Coordinates beyond this many units are rejected as garbage (it is 10,000 km in metres,
/// still far beyond any plant in millimetres).
pub const MAX_COORDINATE: f64 = 1e10;

/// Parses a payload that must be one JSON object.
pub fn parse_object(payload: &[u8]) -> Result<Map<String, Value>, TranslateError> {
    if payload.is_empty() {
        return Err(malformed("payload is empty, expected a JSON object"));
    }
    if let Err(e) = std::str::from_utf8(payload) {
        return Err(malformed(format!("payload is not UTF-8 (invalid byte at offset {})", e.valid_up_to())));
    }
    match serde_json::from_slice::<Value>(payload) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(malformed(format!("payload: expected a JSON object, found {}", kind(&other)))),
        Err(e) => Err(malformed(format!("payload is not valid JSON: {e}"))),
    }
}

/// A JSON object together with its path in the message, for error messages.
pub struct Obj<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

impl<'a> Obj<'a> {
    /// The top-level object of a message.
    pub fn root(map: &'a Map<String, Value>) -> Self {
        Obj { map, path: String::new() }
    }

    fn path_of(&self, key: &str) -> String {
        if self.path.is_empty() { key.to_string() } else { format!("{}.{key}", self.path) }
    }

    /// The value at `key`; JSON `null` counts as absent.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn str(&self, key: &str) -> Result<Option<&'a str>, TranslateError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(wrong_type(&self.path_of(key), "a string", other)),
        }
    }

    pub fn req_str(&self, key: &str) -> Result<&'a str, TranslateError> {
        self.str(key)?.ok_or_else(|| missing(&self.path_of(key)))
    }

    /// A finite number (integers and floats alike).
    pub fn num(&self, key: &str) -> Result<Option<f64>, TranslateError> {
        self.get(key).map(|v| number(v, &self.path_of(key))).transpose()
    }

    pub fn req_num(&self, key: &str) -> Result<f64, TranslateError> {
        self.num(key)?.ok_or_else(|| missing(&self.path_of(key)))
    }

    /// A coordinate: a finite number no larger than [`MAX_COORDINATE`].
    pub fn req_coordinate(&self, key: &str) -> Result<f64, TranslateError> {
        coordinate(self.get(key).ok_or_else(|| missing(&self.path_of(key)))?, &self.path_of(key))
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>, TranslateError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(wrong_type(&self.path_of(key), "true or false", other)),
        }
    }

    pub fn obj(&self, key: &str) -> Result<Option<Obj<'a>>, TranslateError> {
        match self.map.get_key_value(key) {
            None | Some((_, Value::Null)) => Ok(None),
            Some((_, Value::Object(map))) => Ok(Some(Obj { map, path: self.path_of(key) })),
            Some((_, other)) => Err(wrong_type(&self.path_of(key), "an object", other)),
        }
    }

    /// An object that must be there: missing or null is `malformed` naming its path.
    pub fn req_obj(&self, key: &str) -> Result<Obj<'a>, TranslateError> {
        self.obj(key)?.ok_or_else(|| missing(&self.path_of(key)))
    }

    pub fn arr(&self, key: &str) -> Result<Option<&'a [Value]>, TranslateError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => Ok(Some(items)),
            Some(other) => Err(wrong_type(&self.path_of(key), "an array", other)),
        }
    }

    /// A time as RFC 3339 text or an epoch number (s, ms, µs or ns), to UTC epoch ms.
    /// `z_means` reinterprets text labelled `Z` (see [`crate::time::parse_rfc3339_ms`]).
    pub fn timestamp_ms(&self, key: &str, z_means: Option<i64>) -> Result<Option<u64>, TranslateError> {
        let path = self.path_of(key);
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(text)) => {
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
    /// written, booleans as `true`/`false`); `None` for absent, null, empty, arrays and objects.
    pub fn text(&self, key: &str) -> Option<String> {
        match self.get(key)? {
            Value::String(s) if s.is_empty() => None,
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
}

/// A finite JSON number at `path`.
pub fn number(v: &Value, path: &str) -> Result<f64, TranslateError> {
    match v.as_f64() {
        Some(n) if n.is_finite() => Ok(n),
        Some(_) => Err(malformed(format!("{path}: number is not finite"))),
        None => Err(wrong_type(path, "a number", v)),
    }
}

/// A finite number of plausible size for a coordinate.
pub fn coordinate(v: &Value, path: &str) -> Result<f64, TranslateError> {
    let n = number(v, path)?;
    if n.abs() > MAX_COORDINATE {
        return Err(malformed(format!("{path}: {n:e} is too large to be a coordinate")));
    }
    Ok(n)
}

pub fn missing(path: &str) -> TranslateError {
    malformed(format!("{path}: missing"))
}

pub fn wrong_type(path: &str, expected: &str, found: &Value) -> TranslateError {
    malformed(format!("{path}: expected {expected}, found {}", kind(found)))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
