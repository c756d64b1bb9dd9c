//! The spool's memory of what each device has queued: every device's newest rows, so that a
//! device worker's next batch and its deletes cost no SQLite statement while traffic is live,
//! and the rows given to the spool but not yet written (a group written with one fsync).
//! SQLite stays the truth: where memory may lack rows (after a restart, past the per-device
//! bound, or after another process changed the file) the rest is read from it.

use super::store::{BatchRequest, Refused, Row};
use std::collections::{HashMap, HashSet, VecDeque};

/// Rows kept in memory for all devices together (about 112 bytes each: 3.5 MB), shared out
/// evenly: 50 devices may each queue 655 in memory, 1,000 devices 32 (but no fewer than
/// [`TAIL_ROWS`]). Beyond its share a device's oldest rows are in SQLite only and its backlog
/// is read from there a batch at a time. Live traffic queues one or two per device.
pub(super) const TAIL_BUDGET: usize = 32_768;
/// Rows a device keeps in memory, at the least (a full batch fits).
pub(super) const TAIL_ROWS: usize = 32;
/// ...and at the most.
pub(super) const TAIL_ROWS_MAX: usize = 1024;

/// Every device's tail, the rows not yet written, and the deletes owed to SQLite.
pub(super) struct Tails {
    devices: HashMap<String, Tail>,
    /// Rows delivered (forgotten here) and not yet deleted from SQLite: deleted with the next
    /// write (within a second: the plant writes what is owed).
    delivered: Vec<i64>,
    /// Rows given to the spool (already in their device's tail) and not yet written.
    unwritten: Unwritten,
    /// The ids of `unwritten.rows` not delivered yet: what the next write must make durable. A
    /// row delivered before it was written leaves this set and stays in `unwritten.rows` until
    /// the next write drops it; no delete is owed for it.
    unwritten_ids: HashSet<i64>,
    /// Unwritten rows delivered since the plant last looked: their messages need no write.
    settled: Vec<i64>,
    /// The id the next row gets. The spool hands out ids itself, so that a row can be posted
    /// before it is written; nothing else allocates them (dead letters keep their row's id).
    next_id: i64,
}

/// Rows waiting for the next write.
#[derive(Default)]
pub(super) struct Unwritten {
    pub rows: Vec<(String, Row)>,
    /// Refused before posting: straight to the dead letters, with their ids.
    pub refused: Vec<(i64, Refused)>,
}

/// One device's newest queued rows, in the order they came (ids increase); a batch goes in time
/// order, as SQLite serves it.
struct Tail {
    rows: VecDeque<Row>,
    /// `Some(id)`: rows with a smaller id may be queued in SQLite and not here (`i64::MAX`:
    /// memory knows nothing yet). `None`: every queued row of the device is here.
    below: Option<i64>,
}

impl Default for Tail {
    fn default() -> Self {
        Tail { rows: VecDeque::new(), below: Some(i64::MAX) }
    }
}

/// Which rows a batch takes, by the rule of [`super::Spool::next_batch`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Pick {
    Newest,
    Oldest,
    Nothing,
}

/// The newest position goes alone when it is newer than anything posted and either a backlog
/// waits (more than a batch) or history is held back; otherwise the oldest, if history may go.
pub(super) fn pick(pending: u64, newest_ts: Option<u64>, want: &BatchRequest) -> Pick {
    let newer = newest_ts.is_some_and(|ts| want.posted_up_to.is_none_or(|t| ts > t));
    if newer && (pending > want.max as u64 || !want.history) {
        Pick::Newest
    } else if want.history && pending > 0 {
        Pick::Oldest
    } else {
        Pick::Nothing
    }
}

impl Tails {
    /// Ids continue after `last`, the highest the file has used.
    pub fn new(last: i64) -> Self {
        Tails {
            devices: HashMap::new(),
            delivered: Vec::new(),
            unwritten: Unwritten::default(),
            unwritten_ids: HashSet::new(),
            settled: Vec::new(),
            next_id: last + 1,
        }
    }

    /// A position given to the spool: in its device's tail at once (a worker may post it before
    /// it is written), and in line for the next write. Returns its id.
    pub fn stage(&mut self, device: &str, location: crate::model::TwinzoLocation) -> i64 {
        let id = self.allocate();
        let row = Row { id, location };
        self.push(device, row.clone());
        self.unwritten.rows.push((device.to_string(), row));
        self.unwritten_ids.insert(id);
        id
    }

    /// A position refused before posting, in line for the dead letters.
    pub fn stage_refused(&mut self, refused: Refused) {
        let id = self.allocate();
        self.unwritten.refused.push((id, refused));
    }

    fn allocate(&mut self) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    pub fn unwritten_count(&self) -> usize {
        self.unwritten_ids.len() + self.unwritten.refused.len()
    }

    /// What the next write takes: the unwritten rows not delivered yet, and the deletes owed
    /// for rows that were written (a row delivered before it was written is never written).
    pub fn take_for_write(&mut self) -> (Unwritten, Vec<i64>) {
        let mut unwritten = std::mem::take(&mut self.unwritten);
        let owed = std::mem::take(&mut self.unwritten_ids);
        unwritten.rows.retain(|(_, row)| owed.contains(&row.id));
        (unwritten, std::mem::take(&mut self.delivered))
    }

    /// A write that failed: its rows and deletes wait for the next. Every row it took was owed
    /// a write; one delivered meanwhile owes a delete as well, as a written row would.
    pub fn restore_write(&mut self, mut unwritten: Unwritten, deletes: Vec<i64>) {
        self.unwritten_ids.extend(unwritten.rows.iter().map(|(_, r)| r.id));
        unwritten.rows.append(&mut self.unwritten.rows);
        unwritten.refused.append(&mut self.unwritten.refused);
        self.unwritten = unwritten;
        self.delivered.extend(deletes);
    }

    /// Rows just committed to SQLite (ids increase with every append).
    fn push(&mut self, device: &str, row: Row) {
        if !self.devices.contains_key(device) {
            self.devices.insert(device.to_string(), Tail::default());
        }
        let cap = (TAIL_BUDGET / self.devices.len()).clamp(TAIL_ROWS, TAIL_ROWS_MAX);
        let tail = self.devices.get_mut(device).expect("just made");
        if tail.rows.is_empty() && tail.below == Some(i64::MAX) {
            // What SQLite may hold of this device is older than this row.
            tail.below = Some(row.id);
        }
        tail.rows.push_back(row);
        if tail.rows.len() > cap {
            tail.rows.pop_front();
            tail.below = tail.rows.front().map(|r| r.id);
        }
    }

    /// The batch, when memory holds every queued row of the device: `(pending, rows)`.
    pub fn batch(&self, device: &str, want: &BatchRequest) -> Option<(u64, Vec<Row>)> {
        let tail = self.devices.get(device).filter(|t| t.below.is_none())?;
        Some((tail.rows.len() as u64, tail.take(tail.rows.len() as u64, want)))
    }

    /// `Some(id)` when rows below `id` must be read from SQLite; `None` when memory has them all.
    pub fn bound(&self, device: &str) -> Option<i64> {
        match self.devices.get(device) {
            Some(tail) => tail.below,
            None => Some(i64::MAX),
        }
    }

    /// SQLite holds nothing of the device that memory lacks.
    pub fn close_gap(&mut self, device: &str) {
        self.devices.entry(device.to_string()).or_default().below = None;
    }

    /// How many rows memory holds for the device, and its newest (by timestamp).
    pub fn held(&self, device: &str) -> (u64, Option<&Row>) {
        match self.devices.get(device) {
            Some(tail) => (tail.rows.len() as u64, tail.newest()),
            None => (0, None),
        }
    }

    /// From memory, by the same rule as a full batch: `pending` counts the rows SQLite holds too.
    pub fn take(&self, device: &str, pending: u64, want: &BatchRequest) -> Vec<Row> {
        self.devices.get(device).map(|t| t.take(pending, want)).unwrap_or_default()
    }

    /// Delivered rows: forgotten now; deleted from SQLite with the next write, or, not written
    /// yet, never written.
    pub fn forget(&mut self, device: &str, ids: &[i64]) {
        self.discard(device, ids);
        for &id in ids {
            if self.unwritten_ids.remove(&id) {
                self.settled.push(id);
            } else {
                self.delivered.push(id);
            }
        }
    }

    /// Unwritten rows delivered since the last call.
    pub fn take_settled(&mut self) -> Vec<i64> {
        std::mem::take(&mut self.settled)
    }

    /// Rows gone from SQLite already (dead-lettered, dropped by the size or age policy).
    pub fn discard(&mut self, device: &str, ids: &[i64]) {
        if let Some(tail) = self.devices.get_mut(device) {
            let mut sorted = ids.to_vec();
            sorted.sort_unstable();
            tail.rows.retain(|r| sorted.binary_search(&r.id).is_err());
        }
    }

    /// Positions refused after they were given: those not written yet go straight to the dead
    /// letters with the next write. Returns the ids that are written (SQLite must move them).
    pub fn dead_letter(&mut self, device: &str, ids: &[i64], reason: &'static str, detail: &str) -> Vec<i64> {
        self.discard(device, ids);
        let mut written = Vec::new();
        for id in ids {
            match self.unwritten.rows.iter().position(|(_, r)| r.id == *id) {
                Some(at) => {
                    let (device, row) = self.unwritten.rows.remove(at);
                    self.unwritten_ids.remove(&row.id);
                    let refused = Refused { device, location: row.location, reason, detail: detail.to_string() };
                    self.unwritten.refused.push((row.id, refused));
                }
                None => written.push(*id),
            }
        }
        written
    }

    /// Memory no longer trusted for this device (SQLite changed under it): read SQLite again.
    pub fn invalidate(&mut self, device: &str) {
        self.devices.insert(device.to_string(), Tail::default());
    }

    /// Memory no longer trusted for any device; the deletes owed stay owed.
    pub fn invalidate_all(&mut self) {
        self.devices.clear();
    }

    /// Devices whose every queued row is in memory, with how many.
    pub fn exact_counts(&self) -> impl Iterator<Item = (&str, u64)> {
        self.devices.iter().filter(|(_, t)| t.below.is_none()).map(|(d, t)| (d.as_str(), t.rows.len() as u64))
    }

    /// Deletes owed for rows that are written (those of unwritten rows wait for their write).
    pub fn take_delivered(&mut self) -> Vec<i64> {
        let unwritten = &self.unwritten_ids;
        let (wait, now): (Vec<i64>, Vec<i64>) = self.delivered.drain(..).partition(|id| unwritten.contains(id));
        self.delivered = wait;
        now
    }

    /// Unwritten rows per device (memory holds them, SQLite does not yet).
    pub fn unwritten_per_device(&self) -> HashMap<&str, u64> {
        let mut counts = HashMap::new();
        for (device, row) in &self.unwritten.rows {
            if self.unwritten_ids.contains(&row.id) {
                *counts.entry(device.as_str()).or_default() += 1;
            }
        }
        counts
    }

    /// Deletes that could not be written go back in line.
    pub fn restore_delivered(&mut self, ids: Vec<i64>) {
        self.delivered.extend(ids);
    }

    pub fn delivered_waiting(&self) -> usize {
        self.delivered.len()
    }
}

impl Tail {
    fn newest(&self) -> Option<&Row> {
        self.rows.iter().max_by_key(|r| (r.location.timestamp, r.id))
    }

    fn take(&self, pending: u64, want: &BatchRequest) -> Vec<Row> {
        match pick(pending, self.newest().map(|r| r.location.timestamp), want) {
            Pick::Newest => self.newest().cloned().into_iter().collect(),
            Pick::Oldest => {
                let mut batch: Vec<Row> = self.rows.iter().take(want.max).cloned().collect();
                batch.sort_by_key(|r| (r.location.timestamp, r.id));
                batch
            }
            Pick::Nothing => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TwinzoLocation;

    fn row(id: i64, ts: u64) -> Row {
        Row { id, location: TwinzoLocation::test_at(ts, 0.0) }
    }

    fn want(max: usize, posted_up_to: Option<u64>) -> BatchRequest {
        BatchRequest { max, posted_up_to, history: true }
    }

    #[test]
    fn memory_answers_once_sqlite_has_nothing_it_lacks() {
        let mut tails = Tails::new(0);
        tails.push("a", row(10, 1));
        assert_eq!(tails.bound("a"), Some(10), "a first row: older ones may be in SQLite");
        assert!(tails.batch("a", &want(10, None)).is_none());
        tails.close_gap("a");
        tails.push("a", row(11, 2));
        let (pending, rows) = tails.batch("a", &want(10, Some(0))).unwrap();
        assert_eq!((pending, rows.iter().map(|r| r.id).collect::<Vec<_>>()), (2, vec![10, 11]));
        tails.forget("a", &[10, 11]);
        assert_eq!(tails.batch("a", &want(10, None)).unwrap().0, 0);
        assert_eq!(tails.take_delivered(), vec![10, 11]);
    }

    #[test]
    fn past_the_bound_the_oldest_rows_are_in_sqlite_only() {
        let mut tails = Tails::new(0);
        tails.close_gap("a");
        for id in 0..(TAIL_ROWS_MAX as i64 + 5) {
            tails.push("a", row(id, id as u64));
        }
        assert_eq!(tails.bound("a"), Some(5));
        assert_eq!(tails.held("a").0, TAIL_ROWS_MAX as u64);
        assert_eq!(tails.held("a").1.map(|r| r.id), Some(TAIL_ROWS_MAX as i64 + 4));
        // Shared out: with a thousand devices, each keeps the least.
        let mut many = Tails::new(0);
        for d in 0..1000 {
            many.close_gap(&format!("d{d}"));
        }
        for id in 0..100 {
            many.push("d0", row(id, id as u64));
        }
        assert_eq!(many.held("d0").0, TAIL_ROWS as u64);
    }

    #[test]
    fn the_newest_goes_first_over_a_backlog() {
        let mut tails = Tails::new(0);
        tails.close_gap("a");
        for id in 1..=5 {
            tails.push("a", row(id, id as u64));
        }
        let ids = |rows: Vec<Row>| rows.iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(ids(tails.batch("a", &want(2, None)).unwrap().1), vec![5]);
        assert_eq!(ids(tails.batch("a", &want(2, Some(5))).unwrap().1), vec![1, 2]);
        let held = BatchRequest { max: 10, posted_up_to: Some(5), history: false };
        assert!(tails.batch("a", &held).unwrap().1.is_empty());
    }

    #[test]
    fn invalidated_memory_asks_sqlite_again() {
        let mut tails = Tails::new(0);
        tails.close_gap("a");
        tails.push("a", row(1, 1));
        tails.invalidate("a");
        assert_eq!(tails.bound("a"), Some(i64::MAX));
        assert_eq!(tails.held("a").0, 0);
    }

    #[test]
    fn a_failed_write_keeps_what_it_owed_and_nothing_delivered_unwritten() {
        let mut tails = Tails::new(0);
        let location = || TwinzoLocation::test_at(1, 0.0);
        let (first, second) = (tails.stage("a", location()), tails.stage("a", location()));
        tails.forget("a", &[first]);
        let (taken, deletes) = tails.take_for_write();
        assert_eq!(taken.rows.iter().map(|(_, r)| r.id).collect::<Vec<_>>(), vec![second]);
        assert!(deletes.is_empty(), "a row never written owes no delete");
        // While the write runs: its row is delivered, and a new one is staged and delivered.
        tails.forget("a", &[second]);
        let third = tails.stage("a", location());
        tails.forget("a", &[third]);
        tails.restore_write(taken, deletes);
        // The failed write's row is written next time and then deleted, as a written row is.
        assert_eq!(tails.unwritten_count(), 1);
        assert!(tails.take_delivered().is_empty(), "its delete waits for its write");
        let (taken, deletes) = tails.take_for_write();
        assert_eq!(taken.rows.iter().map(|(_, r)| r.id).collect::<Vec<_>>(), vec![second]);
        assert_eq!(deletes, vec![second]);
        assert_eq!(tails.take_settled(), vec![first, third]);
    }
}
