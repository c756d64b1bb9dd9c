//! What edge owes the broker for one message it took: an acknowledgement once the message is
//! safely handled ([`Ack::acknowledge`]), or nothing, so that the broker delivers it again.

use tokio::sync::mpsc;

/// The completion of one message, travelling with it through the pipeline back to the
/// source that received it. Dropping it without [`acknowledge`](Self::acknowledge) releases
/// the message: it is not acknowledged, and a persistent session gets it again. Either way the
/// source learns that the message left the pipeline, which is how it bounds the messages in flight.
pub struct Ack {
    done: Option<mpsc::UnboundedSender<Done>>,
    packet: Option<PacketRef>,
}

/// The broker's handle on a QoS 1/2 message, and the connection it came on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct PacketRef {
    pub pkid: u16,
    pub qos: u8,
    pub connection: u64,
}

/// One message left the pipeline.
#[derive(Debug)]
pub(super) struct Done {
    pub packet: Option<PacketRef>,
    pub acknowledge: bool,
}

impl Ack {
    pub(super) fn new(done: mpsc::UnboundedSender<Done>, packet: Option<PacketRef>) -> Self {
        Ack { done: Some(done), packet }
    }

    /// An ack that owes nothing to anyone (messages that did not come from a broker).
    pub fn none() -> Self {
        Ack { done: None, packet: None }
    }

    /// The message is handled (in the spool, or dropped on purpose): the broker may forget it.
    pub fn acknowledge(mut self) {
        self.finish(true);
    }

    fn finish(&mut self, acknowledge: bool) {
        if let Some(done) = self.done.take() {
            // The source is gone: its connection is closed and the broker keeps the message.
            let _ = done.send(Done { packet: self.packet, acknowledge });
        }
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        self.finish(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledged_once_and_dropped_means_released() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let packet = PacketRef { pkid: 7, qos: 1, connection: 1 };
        Ack::new(tx.clone(), Some(packet)).acknowledge();
        drop(Ack::new(tx, Some(packet)));
        let first = rx.try_recv().unwrap();
        assert!(first.acknowledge && first.packet == Some(packet));
        assert!(!rx.try_recv().unwrap().acknowledge);
        assert!(rx.try_recv().is_err(), "one completion per message");
    }
}
