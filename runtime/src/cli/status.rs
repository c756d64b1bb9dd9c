//! `edge status`: the fleet as a running edge sees it, read from its `/api/status` (the view the
//! live page shows), as tables or JSON; `--watch` redraws. The exit code serves cron jobs and
//! monitoring agents: 0 healthy, 1 something needs attention, 2 edge cannot be reached.

use super::{ConfigArg, ConfigFlag};
use crate::fleet::{FleetView, Severity};
use crate::model::now_ms;
use clap::Args;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    config_flag: ConfigFlag,
    #[command(flatten)]
    config: ConfigArg,
    /// The running edge, e.g. http://10.0.0.5:9100 [default: the configuration's http.listen].
    #[arg(long)]
    url: Option<String>,
    /// Redraw every --interval seconds until interrupted.
    #[arg(long)]
    watch: bool,
    #[arg(long, default_value_t = 2.0, value_name = "SECONDS")]
    interval: f64,
    /// Print the view as JSON, as /api/status gives it.
    #[arg(long)]
    json: bool,
}

const HEALTHY: u8 = 0;
const UNHEALTHY: u8 = 1;
const UNREACHABLE: u8 = 2;

pub fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let url = match &args.url {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => {
            let path = args.config_flag.resolve(&args.config)?;
            base_url(crate::config::load_local(&path)?.config.http.listen)
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
        loop {
            let code = match fetch(&client, &url).await {
                Ok(view) => {
                    let text = if args.json { serde_json::to_string_pretty(&view)? } else { render(&url, &view) };
                    if args.watch {
                        // Clear the screen, cursor home.
                        print!("\x1b[2J\x1b[H");
                    }
                    println!("{text}");
                    if view.healthy { HEALTHY } else { UNHEALTHY }
                }
                Err(e) => {
                    eprintln!("error: cannot read the fleet from edge at {url}: {e:#}");
                    UNREACHABLE
                }
            };
            if !args.watch {
                return Ok(ExitCode::from(code));
            }
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return Ok(ExitCode::from(code)),
                () = tokio::time::sleep(Duration::from_secs_f64(args.interval.max(0.2))) => {}
            }
        }
    })
}

/// The URL of an edge listening on `listen` (on all interfaces: reached on this machine).
fn base_url(listen: SocketAddr) -> String {
    let host = match listen.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_string(),
        ip if ip.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    format!("http://{host}:{}", listen.port())
}

async fn fetch(client: &reqwest::Client, url: &str) -> anyhow::Result<FleetView> {
    let response = client.get(format!("{url}/api/status")).send().await?.error_for_status()?;
    Ok(response.json().await?)
}

/// The view as text tables.
fn render(url: &str, v: &FleetView) -> String {
    let verdict = match (v.ready, v.healthy) {
        (_, true) => "healthy",
        (true, false) => "needs attention",
        (false, _) => "NOT READY",
    };
    let mut out = format!("edge at {url}: {verdict}\n");
    let ago =
        |ms: Option<u64>| ms.map_or("never".to_string(), |t| format!("{}s ago", now_ms().saturating_sub(t) / 1000));
    let opt = |x: Option<String>| x.unwrap_or_else(|| "-".into());
    let counts = |m: &std::collections::BTreeMap<String, u64>| {
        m.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", ")
    };

    let _ = writeln!(
        out,
        "\n{:<16} {:<8} {:<16} {:<8} {:>9} {:>8} {:>6}  failures",
        "PLANT", "STATE", "TWINZO", "TOKENS", "POSTED/S", "QUEUED", "DEAD"
    );
    for p in &v.plants {
        let state = if p.dry_run { "dry-run".to_string() } else { word(p.state) };
        let _ = writeln!(
            out,
            "{:<16} {state:<8} {:<16} {:<8} {:>9.1} {:>8} {:>6}  {}{}",
            p.name,
            word(p.twinzo),
            word(p.tokens),
            p.posted_per_s,
            p.spool_queued,
            p.spool_dead,
            counts(&p.post_failures),
            p.problem.as_deref().map(|why| format!(" ({why})")).unwrap_or_default()
        );
    }
    let _ = writeln!(
        out,
        "\n{:<16} {:<9} {:>7} {:<28} {:>8} {:>8}  errors / problem",
        "SOURCE", "CONNECTED", "MSG/S", "PLUGIN", "CALLS", "P99 MS"
    );
    for s in &v.sources {
        let plugin = s.plugin.as_ref().map(|p| format!("{} {}", p.name, p.version));
        let problem = s.subscription_error.clone().or(s.plugin_problem.clone()).unwrap_or_else(|| counts(&s.errors));
        let _ = writeln!(
            out,
            "{:<16} {:<9} {:>7.1} {:<28} {:>8} {:>8}  {problem}",
            s.name,
            if s.connected { "yes" } else { "NO" },
            s.messages_per_s,
            opt(plugin),
            s.calls,
            s.p99_call_ms.map_or("-".into(), |ms| format!("{ms:.2}"))
        );
    }
    let _ = writeln!(
        out,
        "\n{:<28} {:<8} {:>10} {:>7} {:<12} {:>6} {:<22} {:>7} {:>5}",
        "DEVICE", "STATE", "HEARD", "BATTERY", "STATUS", "MSG/S", "LAST POST", "QUEUED", "DEAD"
    );
    for d in &v.devices {
        let state = d.state.map(word).unwrap_or_default();
        let post = d.last_post.as_ref().map(|p| format!("{} {}", p.outcome, ago(Some(p.at_ms))));
        let _ = writeln!(
            out,
            "{:<28} {state:<8} {:>10} {:>7} {:<12} {:>6.1} {:<22} {:>7} {:>5}{}",
            format!("{}/{}", d.plant, d.robot),
            ago(d.last_received_ms),
            d.battery_percent.map_or("-".into(), |b| format!("{b:.0}%")),
            opt(d.status.clone()),
            d.messages_per_s,
            opt(post),
            d.queued,
            d.dead_letters,
            d.error.as_deref().map(|e| format!("  ({e})")).unwrap_or_default()
        );
    }
    if !v.unknown.is_empty() {
        let _ = writeln!(out, "\nROBOTS HEARD BUT NOT IN THE DEVICE MAP (add them under the plant's devices:)");
        for u in &v.unknown {
            let _ = writeln!(
                out,
                "  {}/{} from source {}: {} positions, last {}",
                u.plant,
                u.robot,
                u.source,
                u.positions,
                ago(Some(u.last_heard_ms))
            );
        }
    }
    let _ = writeln!(out, "\nCONDITIONS");
    if v.conditions.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for c in &v.conditions {
        let severity = match c.severity {
            Severity::Critical => "CRITICAL",
            Severity::Warning => "warning",
            Severity::Info => "info",
        };
        let _ = writeln!(
            out,
            "  {severity:<8} {:<15} {:<28} since {}: {}",
            c.kind.name(),
            c.subject,
            ago(Some(c.since_ms)),
            c.message
        );
    }
    out
}

/// A state as the API spells it.
fn word(value: impl serde::Serialize) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_reaches_an_edge_listening_everywhere_from_this_machine() {
        assert_eq!(base_url("0.0.0.0:9100".parse().unwrap()), "http://127.0.0.1:9100");
        assert_eq!(base_url("[::]:9100".parse().unwrap()), "http://[::1]:9100");
        assert_eq!(base_url("10.1.2.3:80".parse().unwrap()), "http://10.1.2.3:80");
    }
}
