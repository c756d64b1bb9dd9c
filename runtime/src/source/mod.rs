//! MQTT sources: one task per broker connection (rumqttc, MQTT 5 or 3.1.1, TLS), reconnecting
//! with backoff, resubscribing, and handing each message on with an ack to send when it is safe.

mod mqtt;
mod tls;

pub use mqtt::{Ack, Inbound, SourceStatus, run_source};
pub use tls::{install_crypto_provider, tls_client_config};
