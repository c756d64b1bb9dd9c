//! One live plugin instance: a store plus bindings, reused across messages. A trap fails
//! only the call in progress; the instance is then rebuilt from the plugin's `InstancePre`.

use super::bindings::{self, VendorPlugin};
use super::engine::LoadedPlugin;
use super::error::{CallError, LoadError};
use super::sandbox::HostState;
use crate::model::{Message, Position};
use std::sync::Arc;
use wasmtime::{Store, Trap};

/// Longest device id a plugin may report.
const MAX_DEVICE_ID: usize = 200;

pub struct PluginInstance {
    plugin: Arc<LoadedPlugin>,
    store: Store<HostState>,
    bindings: VendorPlugin,
}

impl PluginInstance {
    /// Instantiates `plugin` and applies its options.
    pub(super) fn start(plugin: Arc<LoadedPlugin>) -> Result<Self, LoadError> {
        let mut store = plugin.engine.new_store(plugin.info.name.as_str().into());
        plugin.engine.arm_deadline(&mut store);
        let start = |e: wasmtime::Error| LoadError::Start { path: plugin.path.clone(), reason: format!("{e:#}") };
        let started = plugin.engine.call(async {
            let bindings = plugin.pre.instantiate_async(&mut store).await?;
            let configured = bindings.edge_plugin_translator().call_configure(&mut store, &plugin.options).await?;
            Ok::<_, wasmtime::Error>((bindings, configured))
        });
        let (bindings, configured) = started.map_err(|_| plugin.overran("configure()"))?.map_err(start)?;
        configured.map_err(|reason| LoadError::Configure { path: plugin.path.clone(), reason })?;
        Ok(PluginInstance { plugin, store, bindings })
    }

    /// The plugin this instance runs.
    pub fn plugin(&self) -> &Arc<LoadedPlugin> {
        &self.plugin
    }

    /// Translates one message. After a trap the instance is replaced before returning.
    pub fn translate(&mut self, msg: &Message) -> Result<Vec<Position>, CallError> {
        let wit_msg = bindings::Message {
            topic: msg.topic.clone(),
            payload: msg.payload.to_vec(),
            received_at_ms: msg.received_at_ms,
        };
        self.plugin.engine.arm_deadline(&mut self.store);
        let translator = self.bindings.edge_plugin_translator();
        let result = self.plugin.engine.call(translator.call_translate(&mut self.store, &wit_msg));
        match result {
            Ok(Ok(Ok(positions))) => self.check_output(positions),
            Ok(Ok(Err(bindings::TranslateError::Malformed(why)))) => Err(CallError::Malformed(why)),
            Ok(Ok(Err(bindings::TranslateError::Unavailable(why)))) => Err(CallError::Unavailable(why)),
            Ok(Err(trap)) => {
                let why = self.explain(&trap);
                self.replace();
                Err(CallError::Trapped(why))
            }
            Err(super::deadline::Overran) => {
                self.replace();
                Err(CallError::Trapped(format!(
                    "did not return within its deadline of {:?}: it waits in a host call (such as a sleep); the instance was replaced",
                    self.plugin.engine.limits().call_timeout
                )))
            }
        }
    }

    fn explain(&mut self, error: &wasmtime::Error) -> String {
        if let Some(why) = self.store.data_mut().limiter.exceeded.take() {
            return why;
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => {
                format!("exceeded its CPU deadline of {:?}", self.plugin.engine.limits().call_timeout)
            }
            Some(Trap::StackOverflow) => "stack overflow (recursion too deep)".into(),
            Some(Trap::UnreachableCodeReached) => match self.store.data().panic_message() {
                Some(panic) => format!("panicked: {panic}"),
                None => "aborted (reached unreachable code)".into(),
            },
            Some(trap) => trap.to_string(),
            None => crate::text::sanitize(&format!("{error:#}"), 300),
        }
    }

    // A trapped instance may be in any state: start afresh. If even that fails (it worked
    // when the plugin was loaded), keep the broken one; its next call will trap again and
    // be reported again, which is the honest outcome.
    fn replace(&mut self) {
        match PluginInstance::start(self.plugin.clone()) {
            Ok(fresh) => *self = fresh,
            Err(e) => {
                tracing::error!(plugin = %self.plugin.info.name, error = %e, "cannot restart plugin after a trap")
            }
        }
    }

    fn check_output(&self, positions: Vec<bindings::Position>) -> Result<Vec<Position>, CallError> {
        let max = self.plugin.engine.limits().max_positions;
        if positions.len() > max {
            return Err(CallError::InvalidOutput(format!(
                "{} positions from one message (the limit is {max})",
                positions.len()
            )));
        }
        positions
            .into_iter()
            .enumerate()
            .map(|(i, p)| checked(p).map_err(|why| CallError::InvalidOutput(format!("position {i}: {why}"))))
            .collect()
    }
}

fn checked(p: bindings::Position) -> Result<Position, String> {
    if p.device_id.trim().is_empty() || p.device_id.len() > MAX_DEVICE_ID || p.device_id.chars().any(char::is_control) {
        return Err(format!(
            "device id {:?} is empty, longer than {MAX_DEVICE_ID} bytes or has control characters",
            crate::text::sanitize(&p.device_id, 40)
        ));
    }
    for (name, value) in [
        ("x", Some(p.x)),
        ("y", Some(p.y)),
        ("z", Some(p.z)),
        ("heading-rad", p.heading_rad),
        ("speed-mps", p.speed_mps),
    ] {
        if value.is_some_and(|v| !v.is_finite()) {
            return Err(format!("{name} is not a finite number"));
        }
    }
    if p.battery_percent.is_some_and(|b| !(0.0..=100.0).contains(&b)) {
        return Err("battery-percent is outside 0-100".into());
    }
    if p.localization_score.is_some_and(|s| !(0.0..=1.0).contains(&s)) {
        return Err("localization-score is outside 0.0-1.0".into());
    }
    Ok(Position {
        device_id: p.device_id,
        timestamp_ms: p.timestamp_ms,
        x: p.x,
        y: p.y,
        z: p.z,
        heading_rad: p.heading_rad,
        battery_percent: p.battery_percent,
        moving: p.moving,
        speed_mps: p.speed_mps,
        status: p.status,
        map_id: p.map_id,
        localization_score: p.localization_score,
        attributes: p.attributes.into_iter().collect(),
    })
}
