//! The plugin side of the `edge:plugin` contract: generated bindings plus small helpers
//! that every vendor translator needs (path-aware JSON reading, timestamps, units).
//!
//! A plugin implements [`Plugin`] and exports it with `edge_plugin_sdk::export!(MyPlugin);`.

// Public only for the `export!` macro.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "vendor-plugin",
        path: "../../wit",
        pub_export_macro: true,
        default_bindings_module: "edge_plugin_sdk::bindings",
    });
}

pub mod arena;
pub mod json;
pub mod time;

// Plugins allocate through the arena unless they turn the `arena` feature off (to install an
// allocator of their own). Only where there is one thread: the arena has no locks.
#[cfg(all(feature = "arena", target_family = "wasm", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: arena::ArenaAllocator = arena::ArenaAllocator::new();

pub use bindings::edge::plugin::host::{Level, log};
pub use bindings::edge::plugin::types::{Message, PluginInfo, Position, TranslateError};
pub use bindings::export;
pub use bindings::exports::edge::plugin::translator::Guest as Plugin;

/// Shorthand for a translation result.
pub type Translation = Result<Vec<Position>, TranslateError>;

/// Builds a `malformed` error: the message can never be translated.
pub fn malformed(why: impl Into<String>) -> TranslateError {
    TranslateError::Malformed(why.into())
}

/// The longest device id the host accepts, in bytes.
pub const MAX_DEVICE_ID: usize = 200;

/// Checks a robot id taken from `field` the way the host will (not blank, at most
/// [`MAX_DEVICE_ID`] bytes, no control characters): a message naming its robot otherwise is
/// malformed, not a reason for the host to blame the plugin.
pub fn device_id(id: impl Into<String>, field: &str) -> Result<String, TranslateError> {
    let id = id.into();
    if id.trim().is_empty() || id.len() > MAX_DEVICE_ID || id.chars().any(char::is_control) {
        let shown: String = id.chars().take(40).collect();
        return Err(malformed(format!(
            "{field}: {shown:?} is not a usable robot id (blank, over {MAX_DEVICE_ID} bytes or with control characters)"
        )));
    }
    Ok(id)
}

/// A position at (x, y, z) metres with every optional field unknown.
pub fn position(device_id: impl Into<String>, x: f64, y: f64, z: f64) -> Position {
    Position {
        device_id: device_id.into(),
        timestamp_ms: None,
        x,
        y,
        z,
        heading_rad: None,
        battery_percent: None,
        moving: None,
        speed_mps: None,
        status: None,
        map_id: None,
        localization_score: None,
        attributes: Vec::new(),
    }
}

/// A battery reading as the contract wants it: 0-100, or unknown. Vendors send -1,
/// 255 or other sentinels for "unknown"; none of them becomes a number.
pub fn battery_percent(raw: Option<f64>) -> Option<f32> {
    raw.filter(|b| (0.0..=100.0).contains(b)).map(|b| b as f32)
}

/// Splits an MQTT topic into its levels.
pub fn topic_levels(topic: &str) -> Vec<&str> {
    topic.split('/').collect()
}

/// Reads options given to `configure`, rejecting names the plugin does not know.
pub fn check_option_names(options: &[(String, String)], known: &[&str]) -> Result<(), String> {
    for (name, _) in options {
        if !known.contains(&name.as_str()) {
            return Err(format!(
                "unknown option `{name}` (this plugin accepts: {})",
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            ));
        }
    }
    Ok(())
}
