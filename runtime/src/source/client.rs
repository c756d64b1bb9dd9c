//! rumqttc's MQTT 5 and 3.1.1 clients behind one small protocol-neutral surface: connect
//! options, the events a source cares about, typed connection failures, and raw acks.

use super::tls::tls_client_config;
use crate::config::{MqttConfig, MqttProtocol};
use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::SubscribeReasonCode as V5Code;
use std::sync::Arc;
use std::time::Duration;

/// A protocol-neutral broker event.
pub(super) enum Event {
    ConnAck {
        session_present: bool,
    },
    /// Per filter, in subscription order: the granted QoS, or why it was refused.
    SubAck(Vec<Result<u8, Refusal>>),
    Publish {
        topic: String,
        payload: Bytes,
        /// `(packet id, QoS)` of a QoS 1/2 message, which must be acknowledged.
        packet: Option<(u16, u8)>,
    },
    /// A message whose topic is not UTF-8 (MQTT 5 only; 3.1.1 cannot even frame one).
    BadTopic {
        packet: Option<(u16, u8)>,
    },
    /// The event loop wrote an acknowledgement to the broker.
    AckWritten,
    /// The event loop wrote our DISCONNECT.
    DisconnectWritten,
    Other,
}

/// Why a connection ended or could not be made.
#[derive(Debug, thiserror::Error)]
pub(super) enum Failure {
    /// The broker sent a packet larger than we accept (MQTT 3.1.1 cannot tell it our limit).
    #[error("the broker sent a packet of {size} bytes, over the limit of {limit} bytes")]
    Oversized { size: usize, limit: usize },
    /// Another client connected with our client id.
    #[error("session taken over by another client with the same client id")]
    TakenOver,
    #[error("{0}")]
    Other(String),
}

/// A subscription the broker refused: its reason code and the code's name.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Refusal {
    pub code: u8,
    pub name: &'static str,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "reason {} ({})", self.code, self.name)
    }
}

/// The request channel can refuse an acknowledgement: it is full (try again after the event
/// loop ran), or the event loop is gone.
#[derive(Debug, PartialEq)]
pub(super) enum AckRefused {
    Full,
    Closed,
}

pub(super) enum Client {
    V4(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

pub(super) enum EventLoop {
    V4(Box<rumqttc::EventLoop>),
    V5(Box<rumqttc::v5::EventLoop>),
}

/// Requests the event loop can hold: acknowledgements waiting to be written, subscriptions.
const REQUEST_CAPACITY: usize = 1024;

pub(super) fn connect(config: &MqttConfig, client_id: &str) -> anyhow::Result<(Client, EventLoop)> {
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
            let (client, mut events) = rumqttc::AsyncClient::new(options, REQUEST_CAPACITY);
            events.set_network_options(no_delay());
            (Client::V4(client), EventLoop::V4(Box::new(events)))
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
                .set_receive_maximum(Some(config.receive_maximum))
                .set_request_channel_capacity(REQUEST_CAPACITY)
                .set_network_options(no_delay());
            if let Some((user, pass)) = credentials {
                options.set_credentials(user, pass);
            }
            let (client, events) = rumqttc::v5::AsyncClient::new(options, REQUEST_CAPACITY);
            (Client::V5(client), EventLoop::V5(Box::new(events)))
        }
    })
}

/// Acknowledgements are tiny packets: sent at once, not held back by Nagle's algorithm until the
/// broker's TCP ack (a broker with a small in-flight window waits for them to send more).
fn no_delay() -> rumqttc::NetworkOptions {
    let mut network = rumqttc::NetworkOptions::new();
    network.set_tcp_nodelay(true);
    network
}

impl Client {
    pub(super) fn subscribe(&self, topics: &[String], qos: u8) -> Result<(), String> {
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

    pub(super) fn unsubscribe(&self, topics: &[String]) -> Result<(), String> {
        for topic in topics {
            match self {
                Client::V4(c) => c.try_unsubscribe(topic.clone()).map_err(|e| e.to_string())?,
                Client::V5(c) => c.try_unsubscribe(topic.clone()).map_err(|e| e.to_string())?,
            }
        }
        Ok(())
    }

    /// Hands the acknowledgement of packet `pkid` (received at `qos`) to the event loop.
    pub(super) fn ack(&self, pkid: u16, qos: u8) -> Result<(), AckRefused> {
        let refused = |full: bool| if full { AckRefused::Full } else { AckRefused::Closed };
        match self {
            Client::V4(c) => {
                let mut publish = rumqttc::Publish::new("", rumqttc::qos(qos).map_err(|_| AckRefused::Closed)?, []);
                publish.pkid = pkid;
                c.try_ack(&publish).map_err(|e| refused(matches!(e, rumqttc::ClientError::TryRequest(_))))
            }
            Client::V5(c) => {
                let qos = rumqttc::v5::mqttbytes::qos(qos).ok_or(AckRefused::Closed)?;
                let mut publish = rumqttc::v5::mqttbytes::v5::Publish::new("", qos, Bytes::new(), None);
                publish.pkid = pkid;
                c.try_ack(&publish).map_err(|e| refused(matches!(e, rumqttc::v5::ClientError::TryRequest(_))))
            }
        }
    }

    pub(super) fn disconnect(&self) {
        let _ = match self {
            Client::V4(c) => c.try_disconnect().map_err(|e| e.to_string()),
            Client::V5(c) => c.try_disconnect().map_err(|e| e.to_string()),
        };
    }
}

impl EventLoop {
    pub(super) async fn poll(&mut self) -> Result<Event, Failure> {
        match self {
            EventLoop::V4(events) => match events.poll().await {
                Ok(event) => Ok(v4_event(event)),
                Err(e) => Err(v4_failure(e, events.mqtt_options.max_packet_size())),
            },
            EventLoop::V5(events) => match events.poll().await {
                Ok(event) => Ok(v5_event(event)),
                Err(e) => Err(v5_failure(e)),
            },
        }
    }

    /// Accepts incoming packets up to `bytes` from the next connection on (MQTT 3.1.1: the
    /// only way past a message larger than our limit, which the broker sends again and again).
    pub(super) fn accept_packets_up_to(&mut self, bytes: usize) {
        if let EventLoop::V4(events) = self {
            let outgoing = events.mqtt_options.max_packet_size();
            events.mqtt_options.set_max_packet_size(bytes, outgoing);
        }
    }
}

fn v4_event(event: rumqttc::Event) -> Event {
    use rumqttc::{Event as E, Outgoing as O, Packet as P};
    match event {
        E::Incoming(P::ConnAck(ack)) => Event::ConnAck { session_present: ack.session_present },
        E::Incoming(P::SubAck(ack)) => Event::SubAck(
            ack.return_codes
                .iter()
                .map(|c| match c {
                    rumqttc::SubscribeReasonCode::Success(q) => Ok(*q as u8),
                    rumqttc::SubscribeReasonCode::Failure => Err(Refusal { code: 0x80, name: "failure" }),
                })
                .collect(),
        ),
        E::Incoming(P::Publish(p)) => {
            let packet = (p.qos as u8 > 0).then_some((p.pkid, p.qos as u8));
            Event::Publish { topic: p.topic, payload: p.payload, packet }
        }
        E::Outgoing(O::PubAck(_) | O::PubRec(_)) => Event::AckWritten,
        E::Outgoing(O::Disconnect) => Event::DisconnectWritten,
        _ => Event::Other,
    }
}

fn v5_event(event: rumqttc::v5::Event) -> Event {
    use rumqttc::Outgoing as O;
    use rumqttc::v5::Event as E;
    use rumqttc::v5::mqttbytes::v5::Packet as P;
    match event {
        E::Incoming(P::ConnAck(ack)) => Event::ConnAck { session_present: ack.session_present },
        E::Incoming(P::SubAck(ack)) => Event::SubAck(ack.return_codes.iter().map(v5_code).collect()),
        E::Incoming(P::Publish(p)) => {
            let packet = (p.qos as u8 > 0).then_some((p.pkid, p.qos as u8));
            match String::from_utf8(p.topic.to_vec()) {
                Ok(topic) => Event::Publish { topic, payload: p.payload, packet },
                Err(_) => Event::BadTopic { packet },
            }
        }
        E::Outgoing(O::PubAck(_) | O::PubRec(_)) => Event::AckWritten,
        E::Outgoing(O::Disconnect) => Event::DisconnectWritten,
        _ => Event::Other,
    }
}

fn v4_failure(e: rumqttc::ConnectionError, limit: usize) -> Failure {
    use rumqttc::{ConnectionError as C, StateError as S, mqttbytes::Error as M};
    match e {
        C::MqttState(S::Deserialization(M::PayloadSizeLimitExceeded(size))) => Failure::Oversized { size, limit },
        e => Failure::Other(e.to_string()),
    }
}

fn v5_failure(e: rumqttc::v5::ConnectionError) -> Failure {
    use rumqttc::v5::mqttbytes::v5::DisconnectReasonCode;
    use rumqttc::v5::{ConnectionError as C, StateError as S};
    match e {
        C::MqttState(S::ServerDisconnect { reason_code: DisconnectReasonCode::SessionTakenOver, .. }) => {
            Failure::TakenOver
        }
        e => Failure::Other(e.to_string()),
    }
}

fn v5_code(code: &V5Code) -> Result<u8, Refusal> {
    let (code, name) = match code {
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
    Err(Refusal { code, name })
}
