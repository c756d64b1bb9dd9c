//! A Twinzo stand-in that speaks the wire contract of docs/twinzo-api.md, traps included:
//! arrays only, exact header names, `Authorization` refused, 200 with `Success:false` for a
//! foreign branch, 401 for a bad token, brotli responses. Fault switches let tests break it.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const TENANT: &str = "TVSMotor";
pub const CLIENT_GUID: &str = "a3960903-00c2-4f39-9727-c5fa745eabb7";
pub const API_KEY: &str = "test-api-key-0123456789abcdef0123456789";
pub const BRANCH_1: &str = "dcac4881-05ab-4f29-b0df-79c40df9c9c2";
pub const BRANCH_2: &str = "40557468-2d57-4a3d-9a5e-3eede177daf5";

/// A device the stand-in knows: login, password, branch GUID.
#[derive(Clone, Debug)]
pub struct Device {
    pub login: String,
    pub password: String,
    pub branch: String,
}

/// Switches that make the stand-in misbehave.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Answer this many localization posts with 503.
    pub unavailable_posts: u32,
    /// Refuse every authentication with 401.
    pub auth_down: bool,
    /// Delay every response.
    pub delay: Option<Duration>,
    /// Answer posts with 200 and `Success: false`.
    pub success_false: bool,
    /// Refuse with 400, naming the location, any batch holding a location at this X (mm),
    /// as Twinzo does for a value it cannot take.
    pub poison_x: Option<f64>,
    /// Answer 413 to batches of more locations than this.
    pub max_batch: Option<usize>,
    /// Answer this many posts with 429 and `Retry-After: 1`.
    pub too_many_requests: u32,
    /// Answer this many posts with `Success: true` but one location result too few (the
    /// locations are stored).
    pub short_results: u32,
}

#[derive(Default)]
pub struct Recorded {
    /// Accepted locations per login, in arrival order (unless [`TwinzoStandIn::lean`]).
    pub locations: HashMap<String, Vec<Value>>,
    /// The timestamps of accepted locations per login, in arrival order (always).
    pub stamps: HashMap<String, Vec<u64>>,
    /// Keep only `stamps` (and no `posts`): for long runs.
    pub lean: bool,
    /// Per accepted location, microseconds from its `Timestamp` to its arrival here (only
    /// when [`TwinzoStandIn::measure_latency`] was called: a load whose timestamps are send times).
    pub latencies_us: Vec<i64>,
    pub measure_latency: bool,
    /// Accepted locations, duplicates included (cheap to poll, unlike counting `stamps`).
    pub accepted: u64,
    /// When the first and the latest accepted location arrived.
    pub first_accepted: Option<std::time::Instant>,
    pub last_accepted: Option<std::time::Instant>,
    /// Every localization request: (headers, body).
    pub posts: Vec<(HeaderMap, Value)>,
    pub auth_calls: u32,
    pub sector_calls: u32,
}

struct Inner {
    devices: HashMap<String, Device>,
    /// token → (login, expiry ms)
    tokens: HashMap<String, (String, u64)>,
    token_lifetime_ms: u64,
    sectors: Vec<(i64, String)>,
    faults: Faults,
    recorded: Recorded,
    next_token: u64,
}

pub struct TwinzoStandIn {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    server: Mutex<Option<tokio::task::JoinHandle<()>>>,
    runtime: tokio::runtime::Runtime,
}

impl TwinzoStandIn {
    /// Starts with these devices; sectors 1 (branch 1) and 2 (branch 2).
    pub fn start(devices: &[Device]) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let inner = Arc::new(Mutex::new(Inner {
            devices: devices.iter().map(|d| (d.login.clone(), d.clone())).collect(),
            tokens: HashMap::new(),
            token_lifetime_ms: 24 * 3600 * 1000,
            sectors: vec![(1, BRANCH_1.into()), (2, BRANCH_2.into())],
            faults: Faults::default(),
            recorded: Recorded::default(),
            next_token: 1,
        }));
        // Port 0: the kernel picks one nobody holds, with no window for another test to take it.
        let listener = runtime.block_on(super::ports::listen(SocketAddr::from(([127, 0, 0, 1], 0))));
        let addr = listener.local_addr().unwrap();
        let standin = TwinzoStandIn { addr, inner, server: Mutex::new(None), runtime };
        standin.serve(listener);
        standin
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v3", self.addr)
    }

    /// Stops listening: clients get "connection refused".
    pub fn go_down(&self) {
        if let Some(server) = self.server.lock().unwrap().take() {
            server.abort();
            let _ = self.runtime.block_on(server);
        }
    }

    /// Listens again on the same address.
    pub fn come_back(&self) {
        self.serve(self.runtime.block_on(super::ports::listen(self.addr)));
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let inner = self.inner.clone();
        let app = axum::Router::new()
            .route("/v3/authorization/authenticate", post(authenticate))
            .route("/v3/localization", post(localization))
            .route("/v3/sectors", get(sectors))
            .with_state(inner);
        *self.server.lock().unwrap() = Some(self.runtime.spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));
    }

    /// Records only what long runs need (timestamps per login).
    pub fn lean(&self) {
        self.inner.lock().unwrap().recorded.lean = true;
    }

    /// Records each accepted location's latency from its timestamp (see [`Recorded::latencies_us`]).
    pub fn measure_latency(&self) {
        self.inner.lock().unwrap().recorded.measure_latency = true;
    }

    pub fn set_faults(&self, faults: Faults) {
        self.inner.lock().unwrap().faults = faults;
    }

    /// Invalidates every token issued so far (a revocation): the next post gets 401.
    pub fn revoke_tokens(&self) {
        self.inner.lock().unwrap().tokens.clear();
    }

    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.inner.lock().unwrap().token_lifetime_ms = lifetime.as_millis() as u64;
    }

    pub fn with_recorded<R>(&self, f: impl FnOnce(&Recorded) -> R) -> R {
        f(&self.inner.lock().unwrap().recorded)
    }

    pub fn locations(&self, login: &str) -> Vec<Value> {
        self.with_recorded(|r| r.locations.get(login).cloned().unwrap_or_default())
    }

    /// How often each (login, timestamp) arrived, from the timestamps kept in any mode.
    pub fn arrivals(&self) -> std::collections::BTreeMap<(String, u64), usize> {
        let mut seen = std::collections::BTreeMap::new();
        self.with_recorded(|r| {
            for (login, stamps) in &r.stamps {
                for t in stamps {
                    *seen.entry((login.clone(), *t)).or_default() += 1;
                }
            }
        });
        seen
    }

    pub fn total_locations(&self) -> usize {
        self.with_recorded(|r| r.locations.values().map(Vec::len).sum())
    }

    /// Waits until `ready` holds, or panics with `what` after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, ready: impl Fn(&Recorded) -> bool) {
        let deadline = std::time::Instant::now() + timeout;
        while !self.with_recorded(&ready) {
            assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for TwinzoStandIn {
    fn drop(&mut self) {
        self.go_down();
    }
}

type Shared = State<Arc<Mutex<Inner>>>;

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Twinzo compresses every response with brotli.
fn brotli_json(status: StatusCode, body: &Value) -> Response {
    let mut compressed = Vec::new();
    {
        let mut writer = brotli::CompressorWriter::new(&mut compressed, 4096, 5, 22);
        std::io::Write::write_all(&mut writer, body.to_string().as_bytes()).unwrap();
    }
    (status, [(header::CONTENT_TYPE, "application/json; charset=utf-8"), (header::CONTENT_ENCODING, "br")], compressed)
        .into_response()
}

async fn delay(state: &Arc<Mutex<Inner>>) {
    let delay = state.lock().unwrap().faults.delay;
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
}

async fn authenticate(State(state): Shared, body: Bytes) -> Response {
    delay(&state).await;
    let mut s = state.lock().unwrap();
    s.recorded.auth_calls += 1;
    let Ok(req) = serde_json::from_slice::<Value>(&body) else { return StatusCode::BAD_REQUEST.into_response() };
    let (client, login, password) =
        (req["client"].as_str(), req["login"].as_str().unwrap_or(""), req["password"].as_str());
    let ok = !s.faults.auth_down
        && client == Some(TENANT)
        && s.devices.get(login).is_some_and(|d| Some(d.password.as_str()) == password);
    if !ok {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let branch = s.devices[login].branch.clone();
    let token = format!("{:0>43}=", s.next_token);
    s.next_token += 1;
    let (created, expiration) = (now_ms(), now_ms() + s.token_lifetime_ms);
    s.tokens.insert(token.clone(), (login.to_string(), expiration));
    brotli_json(
        StatusCode::OK,
        &json!({"Client": CLIENT_GUID, "Token": token, "Expiration": expiration, "Created": created, "Branch": branch}),
    )
}

/// The device a request's headers authenticate, or the status to refuse it with.
fn device_of(s: &Inner, headers: &HeaderMap) -> Result<Device, StatusCode> {
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    if headers.contains_key(header::AUTHORIZATION)
        || h("Api-Key").as_deref() != Some(API_KEY)
        || h("Client").as_deref() != Some(CLIENT_GUID)
    {
        return Err(StatusCode::UNAUTHORIZED);
    }
    let token = h("Token").ok_or(StatusCode::UNAUTHORIZED)?;
    let (login, expires) = s.tokens.get(&token).ok_or(StatusCode::UNAUTHORIZED)?;
    if *expires < now_ms() {
        return Err(StatusCode::UNAUTHORIZED);
    }
    Ok(s.devices[login].clone())
}

async fn localization(State(state): Shared, headers: HeaderMap, body: Bytes) -> Response {
    delay(&state).await;
    let mut s = state.lock().unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if !s.recorded.lean {
        s.recorded.posts.push((headers.clone(), body.clone()));
    }
    if s.faults.unavailable_posts > 0 {
        s.faults.unavailable_posts -= 1;
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let device = match device_of(&s, &headers) {
        Ok(device) => device,
        Err(status) => return status.into_response(),
    };
    if s.faults.too_many_requests > 0 {
        s.faults.too_many_requests -= 1;
        return (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "1")]).into_response();
    }
    let Value::Array(items) = body else {
        return brotli_json(
            StatusCode::BAD_REQUEST,
            &json!({"$": ["The JSON value could not be converted to a list of locations."]}),
        );
    };
    for (i, item) in items.iter().enumerate() {
        if let Some(problem) = invalid_location(item) {
            return brotli_json(
                StatusCode::BAD_REQUEST,
                &json!({ format!("$[{i}].{problem}"): ["The JSON value could not be converted."] }),
            );
        }
    }
    if s.faults.max_batch.is_some_and(|max| items.len() > max) {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    }
    if let Some(i) = items.iter().position(|l| Some(l["X"].as_f64().unwrap_or(f64::NAN)) == s.faults.poison_x) {
        return brotli_json(
            StatusCode::BAD_REQUEST,
            &json!({ format!("$[{i}].X"): ["The value is outside the sector."] }),
        );
    }
    let branch = headers.get("Branch").and_then(|v| v.to_str().ok()).unwrap_or("");
    if s.faults.success_false || branch != device.branch {
        return brotli_json(
            StatusCode::OK,
            &json!({"Login": device.login, "Success": false, "ErrorMessage": format!("Device {} does not exist.", device.login), "Locations": []}),
        );
    }
    let mut results: Vec<Value> =
        items.iter().map(|l| json!({"Timestamp": l["Timestamp"], "Action": "Create", "Success": true})).collect();
    if s.faults.short_results > 0 {
        s.faults.short_results -= 1;
        results.pop();
    }
    let stamps: Vec<u64> = items.iter().filter_map(|l| l["Timestamp"].as_u64()).collect();
    if s.recorded.measure_latency {
        let now_us = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64;
        s.recorded.latencies_us.extend(stamps.iter().map(|t| now_us - *t as i64 * 1000));
    }
    s.recorded.accepted += stamps.len() as u64;
    s.recorded.stamps.entry(device.login.clone()).or_default().extend(stamps);
    let now = std::time::Instant::now();
    s.recorded.first_accepted.get_or_insert(now);
    s.recorded.last_accepted = Some(now);
    if !s.recorded.lean {
        s.recorded.locations.entry(device.login.clone()).or_default().extend(items);
    }
    brotli_json(StatusCode::OK, &json!({"Login": device.login, "Success": true, "Locations": results}))
}

/// The field that makes a location unacceptable to Twinzo, if any.
fn invalid_location(l: &Value) -> Option<&'static str> {
    let int = |k: &str| l[k].as_i64().or_else(|| l[k].as_u64().map(|v| v as i64));
    if int("Timestamp").is_none_or(|t| t < 1_000_000_000_000) {
        return Some("Timestamp");
    }
    if int("SectorId").is_none() {
        return Some("SectorId");
    }
    if let Some(k) = ["X", "Y", "Z"].into_iter().find(|k| !l[*k].is_number()) {
        return Some(k);
    }
    if int("Interval").is_none() {
        return Some("Interval");
    }
    if !l["IsMoving"].is_boolean() {
        return Some("IsMoving");
    }
    if !l["Battery"].is_null() && int("Battery").is_none_or(|b| !(0..=100).contains(&b)) {
        return Some("Battery");
    }
    None
}

async fn sectors(State(state): Shared, headers: HeaderMap) -> Response {
    let mut s = state.lock().unwrap();
    s.recorded.sector_calls += 1;
    let device = match device_of(&s, &headers) {
        Ok(device) => device,
        Err(status) => return status.into_response(),
    };
    let list: Vec<Value> = s
        .sectors
        .iter()
        .filter(|(_, branch)| *branch == device.branch)
        .map(|(id, _)| json!({"Id": id, "Title": format!("Sector {id}"), "BranchId": if device.branch == BRANCH_1 { 1 } else { 2 }, "SectorWidth": 265337.97, "SectorHeight": 265337.97}))
        .collect();
    brotli_json(StatusCode::OK, &Value::Array(list))
}
