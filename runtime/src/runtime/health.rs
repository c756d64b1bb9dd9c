//! What /readyz reports: each source (plugin loaded and healthy, connected, subscriptions
//! accepted) and each plant (running, Twinzo reachable). The runtime registers parts as it
//! starts and stops them.

use super::source::{PluginHealth, Route, SourceRuntime};
use crate::sink::Reachability;
use crate::source::SourceStatus;
use arc_swap::ArcSwapOption;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct HealthBoard {
    parts: Mutex<Parts>,
    /// A plugin call's deadline, to tell a stuck call from a slow one.
    call_timeout: Duration,
}

struct SourceParts {
    status: Arc<SourceStatus>,
    route: Arc<ArcSwapOption<Route>>,
    plugin: Arc<PluginHealth>,
}

enum PlantParts {
    Running(Arc<Reachability>),
    /// Could not start, and why.
    Down(String),
}

#[derive(Default)]
struct Parts {
    sources: BTreeMap<String, SourceParts>,
    plants: BTreeMap<String, PlantParts>,
}

impl HealthBoard {
    pub fn new(call_timeout: Duration) -> Self {
        HealthBoard { parts: Mutex::default(), call_timeout }
    }

    pub fn set_source(&self, name: &str, source: &SourceRuntime) {
        let parts = SourceParts {
            status: source.status.clone(),
            route: source.route.clone(),
            plugin: source.plugin_health.clone(),
        };
        self.parts.lock().expect("health lock").sources.insert(name.into(), parts);
    }

    pub fn set_plant(&self, name: &str, reach: Arc<Reachability>) {
        self.parts.lock().expect("health lock").plants.insert(name.into(), PlantParts::Running(reach));
    }

    pub fn set_plant_down(&self, name: &str, why: &str) {
        self.parts.lock().expect("health lock").plants.insert(name.into(), PlantParts::Down(why.into()));
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
        for (name, source) in &parts.sources {
            let plugin =
                source.route.load().as_ref().map(|r| format!("{}@{}", r.plugin.info.name, r.plugin.info.version));
            let error = source.status.subscribe_error.lock().expect("status lock").clone();
            let plugin_problem = source.plugin.problem(self.call_timeout);
            ready &= plugin.is_some() && source.status.ready() && plugin_problem.is_none();
            sources.insert(
                name.clone(),
                json!({
                    "plugin": plugin,
                    "plugin_problem": plugin_problem,
                    "connected": source.status.connected.load(Relaxed),
                    "subscription_error": error,
                }),
            );
        }
        let mut plants = serde_json::Map::new();
        for (name, plant) in &parts.plants {
            let (state, problem) = match plant {
                PlantParts::Running(reach) => {
                    ready &= reach.get() == Some(true);
                    let state = match reach.get() {
                        Some(true) => "reachable",
                        Some(false) => "unreachable",
                        None => "not yet checked",
                    };
                    (state, None)
                }
                PlantParts::Down(why) => {
                    ready = false;
                    ("not running", Some(why.clone()))
                }
            };
            plants.insert(name.clone(), json!({ "twinzo": state, "problem": problem }));
        }
        (ready, json!({ "ready": ready, "sources": sources, "plants": plants }))
    }
}
