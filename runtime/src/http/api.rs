//! The fleet view over HTTP: the live page (`/`, one self-contained file: the box is offline),
//! its JSON API (`/api/status` and slices of it) and the push stream the page listens to
//! (`/api/stream`, Server-Sent Events: the whole view once a second).

use super::AppState;
use crate::fleet::FleetView;
use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Json};
use axum::routing::get;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::Arc;

const PAGE: &str = include_str!("page.html");

pub(super) fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/api/status", get(|State(s): State<AppState>| async move { Json(s.fleet.latest().as_ref().clone()) }))
        .route("/api/devices", get(|State(s): State<AppState>| async move { slice(&s, &["devices", "unknown"]) }))
        .route("/api/sources", get(|State(s): State<AppState>| async move { slice(&s, &["sources"]) }))
        .route("/api/plants", get(|State(s): State<AppState>| async move { slice(&s, &["plants"]) }))
        .route("/api/events", get(|State(s): State<AppState>| async move { slice(&s, &["events", "conditions"]) }))
        .route("/api/stream", get(stream))
}

/// `at_ms` and the named parts of the latest view.
fn slice(state: &AppState, parts: &[&str]) -> Json<Value> {
    let view = serde_json::to_value(&*state.fleet.latest()).unwrap_or_default();
    let mut out = json!({ "at_ms": view["at_ms"] });
    for part in parts {
        out[*part] = view[*part].clone();
    }
    Json(out)
}

/// Every new view as an SSE `status` event, starting with the latest one.
async fn stream(State(state): State<AppState>) -> impl IntoResponse {
    let mut views = state.fleet.subscribe();
    views.mark_changed();
    let events = futures_util::stream::unfold(views, |mut views| async move {
        views.changed().await.ok()?;
        let view: Arc<FleetView> = views.borrow_and_update().clone();
        let event = Event::default().event("status").json_data(&*view).unwrap_or_else(|_| Event::default());
        Some((Ok::<_, Infallible>(event), views))
    });
    ([(header::CACHE_CONTROL, "no-store")], Sse::new(events).keep_alive(KeepAlive::default()))
}
