//! What is known about one source while it runs: its broker connection and subscriptions, the
//! messages it takes, and how its plugin is doing (calls, errors by kind, call times, faults).

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Plugin faults in a row (traps, deadlines, invalid output) that make a source not ready.
const FAULTS_NOT_READY: u32 = 3;
/// Call times kept for the p99.
const CALL_TIMES: usize = 512;

/// Shared by the source's MQTT task, its plugin thread and the fleet view.
#[derive(Debug, Default)]
pub struct SourceWatch {
    connected: AtomicBool,
    /// Messages taken from the broker.
    pub messages: AtomicU64,
    state: Mutex<SourceState>,
}

#[derive(Debug, Default)]
struct SourceState {
    /// The topics the broker accepted on the current connection (none until its SUBACK), and
    /// the last refusal if it refused one.
    subscribed: Vec<String>,
    subscription_error: Option<String>,
    plugin: Option<PluginLabel>,
    calls: u64,
    errors: BTreeMap<String, u64>,
    call_times: VecDeque<Duration>,
    faults_in_a_row: u32,
    last_fault: Option<String>,
    call_started: Option<Instant>,
}

/// Which plugin a source runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginLabel {
    pub name: String,
    pub version: String,
    pub sha256: String,
}

impl SourceWatch {
    fn state(&self) -> std::sync::MutexGuard<'_, SourceState> {
        self.state.lock().expect("source watch lock")
    }

    /// A connection is up; what it subscribes to is known once the broker answers.
    pub fn connection_up(&self) {
        self.state().subscribed.clear();
        self.connected.store(true, Relaxed);
    }

    /// The connection is gone, and what was subscribed on it with it.
    pub fn connection_down(&self) {
        self.connected.store(false, Relaxed);
        self.state().subscribed.clear();
    }

    pub fn subscribed(&self, accepted: Vec<String>, refused: Option<String>) {
        let mut state = self.state();
        (state.subscribed, state.subscription_error) = (accepted, refused);
    }

    /// The broker connection could not be set up at all (a bad certificate file, say).
    pub fn cannot_connect(&self, why: String) {
        self.state().subscription_error = Some(why);
    }

    pub fn set_plugin(&self, plugin: Option<PluginLabel>) {
        self.state().plugin = plugin;
    }

    pub fn calling(&self) {
        self.state().call_started = Some(Instant::now());
    }

    /// A plugin call ended after `took`; `error` is its kind and text when it failed, and
    /// `fault` whether that failure is the plugin's fault (a trap, not a malformed message).
    pub fn called(&self, took: Duration, error: Option<(&'static str, String)>, fault: bool) {
        let mut state = self.state();
        state.call_started = None;
        state.calls += 1;
        if state.call_times.len() == CALL_TIMES {
            state.call_times.pop_front();
        }
        state.call_times.push_back(took);
        match error {
            Some((kind, text)) => {
                *state.errors.entry(kind.to_string()).or_default() += 1;
                if fault {
                    state.faults_in_a_row += 1;
                    state.last_fault = Some(text);
                }
            }
            None => state.faults_in_a_row = 0,
        }
    }

    /// Why the plugin is not fit to take messages, if it is not: failing call after call,
    /// or a call running far past any deadline.
    pub fn plugin_problem(&self, deadline: Duration) -> Option<String> {
        let state = self.state();
        if let Some(started) = state.call_started.filter(|t| t.elapsed() > 2 * deadline + Duration::from_secs(1)) {
            return Some(format!("a plugin call has been running for {:.1?}", started.elapsed()));
        }
        (state.faults_in_a_row >= FAULTS_NOT_READY).then(|| {
            let last = state.last_fault.as_deref().unwrap_or("");
            format!("{} plugin faults in a row, the last: {last}", state.faults_in_a_row)
        })
    }

    /// The source as the fleet view shows it (rates are filled in by the caller).
    pub fn view(&self, name: &str, plant: &str, deadline: Duration) -> SourceView {
        let problem = self.plugin_problem(deadline);
        let state = self.state();
        let mut times: Vec<Duration> = state.call_times.iter().copied().collect();
        times.sort_unstable();
        let p99_ms = times.get(times.len().saturating_sub(1) * 99 / 100).map(|d| d.as_secs_f64() * 1000.0);
        SourceView {
            name: name.into(),
            plant: plant.into(),
            connected: self.connected.load(Relaxed),
            subscribed: state.subscribed.clone(),
            subscription_error: state.subscription_error.clone(),
            messages: self.messages.load(Relaxed),
            messages_per_s: 0.0,
            plugin: state.plugin.clone(),
            calls: state.calls,
            errors: state.errors.clone(),
            p99_call_ms: p99_ms,
            plugin_problem: problem,
        }
    }
}

/// One source in the fleet view (`/api/sources`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceView {
    pub name: String,
    pub plant: String,
    pub connected: bool,
    pub subscribed: Vec<String>,
    pub subscription_error: Option<String>,
    pub messages: u64,
    pub messages_per_s: f64,
    pub plugin: Option<PluginLabel>,
    pub calls: u64,
    /// Failed calls by kind (`malformed`, `unavailable`, `trapped`, `invalid-output`...).
    pub errors: BTreeMap<String, u64>,
    /// Over the last 512 calls.
    pub p99_call_ms: Option<f64>,
    pub plugin_problem: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_faults_in_a_row_are_a_problem_and_a_good_call_clears_it() {
        let watch = SourceWatch::default();
        let deadline = Duration::from_millis(100);
        for _ in 0..3 {
            watch.called(Duration::from_millis(1), Some(("trapped", "deadline".into())), true);
        }
        assert!(watch.plugin_problem(deadline).is_some_and(|p| p.contains("3 plugin faults")));
        watch.called(Duration::from_millis(1), Some(("malformed", "not json".into())), false);
        assert!(watch.plugin_problem(deadline).is_some(), "a malformed message is not the plugin's fault");
        watch.called(Duration::from_millis(1), None, false);
        assert_eq!(watch.plugin_problem(deadline), None);
        let view = watch.view("s", "p", deadline);
        assert_eq!((view.calls, view.errors["trapped"], view.errors["malformed"]), (5, 3, 1));
        assert_eq!(view.p99_call_ms, Some(1.0));
    }
}
