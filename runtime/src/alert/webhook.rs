//! One webhook destination: a bounded queue of bodies and a task that posts them in order,
//! retrying with backoff while the receiver is down or slow. The URL carries the webhook's
//! token, so neither it nor reqwest's errors (which quote it) are ever logged.

use crate::backoff::Backoff;
use crate::config::{Secret, WebhookConfig, WebhookFormat};
use crate::fleet::Severity;
use serde_json::Value;
use std::time::Duration;
use tokio::sync::mpsc;

/// Bodies waiting for a receiver that is down; beyond this the newest is dropped and counted.
const QUEUE: usize = 1_000;
/// One attempt takes at most this long (a slow receiver).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// A body not delivered after this long is given up (an alert an hour late misleads).
const GIVE_UP_AFTER: Duration = Duration::from_secs(3_600);

/// A running webhook destination.
pub struct Webhook {
    pub name: String,
    pub format: WebhookFormat,
    pub min_severity: Severity,
    queue: mpsc::Sender<Value>,
    task: tokio::task::JoinHandle<()>,
}

impl Webhook {
    pub fn start(name: String, config: &WebhookConfig, client: reqwest::Client) -> Self {
        let (queue, bodies) = mpsc::channel(QUEUE);
        let task = tokio::spawn(deliver(name.clone(), config.url.clone(), client, bodies));
        Webhook { name, format: config.format, min_severity: config.min_severity, queue, task }
    }

    /// Queues `body`; never waits (the fleet's heartbeat calls this).
    pub fn send(&self, body: Value) {
        if self.queue.try_send(body).is_err() {
            metrics::counter!("edge_alerts_dropped_total", "webhook" => self.name.clone()).increment(1);
            tracing::warn!(webhook = %self.name, "webhook queue full ({QUEUE} waiting): an alert was dropped");
        }
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn deliver(name: String, url: Secret, client: reqwest::Client, mut bodies: mpsc::Receiver<Value>) {
    let mut failing = false;
    while let Some(body) = bodies.recv().await {
        let queued = tokio::time::Instant::now();
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
        loop {
            let outcome = attempt(&client, &url, &body).await;
            let label = match &outcome {
                Ok(()) => "delivered",
                Err(Failure::Refused(_)) => "refused",
                Err(Failure::Retry(_)) => "retried",
            };
            metrics::counter!("edge_alerts_sent_total", "webhook" => name.clone(), "outcome" => label).increment(1);
            match outcome {
                Ok(()) => {
                    if std::mem::take(&mut failing) {
                        tracing::info!(webhook = %name, "the webhook takes alerts again");
                    }
                    break;
                }
                Err(Failure::Refused(status)) => {
                    tracing::error!(webhook = %name, status, "the webhook refused an alert (not retried): check its URL and format");
                    break;
                }
                Err(Failure::Retry(why)) => {
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!(webhook = %name, "cannot deliver alerts, retrying with backoff: {why}");
                    }
                    if queued.elapsed() > GIVE_UP_AFTER {
                        tracing::error!(webhook = %name, "gave up an alert undelivered for an hour");
                        break;
                    }
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }
}

enum Failure {
    /// The receiver answered with a status retrying will not change.
    Refused(u16),
    /// Down, slow, or busy: try again. The text never holds the URL.
    Retry(String),
}

async fn attempt(client: &reqwest::Client, url: &Secret, body: &Value) -> Result<(), Failure> {
    let sent = client.post(url.expose()).json(body).timeout(ATTEMPT_TIMEOUT).send().await;
    let response = sent.map_err(|e| Failure::Retry(describe(&e)))?;
    let status = response.status();
    match status.as_u16() {
        200..=299 => Ok(()),
        408 | 429 | 500..=599 => Err(Failure::Retry(format!("HTTP {status}"))),
        other => Err(Failure::Refused(other)),
    }
}

/// What went wrong, without the URL reqwest would quote.
fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "no answer in time"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut cause = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(c) = cause {
        detail = c.to_string();
        cause = c.source();
    }
    // The innermost cause (connection refused, DNS) names no URL.
    if detail.is_empty() { what.into() } else { format!("{what}: {}", crate::text::sanitize(&detail, 120)) }
}
