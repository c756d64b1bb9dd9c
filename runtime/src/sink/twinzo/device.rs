//! One Twinzo device as a poster: its token (cached; refreshed before expiry; renewed once on a
//! 401; authentication backed off after failures) and the reading of every `Success` flag.

use super::api::{ApiError, Token, TwinzoApi};
use crate::backoff::Backoff;
use crate::config::Secret;
use crate::model::{TwinzoLocation, now_ms};
use crate::sink::PostResult;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Renew a token this long before it expires (Twinzo's last 24 h), or a fifth of its lifetime
/// before, when that is shorter.
const REFRESH_BEFORE_MS: u64 = 10 * 60_000;

pub struct TwinzoDevice {
    api: Arc<TwinzoApi>,
    plant: String,
    robot: String,
    login: String,
    password: Secret,
    branch: String,
    token: Option<Token>,
    auth_backoff: Backoff,
    auth_not_before: Option<Instant>,
}

impl TwinzoDevice {
    pub fn new(api: Arc<TwinzoApi>, plant: &str, robot: &str, login: &str, password: Secret, branch: &str) -> Self {
        TwinzoDevice {
            api,
            plant: plant.into(),
            robot: robot.into(),
            login: login.into(),
            password,
            branch: branch.into(),
            token: None,
            auth_backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(300)),
            auth_not_before: None,
        }
    }

    pub async fn post(&mut self, batch: &[TwinzoLocation]) -> PostResult {
        for attempt in 0..2 {
            let token = match self.token().await {
                Ok(token) => token,
                Err(result) => return result,
            };
            match self.api.post_locations(&token, batch).await {
                Ok(response) => return read_response(response, batch.len()),
                // A revoked or expired token: sign in again once, right away.
                Err(ApiError::Unauthorized) if attempt == 0 => self.token = None,
                Err(e) => return classify(e),
            }
        }
        PostResult::Retry { reason: "http-401", detail: "a fresh token was refused too".into(), after: None }
    }

    /// Twinzo answers again (another device posted): sign in at the next post, not after the
    /// backoff that the outage built up.
    pub fn retry_now(&mut self) {
        self.auth_not_before = None;
        self.auth_backoff.reset();
    }

    /// A valid token, signing in when there is none or it is about to expire.
    async fn token(&mut self) -> Result<Token, PostResult> {
        let fresh = |t: &&Token| {
            let margin = (t.expires_at_ms.saturating_sub(t.created_ms) / 5).min(REFRESH_BEFORE_MS);
            t.expires_at_ms > now_ms() + margin
        };
        if let Some(token) = self.token.as_ref().filter(fresh) {
            return Ok(token.clone());
        }
        if let Some(wait) = self.auth_not_before.filter(|t| *t > Instant::now()) {
            let detail = format!("authentication backed off for {:.0?} more", wait - Instant::now());
            return Err(PostResult::Retry { reason: "auth", detail, after: None });
        }
        match self.api.authenticate(&self.login, &self.password).await {
            Ok(token) if token.branch != self.branch => Err(PostResult::Rejected {
                reason: "wrong-branch",
                detail: format!(
                    "device login {} belongs to branch {}, but the plant is configured for branch {}",
                    self.login, token.branch, self.branch
                ),
            }),
            Ok(token) => {
                self.auth_backoff.reset();
                self.auth_not_before = None;
                self.token = Some(token.clone());
                Ok(token)
            }
            Err(e) => {
                metrics::counter!("edge_twinzo_auth_failures_total", "plant" => self.plant.clone(), "device" => self.robot.clone()).increment(1);
                self.auth_not_before = Some(Instant::now() + self.auth_backoff.next_delay());
                Err(PostResult::Retry {
                    reason: "auth",
                    detail: format!("signing in as {}: {e}", self.login),
                    after: None,
                })
            }
        }
    }
}

/// What an error answer means for the batch: refused for its content (split it to find the
/// locations Twinzo will not take), or not delivered now (retry, when Twinzo says so).
fn classify(e: ApiError) -> PostResult {
    let (reason, detail) = (e.reason(), e.to_string());
    match e {
        ApiError::Status { status: 413, .. } => PostResult::Refused { reason: "http-413", detail },
        // Unknown route (an empty 404) or method: the base URL is wrong, not the locations.
        ApiError::Status { status: 404 | 405, ref body, .. } if body.trim().is_empty() => {
            PostResult::Retry { reason, detail, after: None }
        }
        ApiError::Status { status: 408 | 429, retry_after, .. } => {
            PostResult::Retry { reason, detail, after: retry_after }
        }
        ApiError::Status { status: 400..500, .. } => PostResult::Refused { reason, detail },
        ApiError::Status { retry_after, .. } => PostResult::Retry { reason, detail, after: retry_after },
        _ => PostResult::Retry { reason, detail, after: None },
    }
}

fn read_response(response: super::api::PostResponse, sent: usize) -> PostResult {
    if !response.success {
        let why = response.error_message.unwrap_or_else(|| "Success: false without a message".into());
        return PostResult::Rejected { reason: "success-false", detail: why };
    }
    if response.locations.len() != sent {
        // Twinzo answers one entry per location. Which ones it stored cannot be told: posting
        // the batch again could store them twice, so it goes to the dead letters instead.
        return PostResult::Rejected {
            reason: "count-mismatch",
            detail: format!(
                "Twinzo answered Success with {} location results for {sent} locations; they are kept as dead letters rather than posted twice (`edge spool retry` sends them again)",
                response.locations.len()
            ),
        };
    }
    let rejected: Vec<usize> =
        response.locations.iter().enumerate().filter(|(_, l)| !l.success).map(|(i, _)| i).collect();
    if rejected.is_empty() {
        return PostResult::Accepted;
    }
    let detail =
        response.locations[rejected[0]].error_message.clone().unwrap_or_else(|| "Locations[].Success: false".into());
    PostResult::Partial { rejected, reason: "location-rejected", detail }
}
