//! The least a bridge must do per position under Twinzo's contract, with edge's own crates: take
//! an ATI status at QoS 1, read it natively, and post it alone with its device's token. No plugin,
//! no spool, no retry, no metrics: bench/scale runs it at edge's loads as the floor that edge's
//! CPU per position is measured against. Not a product.
//!
//! `bare_bridge --broker HOST:PORT --twinzo URL --client TENANT --api-key KEY --devices FILE`,
//! where FILE is a JSON object of device login to password; it prints `subscribed` on stderr
//! once every device has its token and the subscription is acknowledged.

use anyhow::{Context, anyhow};
use clap::Parser;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use serde::Deserialize;
use std::collections::HashMap;
use std::time::Duration;

// The plugin SDK's time parser (the source file the plugins build with), compiled natively as
// runtime/benches/hot_paths.rs does.
#[allow(dead_code, unused_imports)]
#[path = "../../plugins/sdk/src/time.rs"]
mod time;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    broker: String,
    /// Twinzo's base URL, up to and with `/v3`.
    #[arg(long)]
    twinzo: String,
    #[arg(long)]
    client: String,
    #[arg(long)]
    api_key: String,
    #[arg(long)]
    devices: std::path::PathBuf,
    #[arg(long, default_value = "ati/amr/+/status")]
    topic: String,
    #[arg(long, default_value_t = 1)]
    sector: i64,
    /// tokio worker threads; 0: everything on the main thread (tokio's current-thread runtime).
    #[arg(long, default_value_t = 2)]
    worker_threads: usize,
    /// Translate on a thread of its own, as edge runs its plugins.
    #[arg(long)]
    hop: bool,
}

/// The fields of an ATI live status the post needs.
#[derive(Deserialize)]
struct Status {
    pose: [f64; 3],
    battery_status: Option<i64>,
    timestamp: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Token {
    client: String,
    branch: String,
    token: String,
}

/// A device's post headers and its last position (for `IsMoving` and `Interval`).
struct Device {
    headers: HeaderMap,
    last: Option<(u64, f64, f64)>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut runtime = match args.worker_threads {
        0 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
    };
    runtime.enable_all().build()?.block_on(bridge(args))
}

async fn bridge(args: Args) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let passwords: HashMap<String, String> =
        serde_json::from_slice(&std::fs::read(&args.devices).with_context(|| format!("{}", args.devices.display()))?)?;
    let mut devices = HashMap::new();
    for (login, password) in &passwords {
        let headers = sign_in(&http, &args, login, password).await.with_context(|| format!("device {login}"))?;
        devices.insert(login.clone(), Device { headers, last: None });
    }
    let url = format!("{}/localization", args.twinzo.trim_end_matches('/')).parse()?;
    let mut poster = Poster { http, url, devices, sector: args.sector, runtime: tokio::runtime::Handle::current() };

    let (host, port) =
        args.broker.rsplit_once(':').ok_or_else(|| anyhow!("broker {} is not host:port", args.broker))?;
    let mut options = MqttOptions::new(format!("bare-bridge-{}", std::process::id()), host, port.parse()?);
    options.set_keep_alive(Duration::from_secs(30)).set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = AsyncClient::new(options, 64);
    let mut network = rumqttc::NetworkOptions::new();
    network.set_tcp_nodelay(true);
    events.set_network_options(network);
    client.subscribe(&args.topic, QoS::AtLeastOnce).await?;
    // With --hop, messages cross to a thread of their own and back, as edge's go to and from
    // its plugin thread.
    let mut route = if args.hop {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Publish>(64);
        std::thread::spawn(move || {
            while let Some(p) = rx.blocking_recv() {
                poster.handle(&p);
            }
        });
        Route::Thread(tx)
    } else {
        Route::Inline(poster)
    };
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::SubAck(_))) => eprintln!("subscribed"),
            Ok(Event::Incoming(Packet::Publish(p))) => match &mut route {
                Route::Inline(poster) => poster.handle(&p),
                Route::Thread(tx) => tx.send(p).await?,
            },
            Ok(_) => {}
            Err(e) => {
                eprintln!("mqtt: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

enum Route {
    Inline(Poster),
    Thread(tokio::sync::mpsc::Sender<Publish>),
}

/// Turns a status into its device's post, and starts the post.
struct Poster {
    http: reqwest::Client,
    url: reqwest::Url,
    devices: HashMap<String, Device>,
    sector: i64,
    runtime: tokio::runtime::Handle,
}

impl Poster {
    fn handle(&mut self, p: &Publish) {
        let Some(robot) = p.topic.split('/').nth(2) else { return };
        let Some(device) = self.devices.get_mut(robot) else { return };
        let Some(body) = location(device, &p.payload, self.sector) else { return };
        let request = self.http.post(self.url.clone()).headers(device.headers.clone()).body(body);
        self.runtime.spawn(async move {
            if let Err(e) = post(request).await {
                eprintln!("post: {e:#}");
            }
        });
    }
}

async fn sign_in(http: &reqwest::Client, args: &Args, login: &str, password: &str) -> anyhow::Result<HeaderMap> {
    let url = format!("{}/authorization/authenticate", args.twinzo.trim_end_matches('/'));
    let body = serde_json::json!({ "client": args.client, "login": login, "password": password });
    let token: Token = http.post(url).json(&body).send().await?.error_for_status()?.json().await?;
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (name, value) in
        [("Client", &token.client), ("Branch", &token.branch), ("Token", &token.token), ("Api-Key", &args.api_key)]
    {
        headers.insert(name, HeaderValue::from_str(value)?);
    }
    Ok(headers)
}

/// The one-location array Twinzo takes, from an ATI status (pose in metres, mm on the wire).
fn location(device: &mut Device, payload: &[u8], sector: i64) -> Option<Vec<u8>> {
    let status: Status = serde_json::from_slice(payload).ok()?;
    let timestamp = time::parse_rfc3339_ms(&status.timestamp, None).ok()?;
    let (x, y) = (status.pose[0] * 1000.0, status.pose[1] * 1000.0);
    let (moving, interval) = match device.last {
        Some((t, lx, ly)) => ((x - lx).hypot(y - ly) > 50.0, timestamp.saturating_sub(t).clamp(100, 60_000)),
        None => (false, 1000),
    };
    device.last = Some((timestamp, x, y));
    let location = serde_json::json!([{
        "Timestamp": timestamp, "SectorId": sector, "X": x, "Y": y, "Z": 0,
        "Interval": interval, "Battery": status.battery_status, "IsMoving": moving,
        "LocalizationAreas": [], "NoGoAreas": [],
    }]);
    serde_json::to_vec(&location).ok()
}

async fn post(request: reqwest::RequestBuilder) -> anyhow::Result<()> {
    let answer: serde_json::Value = request.send().await?.error_for_status()?.json().await?;
    match answer["Success"].as_bool() {
        Some(true) => Ok(()),
        _ => Err(anyhow!("refused: {}", answer["ErrorMessage"])),
    }
}
