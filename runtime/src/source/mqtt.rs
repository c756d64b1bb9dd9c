//! One broker connection at run time: reconnects with backoff and jitter, resubscribes after a
//! lost session, reports SUBACK refusals and takeovers, and keeps the flow honest: at most
//! `receive_maximum` messages taken and not yet handled, every acknowledgement delivered, and
//! on stop the messages in flight finished and acknowledged before it disconnects.

use super::ack::{Ack, Done, PacketRef};
use super::client::{AckRefused, Client, Event, EventLoop, Failure, Refusal, connect};
use super::session::{SessionMemory, SessionNews};
use crate::backoff::Backoff;
use crate::config::MqttConfig;
use crate::fleet::SourceWatch;
use crate::model::now_ms;
use bytes::Bytes;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// One message from a broker, with the acknowledgement to send once it is safe.
pub struct Inbound {
    pub topic: String,
    pub payload: Bytes,
    pub received_at_ms: u64,
    pub ack: Ack,
    /// Taken from a backlog: the pipeline, not the broker, sets the pace (a broker delivering
    /// what it queued while edge was away, or intake held up downstream).
    pub backlog: bool,
}

/// How a source is told to stop: `None` while it runs; `Some(deadline)` to finish the messages
/// in flight, acknowledge them and disconnect, by the deadline at the latest.
pub type StopSignal = watch::Receiver<Option<Instant>>;

/// A connection that lasted this long was a real session, not a flap.
const STABLE: Duration = Duration::from_secs(10);
/// Messages held back (taken from the broker, not yet handed on) this much of the time means
/// the source is taking a backlog.
const BACKLOG_DUTY: f64 = 0.8;
/// Over windows this long.
const DUTY_WINDOW: Duration = Duration::from_millis(500);
/// Messages held back when a broker sends more than the receive maximum it agreed to;
/// beyond this the source stops reading (TCP pushes back).
const PARK_MAX: usize = 256;
/// MQTT 3.1.1 cannot tell the broker our packet limit: a larger message is taken once, to be
/// dropped and acknowledged, up to this size. Beyond it the connection stays stuck.
const OVERSIZE_CEILING: usize = 64 << 20;
/// After the deadline, the DISCONNECT gets this long to go out.
const DISCONNECT_GRACE: Duration = Duration::from_millis(500);

/// Connects, subscribes and forwards messages until told to stop.
pub async fn run_source(
    name: Arc<str>,
    config: MqttConfig,
    topics: Vec<String>,
    tx: mpsc::Sender<Inbound>,
    status: Arc<SourceWatch>,
    session: SessionMemory,
    mut stop: StopSignal,
) {
    let client_id = config.client_id_for(&name);
    let endpoint = format!("{}:{} as {client_id}", config.host, config.port());
    let (client, events) = match connect(&config, &client_id) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::error!(source = %name, %endpoint, "cannot set up the MQTT connection: {e:#}");
            status.cannot_connect(format!("{e:#}"));
            return;
        }
    };
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let mut connection = Connection {
        window: usize::from(config.receive_maximum.max(1)),
        received: metrics::counter!("edge_messages_received_total", "source" => name.to_string()),
        name,
        endpoint,
        client_id,
        config,
        topics,
        client,
        events: Some(events),
        polling: None,
        tx,
        status,
        session,
        done_tx,
        done_rx,
        in_pipeline: 0,
        duty: Duty::default(),
        parked: VecDeque::new(),
        owed: VecDeque::new(),
        handed: 0,
        connection: 0,
        connected: false,
        draining: None,
        backoff: Backoff::new(Duration::from_millis(250), Duration::from_secs(30)),
        delay: Duration::ZERO,
        failures: 0,
        connected_at: None,
        short_sessions: 0,
    };
    connection.run(&mut stop).await;
}

type PollFuture = Pin<Box<dyn Future<Output = (EventLoop, Result<Event, Failure>)> + Send>>;

/// A message taken from the broker, not yet handed to the pipeline.
struct Parked {
    topic: String,
    payload: Bytes,
    received_at_ms: u64,
    packet: Option<PacketRef>,
}

struct Connection {
    name: Arc<str>,
    /// `edge_messages_received_total` of this source, looked up once.
    received: metrics::Counter,
    endpoint: String,
    client_id: String,
    config: MqttConfig,
    topics: Vec<String>,
    client: Client,
    /// The event loop while no poll is running; the running poll owns it, so that a poll is
    /// never cancelled half-way (rumqttc may have taken a request it has not written yet).
    events: Option<EventLoop>,
    polling: Option<PollFuture>,
    tx: mpsc::Sender<Inbound>,
    status: Arc<SourceWatch>,
    session: SessionMemory,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
    /// Most messages in the pipeline at once: the receive maximum.
    window: usize,
    in_pipeline: usize,
    duty: Duty,
    parked: VecDeque<Parked>,
    /// Acknowledgements owed on this connection, not yet handed to the event loop.
    owed: VecDeque<PacketRef>,
    /// Acknowledgements handed to the event loop and not yet written.
    handed: usize,
    /// Counts connections: an ack goes out only on the connection its message came on.
    connection: u64,
    connected: bool,
    draining: Option<Instant>,
    backoff: Backoff,
    /// Wait before the next poll (reconnect backoff).
    delay: Duration,
    failures: u32,
    connected_at: Option<Instant>,
    short_sessions: u32,
}

impl Connection {
    async fn run(&mut self, stop: &mut StopSignal) {
        loop {
            self.start_poll();
            let can_forward = !self.parked.is_empty() && self.in_pipeline < self.window && self.draining.is_none();
            let deadline = self.draining.unwrap_or_else(far_future);
            tokio::select! {
                biased;
                changed = stop.changed(), if self.draining.is_none() => {
                    // A dropped sender means stop now.
                    let at = if changed.is_ok() { *stop.borrow() } else { Some(Instant::now()) };
                    self.draining = at;
                }
                Some(done) = self.done_rx.recv() => self.completed(done),
                permit = self.tx.clone().reserve_owned(), if can_forward => match permit {
                    Ok(permit) => self.forward(permit),
                    Err(_) => break,
                },
                (events, result) = running(&mut self.polling), if self.polling.is_some() => {
                    self.polling = None;
                    self.events = Some(events);
                    match result {
                        Ok(event) => self.on_event(event).await,
                        Err(failure) => self.on_failure(failure),
                    }
                }
                () = tokio::time::sleep_until(deadline), if self.draining.is_some() => break,
            }
            self.hand_over_acks();
            self.duty.held(!self.parked.is_empty());
            if self.draining.is_some() && self.settled() {
                break;
            }
        }
        self.disconnect().await;
    }

    /// Starts the next poll of the event loop unless one runs or the source must not read.
    fn start_poll(&mut self) {
        if self.polling.is_some() || self.parked.len() >= PARK_MAX {
            return;
        }
        let Some(mut events) = self.events.take() else { return };
        let delay = std::mem::take(&mut self.delay);
        self.polling = Some(Box::pin(async move {
            // Not even a zero sleep otherwise: the timer wheel would make it a millisecond.
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let result = events.poll().await;
            (events, result)
        }));
    }

    /// Stopping: everything taken is handled and its acknowledgement written (or the
    /// connection is gone, and the broker delivers the rest again).
    fn settled(&self) -> bool {
        self.in_pipeline == 0 && (!self.connected || (self.owed.is_empty() && self.handed == 0))
    }

    fn forward(&mut self, permit: mpsc::OwnedPermit<Inbound>) {
        let parked = self.parked.pop_front().expect("forwarding needs a parked message");
        permit.send(Inbound {
            topic: parked.topic,
            payload: parked.payload,
            received_at_ms: parked.received_at_ms,
            ack: Ack::new(self.done_tx.clone(), parked.packet),
            backlog: self.duty.backlogged(),
        });
        self.in_pipeline += 1;
    }

    fn completed(&mut self, done: Done) {
        self.in_pipeline = self.in_pipeline.saturating_sub(1);
        match done.packet {
            Some(packet) if done.acknowledge && packet.connection == self.connection => self.owed.push_back(packet),
            Some(_) if done.acknowledge => {
                // Its connection is gone: the broker delivers the message again (a duplicate).
                metrics::counter!("edge_acks_skipped_total", "source" => self.name.to_string()).increment(1);
            }
            _ => {}
        }
    }

    /// Moves owed acknowledgements into the event loop's request channel while it has room;
    /// the rest wait for the next turn. None is ever dropped while its connection lives.
    fn hand_over_acks(&mut self) {
        while let Some(packet) = self.owed.front() {
            if !self.connected {
                break;
            }
            match self.client.ack(packet.pkid, packet.qos) {
                Ok(()) => {
                    self.owed.pop_front();
                    self.handed += 1;
                }
                Err(AckRefused::Full) => break,
                Err(AckRefused::Closed) => {
                    self.owed.clear();
                    break;
                }
            }
        }
    }

    async fn on_event(&mut self, event: Event) {
        match event {
            Event::ConnAck { session_present } => self.on_connack(session_present).await,
            Event::SubAck(codes) => report_suback(&self.name, &self.topics, self.config.qos, &codes, &self.status),
            Event::Publish { topic, payload, packet } => self.on_publish(topic, payload, packet),
            Event::BadTopic { packet } => {
                self.drop_on_purpose(packet, "bad-topic", "a message whose topic is not UTF-8")
            }
            Event::AckWritten => self.handed = self.handed.saturating_sub(1),
            Event::DisconnectWritten | Event::Other => {}
        }
    }

    async fn on_connack(&mut self, session_present: bool) {
        if self.config.tls.as_ref().is_some_and(|t| t.insecure) {
            tracing::warn!(source = %self.name, endpoint = %self.endpoint, "connected WITHOUT verifying the broker's certificate (tls.insecure)");
        }
        self.status.connection_up();
        tracing::info!(source = %self.name, endpoint = %self.endpoint, session_present, "connected to MQTT broker");
        self.connection += 1;
        self.connected = true;
        self.owed.clear();
        self.handed = 0;
        (self.failures, self.connected_at) = (0, Some(Instant::now()));
        let news = self.session.connected(self.config.clean_start, session_present, &self.topics).await;
        self.report_session(news);
        // Every time, also with a session: the configured topics may have changed since, or a
        // subscription may have been refused. Subscribing again does not interrupt the flow.
        if let Err(e) = self.client.subscribe(&self.topics, self.config.qos) {
            tracing::error!(source = %self.name, "cannot subscribe: {e}");
        }
        let stale = self.session.take_stale_topics();
        if !stale.is_empty() {
            tracing::info!(source = %self.name, topics = ?stale, "unsubscribing from topics no longer configured");
            if let Err(e) = self.client.unsubscribe(&stale) {
                tracing::warn!(source = %self.name, "cannot unsubscribe: {e}");
            }
        }
    }

    fn report_session(&self, news: SessionNews) {
        let (source, client_id) = (&*self.name, &self.client_id);
        match news {
            SessionNews::Clean => {
                tracing::info!(
                    source,
                    "clean start: the broker keeps nothing for edge while it is away (mqtt.clean_start)"
                )
            }
            SessionNews::New => tracing::info!(
                source,
                client_id,
                "new persistent session: from now on the broker keeps QoS 1 messages for edge while it is away"
            ),
            SessionNews::Resumed => {
                tracing::info!(source, client_id, "the broker kept edge's session: it delivers what arrived meanwhile")
            }
            SessionNews::Lost { last_connected_ms } => {
                let away_s = now_ms().saturating_sub(last_connected_ms) / 1000;
                metrics::counter!("edge_sessions_lost_total", "source" => source.to_string()).increment(1);
                tracing::error!(
                    source,
                    client_id,
                    away_s,
                    session_expiry_s = self.config.session_expiry_s,
                    "the broker has no session for edge although it had one: messages published while edge was away are lost. \
                     Likely: the session expired, the broker restarted without persistence, or another client used this \
                     client id with a clean start (see docs/operations.md, broker requirements)"
                );
            }
        }
    }

    fn on_publish(&mut self, topic: String, payload: Bytes, packet: Option<(u16, u8)>) {
        self.received.increment(1);
        crate::stats::STATS.messages_in.fetch_add(1, Ordering::Relaxed);
        self.status.messages.fetch_add(1, Ordering::Relaxed);
        if topic.len() + payload.len() > self.config.max_packet_bytes {
            // Only over MQTT 3.1.1, which cannot tell the broker our limit (see on_failure).
            self.events.as_mut().expect("idle after a poll").accept_packets_up_to(self.config.max_packet_bytes);
            return self.drop_on_purpose(packet, "oversized", "a message over mqtt.max_packet_bytes");
        }
        if self.draining.is_some() {
            // Not acknowledged: the broker delivers it again after the restart.
            return;
        }
        let packet = packet.map(|(pkid, qos)| PacketRef { pkid, qos, connection: self.connection });
        self.parked.push_back(Parked { topic, payload, received_at_ms: now_ms(), packet });
    }

    /// A message edge will never handle: counted, logged, and acknowledged so that the
    /// broker does not send it again and again.
    fn drop_on_purpose(&mut self, packet: Option<(u16, u8)>, reason: &'static str, what: &str) {
        metrics::counter!("edge_messages_dropped_total", "source" => self.name.to_string(), "reason" => reason)
            .increment(1);
        tracing::warn!(source = %self.name, reason, "dropped {what}");
        if let Some((pkid, qos)) = packet {
            self.owed.push_back(PacketRef { pkid, qos, connection: self.connection });
        }
    }

    fn on_failure(&mut self, failure: Failure) {
        let (name, endpoint, client_id) = (&*self.name, &self.endpoint, &self.client_id);
        self.status.connection_down();
        self.connected = false;
        self.failures += 1;
        // Only a connection that held for a while earns a fresh, short backoff: one that the
        // broker keeps closing must not be retried in a tight loop.
        match self.connected_at.take().map(|t| t.elapsed()) {
            Some(held) if held < STABLE => self.short_sessions += 1,
            Some(_) => {
                self.short_sessions = 0;
                self.backoff.reset();
            }
            None => {}
        }
        self.delay = self.backoff.next_delay();
        match &failure {
            Failure::TakenOver => {
                tracing::error!(source = name, %endpoint, "session takeover: another client connected with client id {client_id}")
            }
            Failure::Oversized { size, limit } if *size <= OVERSIZE_CEILING => {
                tracing::warn!(
                    source = name,
                    size,
                    limit,
                    "the broker sends a message over mqtt.max_packet_bytes again and again (MQTT 3.1.1 cannot refuse it): taking it once to drop it"
                );
                self.events.as_mut().expect("idle after a poll").accept_packets_up_to(*size);
                self.delay = Duration::ZERO;
                return;
            }
            Failure::Oversized { size, .. } => {
                tracing::error!(
                    source = name,
                    size,
                    "the broker sends a message over {OVERSIZE_CEILING} bytes again and again; edge cannot take it, and the broker keeps it in the session: remove it at the broker"
                )
            }
            Failure::Other(_) if self.short_sessions >= 3 && self.short_sessions.is_multiple_of(3) => {
                let n = self.short_sessions;
                tracing::error!(source = name, %endpoint, "the broker closed the connection right after connecting {n} times: is another client using client id {client_id}? (session takeover)");
            }
            Failure::Other(_) => {}
        }
        if self.failures == 1 {
            tracing::warn!(source = name, %endpoint, "MQTT connection lost or refused: {failure}; reconnecting with backoff");
        } else {
            tracing::debug!(source = name, %endpoint, failures = self.failures, delay = ?self.delay, "MQTT connection still failing: {failure}");
        }
    }

    /// Sends DISCONNECT (the session stays with the broker) and waits briefly for it to go out.
    async fn disconnect(&mut self) {
        let unfinished = self.in_pipeline + self.parked.len();
        self.parked.clear();
        if self.connected {
            self.client.disconnect();
            let until = Instant::now() + DISCONNECT_GRACE;
            while let Ok(Some((events, result))) =
                tokio::time::timeout_at(until, async { Some(self.next_event().await) }).await
            {
                self.events = Some(events);
                if matches!(result, Ok(Event::DisconnectWritten) | Err(_)) {
                    break;
                }
            }
        }
        self.status.connection_down();
        // Unfinished messages are not acknowledged: the broker delivers them again.
        tracing::info!(source = %self.name, endpoint = %self.endpoint, unfinished, "MQTT source stopped");
    }

    async fn next_event(&mut self) -> (EventLoop, Result<Event, Failure>) {
        self.start_poll();
        let result = running(&mut self.polling).await;
        self.polling = None;
        result
    }
}

/// How much of the recent time the source held messages back (the in-flight window full, or
/// the plugin thread behind): near all of it, edge sets the pace (the broker has more than edge
/// takes: a backlog); little, the broker does (live traffic). Messages merely waiting for
/// their group's write do not count: that wait is the same at any rate.
#[derive(Debug)]
struct Duty {
    window_start: Instant,
    busy: Duration,
    busy_since: Option<Instant>,
    /// The share of the last full window.
    last: f64,
}

impl Default for Duty {
    fn default() -> Self {
        Duty { window_start: Instant::now(), busy: Duration::ZERO, busy_since: None, last: 0.0 }
    }
}

impl Duty {
    fn held(&mut self, held: bool) {
        match (held, self.busy_since) {
            (true, None) => self.busy_since = Some(Instant::now()),
            (false, Some(since)) => {
                self.busy += since.elapsed();
                self.busy_since = None;
            }
            _ => {}
        }
    }

    fn backlogged(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now - self.window_start;
        if elapsed >= DUTY_WINDOW {
            let open = self.busy_since.map_or(Duration::ZERO, |since| now - since.max(self.window_start));
            self.last = (self.busy + open).as_secs_f64() / elapsed.as_secs_f64();
            (self.window_start, self.busy) = (now, Duration::ZERO);
            if self.busy_since.is_some() {
                self.busy_since = Some(now);
            }
        }
        self.last >= BACKLOG_DUTY
    }
}

async fn running(polling: &mut Option<PollFuture>) -> (EventLoop, Result<Event, Failure>) {
    polling.as_mut().expect("guarded by polling.is_some()").await
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86400 * 365)
}

fn report_suback(name: &str, topics: &[String], qos: u8, codes: &[Result<u8, Refusal>], status: &SourceWatch) {
    let (mut accepted, mut refused) = (Vec::new(), None);
    for (i, code) in codes.iter().enumerate() {
        let topic = topics.get(i).map(String::as_str).unwrap_or("?");
        match code {
            Ok(granted) => {
                if *granted < qos {
                    tracing::warn!(
                        source = name,
                        topic,
                        granted,
                        requested = qos,
                        "the broker granted a lower QoS than asked: messages may be lost"
                    );
                } else {
                    tracing::info!(source = name, topic, "subscribed");
                }
                accepted.push(topic.to_string());
            }
            Err(reason) => {
                let hint = if qos == 0 && reason.code == 135 {
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
    status.subscribed(accepted, refused);
}
