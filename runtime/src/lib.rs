//! edge: one process per plant that reads robot telemetry from MQTT, translates each vendor's
//! format with a sandboxed WebAssembly plugin, and posts canonical positions to Twinzo.
//!
//! Modules follow the data flow: [`source`] (MQTT) → [`plugin`] (WASM host) → [`pipeline`]
//! (device map, transform) → [`spool`] → [`sink`] (Twinzo); [`runtime`] assembles them for
//! `edge run` and [`cli`] wires everything into the `edge` binary. At the bottom, imported by
//! the rest and importing none of it: [`model`] (types shared by stages), [`fleet`] (health of
//! devices, sources and plants; conditions and events), [`text`], [`episode`], [`backoff`], [`memory`].

pub mod alert;
pub mod backoff;
pub mod broker;
pub mod calibrate;
pub mod cli;
pub mod config;
pub mod episode;
pub mod fleet;
pub mod http;
pub mod memory;
pub mod model;
pub mod pipeline;
pub mod plugin;
pub mod runtime;
pub mod sim;
pub mod sink;
pub mod source;
pub mod spool;
pub mod stats;
pub mod text;
