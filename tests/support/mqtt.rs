//! A test publisher (rumqttc, MQTT 3.1.1) that counts the broker's PUBACKs, so a test knows
//! every message it sent reached the broker.

use rumqttc::{Client, Event, MqttOptions, Outgoing, Packet, QoS};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub struct Publisher {
    client: Client,
    acked: Arc<AtomicUsize>,
    sent: usize,
}

impl Publisher {
    pub fn connect(port: u16, client_id: &str) -> Self {
        Self::connect_with(port, client_id, true)
    }

    /// `clean_session: false` keeps the session across a broker restart, and rumqttc resends
    /// what the broker had not acknowledged.
    pub fn connect_with(port: u16, client_id: &str, clean_session: bool) -> Self {
        let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(4 << 20, 4 << 20)
            .set_clean_session(clean_session);
        let (client, mut connection) = Client::new(options, 1000);
        let acked = Arc::new(AtomicUsize::new(0));
        let counter = acked.clone();
        std::thread::spawn(move || {
            for event in connection.iter() {
                match event {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                    _ => {}
                }
            }
        });
        Publisher { client, acked, sent: 0 }
    }

    /// Publishes at QoS 1.
    pub fn publish(&mut self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client.publish(topic, QoS::AtLeastOnce, false, payload.into()).unwrap();
        self.sent += 1;
    }

    pub fn sent(&self) -> usize {
        self.sent
    }

    /// Waits until the broker acknowledged everything published.
    pub fn flush(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.acked.load(Ordering::SeqCst) < self.sent {
            assert!(
                Instant::now() < deadline,
                "broker acked {} of {} publishes",
                self.acked.load(Ordering::SeqCst),
                self.sent
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let _ = self.client.disconnect();
    }
}
