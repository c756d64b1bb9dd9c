//! The fleet's health in one place: every device, source and plant as the runtime reports them,
//! judged once a second into a view (`/api/*`, the live page, `edge status`) and into conditions
//! that start and end as events (the log, alerts). It sits at the bottom of the module graph:
//! it imports only the shared model, and everything that reports or reads health imports it.

mod conditions;
mod device;
mod plant;
mod plugins;
mod source;

pub use conditions::{ActiveCondition, Event, EventState, Kind, Rule, Rules, Severity};
pub use device::{DeviceState, DeviceView, PostView, Utilisation};
pub use plant::{PlantState, PlantView, PlantWatch, Reachability, TokenState, TwinzoState, UnknownRobot};
pub use plugins::PluginFile;
pub use source::{PluginLabel, SourceView, SourceWatch};

use conditions::{Conditions, EventLog, Observed};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Events kept for the page and the API.
const EVENTS_KEPT: usize = 500;
/// An unknown robot counts as heard for this long after its last position...
const UNKNOWN_HEARD_FOR_MS: u64 = 5 * 60_000;
/// ...and dead letters as growing for this long after they last grew.
const DEAD_LETTERS_GREW_FOR_MS: u64 = 5 * 60_000;
/// The window over which a plugin's share of failed calls is measured.
const ERROR_SHARE_WINDOW: usize = 60;
/// Utilisation goes to /metrics every this many ticks.
const METRICS_EVERY: u64 = 5;

/// What the fleet view is judged by, from edge.yaml.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Judgement {
    /// A plugin call's deadline, to tell a stuck call from a slow one.
    pub call_timeout: Duration,
    /// Stale after this long without a message; `None`: from each device's own cadence.
    pub stale_after: Option<Duration>,
    pub rules: Rules,
}

/// Everything the operator sees, as of `at_ms` (`/api/status`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FleetView {
    pub at_ms: u64,
    /// What /readyz says: sources connected with healthy plugins, plants reaching Twinzo.
    pub ready: bool,
    /// Ready, and no warning or critical condition active.
    pub healthy: bool,
    pub plants: Vec<PlantView>,
    pub devices: Vec<DeviceView>,
    pub unknown: Vec<UnknownRobot>,
    pub sources: Vec<SourceView>,
    /// Every component of the plugins folder, when edge.yaml has one.
    #[serde(default)]
    pub plugins: Vec<PluginFile>,
    pub conditions: Vec<ActiveCondition>,
    /// The latest events, oldest first.
    pub events: Vec<Event>,
}

/// The registry the runtime reports into, and the view it is judged into.
pub struct Fleet {
    judgement: Mutex<Judgement>,
    parts: Mutex<Parts>,
    judged: Mutex<Judged>,
    view: watch::Sender<Arc<FleetView>>,
}

#[derive(Default)]
struct Parts {
    sources: BTreeMap<String, (String, Arc<SourceWatch>)>,
    plants: BTreeMap<String, PlantPart>,
    plugins: Vec<PluginFile>,
}

enum PlantPart {
    Running(Arc<PlantWatch>),
    /// Could not start, and why.
    Down(String),
}

/// What judging remembers from one second to the next.
struct Judged {
    last_tick: Instant,
    conditions: Conditions,
    events: EventLog,
    /// Per source, (calls, errors) totals of the last minute's ticks.
    calls: BTreeMap<String, VecDeque<(u64, u64)>>,
    messages: BTreeMap<String, u64>,
    /// Per plant, dead letters at the last look and when they last grew.
    dead: BTreeMap<String, (u64, u64)>,
    ticks: u64,
}

impl Fleet {
    pub fn new(judgement: Judgement) -> Self {
        let judged = Judged {
            last_tick: Instant::now(),
            conditions: Conditions::default(),
            events: EventLog::new(EVENTS_KEPT),
            calls: BTreeMap::new(),
            messages: BTreeMap::new(),
            dead: BTreeMap::new(),
            ticks: 0,
        };
        Fleet {
            judgement: Mutex::new(judgement),
            parts: Mutex::default(),
            judged: Mutex::new(judged),
            view: watch::channel(Arc::default()).0,
        }
    }

    fn parts(&self) -> std::sync::MutexGuard<'_, Parts> {
        self.parts.lock().expect("fleet lock")
    }

    pub fn set_judgement(&self, judgement: Judgement) {
        *self.judgement.lock().expect("fleet lock") = judgement;
    }

    pub fn set_source(&self, name: &str, plant: &str, watch: Arc<SourceWatch>) {
        self.parts().sources.insert(name.into(), (plant.into(), watch));
    }

    pub fn set_plant(&self, watch: Arc<PlantWatch>) {
        self.parts().plants.insert(watch.name.clone(), PlantPart::Running(watch));
    }

    pub fn set_plant_down(&self, name: &str, why: &str) {
        self.parts().plants.insert(name.into(), PlantPart::Down(why.into()));
    }

    /// What the plugins folder holds now (after each scan).
    pub fn set_plugins(&self, plugins: Vec<PluginFile>) {
        self.parts().plugins = plugins;
    }

    pub fn remove(&self, source: Option<&str>, plant: Option<&str>) {
        let mut parts = self.parts();
        source.map(|s| parts.sources.remove(s));
        plant.map(|p| parts.plants.remove(p));
    }

    /// The latest view, and news of every next one.
    pub fn subscribe(&self) -> watch::Receiver<Arc<FleetView>> {
        self.view.subscribe()
    }

    pub fn latest(&self) -> Arc<FleetView> {
        self.view.borrow().clone()
    }

    /// Once a second: judges everything into a new view; returns the events it raised.
    pub fn tick(&self) -> Vec<Event> {
        let judgement = self.judgement.lock().expect("fleet lock").clone();
        let now_ms = crate::model::now_ms();
        let mut judged = self.judged.lock().expect("fleet lock");
        let elapsed = judged.last_tick.elapsed();
        judged.last_tick = Instant::now();
        let mut view = FleetView { at_ms: now_ms, ..FleetView::default() };
        {
            let parts = self.parts();
            for (name, plant) in &parts.plants {
                match plant {
                    PlantPart::Running(watch) => {
                        let (plant, devices, unknown) = watch.tick(now_ms, elapsed, judgement.stale_after);
                        view.plants.push(plant);
                        view.devices.extend(devices);
                        view.unknown.extend(unknown);
                    }
                    PlantPart::Down(why) => view.plants.push(PlantView::down(name, why)),
                }
            }
            view.sources = source_views(&parts, judgement.call_timeout);
            for source in &mut view.sources {
                let before = judged.messages.insert(source.name.clone(), source.messages).unwrap_or(source.messages);
                source.messages_per_s = (source.messages - before) as f64 / elapsed.as_secs_f64().max(0.001);
            }
            view.plugins = plugins_in_use(&parts.plugins, &view.sources);
            view.ready = readiness_of(&parts, &view.sources, &view.plugins).0;
        }
        let observed = judged.observe(&view, now_ms, &judgement.rules);
        let events = judged.conditions.update(now_ms, observed, &judgement.rules);
        for event in &events {
            judged.events.push(event.clone());
        }
        view.conditions = judged.conditions.active();
        view.healthy = view.ready && view.conditions.iter().all(|c| c.severity == Severity::Info);
        view.events = judged.events.latest(100);
        judged.ticks += 1;
        if judged.ticks.is_multiple_of(METRICS_EVERY) {
            export_utilisation(&view);
        }
        self.view.send_replace(Arc::new(view));
        events
    }

    /// What /readyz says: `(ready, details)`.
    pub fn readiness(&self) -> (bool, Value) {
        let call_timeout = self.judgement.lock().expect("fleet lock").call_timeout;
        let parts = self.parts();
        let sources = source_views(&parts, call_timeout);
        readiness_of(&parts, &sources, &plugins_in_use(&parts.plugins, &sources))
    }
}

fn source_views(parts: &Parts, call_timeout: Duration) -> Vec<SourceView> {
    parts.sources.iter().map(|(name, (plant, watch))| watch.view(name, plant, call_timeout)).collect()
}

/// Ready: every source connected, subscribed and running a healthy plugin; every plant running
/// and reaching Twinzo. With the details `/readyz` shows.
fn readiness_of(parts: &Parts, sources: &[SourceView], plugins: &[PluginFile]) -> (bool, Value) {
    let mut ready = true;
    let mut by_source = serde_json::Map::new();
    for view in sources {
        let plugin = view.plugin.as_ref().map(|p| format!("{}@{}", p.name, p.version));
        ready &= plugin.is_some()
            && view.connected
            && !view.subscribed.is_empty()
            && view.subscription_error.is_none()
            && view.plugin_problem.is_none();
        by_source.insert(
            view.name.clone(),
            json!({
                "plugin": plugin,
                "sha256": view.plugin.as_ref().map(|p| p.sha256.clone()),
                "plugin_problem": view.plugin_problem,
                "connected": view.connected,
                "subscribed": view.subscribed,
                "subscription_error": view.subscription_error,
            }),
        );
    }
    let mut plants = serde_json::Map::new();
    for (name, plant) in &parts.plants {
        let (state, problem) = match plant {
            PlantPart::Running(watch) => {
                ready &= watch.reach.get() == Some(true);
                (watch.reach.state(), None)
            }
            PlantPart::Down(why) => {
                ready = false;
                (TwinzoState::NotRunning, Some(why.clone()))
            }
        };
        plants.insert(name.clone(), json!({ "twinzo": state, "problem": problem }));
    }
    (ready, json!({ "ready": ready, "sources": by_source, "plants": plants, "plugins": plugins }))
}

/// The folder's files, each with the sources that run that very build.
fn plugins_in_use(files: &[PluginFile], sources: &[SourceView]) -> Vec<PluginFile> {
    let mut files = files.to_vec();
    for file in files.iter_mut().filter(|f| f.error.is_none()) {
        file.used_by = sources
            .iter()
            .filter(|s| s.plugin.as_ref().is_some_and(|p| p.sha256 == file.sha256))
            .map(|s| s.name.clone())
            .collect();
    }
    files
}

/// Per device, utilisation since start and whether it is stale, as Prometheus gauges.
fn export_utilisation(view: &FleetView) {
    for d in &view.devices {
        let labels = [("plant", d.plant.clone()), ("device", d.robot.clone())];
        let u = &d.utilisation;
        metrics::gauge!("edge_device_distance_meters", &labels).set(u.distance_m);
        metrics::gauge!("edge_device_moving_seconds", &labels).set(u.moving_s);
        metrics::gauge!("edge_device_idle_seconds", &labels).set(u.idle_s);
        metrics::gauge!("edge_device_connected_seconds", &labels).set(u.connected_s);
        metrics::gauge!("edge_device_stale", &labels).set(f64::from(u8::from(d.state == Some(DeviceState::Stale))));
    }
}

/// Writes an event as one log line: a warning or critical condition starting at warn level,
/// the rest at info.
pub fn log_event(e: &Event) {
    let (kind, subject, severity) = (e.kind.name(), e.subject.as_str(), e.severity);
    match e.state {
        EventState::Started if severity >= Severity::Warning => {
            tracing::warn!(kind, subject, ?severity, "{}", e.message)
        }
        EventState::Started => tracing::info!(kind, subject, ?severity, "{}", e.message),
        EventState::Ended => tracing::info!(kind, subject, lasted_s = e.lasted_s, "over: {}", e.message),
    }
}

impl Judged {
    /// The conditions that hold in `view`.
    fn observe(&mut self, view: &FleetView, now_ms: u64, rules: &Rules) -> Vec<Observed> {
        let mut held = Vec::new();
        observe_devices(view, now_ms, rules, &mut held);
        self.observe_sources(view, rules, &mut held);
        self.observe_plants(view, now_ms, rules, &mut held);
        held
    }

    fn observe_sources(&mut self, view: &FleetView, rules: &Rules, held: &mut Vec<Observed>) {
        for s in &view.sources {
            if let Some(why) = &s.subscription_error {
                hold(held, Kind::SourceDown, &s.name, format!("subscription refused: {why}"));
            } else if !s.connected && s.plugin.is_some() {
                hold(held, Kind::SourceDown, &s.name, "not connected to its broker".into());
            }
            let window = self.calls.entry(s.name.clone()).or_default();
            if window.len() == ERROR_SHARE_WINDOW {
                window.pop_front();
            }
            window.push_back((s.calls, s.errors.values().sum()));
            let (calls0, errors0) = window.front().copied().unwrap_or_default();
            let errors = window.back().map_or(0, |w| w.1);
            let share = (errors - errors0) as f64 / (s.calls - calls0).max(1) as f64;
            if let Some(problem) = &s.plugin_problem {
                hold(held, Kind::PluginFailing, &s.name, problem.clone());
            } else if s.calls > calls0 && share > rules.threshold(Kind::PluginFailing) {
                let message = format!("{:.0} % of calls failed in the last minute", share * 100.0);
                hold(held, Kind::PluginFailing, &s.name, message);
            }
        }
    }

    fn observe_plants(&mut self, view: &FleetView, now_ms: u64, rules: &Rules, held: &mut Vec<Observed>) {
        for p in &view.plants {
            if p.state == PlantState::Down {
                hold(held, Kind::PlantDown, &p.name, p.problem.clone().unwrap_or_default());
                continue;
            }
            if p.tokens == TokenState::Failing {
                hold(held, Kind::TwinzoFailing, &p.name, "posts failing: devices cannot sign in".into());
            } else if p.twinzo == TwinzoState::Unreachable {
                hold(held, Kind::TwinzoFailing, &p.name, "posts failing: Twinzo unreachable".into());
            }
            if let Some(why) = &p.spool_problem {
                hold(held, Kind::SpoolUnwritable, &p.name, format!("cannot write the spool, intake held: {why}"));
            }
            if p.spool_percent > rules.threshold(Kind::SpoolFilling) {
                hold(held, Kind::SpoolFilling, &p.name, format!("spool at {:.0} % of spool.max_mb", p.spool_percent));
            }
            let (seen, grew_at) = self.dead.get(&p.name).copied().unwrap_or((p.spool_dead, 0));
            let grew_at = if p.spool_dead > seen { now_ms } else { grew_at };
            self.dead.insert(p.name.clone(), (p.spool_dead, grew_at));
            if grew_at > 0 && now_ms - grew_at < DEAD_LETTERS_GREW_FOR_MS {
                let message = format!("{} dead letters (see `edge spool dead`)", p.spool_dead);
                hold(held, Kind::DeadLetters, &p.name, message);
            }
        }
    }
}

fn observe_devices(view: &FleetView, now_ms: u64, rules: &Rules, held: &mut Vec<Observed>) {
    let low = rules.threshold(Kind::BatteryLow);
    for d in &view.devices {
        let subject = format!("{}/{}", d.plant, d.robot);
        match d.state {
            Some(DeviceState::Stale) => {
                let silent_s = now_ms.saturating_sub(d.last_received_ms.unwrap_or(0)) as f64 / 1000.0;
                hold(held, Kind::DeviceStale, &subject, format!("not heard for {silent_s:.0} s"));
            }
            Some(DeviceState::Error) => {
                hold(held, Kind::DeviceError, &subject, d.error.clone().unwrap_or_else(|| "disabled".into()))
            }
            _ => {}
        }
        let stale = d.state == Some(DeviceState::Stale);
        if let Some(battery) = d.battery_percent.filter(|b| f64::from(*b) < low && !stale) {
            hold(held, Kind::BatteryLow, &subject, format!("battery at {battery:.0} % (below {low:.0} %)"));
        }
    }
    for u in view.unknown.iter().filter(|u| now_ms.saturating_sub(u.last_heard_ms) < UNKNOWN_HEARD_FOR_MS) {
        let message = format!("heard from source {} but not in the plant's device map", u.source);
        hold(held, Kind::UnknownRobot, &format!("{}/{}", u.plant, u.robot), message);
    }
}

fn hold(held: &mut Vec<Observed>, kind: Kind, subject: &str, message: String) {
    held.push(Observed { kind, subject: subject.to_string(), message });
}
