//! Types that cross module boundaries: the canonical position every plugin produces.
//! Kept here so that plugin host, pipeline and sinks never reach into each other.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One robot position in the vendor's map frame (metres), as a plugin reported it.
/// Optional fields are `None` when the vendor did not say; nothing is invented.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Position {
    pub device_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_ms: Option<u64>,
    pub x: f64,
    pub y: f64,
    pub z: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heading_rad: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery_percent: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moving: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed_mps: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub localization_score: Option<f64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

/// One message handed to a plugin.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub payload: bytes::Bytes,
    pub received_at_ms: u64,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// One position as Twinzo's `POST /v3/localization` takes it: sector millimetres, exact
/// wire field names. `Battery` is left out when unknown, never invented.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TwinzoLocation {
    /// Epoch milliseconds.
    pub timestamp: u64,
    pub sector_id: i64,
    pub x: f64,
    pub y: f64,
    pub z: f64,
    /// Milliseconds to this device's next expected update.
    pub interval: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery: Option<u8>,
    pub is_moving: bool,
    #[serde(default)]
    pub localization_areas: Vec<i64>,
    #[serde(default)]
    pub no_go_areas: Vec<i64>,
}

#[cfg(test)]
impl TwinzoLocation {
    /// A plain location at `timestamp` and `x` mm, for tests.
    pub fn test_at(timestamp: u64, x: f64) -> Self {
        TwinzoLocation {
            timestamp,
            sector_id: 1,
            x,
            y: 2.0,
            z: 0.0,
            interval: 100,
            battery: None,
            is_moving: false,
            localization_areas: vec![],
            no_go_areas: vec![],
        }
    }
}
