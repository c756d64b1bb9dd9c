//! A webhook receiver (as Slack or an operator's alert router would run): records every body
//! it takes, and can be down (nothing listening) or slow (answers after a delay).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Inner {
    received: Vec<Value>,
    delay: Duration,
}

pub struct WebhookReceiver {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    server: Mutex<Option<tokio::task::JoinHandle<()>>>,
    runtime: tokio::runtime::Runtime,
}

impl WebhookReceiver {
    /// A receiver on a free port, not listening until [`come_up`](Self::come_up).
    pub fn down() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], super::ports::free_port()));
        WebhookReceiver { addr, inner: Arc::default(), server: Mutex::new(None), runtime }
    }

    /// The URL to configure, with a token in its path as Slack's carry.
    pub fn url(&self) -> String {
        format!("http://{}/services/T000/B000/{}", self.addr, Self::TOKEN)
    }

    pub const TOKEN: &str = "XXtokenXXsecretXX";

    pub fn come_up(&self) {
        let app = axum::Router::new().route("/services/{*rest}", post(take)).with_state(self.inner.clone());
        let listener = self.runtime.block_on(super::ports::listen(self.addr));
        let server = self.runtime.spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        *self.server.lock().unwrap() = Some(server);
    }

    /// Each answer comes this late.
    pub fn set_delay(&self, delay: Duration) {
        self.inner.lock().unwrap().delay = delay;
    }

    pub fn received(&self) -> Vec<Value> {
        self.inner.lock().unwrap().received.clone()
    }
}

async fn take(State(inner): State<Arc<Mutex<Inner>>>, body: axum::Json<Value>) -> StatusCode {
    let delay = inner.lock().unwrap().delay;
    tokio::time::sleep(delay).await;
    inner.lock().unwrap().received.push(body.0);
    StatusCode::OK
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        if let Some(server) = self.server.lock().unwrap().take() {
            server.abort();
        }
    }
}
