//! The `health:` and `alerts:` sections: when a device counts as stale, how each kind of
//! condition is judged, and which webhooks get alerts and the periodic fleet summary.

use super::Secret;
use crate::fleet::{Judgement, Kind, Rule, Rules, Severity};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// A device is stale after this long without a message. Default: five of its own usual
    /// gaps between messages, at least 5 s.
    pub stale_after_s: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Per kind of condition, what differs from its default rule.
    #[serde(default)]
    pub rules: BTreeMap<Kind, RuleConfig>,
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
    /// The fleet summary goes to the webhooks this often (seconds); 0: never.
    #[serde(default = "default_summary_every_s")]
    pub summary_every_s: u64,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig { rules: BTreeMap::new(), webhooks: Vec::new(), summary_every_s: default_summary_every_s() }
    }
}

fn default_summary_every_s() -> u64 {
    86_400
}

/// What a rule changes from the kind's default.
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub for_s: Option<u64>,
    pub severity: Option<Severity>,
    pub threshold: Option<f64>,
    pub enabled: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where to POST. Webhook URLs carry their token, so this is a secret: never logged.
    pub url: Secret,
    #[serde(default)]
    pub format: WebhookFormat,
    /// Alerts below this severity are not sent (the summary always is).
    #[serde(default = "default_min_severity")]
    pub min_severity: Severity,
    /// A name for logs and metrics (default `webhooks[i]`).
    pub name: Option<String>,
}

fn default_min_severity() -> Severity {
    Severity::Warning
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// The event as JSON (see docs/operations.md).
    #[default]
    Json,
    /// A Slack-compatible incoming-webhook body (`{"text": ...}`).
    Slack,
}

impl super::Config {
    /// How the fleet view judges devices and conditions.
    pub fn judgement(&self) -> Judgement {
        let mut rules = Rules::default();
        for (kind, change) in &self.alerts.rules {
            let base = kind.default_rule();
            rules.set(
                *kind,
                Rule {
                    for_s: change.for_s.unwrap_or(base.for_s),
                    severity: change.severity.unwrap_or(base.severity),
                    threshold: change.threshold.or(base.threshold),
                    enabled: change.enabled.unwrap_or(base.enabled),
                },
            );
        }
        Judgement {
            call_timeout: Duration::from_millis(self.sandbox.call_timeout_ms),
            stale_after: self.health.stale_after_s.map(Duration::from_secs_f64),
            rules,
        }
    }
}

/// Problems with the sections, by key path.
pub(super) fn check(health: &HealthConfig, alerts: &AlertsConfig, errors: &mut Vec<super::ConfigError>) {
    if let Some(s) = health.stale_after_s.filter(|s| !(s.is_finite() && *s > 0.0)) {
        errors.push(super::ConfigError::new(
            "health.stale_after_s",
            format!("must be a positive number of seconds, not {s}"),
        ));
    }
    for (kind, rule) in &alerts.rules {
        let at = format!("alerts.rules.{}", kind.name());
        match (rule.threshold, kind.default_rule().threshold) {
            (Some(_), None) => {
                errors.push(super::ConfigError::new(format!("{at}.threshold"), "this kind takes no threshold"))
            }
            (Some(t), Some(_)) if !t.is_finite() || t < 0.0 => errors
                .push(super::ConfigError::new(format!("{at}.threshold"), format!("must be a number ≥ 0, not {t}"))),
            _ => {}
        }
    }
    for (i, hook) in alerts.webhooks.iter().enumerate() {
        let url = hook.url.expose();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            // The URL itself is not quoted: it carries the webhook's token.
            errors.push(super::ConfigError::new(
                format!("alerts.webhooks[{i}].url"),
                "must start with http:// or https://",
            ));
        }
    }
}
