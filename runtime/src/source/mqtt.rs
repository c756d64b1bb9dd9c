//! One broker connection: MQTT 5 or 3.1.1 behind one small protocol-neutral surface, with the
//! reconnect policy rumqttc leaves to us (backoff with jitter), resubscription after a lost
//! session, SUBACK refusals reported by topic and reason, and session takeover detection.

use super::tls::tls_client_config;
use crate::backoff::Backoff;
use crate::config::{MqttConfig, MqttProtocol};
use crate::model::now_ms;
use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::SubscribeReasonCode as V5Code;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// One message from a broker, with the acknowledgement to send once it is safe.
pub struct Inbound {
    pub topic: String,
    pub payload: Bytes,
    pub received_at_ms: u64,
    pub ack: Ack,
}

/// A QoS 1/2 acknowledgement owed to the broker (manual acks: sent only after the message
/// was handled, so a crash before that makes the broker deliver it again).
pub enum Ack {
    None,
    V4(rumqttc::AsyncClient, Box<rumqttc::Publish>),
    V5(rumqttc::v5::AsyncClient, Box<rumqttc::v5::mqttbytes::v5::Publish>),
}

impl Ack {
    pub fn send(self) {
        let result = match self {
            Ack::None => Ok(()),
            Ack::V4(client, publish) => client.try_ack(&publish).map_err(|e| e.to_string()),
            Ack::V5(client, publish) => client.try_ack(&publish).map_err(|e| e.to_string()),
        };
        if let Err(e) = result {
            // The broker will deliver the message again: a duplicate, not a loss.
            tracing::debug!(error = %e, "could not send an MQTT ack");
        }
    }
}

/// What the rest of the runtime can see of a source (for /readyz and logs).
#[derive(Debug, Default)]
pub struct SourceStatus {
    pub connected: AtomicBool,
    /// The last subscription refusal, if the broker refused one.
    pub subscribe_error: Mutex<Option<String>>,
}

impl SourceStatus {
    pub fn ready(&self) -> bool {
        self.connected.load(Ordering::Relaxed) && self.subscribe_error.lock().expect("status lock").is_none()
    }
}

/// Connects, subscribes and forwards messages until `stop` turns true.
pub async fn run_source(
    name: Arc<str>,
    config: MqttConfig,
    topics: Vec<String>,
    tx: mpsc::Sender<Inbound>,
    status: Arc<SourceStatus>,
    mut stop: watch::Receiver<bool>,
) {
    let client_id = config.client_id.clone().unwrap_or_else(|| format!("edge-{name}"));
    let endpoint = format!("{}:{} as {client_id}", config.host, config.port());
    let (client, mut events) = match connect(&config, &client_id) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::error!(source = %name, %endpoint, "cannot set up the MQTT connection: {e:#}");
            *status.subscribe_error.lock().expect("status lock") = Some(format!("{e:#}"));
            return;
        }
    };
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
    let mut failures = 0u32;
    let mut connected_at: Option<Instant> = None;
    let mut short_sessions = 0u32;
    loop {
        let event = tokio::select! {
            event = events.poll() => event,
            _ = stop.wait_for(|s| *s) => break,
        };
        match event {
            Ok(Event::ConnAck { session_present }) => {
                if config.tls.as_ref().is_some_and(|t| t.insecure) {
                    tracing::warn!(source = %name, %endpoint, "connected WITHOUT verifying the broker's certificate (tls.insecure)");
                }
                tracing::info!(source = %name, %endpoint, session_present, "connected to MQTT broker");
                status.connected.store(true, Ordering::Relaxed);
                (failures, connected_at) = (0, Some(Instant::now()));
                if !session_present {
                    if let Err(e) = client.subscribe(&topics, config.qos) {
                        tracing::error!(source = %name, "cannot subscribe: {e}");
                    }
                }
            }
            Ok(Event::SubAck(codes)) => report_suback(&name, &topics, config.qos, &codes, &status),
            Ok(Event::Publish { topic, payload, ack }) => {
                metrics::counter!("edge_messages_received_total", "source" => name.to_string()).increment(1);
                crate::stats::STATS.messages_in.fetch_add(1, Ordering::Relaxed);
                let inbound = Inbound { topic, payload, received_at_ms: now_ms(), ack };
                // Waiting here is the backpressure: we stop reading, the broker holds the rest.
                if tx.send(inbound).await.is_err() {
                    break;
                }
            }
            Ok(Event::Other) => {}
            Err(e) => {
                status.connected.store(false, Ordering::Relaxed);
                failures += 1;
                // Only a connection that held for a while earns a fresh, short backoff: one
                // that the broker keeps closing must not be retried in a tight loop.
                match connected_at.take().map(|t| t.elapsed()) {
                    Some(held) if held < STABLE => short_sessions += 1,
                    Some(_) => {
                        short_sessions = 0;
                        backoff.reset();
                    }
                    None => {}
                }
                let delay = backoff.next_delay();
                if e.contains("SessionTakenOver") {
                    tracing::error!(source = %name, %endpoint, "session takeover: another client connected with client id {client_id}");
                } else if short_sessions >= 3 && short_sessions % 3 == 0 {
                    tracing::error!(source = %name, %endpoint, "the broker closed the connection right after connecting {short_sessions} times: is another client using client id {client_id}? (session takeover)");
                }
                if failures == 1 {
                    tracing::warn!(source = %name, %endpoint, "MQTT connection lost or refused: {e}; reconnecting with backoff");
                } else {
                    tracing::debug!(source = %name, %endpoint, failures, ?delay, "MQTT connection still failing: {e}");
                }
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
        }
    }
    client.disconnect();
    status.connected.store(false, Ordering::Relaxed);
    tracing::info!(source = %name, %endpoint, "MQTT source stopped");
}

fn report_suback(name: &str, topics: &[String], qos: u8, codes: &[Result<u8, String>], status: &SourceStatus) {
    let mut refused = None;
    for (i, code) in codes.iter().enumerate() {
        let topic = topics.get(i).map(String::as_str).unwrap_or("?");
        match code {
            Ok(granted) if *granted < qos => {
                tracing::warn!(
                    source = name,
                    topic,
                    granted,
                    requested = qos,
                    "the broker granted a lower QoS than asked: messages may be lost"
                );
            }
            Ok(_) => tracing::info!(source = name, topic, "subscribed"),
            Err(reason) => {
                let hint = if qos == 0 && reason.contains("135") {
                    " (ATI's broker answers 135 to QoS 0 subscriptions: use qos: 1)"
                } else {
                    ""
                };
                let message = format!("the broker refused the subscription to `{topic}`: {reason}{hint}");
                tracing::error!(source = name, "{message}");
                metrics::counter!("edge_subscription_refusals_total", "source" => name.to_string()).increment(1);
                refused = Some(message);
            }
        }
    }
    *status.subscribe_error.lock().expect("status lock") = refused;
}

/// A connection that lasted this long was a real session, not a flap.
const STABLE: Duration = Duration::from_secs(10);

/// A protocol-neutral broker event. (A broker's DISCONNECT, e.g. a session takeover,
/// reaches us as a connection error from rumqttc.)
enum Event {
    ConnAck {
        session_present: bool,
    },
    /// Per filter, in subscription order: the granted QoS, or why it was refused.
    SubAck(Vec<Result<u8, String>>),
    Publish {
        topic: String,
        payload: Bytes,
        ack: Ack,
    },
    Other,
}

enum Client {
    V4(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

enum EventLoop {
    V4(Box<rumqttc::EventLoop>, rumqttc::AsyncClient),
    V5(Box<rumqttc::v5::EventLoop>, rumqttc::v5::AsyncClient),
}

/// Requests the event loop can hold: acks for a burst of messages and the subscriptions.
const REQUEST_CAPACITY: usize = 4096;

fn connect(config: &MqttConfig, client_id: &str) -> anyhow::Result<(Client, EventLoop)> {
    let transport = match &config.tls {
        Some(tls) => {
            rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(Arc::new(tls_client_config(tls)?)))
        }
        None => rumqttc::Transport::Tcp,
    };
    let keep_alive = Duration::from_secs(config.keep_alive_s.max(5));
    let credentials = config
        .username
        .as_ref()
        .map(|u| (u.clone(), config.password.as_ref().map(|p| p.expose().to_string()).unwrap_or_default()));
    Ok(match config.protocol {
        MqttProtocol::V311 => {
            let mut options = rumqttc::MqttOptions::new(client_id, &config.host, config.port());
            options
                .set_transport(transport)
                .set_keep_alive(keep_alive)
                .set_clean_session(config.clean_start)
                .set_manual_acks(true)
                .set_max_packet_size(config.max_packet_bytes, config.max_packet_bytes)
                .set_request_channel_capacity(REQUEST_CAPACITY);
            if let Some((user, pass)) = credentials {
                options.set_credentials(user, pass);
            }
            let (client, events) = rumqttc::AsyncClient::new(options, REQUEST_CAPACITY);
            (Client::V4(client.clone()), EventLoop::V4(Box::new(events), client))
        }
        MqttProtocol::V5 => {
            let mut options = rumqttc::v5::MqttOptions::new(client_id, &config.host, config.port());
            options
                .set_transport(transport)
                .set_keep_alive(keep_alive)
                .set_clean_start(config.clean_start)
                .set_session_expiry_interval(Some(config.session_expiry_s))
                .set_manual_acks(true)
                .set_max_packet_size(Some(config.max_packet_bytes as u32))
                .set_receive_maximum(Some(256))
                .set_request_channel_capacity(REQUEST_CAPACITY);
            if let Some((user, pass)) = credentials {
                options.set_credentials(user, pass);
            }
            let (client, events) = rumqttc::v5::AsyncClient::new(options, REQUEST_CAPACITY);
            (Client::V5(client.clone()), EventLoop::V5(Box::new(events), client))
        }
    })
}

impl Client {
    fn subscribe(&self, topics: &[String], qos: u8) -> Result<(), String> {
        match self {
            Client::V4(c) => {
                let qos = rumqttc::qos(qos).map_err(|e| e.to_string())?;
                c.try_subscribe_many(topics.iter().map(|t| rumqttc::SubscribeFilter::new(t.clone(), qos)))
                    .map_err(|e| e.to_string())
            }
            Client::V5(c) => {
                let qos = rumqttc::v5::mqttbytes::qos(qos).ok_or("bad QoS")?;
                c.try_subscribe_many(topics.iter().map(|t| rumqttc::v5::mqttbytes::v5::Filter::new(t.clone(), qos)))
                    .map_err(|e| e.to_string())
            }
        }
    }

    fn disconnect(&self) {
        let _ = match self {
            Client::V4(c) => c.try_disconnect().map_err(|e| e.to_string()),
            Client::V5(c) => c.try_disconnect().map_err(|e| e.to_string()),
        };
    }
}

impl EventLoop {
    async fn poll(&mut self) -> Result<Event, String> {
        use rumqttc::v5::mqttbytes::v5::Packet as P5;
        use rumqttc::{Event as E4, Packet as P4};
        match self {
            EventLoop::V4(events, client) => Ok(match events.poll().await.map_err(|e| e.to_string())? {
                E4::Incoming(P4::ConnAck(ack)) => Event::ConnAck { session_present: ack.session_present },
                E4::Incoming(P4::SubAck(ack)) => Event::SubAck(
                    ack.return_codes
                        .iter()
                        .map(|c| match c {
                            rumqttc::SubscribeReasonCode::Success(q) => Ok(*q as u8),
                            rumqttc::SubscribeReasonCode::Failure => Err("failure (0x80)".to_string()),
                        })
                        .collect(),
                ),
                E4::Incoming(P4::Publish(p)) => Event::Publish {
                    topic: p.topic.clone(),
                    payload: p.payload.clone(),
                    ack: Ack::V4(client.clone(), Box::new(p)),
                },
                _ => Event::Other,
            }),
            EventLoop::V5(events, client) => Ok(match events.poll().await.map_err(|e| e.to_string())? {
                rumqttc::v5::Event::Incoming(P5::ConnAck(ack)) => {
                    Event::ConnAck { session_present: ack.session_present }
                }
                rumqttc::v5::Event::Incoming(P5::SubAck(ack)) => {
                    Event::SubAck(ack.return_codes.iter().map(v5_code).collect())
                }
                rumqttc::v5::Event::Incoming(P5::Publish(p)) => match String::from_utf8(p.topic.to_vec()) {
                    Ok(topic) => {
                        Event::Publish { topic, payload: p.payload.clone(), ack: Ack::V5(client.clone(), Box::new(p)) }
                    }
                    Err(_) => {
                        Ack::V5(client.clone(), Box::new(p)).send();
                        Event::Other
                    }
                },
                _ => Event::Other,
            }),
        }
    }
}

fn v5_code(code: &V5Code) -> Result<u8, String> {
    let (number, name) = match code {
        V5Code::Success(q) => return Ok(*q as u8),
        V5Code::Failure | V5Code::Unspecified => (128, "unspecified error"),
        V5Code::ImplementationSpecific => (131, "implementation specific error"),
        V5Code::NotAuthorized => (135, "not authorized"),
        V5Code::TopicFilterInvalid => (143, "topic filter invalid"),
        V5Code::PkidInUse => (145, "packet identifier in use"),
        V5Code::QuotaExceeded => (151, "quota exceeded"),
        V5Code::SharedSubscriptionsNotSupported => (158, "shared subscriptions not supported"),
        V5Code::SubscriptionIdNotSupported => (161, "subscription identifiers not supported"),
        V5Code::WildcardSubscriptionsNotSupported => (162, "wildcard subscriptions not supported"),
    };
    Err(format!("reason {number} ({name})"))
}
