//! The HTTP endpoint on `http.listen`: `/healthz` (the process is up), `/readyz` (sources
//! connected, plugins loaded, Twinzo reachable), `/metrics` (Prometheus text), and the fleet
//! view for operators: the live page at `/` and its JSON API under `/api/` (see [`api`]).

mod api;

use crate::fleet::Fleet;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Clone)]
struct AppState {
    fleet: Arc<Fleet>,
    metrics: PrometheusHandle,
}

/// Histogram samples are buffered until the next upkeep: without one, a process nobody
/// scrapes would keep every sample (about 10 KB/s at 1,000 messages/s, found by the soak).
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Binds `listen` and serves until the process ends.
pub async fn serve(listen: SocketAddr, fleet: Arc<Fleet>, metrics: PrometheusHandle) -> anyhow::Result<()> {
    let upkeep = metrics.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(UPKEEP_EVERY);
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .merge(api::routes())
        .with_state(AppState { fleet, metrics });
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen} (http.listen): {e}"))?;
    tracing::info!("fleet page on http://{listen}/ (also /api/status, /healthz, /readyz, /metrics)");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("HTTP endpoint stopped: {e}");
        }
    });
    Ok(())
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let (ready, details) = state.fleet.readiness();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(details))
}

async fn render_metrics(State(state): State<AppState>) -> impl IntoResponse {
    state.metrics.run_upkeep();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}

/// Installs the process-wide Prometheus recorder (once).
pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    const LATENCY: &[f64] = &[0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0];
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(LATENCY)?
        .install_recorder()
        .map_err(|e| anyhow::anyhow!("cannot install the metrics recorder: {e}"))
}
