//! What a source remembers of its broker session across restarts (a small file in
//! state_dir), so that a broker answering "no session" can be told apart from a first start.

use crate::model::now_ms;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The record of the last connection with a persistent session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Record {
    broker: String,
    client_id: String,
    connected_ms: u64,
}

/// One source's session memory: `state_dir/sessions/<source>.json`.
pub struct SessionMemory {
    path: Option<PathBuf>,
    broker: String,
    client_id: String,
    /// When this process last held the session.
    held_ms: Option<u64>,
}

/// What a CONNACK means for messages published while edge was away.
#[derive(Debug, PartialEq)]
pub(super) enum SessionNews {
    /// Clean start was asked for: nothing was kept, as configured.
    Clean,
    /// The first persistent session with this broker and client id.
    New,
    /// The broker kept the session and delivers what it queued meanwhile.
    Resumed,
    /// We had a session, the broker no longer has it: what it received meanwhile is gone.
    Lost { last_connected_ms: u64 },
}

impl SessionMemory {
    pub fn new(path: Option<PathBuf>, broker: &str, client_id: &str) -> Self {
        SessionMemory { path, broker: broker.into(), client_id: client_id.into(), held_ms: None }
    }

    /// Reads what a CONNACK says, and remembers this connection.
    pub(super) async fn connected(&mut self, clean_start: bool, session_present: bool) -> SessionNews {
        if clean_start {
            return SessionNews::Clean;
        }
        let before = match self.held_ms {
            Some(ms) => Some(ms),
            None => self.load().await,
        };
        let now = now_ms();
        self.held_ms = Some(now);
        self.save(now).await;
        match (session_present, before) {
            (true, _) => SessionNews::Resumed,
            (false, Some(last_connected_ms)) => SessionNews::Lost { last_connected_ms },
            (false, None) => SessionNews::New,
        }
    }

    async fn load(&self) -> Option<u64> {
        let text = tokio::fs::read(self.path.as_ref()?).await.ok()?;
        let record: Record = serde_json::from_slice(&text).ok()?;
        (record.broker == self.broker && record.client_id == self.client_id).then_some(record.connected_ms)
    }

    async fn save(&self, connected_ms: u64) {
        let Some(path) = &self.path else { return };
        let record = Record { broker: self.broker.clone(), client_id: self.client_id.clone(), connected_ms };
        let write = async {
            if let Some(dir) = path.parent() {
                tokio::fs::create_dir_all(dir).await?;
            }
            let tmp = path.with_extension("tmp");
            tokio::fs::write(&tmp, serde_json::to_vec(&record).expect("records serialize")).await?;
            tokio::fs::rename(&tmp, path).await
        };
        if let Err(e) = write.await {
            tracing::debug!(path = %path.display(), "cannot remember the MQTT session: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn first_start_resume_and_loss_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let path = Some(dir.path().join("sessions/s.json"));
        let mut memory = SessionMemory::new(path.clone(), "b:1883", "edge-s");
        assert_eq!(memory.connected(false, false).await, SessionNews::New);
        assert_eq!(memory.connected(false, true).await, SessionNews::Resumed);
        // A restart: a new process reads the record.
        let mut restarted = SessionMemory::new(path.clone(), "b:1883", "edge-s");
        assert!(matches!(restarted.connected(false, false).await, SessionNews::Lost { .. }));
        // Another broker or client id is a first start again.
        let mut other = SessionMemory::new(path, "other:1883", "edge-s");
        assert_eq!(other.connected(false, false).await, SessionNews::New);
        assert_eq!(memory.connected(true, false).await, SessionNews::Clean);
    }
}
