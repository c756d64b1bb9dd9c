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
    /// The topic filters subscribed in that session.
    #[serde(default)]
    topics: Vec<String>,
}

/// One source's session memory: `state_dir/sessions/<source>.json`.
pub struct SessionMemory {
    path: Option<PathBuf>,
    broker: String,
    client_id: String,
    /// When this process last held the session.
    held_ms: Option<u64>,
    /// Topic filters of the previous session that the current configuration dropped.
    stale_topics: Vec<String>,
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
        SessionMemory {
            path,
            broker: broker.into(),
            client_id: client_id.into(),
            held_ms: None,
            stale_topics: Vec::new(),
        }
    }

    /// Reads what a CONNACK says, and remembers this connection and its `topics`.
    pub(super) async fn connected(
        &mut self,
        clean_start: bool,
        session_present: bool,
        topics: &[String],
    ) -> SessionNews {
        if clean_start {
            return SessionNews::Clean;
        }
        let before = match self.held_ms {
            Some(ms) => Some(ms),
            None => self.load().await.map(|record| {
                self.stale_topics = record.topics.into_iter().filter(|t| !topics.contains(t)).collect();
                record.connected_ms
            }),
        };
        let now = now_ms();
        self.held_ms = Some(now);
        self.save(now, topics).await;
        match (session_present, before) {
            (true, _) => SessionNews::Resumed,
            (false, Some(last_connected_ms)) => SessionNews::Lost { last_connected_ms },
            (false, None) => SessionNews::New,
        }
    }

    /// Filters the previous session subscribed that are no longer configured (once).
    pub(super) fn take_stale_topics(&mut self) -> Vec<String> {
        std::mem::take(&mut self.stale_topics)
    }

    async fn load(&self) -> Option<Record> {
        let text = tokio::fs::read(self.path.as_ref()?).await.ok()?;
        let record: Record = serde_json::from_slice(&text).ok()?;
        (record.broker == self.broker && record.client_id == self.client_id).then_some(record)
    }

    async fn save(&self, connected_ms: u64, topics: &[String]) {
        let Some(path) = &self.path else { return };
        let record = Record {
            broker: self.broker.clone(),
            client_id: self.client_id.clone(),
            connected_ms,
            topics: topics.to_vec(),
        };
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
        let topics = ["a/#".to_string(), "b/#".to_string()];
        let mut memory = SessionMemory::new(path.clone(), "b:1883", "edge-s");
        assert_eq!(memory.connected(false, false, &topics).await, SessionNews::New);
        assert_eq!(memory.connected(false, true, &topics).await, SessionNews::Resumed);
        // A restart: a new process reads the record; a topic dropped from the config is stale.
        let mut restarted = SessionMemory::new(path.clone(), "b:1883", "edge-s");
        assert!(matches!(restarted.connected(false, false, &topics[..1]).await, SessionNews::Lost { .. }));
        assert_eq!(restarted.take_stale_topics(), vec!["b/#".to_string()]);
        // Another broker or client id is a first start again.
        let mut other = SessionMemory::new(path, "other:1883", "edge-s");
        assert_eq!(other.connected(false, false, &topics).await, SessionNews::New);
        assert_eq!(memory.connected(true, false, &topics).await, SessionNews::Clean);
    }
}
