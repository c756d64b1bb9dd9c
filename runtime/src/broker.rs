//! The embedded MQTT broker (rumqttd) that lets the default edge.yaml run with no external
//! service. It lives as long as the process; a plant uses its own broker instead.

use crate::config::EmbeddedBrokerConfig;
use std::net::SocketAddr;

/// Starts the broker on its own threads and waits until it accepts connections.
#[cfg(feature = "embedded-broker")]
pub fn start(config: &EmbeddedBrokerConfig) -> anyhow::Result<()> {
    let server = |name: &str, listen: SocketAddr| {
        serde_json::json!({
            "name": name,
            "listen": listen.to_string(),
            "next_connection_delay_ms": 1,
            "connections": {
                "connection_timeout_ms": 60000,
                "max_payload_size": 1 << 20,
                "max_inflight_count": 500,
                "dynamic_filters": true
            }
        })
    };
    let mut broker = serde_json::json!({
        "id": 0,
        "router": {
            "max_connections": 1000,
            "max_outgoing_packet_count": 1000,
            "max_segment_size": 16 << 20,
            "max_segment_count": 10
        },
        "v4": { "1": server("edge-v4", config.listen) }
    });
    if let Some(v5) = config.listen_v5 {
        broker["v5"] = serde_json::json!({ "1": server("edge-v5", v5) });
    }
    let broker: rumqttd::Config = serde_json::from_value(broker)?;
    // rumqttd reports a taken port only in its own log, from its own thread: check first.
    for addr in std::iter::once(config.listen).chain(config.listen_v5) {
        std::net::TcpListener::bind(addr)
            .map_err(|e| anyhow::anyhow!("the embedded MQTT broker cannot listen on {addr}: {e}"))?;
    }
    std::thread::Builder::new().name("edge-broker".into()).spawn(move || {
        if let Err(e) = rumqttd::Broker::new(broker).start() {
            tracing::error!("embedded MQTT broker stopped: {e}");
        }
    })?;
    tracing::info!(listen = %config.listen, v5 = ?config.listen_v5, "embedded MQTT broker running");
    Ok(())
}

#[cfg(not(feature = "embedded-broker"))]
pub fn start(_config: &EmbeddedBrokerConfig) -> anyhow::Result<()> {
    anyhow::bail!("this edge was built without the embedded-broker feature; point sources at a broker instead")
}
