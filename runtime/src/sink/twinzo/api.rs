//! Twinzo's HTTP API (docs: twinzo-api.md): per-device authentication, posting locations as
//! a JSON array with the exact header names, listing sectors. Every response body is read.

use crate::config::{Secret, TwinzoConfig};
use crate::model::TwinzoLocation;
use serde::Deserialize;
use std::time::{Duration, SystemTime};

/// Idle connections kept open to Twinzo, per plant.
const IDLE_CONNECTIONS: usize = 32;
/// A response body larger than this is not read (Twinzo's answers are a few KB).
const MAX_BODY_BYTES: usize = 1 << 20;
/// What an error body may show in logs and dead letters, after redaction.
const SNIPPET_BYTES: usize = 200;

/// One device's session.
#[derive(Debug, Clone)]
pub struct Token {
    /// `Client`, `Branch` and `Token` as headers, validated once per token (the token marked
    /// sensitive); `None` when one is not a valid header value (then sent as given, and refused).
    pub headers: Option<reqwest::header::HeaderMap>,
    pub token: Secret,
    /// Tenant GUID (`Client` header).
    pub client: String,
    /// The device's branch GUID (`Branch` header).
    pub branch: String,
    pub expires_at_ms: u64,
    pub created_ms: u64,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("Twinzo refused the credentials or token (401)")]
    Unauthorized,
    #[error("Twinzo answered {status}: {body}")]
    Status {
        status: u16,
        body: String,
        /// What `Retry-After` asked for, if anything.
        retry_after: Option<Duration>,
    },
    #[error("request timed out")]
    Timeout,
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("request failed: {0}")]
    Transport(String),
    #[error("unexpected response: {0}")]
    BadResponse(String),
}

impl ApiError {
    /// A short, bounded label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "http-401",
            ApiError::Status { status, .. } if *status >= 500 => "http-5xx",
            ApiError::Status { status: 408, .. } => "http-408",
            ApiError::Status { status: 413, .. } => "http-413",
            ApiError::Status { status: 429, .. } => "http-429",
            ApiError::Status { .. } => "http-4xx",
            ApiError::Timeout => "timeout",
            ApiError::Connect(_) => "connect",
            ApiError::Transport(_) => "transport",
            ApiError::BadResponse(_) => "bad-response",
        }
    }
}

/// The body of a `POST /v3/localization` answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PostResponse {
    #[serde(default)]
    pub success: bool,
    #[serde(default)]
    pub error_message: Option<String>,
    #[serde(default)]
    pub locations: Vec<LocationResult>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LocationResult {
    #[serde(default)]
    pub timestamp: Option<u64>,
    #[serde(default)]
    pub success: bool,
    #[serde(default)]
    pub error_message: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Sector {
    pub id: i64,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub branch_id: Option<i64>,
    /// Millimetres.
    #[serde(default)]
    pub sector_width: Option<f64>,
    #[serde(default)]
    pub sector_height: Option<f64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AuthResponse {
    client: String,
    token: String,
    expiration: u64,
    #[serde(default)]
    created: u64,
    branch: String,
}

/// One tenant's API on one Twinzo host (tokens from one host are refused by another).
pub struct TwinzoApi {
    http: reqwest::Client,
    base: String,
    /// `POST /localization`, parsed once: it is called for every batch of every device.
    localization: reqwest::Url,
    /// The `Api-Key` header, validated once (marked sensitive: never in debug output).
    api_key_header: reqwest::header::HeaderValue,
    tenant: String,
    api_key: Secret,
}

impl TwinzoApi {
    pub fn new(config: &TwinzoConfig) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            // Every device's worker posts through this client; without a cap, a start-up with
            // thousands of devices signing in at once leaves as many idle connections behind.
            .pool_max_idle_per_host(IDLE_CONNECTIONS)
            .timeout(Duration::from_millis(config.timeout_ms))
            .connect_timeout(Duration::from_millis(config.timeout_ms.min(5000)))
            .user_agent(concat!("edge/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let base = config.base_url.trim_end_matches('/').to_string();
        let localization = reqwest::Url::parse(&format!("{base}/localization"))
            .map_err(|e| anyhow::anyhow!("twinzo.base_url: not a URL: {e}"))?;
        let mut api_key_header = reqwest::header::HeaderValue::from_str(config.api_key.expose())
            .map_err(|_| anyhow::anyhow!("twinzo.api_key: not valid in an HTTP header"))?;
        api_key_header.set_sensitive(true);
        Ok(TwinzoApi {
            http,
            base,
            localization,
            api_key_header,
            tenant: config.client.clone(),
            api_key: config.api_key.clone(),
        })
    }

    /// `POST /authorization/authenticate` for one device.
    pub async fn authenticate(&self, login: &str, password: &Secret) -> Result<Token, ApiError> {
        let body = serde_json::json!({ "client": self.tenant, "login": login, "password": password.expose() });
        let response = self.http.post(format!("{}/authorization/authenticate", self.base)).json(&body).send().await;
        let auth: AuthResponse = self.read_json(response, &[password.expose()]).await?;
        if auth.token.is_empty() {
            return Err(ApiError::BadResponse("authentication answered without a token".into()));
        }
        let headers = device_headers(&auth.client, &auth.branch, &auth.token);
        Ok(Token {
            headers,
            token: Secret::new(auth.token),
            client: auth.client,
            branch: auth.branch,
            expires_at_ms: auth.expiration,
            created_ms: auth.created,
        })
    }

    /// `POST /localization` with one device's locations, as a JSON array.
    pub async fn post_locations(&self, token: &Token, batch: &[TwinzoLocation]) -> Result<PostResponse, ApiError> {
        let request = self.with_device_headers(self.http.post(self.localization.clone()), token).json(batch);
        self.read_json(request.send().await, &[token.token.expose()]).await
    }

    /// `GET /sectors`: the sectors of the token's branch.
    pub async fn sectors(&self, token: &Token) -> Result<Vec<Sector>, ApiError> {
        let request = self.with_device_headers(self.http.get(format!("{}/sectors", self.base)), token);
        self.read_json(request.send().await, &[token.token.expose()]).await
    }

    fn with_device_headers(&self, request: reqwest::RequestBuilder, token: &Token) -> reqwest::RequestBuilder {
        use reqwest::header::HeaderName;
        match &token.headers {
            Some(headers) => request.headers(headers.clone()),
            None => request
                .header("Client", &token.client)
                .header("Branch", &token.branch)
                .header("Token", token.token.expose()),
        }
        .header(HeaderName::from_static("api-key"), self.api_key_header.clone())
    }

    async fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        response: Result<reqwest::Response, reqwest::Error>,
        secrets: &[&str],
    ) -> Result<T, ApiError> {
        let mut response = response.map_err(transport_error)?;
        let status = response.status();
        let retry_after = response.headers().get(reqwest::header::RETRY_AFTER).and_then(retry_after);
        let body = read_limited(&mut response).await?;
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(ApiError::Unauthorized);
        }
        if !status.is_success() {
            let body = self.scrub(&String::from_utf8_lossy(&body), secrets);
            return Err(ApiError::Status { status: status.as_u16(), body, retry_after });
        }
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::BadResponse(format!("{e} in {}", self.scrub(&String::from_utf8_lossy(&body), secrets)))
        })
    }

    /// A response snippet safe to log: without anything we sent as a secret (replaced before
    /// cutting, so that no part of one survives the cut), and short.
    fn scrub(&self, text: &str, secrets: &[&str]) -> String {
        let mut text = text.to_string();
        for secret in secrets.iter().chain([&self.api_key.expose()]).filter(|s| s.len() >= 4) {
            text = text.replace(secret, "<redacted>");
        }
        crate::text::sanitize(&text, SNIPPET_BYTES)
    }
}

/// A device's headers as Twinzo names them (`Client`, `Branch`, `Token`).
fn device_headers(client: &str, branch: &str, token: &str) -> Option<reqwest::header::HeaderMap> {
    use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
    let mut headers = HeaderMap::with_capacity(4);
    headers.insert(HeaderName::from_static("client"), HeaderValue::from_str(client).ok()?);
    headers.insert(HeaderName::from_static("branch"), HeaderValue::from_str(branch).ok()?);
    let mut token = HeaderValue::from_str(token).ok()?;
    token.set_sensitive(true);
    headers.insert(HeaderName::from_static("token"), token);
    Some(headers)
}

/// The body, up to [`MAX_BODY_BYTES`]: a larger one is an error, never read whole.
async fn read_limited(response: &mut reqwest::Response) -> Result<Vec<u8>, ApiError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(ApiError::BadResponse(format!("a response body over {MAX_BODY_BYTES} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `Retry-After` as seconds or as an HTTP date.
fn retry_after(value: &reqwest::header::HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO))
}

fn transport_error(e: reqwest::Error) -> ApiError {
    // reqwest's Display includes the URL, which carries no secret here.
    if e.is_timeout() {
        ApiError::Timeout
    } else if e.is_connect() {
        ApiError::Connect(root_cause(&e))
    } else {
        ApiError::Transport(root_cause(&e))
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        assert_eq!(retry_after(&HeaderValue::from_static("7")), Some(Duration::from_secs(7)));
        let soon = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
        let wait = retry_after(&HeaderValue::from_str(&soon).unwrap()).unwrap();
        assert!(wait > Duration::from_secs(25) && wait <= Duration::from_secs(30), "{wait:?}");
        assert_eq!(retry_after(&HeaderValue::from_static("soon")), None);
    }

    #[test]
    fn a_secret_cut_by_truncation_is_still_redacted() {
        let config = TwinzoConfig {
            base_url: "http://127.0.0.1:9/v3".into(),
            client: "t".into(),
            api_key: Secret::new("key-0123456789"),
            branch: "b".into(),
            timeout_ms: 1000,
        };
        let api = TwinzoApi::new(&config).unwrap();
        let token = "tok-ABCDEFGHIJKLMNOPQRSTUVWXYZ";
        // The token straddles the truncation point.
        let body = format!("{}{token}", "x".repeat(SNIPPET_BYTES - 10));
        let scrubbed = api.scrub(&body, &[token]);
        assert!(!scrubbed.contains("tok-ABCDEFGH"), "{scrubbed}");
    }
}
