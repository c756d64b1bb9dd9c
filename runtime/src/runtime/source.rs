//! A source at run time: its MQTT task, and the dedicated thread that runs its plugin on
//! every message (wasm never runs on a tokio worker) and routes the positions to the plant.
//! The route is swapped atomically on reload; the thread picks it up between messages.

use super::plant::{PlantInput, PlantMsg};
use crate::config::SourceConfig;
use crate::pipeline::Transform;
use crate::plugin::{CallError, LoadedPlugin, PluginInstance};
use crate::source::{Inbound, SourceStatus, run_source};
use arc_swap::ArcSwapOption;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Where a source's messages go: the plugin that reads them, the transform, the plant.
pub struct Route {
    pub plugin: Arc<LoadedPlugin>,
    pub transform: Transform,
    pub plant: mpsc::Sender<PlantMsg>,
}

pub struct SourceRuntime {
    pub config: SourceConfig,
    pub route: Arc<ArcSwapOption<Route>>,
    pub status: Arc<SourceStatus>,
    inbound: Option<mpsc::Sender<Inbound>>,
    mqtt: Option<(watch::Sender<bool>, tokio::task::JoinHandle<()>)>,
    worker: Option<std::thread::JoinHandle<()>>,
}

impl SourceRuntime {
    /// Starts the plugin thread; the MQTT side starts with [`connect`](Self::connect) once a plugin is loaded.
    pub fn start(config: SourceConfig) -> Self {
        let (tx, rx) = mpsc::channel(1024);
        let route: Arc<ArcSwapOption<Route>> = Arc::new(ArcSwapOption::empty());
        let (name, thread_route) = (Arc::<str>::from(config.name.as_str()), route.clone());
        let worker = std::thread::Builder::new()
            .name(format!("plugin-{}", config.name))
            .spawn(move || worker(name, rx, thread_route))
            .expect("spawning a plugin thread");
        SourceRuntime { config, route, status: Arc::default(), inbound: Some(tx), mqtt: None, worker: Some(worker) }
    }

    pub fn set_route(&self, route: Route) {
        self.route.store(Some(Arc::new(route)));
    }

    pub fn plugin(&self) -> Option<Arc<LoadedPlugin>> {
        self.route.load().as_ref().map(|r| r.plugin.clone())
    }

    pub fn connected(&self) -> bool {
        self.mqtt.is_some()
    }

    /// Connects to the broker, subscribing to the configured topics or the plugin's defaults.
    pub fn connect(&mut self) {
        let (Some(tx), Some(plugin)) = (self.inbound.clone(), self.plugin()) else { return };
        let topics = if self.config.mqtt.topics.is_empty() {
            plugin.info.default_topics.clone()
        } else {
            self.config.mqtt.topics.clone()
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run_source(
            self.config.name.as_str().into(),
            self.config.mqtt.clone(),
            topics,
            tx,
            self.status.clone(),
            stop_rx,
        ));
        self.mqtt = Some((stop_tx, task));
    }

    /// Disconnects from the broker (messages already received are still processed).
    pub async fn disconnect(&mut self) {
        if let Some((stop, task)) = self.mqtt.take() {
            let _ = stop.send(true);
            let _ = task.await;
        }
    }

    /// Disconnects, lets the plugin thread finish the messages it holds, and returns.
    pub async fn finish(mut self) {
        self.disconnect().await;
        drop(self.inbound.take());
        // The route holds a sender of the plant: drop it so the plant can finish too.
        self.route.store(None);
        if let Some(worker) = self.worker.take() {
            let _ = tokio::task::spawn_blocking(move || worker.join()).await;
        }
    }
}

/// The plugin thread of one source.
fn worker(source: Arc<str>, mut rx: mpsc::Receiver<Inbound>, route: Arc<ArcSwapOption<Route>>) {
    let mut instance: Option<PluginInstance> = None;
    let mut errors = ErrorLog::default();
    while let Some(inbound) = rx.blocking_recv() {
        let Some(route) = route.load_full() else {
            inbound.ack.send();
            continue;
        };
        if instance.as_ref().is_none_or(|i| !Arc::ptr_eq(i.plugin(), &route.plugin)) {
            instance = match route.plugin.instantiate() {
                Ok(fresh) => Some(fresh),
                Err(e) => {
                    tracing::error!(%source, "cannot start plugin: {e}");
                    inbound.ack.send();
                    continue;
                }
            };
        }
        let instance = instance.as_mut().expect("instantiated above");
        let plugin = route.plugin.info.name.clone();
        let message = crate::model::Message {
            topic: inbound.topic,
            payload: inbound.payload,
            received_at_ms: inbound.received_at_ms,
        };
        let started = Instant::now();
        let result = instance.translate(&message);
        metrics::histogram!("edge_plugin_call_seconds", "plugin" => plugin.clone())
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("edge_plugin_calls_total", "plugin" => plugin.clone(), "source" => source.to_string())
            .increment(1);
        match result {
            Ok(positions) if positions.is_empty() => inbound.ack.send(),
            Ok(positions) => {
                let input = PlantInput {
                    source: source.clone(),
                    positions,
                    transform: route.transform,
                    received_at_ms: message.received_at_ms,
                    ack: inbound.ack,
                };
                if let Err(mpsc::error::SendError(PlantMsg::Input(input))) =
                    route.plant.blocking_send(PlantMsg::Input(input))
                {
                    input.ack.send();
                }
            }
            Err(e) => {
                metrics::counter!("edge_plugin_errors_total", "plugin" => plugin.clone(), "source" => source.to_string(), "kind" => e.kind()).increment(1);
                crate::stats::STATS.plugin_errors.fetch_add(1, Relaxed);
                errors.report(&source, &plugin, &message.topic, &e);
                inbound.ack.send();
            }
        }
    }
}

/// One log line per kind and cause of plugin error per minute (a deadline and a panic are
/// both traps, but different news), with the count of the rest.
#[derive(Default)]
struct ErrorLog {
    last: std::collections::HashMap<(&'static str, String), (Instant, u64)>,
}

/// Distinct causes remembered; beyond it, causes share one line per kind.
const MAX_CAUSES: usize = 64;

impl ErrorLog {
    fn report(&mut self, source: &str, plugin: &str, topic: &str, error: &CallError) {
        let cause: String = error.detail().split(':').next().unwrap_or("").chars().take(40).collect();
        let key = if self.last.len() < MAX_CAUSES || self.last.contains_key(&(error.kind(), cause.clone())) {
            (error.kind(), cause)
        } else {
            (error.kind(), String::new())
        };
        let entry = self.last.entry(key).or_insert((Instant::now() - Duration::from_secs(3600), 0));
        if entry.0.elapsed() < Duration::from_secs(60) {
            entry.1 += 1;
            return;
        }
        let topic = crate::plugin::sanitize(topic, 120);
        tracing::warn!(source, plugin, %topic, kind = error.kind(), similar_since_last = entry.1, "message dropped: {error}");
        *entry = (Instant::now(), 0);
    }
}
