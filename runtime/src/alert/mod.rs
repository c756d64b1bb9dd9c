//! Alerts: the fleet's events (conditions starting and clearing) sent to the webhooks of
//! edge.yaml as generic JSON or a Slack-compatible body, and a periodic fleet summary (per
//! plant: devices heard, positions posted, alerts raised, utilisation) to the same places.

mod webhook;

use crate::config::{AlertsConfig, WebhookFormat};
use crate::fleet::{Event, EventState, FleetView, Severity};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use webhook::Webhook;

/// The destinations of one configuration, and what the next summary counts from.
pub struct Alerts {
    webhooks: Vec<Webhook>,
    summary_every: Option<Duration>,
    since: Since,
}

/// Totals at the last summary, to report what happened in between.
struct Since {
    at_ms: u64,
    started: tokio::time::Instant,
    alerts: u64,
    /// Per plant, positions posted; per device (plant/robot), distance and time moving.
    posted: BTreeMap<String, u64>,
    travel: BTreeMap<String, (f64, f64)>,
}

impl Alerts {
    pub fn new(config: &AlertsConfig) -> Self {
        // One client for every webhook: connections are reused between alerts.
        let client = reqwest::Client::builder().user_agent(concat!("edge/", env!("CARGO_PKG_VERSION"))).build();
        let client = client.unwrap_or_default();
        let webhooks = config
            .webhooks
            .iter()
            .enumerate()
            .map(|(i, hook)| {
                let name = hook.name.clone().unwrap_or_else(|| format!("webhooks[{i}]"));
                Webhook::start(name, hook, client.clone())
            })
            .collect();
        let summary_every = (config.summary_every_s > 0).then(|| Duration::from_secs(config.summary_every_s));
        let since = Since::at(&FleetView { at_ms: crate::model::now_ms(), ..FleetView::default() });
        Alerts { webhooks, summary_every, since }
    }

    /// Sends each event to the webhooks that take its severity.
    pub fn on_events(&mut self, events: &[Event]) {
        for event in events {
            if event.state == EventState::Started {
                self.since.alerts += 1;
            }
            for hook in self.webhooks.iter().filter(|h| event.severity >= h.min_severity) {
                hook.send(match hook.format {
                    WebhookFormat::Json => json!({ "type": "alert", "event": event }),
                    WebhookFormat::Slack => json!({ "text": slack_text(event) }),
                });
            }
        }
    }

    /// Once the summary period is over: logs the summary and sends it to every webhook.
    pub fn maybe_summary(&mut self, view: &FleetView) {
        let Some(every) = self.summary_every else { return };
        if self.since.started.elapsed() < every {
            return;
        }
        let summary = summarise(view, &self.since);
        self.since = Since::at(view);
        tracing::info!("fleet summary: {}", summary_text(&summary));
        for hook in &self.webhooks {
            hook.send(match hook.format {
                WebhookFormat::Json => json!({ "type": "summary", "summary": summary }),
                WebhookFormat::Slack => json!({ "text": summary_text(&summary) }),
            });
        }
    }
}

impl Since {
    fn at(view: &FleetView) -> Self {
        Since {
            at_ms: view.at_ms,
            started: tokio::time::Instant::now(),
            alerts: 0,
            posted: view.plants.iter().map(|p| (p.name.clone(), p.posted)).collect(),
            travel: view
                .devices
                .iter()
                .map(|d| (format!("{}/{}", d.plant, d.robot), (d.utilisation.distance_m, d.utilisation.moving_s)))
                .collect(),
        }
    }
}

/// What happened since the last summary, per plant.
fn summarise(view: &FleetView, since: &Since) -> Value {
    let plants: Vec<Value> = view
        .plants
        .iter()
        .map(|p| {
            let devices: Vec<_> = view.devices.iter().filter(|d| d.plant == p.name).collect();
            let heard = devices.iter().filter(|d| d.last_received_ms.is_some_and(|t| t >= since.at_ms)).count();
            let utilisation: Vec<Value> = devices
                .iter()
                .map(|d| {
                    let (distance0, moving0) =
                        since.travel.get(&format!("{}/{}", d.plant, d.robot)).copied().unwrap_or_default();
                    json!({
                        "robot": d.robot,
                        "distance_m": ((d.utilisation.distance_m - distance0) * 10.0).round() / 10.0,
                        "moving_s": (d.utilisation.moving_s - moving0).round(),
                    })
                })
                .collect();
            json!({
                "plant": p.name,
                "devices": devices.len(),
                "devices_heard": heard,
                "positions_posted": p.posted - since.posted.get(&p.name).copied().unwrap_or(0),
                "unknown_robots": view.unknown.iter().filter(|u| u.plant == p.name).count(),
                "utilisation": utilisation,
            })
        })
        .collect();
    json!({
        "from_ms": since.at_ms,
        "to_ms": view.at_ms,
        "alerts_raised": since.alerts,
        "conditions_active": view.conditions.len(),
        "plants": plants,
    })
}

fn summary_text(summary: &Value) -> String {
    let hours = (summary["to_ms"].as_u64().unwrap_or(0) - summary["from_ms"].as_u64().unwrap_or(0)) as f64 / 3.6e6;
    let mut text = format!(
        "edge fleet summary, last {hours:.1} h: {} alerts raised, {} conditions active now",
        summary["alerts_raised"], summary["conditions_active"]
    );
    for p in summary["plants"].as_array().into_iter().flatten() {
        let distance: f64 =
            p["utilisation"].as_array().into_iter().flatten().filter_map(|u| u["distance_m"].as_f64()).sum();
        text += &format!(
            "\n• {}: {} of {} devices heard, {} positions posted, {:.0} m travelled, {} unknown robots",
            p["plant"].as_str().unwrap_or(""),
            p["devices_heard"],
            p["devices"],
            p["positions_posted"],
            distance,
            p["unknown_robots"]
        );
    }
    text
}

fn slack_text(e: &Event) -> String {
    let icon = match (e.state, e.severity) {
        (EventState::Ended, _) => ":white_check_mark:",
        (_, Severity::Critical) => ":red_circle:",
        (_, Severity::Warning) => ":warning:",
        (_, Severity::Info) => ":information_source:",
    };
    match e.state {
        EventState::Started => format!("{icon} *{:?}* {} `{}`: {}", e.severity, e.kind.name(), e.subject, e.message),
        EventState::Ended => format!(
            "{icon} resolved after {:.0} s: {} `{}` ({})",
            e.lasted_s.unwrap_or(0.0),
            e.kind.name(),
            e.subject,
            e.message
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::Kind;

    #[test]
    fn slack_text_says_what_where_and_how_long() {
        let mut e = Event {
            at_ms: 0,
            kind: Kind::SourceDown,
            subject: "ati".into(),
            severity: Severity::Critical,
            state: EventState::Started,
            message: "not connected".into(),
            lasted_s: None,
        };
        assert_eq!(slack_text(&e), ":red_circle: *Critical* source_down `ati`: not connected");
        (e.state, e.lasted_s) = (EventState::Ended, Some(61.0));
        assert_eq!(slack_text(&e), ":white_check_mark: resolved after 61 s: source_down `ati` (not connected)");
    }
}
