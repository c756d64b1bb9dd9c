//! The operator's eyes, end to end from the `edge` binary: the live page in a real headless
//! Chromium, the JSON API and `edge status`, and alerts delivered to a webhook receiver that
//! is down, then slow.

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::browser::Browser;
use support::mosquitto::Mosquitto;
use support::mqtt::Publisher;
use support::ports::free_port;
use support::process::{EdgeProcess, eventually, http_get};
use support::webhook::WebhookReceiver;

/// The simulator's three tuggers in a dry-run plant, on an embedded broker, the plugin named from
/// a plugins folder that also holds a file that is not a plugin; `extra` is appended at the top
/// level (alerts, health).
fn simulated(dir: &Path, http: u16, with_simulator: bool, extra: &str) -> PathBuf {
    let broker = free_port();
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(support::plugin("simulator"), plugins.join("simulator.wasm")).unwrap();
    std::fs::write(plugins.join("broken.wasm"), b"\0asm").unwrap();
    let simulator = if with_simulator { "simulator: { rate_hz: 10, formats: [edge-sim] }" } else { "" };
    let yaml = format!(
        r#"
state_dir: {state}
plugins_dir: {plugins}
http: {{ listen: "127.0.0.1:{http}" }}
embedded_broker: {{ listen: "127.0.0.1:{broker}" }}
{simulator}
sources:
  - name: sim
    mqtt: {{ host: 127.0.0.1, port: {broker}, client_id: edge-sim-test }}
    plugin: {{ name: simulator }}
    plant: demo
    transform: {{ affine: [1000, 0, 0, 1000, 0, 0] }}
plants:
  - name: demo
    dry_run: true
    devices:
      tugger-01: {{ sector: 1 }}
      tugger-02: {{ sector: 1 }}
      tugger-03: {{ sector: 1 }}
{extra}
"#,
        state = dir.join("state").display(),
        plugins = plugins.display(),
    );
    let path = dir.join("edge.yaml");
    support::write_private(&path, yaml);
    path
}

fn edge_status(config: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_edge")).arg("status").args(args).arg(config).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

const DEVICE_STATES: &str =
    "JSON.stringify([...document.querySelectorAll('#devices tr[data-robot]')].map(r => r.dataset.state))";
const MARKERS: &str = "JSON.stringify([...document.querySelectorAll('svg.map g.device')].map(g => [g.dataset.robot, g.dataset.x, g.dataset.y]))";

#[test]
fn the_live_page_shows_the_fleet_moving_and_a_stopped_feed_turns_stale() {
    let dir = tempfile::tempdir().unwrap();
    let http = free_port();
    let config = simulated(dir.path(), http, true, "");
    let edge = EdgeProcess::start(&config);
    let addr = format!("127.0.0.1:{http}");
    eventually("the HTTP endpoint", Duration::from_secs(30), || std::net::TcpStream::connect(&addr).is_ok());

    // One self-contained file: nothing fetched from elsewhere (the plant network is offline).
    let (code, page) = http_get(&addr, "/");
    assert_eq!(code, 200);
    for outside in ["src=\"http", "href=\"http", "@import", "url(http", "//cdn", "fonts.googleapis"] {
        assert!(!page.contains(outside), "the page reaches outside: {outside}");
    }

    let mut browser = Browser::open(&format!("http://{addr}/"));
    browser.wait_until(
        "three moving tuggers on the map",
        Duration::from_secs(30),
        "document.querySelectorAll('svg.map g.device[data-state=moving]').length === 3",
    );
    let before: Vec<(String, String, String)> = serde_json::from_str(browser.eval(MARKERS).as_str().unwrap()).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let after: Vec<(String, String, String)> = serde_json::from_str(browser.eval(MARKERS).as_str().unwrap()).unwrap();
    assert_eq!(before.len(), 3);
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(a.0, b.0, "same device order");
        assert!((&a.1, &a.2) != (&b.1, &b.2), "{} did not move on the page in 2 s: {b:?} → {a:?}", a.0);
    }
    assert_eq!(browser.eval(DEVICE_STATES).as_str().unwrap(), r#"["moving","moving","moving"]"#);
    browser.eval("document.querySelector('#devices tr[data-robot=\"demo/tugger-02\"]').click()");
    assert!(browser.eval("document.getElementById('details').textContent").as_str().unwrap().contains("tugger-02"));
    // The plugins folder: the component the source runs, and the file that is not one.
    let mut cells = |file: &str| -> Vec<String> {
        let script = format!(
            "JSON.stringify([...((document.querySelector('#plugins tr[data-plugin-file$=\"/{file}\"]') || {{}}).cells || [])].map(c => c.textContent))"
        );
        serde_json::from_str(browser.eval(&script).as_str().unwrap_or("[]")).unwrap_or_default()
    };
    let simulator = cells("simulator.wasm");
    assert!(simulator.get(1).is_some_and(|c| c.starts_with("simulator ")), "{simulator:?}");
    assert_eq!(simulator.last().map(String::as_str), Some("sim"), "used by the source: {simulator:?}");
    let broken = cells("broken.wasm");
    assert!(broken.get(1).is_some_and(|c| c.contains("not usable")), "{broken:?}");

    // SIGHUP (systemctl reload) reads the files again and stops nothing.
    unsafe { libc::kill(edge.pid() as i32, libc::SIGHUP) };
    edge.wait_for_log("SIGHUP: reading the configuration and plugin files again", Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(browser.eval(DEVICE_STATES).as_str().unwrap(), r#"["moving","moving","moving"]"#);

    // The feed stops (the simulator is taken out of the config): stale, on the page, live.
    support::write_private(
        &config,
        std::fs::read_to_string(&config).unwrap().replace("simulator: { rate_hz: 10, formats: [edge-sim] }", ""),
    );
    browser.wait_until(
        "the three tuggers stale",
        Duration::from_secs(30),
        &format!("{DEVICE_STATES} === '[\"stale\",\"stale\",\"stale\"]'"),
    );
    assert_eq!(browser.eval("document.querySelectorAll('svg.map g.device[data-state=stale]').length"), 3);
    browser.wait_until(
        "the stale events listed",
        Duration::from_secs(5),
        "document.getElementById('events').textContent.includes('device_stale')",
    );
    drop(edge);
}

#[test]
fn edge_status_and_the_api_show_vendor_errors_robots_not_in_the_map_and_an_unreachable_edge() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start();
    let http = free_port();
    let yaml = format!(
        r#"
state_dir: {state}
http: {{ listen: "127.0.0.1:{http}" }}
sources:
  - name: ati
    mqtt: {{ host: 127.0.0.1, port: {port}, client_id: edge-ati-status, topics: ["ati/amr/+/status"] }}
    plugin: {{ path: {plugin} }}
    plant: line-1
    transform: {{ affine: [1000, 0, 0, 1000, 0, 0] }}
plants:
  - name: line-1
    dry_run: true
    devices:
      val-sherpa-01: {{ sector: 1 }}
      val-sherpa-02: {{ sector: 1 }}
"#,
        state = dir.path().join("state").display(),
        port = broker.port,
        plugin = support::plugin("ati-sherpa").display(),
    );
    let config = dir.path().join("edge.yaml");
    support::write_private(&config, yaml);
    let mut edge = EdgeProcess::start(&config);
    edge.wait_for_log("subscribed", Duration::from_secs(30));

    let mut publisher = Publisher::connect(broker.port, "ati-fleet-manager");
    let sherpa = |name: &str, error: &str, disabled: bool| {
        serde_json::json!({
            "sherpa_name": name, "mode": "Fleet", "error": error, "disabled": disabled,
            "disabled_reason": if disabled { "bumper pressed" } else { "" },
            "pose": [10.5, 22.4, 0.0, 0.0, 0.0, 0.0], "battery_status": 82.5,
        })
        .to_string()
    };
    publisher.publish("ati/amr/val-sherpa-01/status", sherpa("val-sherpa-01", "", true));
    publisher.publish("ati/amr/val-sherpa-02/status", sherpa("val-sherpa-02", "E-STOP engaged", false));
    publisher.publish("ati/amr/stranger-7/status", sherpa("stranger-7", "", false));
    publisher.flush(Duration::from_secs(5));

    let addr = format!("127.0.0.1:{http}");
    let devices = || -> Value { serde_json::from_str(&http_get(&addr, "/api/devices").1).unwrap_or_default() };
    eventually("both devices heard and the stranger listed", Duration::from_secs(15), || {
        let d = devices();
        d["devices"].as_array().is_some_and(|all| all.iter().all(|x| x["state"] == "error"))
            && d["unknown"].as_array().is_some_and(|u| u.len() == 1)
    });
    let d = devices();
    assert_eq!(d["devices"][0]["error"], "bumper pressed");
    assert_eq!(d["devices"][1]["error"], "E-STOP engaged");
    assert_eq!(d["devices"][1]["status"], "fleet");
    assert_eq!(d["devices"][1]["battery_percent"], 82.5);
    assert_eq!(d["unknown"][0]["robot"], "stranger-7");
    assert!(d["unknown"][0]["suggested"].as_str().unwrap().contains("\"stranger-7\":"));

    eventually("the conditions raised", Duration::from_secs(5), || {
        let events: Value = serde_json::from_str(&http_get(&addr, "/api/events").1).unwrap_or_default();
        let kinds: Vec<&str> =
            events["conditions"].as_array().into_iter().flatten().filter_map(|c| c["kind"].as_str()).collect();
        kinds.iter().filter(|k| **k == "device_error").count() == 2 && kinds.contains(&"unknown_robot")
    });

    // Not healthy (two robots in error): exit 1, as JSON and as text, the config named either way.
    let (code, json) = edge_status(&config, &["--json"]);
    assert_eq!(code, 1, "{json}");
    let view: Value = serde_json::from_str(&json).unwrap();
    assert_eq!((view["ready"].as_bool(), view["healthy"].as_bool()), (Some(true), Some(false)));
    let text = Command::new(env!("CARGO_BIN_EXE_edge")).args(["status", "-c"]).arg(&config).output().unwrap();
    assert_eq!(text.status.code(), Some(1));
    let text = String::from_utf8_lossy(&text.stdout);
    for expected in ["line-1/val-sherpa-02", "E-STOP engaged", "stranger-7", "device_error", "ati-sherpa"] {
        assert!(text.contains(expected), "`edge status` does not show {expected}:\n{text}");
    }

    // Errors cleared: healthy again, exit 0.
    publisher.publish("ati/amr/val-sherpa-01/status", sherpa("val-sherpa-01", "", false));
    publisher.publish("ati/amr/val-sherpa-02/status", sherpa("val-sherpa-02", "", false));
    publisher.flush(Duration::from_secs(5));
    eventually("healthy once the errors clear and the stranger is quiet", Duration::from_secs(15), || {
        let view: Value = serde_json::from_str(&http_get(&addr, "/api/status").1).unwrap_or_default();
        view["conditions"].as_array().is_some_and(|c| c.iter().all(|c| c["severity"] == "info"))
    });
    assert_eq!(edge_status(&config, &[]).0, 0);

    // --watch redraws until interrupted.
    let watching = Command::new(env!("CARGO_BIN_EXE_edge"))
        .args(["status", "--watch", "--interval", "0.3", "-c"])
        .arg(&config)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    unsafe { libc::kill(watching.id() as i32, libc::SIGINT) };
    let out = watching.wait_with_output().unwrap();
    let draws = String::from_utf8_lossy(&out.stdout).matches("edge at http").count();
    assert!(draws >= 3, "--watch drew {draws} times in 1.5 s");
    assert_eq!(out.status.code(), Some(0), "interrupted while healthy");

    edge.stop();
    let (code, _) = edge_status(&config, &[]);
    assert_eq!(code, 2, "edge is not running: unreachable");
}

#[test]
fn alerts_reach_webhooks_once_per_start_and_end_through_a_receiver_down_then_slow() {
    let dir = tempfile::tempdir().unwrap();
    let (json_hook, slack_hook) = (WebhookReceiver::down(), WebhookReceiver::down());
    let http = free_port();
    let alerts = format!(
        r#"
alerts:
  summary_every_s: 4
  webhooks:
    - {{ url: "{}", format: json, min_severity: warning, name: router }}
    - {{ url: "${{TEST_SLACK_URL}}", format: slack }}
"#,
        json_hook.url()
    );
    let config = simulated(dir.path(), http, true, &alerts);
    let edge = EdgeProcess::start_with_env(&config, &[("TEST_SLACK_URL", slack_hook.url())]);
    let addr = format!("127.0.0.1:{http}");
    eventually("the HTTP endpoint", Duration::from_secs(30), || std::net::TcpStream::connect(&addr).is_ok());
    let states = || -> Vec<String> {
        let d: Value = serde_json::from_str(&http_get(&addr, "/api/devices").1).unwrap_or_default();
        d["devices"].as_array().into_iter().flatten().map(|d| d["state"].as_str().unwrap_or("").to_string()).collect()
    };
    eventually("the tuggers moving", Duration::from_secs(30), || states() == ["moving"; 3]);

    // The feed stops while the receivers are down.
    let text = std::fs::read_to_string(&config).unwrap();
    support::write_private(&config, text.replace("simulator: { rate_hz: 10, formats: [edge-sim] }", ""));
    eventually("the tuggers stale", Duration::from_secs(30), || states() == ["stale"; 3]);
    std::thread::sleep(Duration::from_secs(2));
    json_hook.come_up();
    slack_hook.come_up();
    slack_hook.set_delay(Duration::from_secs(3));
    let alerts_of = |hook: &WebhookReceiver, state: &str| {
        hook.received()
            .iter()
            .filter(|b| b["type"] == "alert" && b["event"]["kind"] == "device_stale" && b["event"]["state"] == state)
            .count()
    };
    eventually("the stale alerts delivered once the receiver is up", Duration::from_secs(30), || {
        alerts_of(&json_hook, "started") == 3
    });

    // The feed comes back: each alert ends, once, with how long it lasted.
    support::write_private(&config, text);
    eventually("the stale alerts ended", Duration::from_secs(30), || alerts_of(&json_hook, "ended") == 3);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!((alerts_of(&json_hook, "started"), alerts_of(&json_hook, "ended")), (3, 3), "no repeats");
    let ended = json_hook.received().into_iter().find(|b| b["event"]["state"] == "ended").unwrap();
    assert!(ended["event"]["lasted_s"].as_f64().unwrap() >= 2.0, "{ended}");

    // The slow Slack receiver gets the same six, as text.
    eventually("the slow receiver served", Duration::from_secs(60), || {
        let texts: Vec<String> =
            slack_hook.received().iter().filter_map(|b| b["text"].as_str().map(String::from)).collect();
        texts.iter().filter(|t| t.contains("device_stale") && t.starts_with(":warning:")).count() == 3
            && texts.iter().filter(|t| t.contains("device_stale") && t.contains("resolved after")).count() == 3
    });
    // The periodic summary, to both.
    eventually("a fleet summary", Duration::from_secs(20), || {
        json_hook.received().iter().any(|b| b["type"] == "summary" && b["summary"]["plants"][0]["devices"] == 3)
    });
    assert!(
        slack_hook.received().iter().any(|b| b["text"].as_str().is_some_and(|t| t.starts_with("edge fleet summary")))
    );
    // Webhook URLs carry their token: never in the log.
    assert!(!edge.log_text().contains(WebhookReceiver::TOKEN), "a webhook token reached the log");
}
