//! edge: one process per plant that reads robot telemetry from MQTT, translates each vendor's
//! format with a sandboxed WebAssembly plugin, and posts canonical positions to Twinzo.
//!
//! Modules follow the data flow: [`plugin`] (WASM host) → [`model`] (types shared by stages);
//! [`cli`] wires them into the `edge` binary.

pub mod backoff;
pub mod broker;
pub mod cli;
pub mod config;
pub mod episode;
pub mod http;
pub mod model;
pub mod pipeline;
pub mod plugin;
pub mod runtime;
pub mod sim;
pub mod sink;
pub mod source;
pub mod spool;
pub mod stats;
