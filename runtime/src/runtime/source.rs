//! A source at run time: its MQTT task, and the dedicated thread that runs its plugin on
//! every message (wasm never runs on a tokio worker) and routes the positions to the plant.
//! The route is swapped atomically on reload; the thread picks it up between messages.

use super::plant::{PlantInput, PlantMsg};
use crate::config::SourceConfig;
use crate::episode::{Episode, News};
use crate::fleet::{PluginLabel, SourceWatch};
use crate::pipeline::Transform;
use crate::plugin::{CallError, LoadedPlugin, PluginInstance};
use crate::source::{Inbound, SessionMemory, run_source};
use arc_swap::ArcSwapOption;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Where a source's messages go: the plugin that reads them, the transform, the plant.
pub struct Route {
    pub plugin: Arc<LoadedPlugin>,
    pub transform: Transform,
    pub plant: mpsc::Sender<PlantMsg>,
    /// Messages the broker sends before it waits for acknowledgements (see
    /// [`crate::config::MqttConfig::unacknowledged_limit`]).
    pub unacknowledged_limit: usize,
}

pub struct SourceRuntime {
    pub config: SourceConfig,
    pub route: Arc<ArcSwapOption<Route>>,
    /// What the fleet view shows of this source: connection, messages, plugin calls.
    pub watch: Arc<SourceWatch>,
    /// Where the source remembers its broker session (None: nowhere).
    sessions_dir: Option<PathBuf>,
    /// A loaded plugin waiting for its plant to start.
    held: Option<Arc<LoadedPlugin>>,
    inbound: Option<mpsc::Sender<Inbound>>,
    mqtt: Option<(watch::Sender<Option<tokio::time::Instant>>, tokio::task::JoinHandle<()>)>,
    /// The plugin thread, and what tells that it ended (its sender drops with the thread).
    worker: Option<(std::thread::JoinHandle<()>, tokio::sync::oneshot::Receiver<()>)>,
}

impl SourceRuntime {
    /// Starts the plugin thread; the MQTT side starts with [`connect`](Self::connect) once a plugin is loaded.
    pub fn start(config: SourceConfig, sessions_dir: Option<PathBuf>) -> Self {
        // Never fuller than the receive maximum allows (the MQTT task counts what is in flight).
        let (tx, rx) = mpsc::channel(usize::from(config.mqtt.receive_maximum.max(1)));
        let route: Arc<ArcSwapOption<Route>> = Arc::new(ArcSwapOption::empty());
        let watch = Arc::new(SourceWatch::default());
        let (name, thread_route, thread_watch) = (Arc::<str>::from(config.name.as_str()), route.clone(), watch.clone());
        let (ended_tx, ended) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("plugin-{}", config.name))
            .spawn(move || {
                let _ended = ended_tx;
                worker(name, rx, thread_route, &thread_watch);
            })
            .expect("spawning a plugin thread");
        SourceRuntime {
            config,
            route,
            watch,
            sessions_dir,
            held: None,
            inbound: Some(tx),
            mqtt: None,
            worker: Some((thread, ended)),
        }
    }

    pub fn set_route(&mut self, route: Route) {
        self.held = None;
        self.watch.set_plugin(Some(label(&route.plugin)));
        self.route.store(Some(Arc::new(route)));
    }

    /// Keeps `plugin` for when the source's plant starts; the source takes nothing meanwhile.
    pub fn hold_plugin(&mut self, plugin: Arc<LoadedPlugin>) {
        self.route.store(None);
        self.watch.set_plugin(None);
        self.held = Some(plugin);
    }

    pub fn plugin(&self) -> Option<Arc<LoadedPlugin>> {
        self.route.load().as_ref().map(|r| r.plugin.clone()).or_else(|| self.held.clone())
    }

    pub fn connected(&self) -> bool {
        self.mqtt.is_some()
    }

    /// Connects to the broker, subscribing to the configured topics or the plugin's defaults.
    pub fn connect(&mut self) {
        let (Some(tx), Some(plugin)) = (self.inbound.clone(), self.plugin()) else { return };
        let mqtt = &self.config.mqtt;
        let topics = mqtt.subscriptions(&plugin.info.default_topics);
        let client_id = mqtt.client_id_for(&self.config.name);
        let session = SessionMemory::new(
            self.sessions_dir.as_ref().map(|dir| dir.join(format!("{}.json", self.config.name))),
            &format!("{}:{}", mqtt.host, mqtt.port()),
            &client_id,
        );
        let (stop_tx, stop_rx) = watch::channel(None);
        let task = tokio::spawn(run_source(
            self.config.name.as_str().into(),
            self.config.mqtt.clone(),
            topics,
            tx,
            self.watch.clone(),
            session,
            stop_rx,
        ));
        self.mqtt = Some((stop_tx, task));
    }

    /// Stops taking messages, finishes and acknowledges those in flight (by `deadline` at the
    /// latest; the rest the broker delivers again), then disconnects.
    pub async fn disconnect(&mut self, deadline: tokio::time::Instant) {
        if let Some((stop, task)) = self.mqtt.take() {
            let _ = stop.send(Some(deadline));
            let _ = task.await;
        }
    }

    /// Disconnects as above, then ends the plugin thread. A thread still busy at the deadline
    /// (a plant that cannot write its spool) is left behind: its messages were not acknowledged.
    pub async fn finish(mut self, deadline: tokio::time::Instant) {
        self.disconnect(deadline).await;
        drop(self.inbound.take());
        // The route holds a sender of the plant: drop it so the plant can finish too.
        self.route.store(None);
        // Waited for without a blocking thread: those are few, and the plant this thread may
        // be waiting on needs one to write its spool.
        if let Some((thread, ended)) = self.worker.take() {
            match tokio::time::timeout_at(deadline, ended).await {
                Ok(_) => drop(thread.join()),
                Err(_) => {
                    tracing::warn!(source = %self.config.name, "the plugin thread did not finish in time; its messages stay unacknowledged")
                }
            }
        }
    }
}

fn label(plugin: &LoadedPlugin) -> PluginLabel {
    PluginLabel { name: plugin.info.name.clone(), version: plugin.info.version.clone(), sha256: plugin.sha256.clone() }
}

/// The plugin thread of one source.
fn worker(source: Arc<str>, mut rx: mpsc::Receiver<Inbound>, route: Arc<ArcSwapOption<Route>>, watch: &SourceWatch) {
    let mut current: Option<(PluginInstance, CallMetrics)> = None;
    let mut errors = ErrorLog::default();
    while let Some(inbound) = rx.blocking_recv() {
        // Without a route (the source is going away) the message is released, not acknowledged.
        let Some(route) = route.load_full() else { continue };
        if current.as_ref().is_none_or(|(i, _)| !Arc::ptr_eq(i.plugin(), &route.plugin)) {
            current = match route.plugin.instantiate() {
                Ok(fresh) => Some((fresh, CallMetrics::new(&route.plugin.info.name, &source))),
                Err(e) => {
                    // Released: the message waits at the broker for a plugin that starts.
                    tracing::error!(%source, "cannot start plugin: {e}");
                    watch.called(Duration::ZERO, Some(("trapped", e.to_string())), true);
                    continue;
                }
            };
        }
        let (instance, call_metrics) = current.as_mut().expect("instantiated above");
        let message = crate::model::Message {
            topic: inbound.topic,
            payload: inbound.payload,
            received_at_ms: inbound.received_at_ms,
        };
        let started = Instant::now();
        watch.calling();
        let result = instance.translate(&message);
        let took = started.elapsed();
        let error = result.as_ref().err();
        watch.called(took, error.map(|e| (e.kind(), e.to_string())), error.is_some_and(CallError::is_fault));
        call_metrics.seconds.record(took.as_secs_f64());
        call_metrics.calls.increment(1);
        match result {
            Ok(positions) if positions.is_empty() => inbound.ack.acknowledge(),
            Ok(positions) => {
                let input = PlantInput {
                    source: source.clone(),
                    positions,
                    transform: route.transform,
                    received_at_ms: message.received_at_ms,
                    backlog: inbound.backlog,
                    unacknowledged_limit: route.unacknowledged_limit,
                    ack: inbound.ack,
                };
                // A plant that is gone releases the message (the ack drops unsent).
                let _ = route.plant.blocking_send(PlantMsg::Input(input));
            }
            Err(e) => {
                let plugin = route.plugin.info.name.as_str();
                metrics::counter!("edge_plugin_errors_total", "plugin" => plugin.to_string(), "source" => source.to_string(), "kind" => e.kind()).increment(1);
                crate::stats::STATS.plugin_errors.fetch_add(1, Relaxed);
                errors.report(&source, plugin, &message.topic, &e);
                // Dropped on purpose and counted: a message the plugin cannot read now will not
                // read better later.
                inbound.ack.acknowledge();
            }
        }
    }
}

/// The plugin call metrics of one source's plugin, looked up once per plugin rather than per
/// message (building and hashing the labels cost more than recording).
struct CallMetrics {
    seconds: metrics::Histogram,
    calls: metrics::Counter,
}

impl CallMetrics {
    fn new(plugin: &str, source: &str) -> Self {
        CallMetrics {
            seconds: metrics::histogram!("edge_plugin_call_seconds", "plugin" => plugin.to_string()),
            calls: metrics::counter!("edge_plugin_calls_total", "plugin" => plugin.to_string(), "source" => source.to_string()),
        }
    }
}

/// Plugin errors as episodes, one per kind and cause (a deadline and a panic are both traps,
/// but different news): a line when one starts, then one a minute with the count since.
#[derive(Default)]
struct ErrorLog {
    episodes: std::collections::HashMap<(&'static str, String), Episode>,
}

/// Distinct causes remembered; beyond it, causes share one episode per kind.
const MAX_CAUSES: usize = 64;
/// While errors of one kind and cause go on, a line this often.
const ERRORS_EVERY: Duration = Duration::from_secs(60);

impl ErrorLog {
    fn report(&mut self, source: &str, plugin: &str, topic: &str, error: &CallError) {
        let cause: String = error.detail().split(':').next().unwrap_or("").chars().take(40).collect();
        let key = if self.episodes.len() < MAX_CAUSES || self.episodes.contains_key(&(error.kind(), cause.clone())) {
            (error.kind(), cause)
        } else {
            (error.kind(), String::new())
        };
        let episode = self.episodes.entry(key).or_insert_with(|| Episode::new(ERRORS_EVERY, ERRORS_EVERY));
        // A quiet minute ends the episode: the next error is news again.
        episode.check_over();
        let similar_since_last = match episode.occurred() {
            Some(News::Started) => 0,
            Some(News::Ongoing { recent, .. }) => recent - 1,
            _ => return,
        };
        let topic = crate::text::sanitize(topic, 120);
        tracing::warn!(source, plugin, %topic, kind = error.kind(), similar_since_last, "message dropped: {error}");
    }
}
