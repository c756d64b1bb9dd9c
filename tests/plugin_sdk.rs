//! The plugin SDK's helpers (JSON reading, timestamps, the arena allocator), compiled natively so that their unit
//! tests run with the host's suite: the plugins themselves only build for wasm32-wasip2.

#[allow(dead_code)]
#[path = "../plugins/sdk/src/arena.rs"]
mod arena;
#[allow(dead_code)]
#[path = "../plugins/sdk/src/json.rs"]
mod json;
#[allow(dead_code)]
#[path = "../plugins/sdk/src/time.rs"]
mod time;

/// What the SDK's modules expect from the crate around them (its `lib.rs` has the generated
/// contract type; this is the same shape).
#[derive(Debug)]
pub enum TranslateError {
    Malformed(String),
}

pub fn malformed(why: impl Into<String>) -> TranslateError {
    TranslateError::Malformed(why.into())
}
