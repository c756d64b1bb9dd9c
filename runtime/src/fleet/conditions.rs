//! Conditions worth an operator's attention (a device stale, a source down, Twinzo failing),
//! tracked as episodes: each becomes one event when it starts (after holding for the rule's
//! `for_s`) and one when it clears, with how long it lasted. The log, the page's events list,
//! `edge status` and the alert destinations all read these events.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// What a condition is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A device not heard for longer than its stale threshold.
    DeviceStale,
    /// A device whose vendor reports an error, or that is disabled.
    DeviceError,
    /// A device's battery below the rule's `threshold` percent.
    BatteryLow,
    /// A source not connected to its broker, or with a subscription refused.
    SourceDown,
    /// A source's plugin failing: faults in a row, a stuck call, or more than the rule's
    /// `threshold` share of calls failing over the last minute.
    PluginFailing,
    /// A plant whose posts to Twinzo fail (unreachable, or devices that cannot sign in).
    TwinzoFailing,
    /// A plant that could not start (its spool cannot be opened).
    PlantDown,
    /// A plant's spool above the rule's `threshold` percent of `spool.max_mb`.
    SpoolFilling,
    /// A plant's spool cannot be written (a full disk): intake is held, the broker keeps the rest.
    SpoolUnwritable,
    /// A plant's dead letters grew in the last 5 minutes.
    DeadLetters,
    /// A robot heard that the plant's device map does not name.
    UnknownRobot,
}

impl Kind {
    pub const ALL: [Kind; 11] = [
        Kind::DeviceStale,
        Kind::DeviceError,
        Kind::BatteryLow,
        Kind::SourceDown,
        Kind::PluginFailing,
        Kind::TwinzoFailing,
        Kind::PlantDown,
        Kind::SpoolFilling,
        Kind::SpoolUnwritable,
        Kind::DeadLetters,
        Kind::UnknownRobot,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::DeviceStale => "device_stale",
            Kind::DeviceError => "device_error",
            Kind::BatteryLow => "battery_low",
            Kind::SourceDown => "source_down",
            Kind::PluginFailing => "plugin_failing",
            Kind::TwinzoFailing => "twinzo_failing",
            Kind::PlantDown => "plant_down",
            Kind::SpoolFilling => "spool_filling",
            Kind::SpoolUnwritable => "spool_unwritable",
            Kind::DeadLetters => "dead_letters",
            Kind::UnknownRobot => "unknown_robot",
        }
    }

    /// The rule that applies when edge.yaml gives none for this kind.
    pub fn default_rule(self) -> Rule {
        let (for_s, severity, threshold) = match self {
            Kind::DeviceStale => (0, Severity::Warning, None),
            Kind::DeviceError => (0, Severity::Warning, None),
            Kind::BatteryLow => (0, Severity::Warning, Some(15.0)),
            Kind::SourceDown => (30, Severity::Critical, None),
            Kind::PluginFailing => (0, Severity::Critical, Some(0.5)),
            Kind::TwinzoFailing => (60, Severity::Critical, None),
            Kind::PlantDown => (0, Severity::Critical, None),
            Kind::SpoolFilling => (0, Severity::Warning, Some(80.0)),
            Kind::SpoolUnwritable => (0, Severity::Critical, None),
            Kind::DeadLetters => (0, Severity::Warning, None),
            Kind::UnknownRobot => (0, Severity::Info, None),
        };
        Rule { for_s, severity, threshold, enabled: true }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

/// How a kind of condition is judged.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    /// The condition must hold this long before it starts.
    pub for_s: u64,
    pub severity: Severity,
    /// The kind's number, where it has one (battery percent, error share, spool percent).
    pub threshold: Option<f64>,
    /// Off: never raised.
    pub enabled: bool,
}

/// The rules of every kind.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules(BTreeMap<Kind, Rule>);

impl Default for Rules {
    fn default() -> Self {
        Rules(Kind::ALL.iter().map(|k| (*k, k.default_rule())).collect())
    }
}

impl Rules {
    pub fn set(&mut self, kind: Kind, rule: Rule) {
        self.0.insert(kind, rule);
    }

    pub fn get(&self, kind: Kind) -> Rule {
        self.0.get(&kind).copied().unwrap_or_else(|| kind.default_rule())
    }

    /// The kind's threshold (its default when the rule gives none).
    pub fn threshold(&self, kind: Kind) -> f64 {
        self.get(kind).threshold.or(kind.default_rule().threshold).unwrap_or(0.0)
    }
}

/// A condition seen to hold in one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub kind: Kind,
    /// What it is about: `plant/robot`, a source or a plant name.
    pub subject: String,
    pub message: String,
}

/// A condition starting or ending.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub at_ms: u64,
    pub kind: Kind,
    pub subject: String,
    pub severity: Severity,
    /// `started` or `ended`.
    pub state: EventState,
    pub message: String,
    /// For `ended`: how long the condition lasted.
    pub lasted_s: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventState {
    Started,
    Ended,
}

/// Conditions currently active, and those holding but not yet for long enough.
#[derive(Debug, Default)]
pub struct Conditions {
    active: BTreeMap<(Kind, String), Active>,
    holding_since: BTreeMap<(Kind, String), u64>,
}

#[derive(Debug, Clone)]
struct Active {
    since_ms: u64,
    severity: Severity,
    message: String,
}

/// An active condition, for the views.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveCondition {
    pub kind: Kind,
    pub subject: String,
    pub severity: Severity,
    pub since_ms: u64,
    pub message: String,
}

impl Conditions {
    /// Takes everything observed to hold now; returns the conditions that started and ended.
    pub fn update(&mut self, now_ms: u64, observed: Vec<Observed>, rules: &Rules) -> Vec<Event> {
        let mut events = Vec::new();
        // Everything that holds now: `None` when active, else since when it holds.
        let mut holding = BTreeMap::new();
        for o in observed {
            let rule = rules.get(o.kind);
            if !rule.enabled {
                continue;
            }
            let key = (o.kind, o.subject);
            if let Some(active) = self.active.get_mut(&key) {
                active.message = o.message;
                holding.insert(key, None);
                continue;
            }
            let since = self.holding_since.get(&key).copied().unwrap_or(now_ms);
            if now_ms.saturating_sub(since) >= rule.for_s * 1000 {
                events.push(Event {
                    at_ms: now_ms,
                    kind: key.0,
                    subject: key.1.clone(),
                    severity: rule.severity,
                    state: EventState::Started,
                    message: o.message.clone(),
                    lasted_s: None,
                });
                self.active
                    .insert(key.clone(), Active { since_ms: now_ms, severity: rule.severity, message: o.message });
                holding.insert(key, None);
            } else {
                holding.insert(key, Some(since));
            }
        }
        let ended: Vec<(Kind, String)> = self.active.keys().filter(|k| !holding.contains_key(*k)).cloned().collect();
        for key in ended {
            let active = self.active.remove(&key).expect("listed above");
            events.push(Event {
                at_ms: now_ms,
                kind: key.0,
                subject: key.1,
                severity: active.severity,
                state: EventState::Ended,
                message: active.message,
                lasted_s: Some(now_ms.saturating_sub(active.since_ms) as f64 / 1000.0),
            });
        }
        self.holding_since = holding.into_iter().filter_map(|(key, since)| Some((key, since?))).collect();
        events
    }

    pub fn active(&self) -> Vec<ActiveCondition> {
        self.active
            .iter()
            .map(|((kind, subject), a)| ActiveCondition {
                kind: *kind,
                subject: subject.clone(),
                severity: a.severity,
                since_ms: a.since_ms,
                message: a.message.clone(),
            })
            .collect()
    }
}

/// The latest events, newest last, for the page and the API.
#[derive(Debug)]
pub struct EventLog {
    events: VecDeque<Event>,
    capacity: usize,
}

impl EventLog {
    pub fn new(capacity: usize) -> Self {
        EventLog { events: VecDeque::with_capacity(capacity), capacity }
    }

    pub fn push(&mut self, event: Event) {
        if self.events.len() == self.capacity {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    pub fn latest(&self, n: usize) -> Vec<Event> {
        self.events.iter().rev().take(n).rev().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stale(subject: &str) -> Observed {
        Observed { kind: Kind::DeviceStale, subject: subject.into(), message: "not heard".into() }
    }

    #[test]
    fn a_condition_starts_once_and_ends_once_with_its_duration() {
        let (mut c, rules) = (Conditions::default(), Rules::default());
        let started = c.update(1_000, vec![stale("p/a")], &rules);
        assert_eq!((started.len(), started[0].state), (1, EventState::Started));
        assert!(c.update(2_000, vec![stale("p/a")], &rules).is_empty(), "no event while it lasts");
        let ended = c.update(4_500, vec![], &rules);
        assert_eq!((ended[0].state, ended[0].lasted_s), (EventState::Ended, Some(3.5)));
        assert!(c.active().is_empty());
    }

    #[test]
    fn for_s_holds_back_a_condition_that_clears_soon() {
        let mut rules = Rules::default();
        rules.set(Kind::DeviceStale, Rule { for_s: 10, ..Kind::DeviceStale.default_rule() });
        let mut c = Conditions::default();
        assert!(c.update(0, vec![stale("p/a")], &rules).is_empty());
        assert!(c.update(5_000, vec![stale("p/a")], &rules).is_empty());
        assert!(c.update(6_000, vec![], &rules).is_empty(), "cleared before it counted: no event at all");
        assert!(c.update(7_000, vec![stale("p/a")], &rules).is_empty(), "holding starts again");
        assert_eq!(c.update(17_000, vec![stale("p/a")], &rules).len(), 1);
    }

    #[test]
    fn a_disabled_rule_raises_nothing() {
        let mut rules = Rules::default();
        rules.set(Kind::DeviceStale, Rule { enabled: false, ..Kind::DeviceStale.default_rule() });
        assert!(Conditions::default().update(0, vec![stale("p/a")], &rules).is_empty());
    }
}
