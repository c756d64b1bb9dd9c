//! What /readyz reports: each source (plugin loaded, connected, subscriptions accepted) and
//! each plant (Twinzo reachable). The runtime registers parts as it starts and stops them.

use super::source::Route;
use crate::sink::Reachability;
use crate::source::SourceStatus;
use arc_swap::ArcSwapOption;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct HealthBoard {
    parts: Mutex<Parts>,
}

#[derive(Default)]
struct Parts {
    sources: BTreeMap<String, (Arc<SourceStatus>, Arc<ArcSwapOption<Route>>)>,
    plants: BTreeMap<String, Arc<Reachability>>,
}

impl HealthBoard {
    pub fn set_source(&self, name: &str, status: Arc<SourceStatus>, route: Arc<ArcSwapOption<Route>>) {
        self.parts.lock().expect("health lock").sources.insert(name.into(), (status, route));
    }

    pub fn set_plant(&self, name: &str, reach: Arc<Reachability>) {
        self.parts.lock().expect("health lock").plants.insert(name.into(), reach);
    }

    pub fn remove(&self, source: Option<&str>, plant: Option<&str>) {
        let mut parts = self.parts.lock().expect("health lock");
        source.map(|s| parts.sources.remove(s));
        plant.map(|p| parts.plants.remove(p));
    }

    /// `(ready, details)`.
    pub fn readiness(&self) -> (bool, Value) {
        let parts = self.parts.lock().expect("health lock");
        let mut ready = true;
        let mut sources = serde_json::Map::new();
        for (name, (status, route)) in &parts.sources {
            let plugin = route.load().as_ref().map(|r| format!("{}@{}", r.plugin.info.name, r.plugin.info.version));
            let error = status.subscribe_error.lock().expect("status lock").clone();
            ready &= plugin.is_some() && status.ready();
            sources.insert(name.clone(), json!({ "plugin": plugin, "connected": status.connected.load(std::sync::atomic::Ordering::Relaxed), "subscription_error": error }));
        }
        let mut plants = serde_json::Map::new();
        for (name, reach) in &parts.plants {
            let state = match reach.get() {
                Some(true) => "reachable",
                Some(false) => "unreachable",
                None => "not yet checked",
            };
            ready &= reach.get() == Some(true);
            plants.insert(name.clone(), json!({ "twinzo": state }));
        }
        (ready, json!({ "ready": ready, "sources": sources, "plants": plants }))
    }
}
