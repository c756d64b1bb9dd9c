//! Publishes the simulated fleet to an MQTT broker at a fixed rate, in the formats asked for.

use super::fleet::{Fleet, RobotState};
use crate::config::{SimFormat, SimulatorConfig};
use crate::model::now_ms;
use rumqttc::{AsyncClient, MqttOptions, QoS};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Runs until `stop` turns true. `broker` is `host:port`.
pub async fn run(config: SimulatorConfig, broker: String, mut stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    let (host, port) =
        broker.rsplit_once(':').ok_or_else(|| anyhow::anyhow!("simulator broker `{broker}` is not host:port"))?;
    let port: u16 = port.parse().map_err(|_| anyhow::anyhow!("simulator broker `{broker}`: bad port"))?;
    let mut options = MqttOptions::new(format!("edge-sim-{}", std::process::id()), host, port);
    options.set_keep_alive(Duration::from_secs(30)).set_request_channel_capacity(1024);
    let (client, mut events) = AsyncClient::new(options, 1024);
    // The event loop must be polled for anything to be sent; errors just mean "retry".
    let driver = tokio::spawn(async move {
        loop {
            if events.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    });
    let fleet = Fleet::new(config.robots.clone());
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / config.rate_hz));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tracing::info!(%broker, robots = config.robots.len(), rate_hz = config.rate_hz, formats = ?config.formats, "simulator publishing");
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        let now = now_ms();
        for robot in fleet.at(started.elapsed().as_secs_f64()) {
            for format in &config.formats {
                let (topic, payload) = message(*format, &config.fleet, &robot, now);
                // A full request queue (broker unreachable) drops the sample: it is a simulator.
                let _ = client.try_publish(topic, QoS::AtLeastOnce, false, payload);
            }
        }
    }
    let _ = client.disconnect().await;
    driver.abort();
    Ok(())
}

/// The topic and payload of one robot state in one format.
pub fn message(format: SimFormat, fleet: &str, robot: &RobotState, now_ms: u64) -> (String, Vec<u8>) {
    match format {
        SimFormat::EdgeSim => (
            format!("edge-sim/{fleet}/{}/state", robot.name),
            serde_json::json!({
                "format": "edge-sim/1",
                "robot": robot.name,
                "time_ms": now_ms,
                "x": round(robot.x, 3),
                "y": round(robot.y, 3),
                "heading": round(robot.heading, 4),
                "speed": robot.speed_mps,
                "moving": robot.speed_mps > 0.0,
                "battery": round(robot.battery, 1),
            })
            .to_string()
            .into_bytes(),
        ),
        // The live ATI feed: 3-element pose, integer battery, lower-case mode.
        SimFormat::Ati => (
            format!("ati/amr/{}/status", robot.name),
            serde_json::json!({
                "sherpa_name": robot.name,
                "mode": "fleet",
                "pose": [round(robot.x, 3), round(robot.y, 3), round(robot.heading, 3)],
                "battery_status": robot.battery.round() as i64,
                "disabled": false,
                "disabled_reason": "",
                "error": "",
                "trip_id": null,
                "trip_leg_id": null,
                "timestamp": rfc3339(now_ms),
            })
            .to_string()
            .into_bytes(),
        ),
    }
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

/// UTC epoch ms as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn rfc3339(ms: u64) -> String {
    let (days, rest) = ((ms / 86_400_000) as i64, ms % 86_400_000);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s, milli) = (rest / 3_600_000, rest / 60_000 % 60, rest / 1000 % 60, rest % 1000);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_of_known_times() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_764_595_312_000), "2025-12-01T13:21:52.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
    }
}
