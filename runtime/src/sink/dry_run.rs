//! The dry-run sink: shows what would be posted to Twinzo, one line per device every five
//! seconds, so a newcomer sees positions flowing without credentials or network.

use super::device::PostResult;
use crate::model::TwinzoLocation;
use std::time::{Duration, Instant};

const LINE_EVERY: Duration = Duration::from_secs(5);

pub struct DryRun {
    plant: String,
    robot: String,
    login: String,
    since_line: (usize, usize),
    last_line: Option<Instant>,
}

impl DryRun {
    pub fn new(plant: &str, robot: &str, login: &str) -> Self {
        DryRun { plant: plant.into(), robot: robot.into(), login: login.into(), since_line: (0, 0), last_line: None }
    }

    pub fn post(&mut self, batch: &[TwinzoLocation]) -> PostResult {
        self.since_line.0 += 1;
        self.since_line.1 += batch.len();
        if self.last_line.is_none_or(|t| t.elapsed() >= LINE_EVERY) {
            let last = serde_json::to_string(batch.last().expect("batches are never empty")).unwrap_or_default();
            let (batches, positions) = std::mem::take(&mut self.since_line);
            tracing::info!(plant = %self.plant, robot = %self.robot, login = %self.login, batches, positions, "dry run: would POST /v3/localization, last {last}");
            self.last_line = Some(Instant::now());
        }
        PostResult::Accepted
    }
}
