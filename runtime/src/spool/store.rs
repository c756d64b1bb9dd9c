//! The SQLite tables and every statement on them, with the memory of each device's queue
//! beside them (`tails`). Calls that touch SQLite block: async code calls them through
//! `spawn_blocking`; [`Spool::next_batch_from_memory`] and [`Spool::remove`] never do.

use super::tails::{Pick, Tails, Unwritten, pick};
use crate::model::{TwinzoLocation, now_ms};
use rusqlite::{Connection, ErrorCode, OptionalExtension, params};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {} is full (its size cap is reached or the disk is full): {source}", path.display())]
    Full { path: PathBuf, source: rusqlite::Error },
    #[error(
        "spool {}: its filesystem has {:.1} MB free, less than spool.min_free_mb ({} MB); taking no more positions until there is room",
        path.display(), *free as f64 / 1048576.0, min >> 20
    )]
    LowDisk { path: PathBuf, free: u64, min: u64 },
    #[error("spool {} cannot be opened: {source}", path.display())]
    Open { path: PathBuf, source: Box<dyn std::error::Error + Send + Sync> },
    #[error("spool {}: {source}", path.display())]
    Sqlite { path: PathBuf, source: rusqlite::Error },
}

/// The size and age policy of one spool.
#[derive(Debug, Clone, PartialEq)]
pub struct SpoolLimits {
    /// Above this many bytes of queued positions, the oldest history goes (each device's
    /// latest position stays).
    pub max_bytes: u64,
    /// Queued positions older than this go (each device's latest position stays).
    pub max_age_ms: u64,
}

/// How far the spool file may grow: a cap of its own, and room to leave on its filesystem.
/// Below `min_free_bytes` the spool takes no new positions but still delivers and deletes
/// (SQLite needs free space even to delete), so it can always drain.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DiskLimits {
    pub hard_cap_bytes: Option<u64>,
    pub min_free_bytes: u64,
}

/// One queued position.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub id: i64,
    pub location: TwinzoLocation,
}

/// A position refused before it could be posted (Twinzo could not take it), with why.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    pub device: String,
    pub location: TwinzoLocation,
    pub reason: &'static str,
    pub detail: String,
}

/// What a device worker asks the spool for (see [`Spool::next_batch`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchRequest {
    pub max: usize,
    /// The newest timestamp this device has posted, if any.
    pub posted_up_to: Option<u64>,
    /// Whether history may go now (not while the plant takes a backlog).
    pub history: bool,
}

/// The spool's answer to a [`BatchRequest`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NextBatch {
    /// Positions waiting for the device, this batch included.
    pub pending: u64,
    pub rows: Vec<Row>,
    /// Unreadable rows just moved to the dead letters.
    pub quarantined: u64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DeadRow {
    pub id: i64,
    pub device: String,
    pub timestamp: u64,
    pub reason: String,
    pub detail: String,
    pub failed_ms: u64,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct DeviceCounts {
    pub queued: u64,
    pub queued_bytes: u64,
    pub oldest_ms: Option<u64>,
    pub dead: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Purge {
    Queue,
    Dead,
}

pub struct Spool {
    path: PathBuf,
    min_free_bytes: u64,
    /// Lock order: `conn`, then `tails`. A write commits and updates the tails while it holds
    /// `conn`, so whoever holds `conn` sees SQLite and memory agree.
    conn: Mutex<Connection>,
    tails: Mutex<Tails>,
}

/// Write-ahead log pages between checkpoints: SQLite's default of 1000 (4 MB), fewer when
/// `min_free_bytes` is small, so that the log never takes more than a quarter of the space
/// kept free.
fn wal_pages(min_free_bytes: u64) -> u64 {
    (min_free_bytes / 4 / 4096).clamp(32, 1000)
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT NOT NULL,
    ts INTEGER NOT NULL,
    body TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    enqueued_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS queue_by_device ON queue(device, ts, id);
CREATE TABLE IF NOT EXISTS dead_letter (
    id INTEGER PRIMARY KEY,
    device TEXT NOT NULL,
    ts INTEGER NOT NULL,
    body TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    failed_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_by_device ON dead_letter(device, id);
";

impl Spool {
    /// Opens (creating) the spool at `path`. A hard cap makes SQLite refuse to grow the file
    /// beyond it, as a full disk would.
    pub fn open(path: &Path, disk: DiskLimits) -> Result<Self, SpoolError> {
        let open_err =
            |source: Box<dyn std::error::Error + Send + Sync>| SpoolError::Open { path: path.into(), source };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| open_err(e.into()))?;
        }
        let conn = Connection::open(path).map_err(|e| open_err(e.into()))?;
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(|e| open_err(e.into()))?;
        // Only takes effect on a new file: lets `reclaim` give deleted pages back to the disk.
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL").map_err(|e| open_err(e.into()))?;
        // WAL with synchronous=FULL: a committed transaction survives power loss, and readers
        // (`edge spool`) never block the writer.
        conn.pragma_update(None, "journal_mode", "WAL").map_err(|e| open_err(e.into()))?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(|e| open_err(e.into()))?;
        // A log rewound after each checkpoint and small next to `spool.min_free_mb`, so a
        // nearly full disk never locks up the spool (a checkpoint needs room to grow the file,
        // a delete needs room in the log).
        let wal = wal_pages(disk.min_free_bytes);
        conn.pragma_update(None, "wal_autocheckpoint", wal).map_err(|e| open_err(e.into()))?;
        conn.pragma_update(None, "journal_size_limit", wal * 4096).map_err(|e| open_err(e.into()))?;
        conn.execute_batch(SCHEMA).map_err(|e| open_err(e.into()))?;
        if let Some(cap) = disk.hard_cap_bytes {
            let page: u64 = conn.pragma_query_value(None, "page_size", |r| r.get(0)).map_err(|e| open_err(e.into()))?;
            conn.pragma_update(None, "max_page_count", (cap / page).max(16)).map_err(|e| open_err(e.into()))?;
        }
        let last_id: i64 = conn
            .query_row(
                "SELECT MAX(COALESCE((SELECT MAX(id) FROM queue), 0), COALESCE((SELECT MAX(id) FROM dead_letter), 0), \
                 COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'queue'), 0))",
                [],
                |r| r.get(0),
            )
            .map_err(|e| open_err(e.into()))?;
        Ok(Spool {
            path: path.into(),
            min_free_bytes: disk.min_free_bytes,
            conn: Mutex::new(conn),
            tails: Mutex::new(Tails::new(last_id)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, source: rusqlite::Error) -> SpoolError {
        let full = matches!(&source, rusqlite::Error::SqliteFailure(e, _) if e.code == ErrorCode::DiskFull);
        if full {
            SpoolError::Full { path: self.path.clone(), source }
        } else {
            SpoolError::Sqlite { path: self.path.clone(), source }
        }
    }

    fn tails(&self) -> std::sync::MutexGuard<'_, Tails> {
        self.tails.lock().expect("spool tails lock")
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> Result<T, SpoolError> {
        let mut conn = self.conn.lock().expect("spool lock");
        f(&mut conn).map_err(|e| {
            let e = self.err(e);
            if matches!(e, SpoolError::Full { .. }) {
                // The write-ahead log may hold the last free space: fold it into the file and
                // truncate it, so that the next delete can go through. Fails as well when the
                // file itself has to grow; then only freeing disk space helps.
                let _ = checkpoint(&conn);
            }
            e
        })
    }

    /// Free bytes on the spool's filesystem (None when the system cannot tell).
    fn free_bytes(&self) -> Option<u64> {
        use std::os::unix::ffi::OsStrExt;
        let dir = self.path.parent()?;
        let dir = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a valid C string and a statvfs the call fills in.
        let rc = unsafe { libc::statvfs(dir.as_ptr(), &mut stat) };
        (rc == 0).then(|| stat.f_bavail as u64 * stat.f_frsize as u64)
    }

    /// Stores positions in one durable transaction, unless the disk is nearly full.
    pub fn append(&self, items: &[(String, TwinzoLocation)]) -> Result<(), SpoolError> {
        self.stage(items, Vec::new());
        self.commit()
    }

    /// Gives positions to the spool: at once in memory, where their device workers may post
    /// them, and durable with the next [`commit`](Self::commit). Positions refused before posting
    /// go to the dead letters with it. Never blocks on the disk.
    /// Returns the positions' ids.
    pub fn stage(&self, items: &[(String, TwinzoLocation)], refused: Vec<Refused>) -> Vec<i64> {
        let mut tails = self.tails();
        let ids = items.iter().map(|(device, location)| tails.stage(device, location.clone())).collect();
        for r in refused {
            tails.stage_refused(r);
        }
        ids
    }

    /// Positions given and not yet written that were delivered since the last call: their
    /// messages need no write any more.
    pub fn take_settled(&self) -> Vec<i64> {
        self.tails().take_settled()
    }

    /// Positions given but not yet written.
    pub fn unwritten(&self) -> usize {
        self.tails().unwritten_count()
    }

    /// Writes everything given since the last commit in one durable transaction (one fsync),
    /// with the deletes owed for delivered positions, unless the disk is nearly full. What a
    /// failed commit did not write waits for the next.
    pub fn commit(&self) -> Result<(), SpoolError> {
        if let Some(free) = self.free_bytes().filter(|free| *free < self.min_free_bytes) {
            return Err(SpoolError::LowDisk { path: self.path.clone(), free, min: self.min_free_bytes });
        }
        let now = now_ms() as i64;
        self.with(|conn| {
            let (unwritten, deletes) = self.tails().take_for_write();
            if unwritten.rows.is_empty() && unwritten.refused.is_empty() && deletes.is_empty() {
                return Ok(());
            }
            write(conn, &unwritten, &deletes, now).inspect_err(|_| self.tails().restore_write(unwritten, deletes))
        })
    }

    /// Whether a [`commit`](Self::commit) has anything to do: positions not written, dead
    /// letters not written, deletes owed.
    pub fn owes_a_write(&self) -> bool {
        let tails = self.tails();
        tails.unwritten_count() > 0 || tails.delivered_waiting() > 0
    }

    fn flush_delivered(&self, conn: &mut Connection) -> rusqlite::Result<()> {
        let delivered = self.tails().take_delivered();
        if delivered.is_empty() {
            return Ok(());
        }
        delete_ids(conn, &delivered).inspect_err(|_| self.tails().restore_delivered(delivered.clone()))
    }

    /// What a device worker posts next, in one call: how many positions wait (beyond a batch,
    /// at least that many more), and the batch.
    ///
    /// When the device's newest position is newer than anything posted (`posted_up_to`) and
    /// either a backlog waits (more than `max`) or `history` is held back, the batch is that
    /// newest position alone: the twin is current at once, and stays live during a replay.
    /// Otherwise, with `history`, the oldest `max` in time order; without, nothing.
    ///
    /// Served from memory when it holds every queued row of the device, else from SQLite.
    /// A stored row that cannot be read is moved to the dead letters (reason `undecodable`),
    /// so that one bad row never blocks its device; [`NextBatch::quarantined`] counts them.
    pub fn next_batch(&self, device: &str, want: BatchRequest) -> Result<NextBatch, SpoolError> {
        if let Some(batch) = self.next_batch_from_memory(device, want) {
            return Ok(batch);
        }
        let read = self.with(|conn| self.read_below(conn, device, &want))?;
        let Some(read) = read else {
            return Ok(self.next_batch_from_memory(device, want).unwrap_or_default());
        };
        let Some(raw) = read.rows else {
            // The newest is in memory.
            let rows = self.tails().take(device, read.pending, &want);
            return Ok(NextBatch { pending: read.pending, rows, quarantined: 0 });
        };
        let mut rows = Vec::with_capacity(raw.len());
        let mut bad = Vec::new();
        for r in raw {
            match serde_json::from_str(&r.body) {
                Ok(location) => rows.push(Row { id: r.id, location }),
                Err(e) => bad.push((r.id, e.to_string())),
            }
        }
        for (id, why) in &bad {
            self.dead_letter(device, &[*id], "undecodable", &format!("a stored position could not be read: {why}"))?;
        }
        Ok(NextBatch { pending: read.pending - bad.len() as u64, rows, quarantined: bad.len() as u64 })
    }

    /// The part of a batch that SQLite must answer: rows of `device` that memory may lack.
    /// `None` when it lacks none (any more).
    fn read_below(&self, conn: &mut Connection, device: &str, want: &BatchRequest) -> rusqlite::Result<Option<Below>> {
        self.flush_delivered(conn)?;
        let Some(bound) = self.tails().bound(device) else { return Ok(None) };
        // Counting a long backlog would cost more than reading a batch of it: more than a batch
        // is all that matters here.
        let in_sqlite = count_below(conn, device, bound, want.max as u64 + 1)?;
        let (held, newest_held) = {
            let mut tails = self.tails();
            if in_sqlite == 0 {
                tails.close_gap(device);
                return Ok(None);
            }
            let (held, newest) = tails.held(device);
            (held, newest.map(|r| r.location.timestamp))
        };
        let pending = in_sqlite + held;
        // Memory holds the newest rows, when it holds any.
        let newest = match newest_held {
            Some(_) => None,
            None => select_rows(conn, LATEST_BELOW, device, bound, 1)?.pop(),
        };
        let rows = match pick(pending, newest_held.or(newest.as_ref().map(|r| r.ts)), want) {
            Pick::Newest if newest_held.is_some() => None,
            Pick::Newest => Some(newest.into_iter().collect()),
            Pick::Oldest => Some(select_rows(conn, OLDEST_BELOW, device, bound, want.max)?),
            Pick::Nothing => Some(Vec::new()),
        };
        Ok(Some(Below { pending, rows }))
    }

    /// [`next_batch`](Self::next_batch) when memory can answer it alone (no SQLite, never
    /// blocks for long); `None` when SQLite must be read.
    pub fn next_batch_from_memory(&self, device: &str, want: BatchRequest) -> Option<NextBatch> {
        let (pending, rows) = self.tails().batch(device, &want)?;
        Some(NextBatch { pending, rows, quarantined: 0 })
    }

    /// Forgets delivered positions of `device`: at once here, in SQLite with the next write
    /// (or the plant's write of what is owed, within a second).
    ///
    /// Without an fsync of its own: a crash can at worst undo the delete, and the position
    /// is posted once more (at least once).
    pub fn remove(&self, device: &str, ids: &[i64]) {
        self.tails().forget(device, ids);
    }

    /// Moves positions of `device` that Twinzo refused to the dead letters, with the reason
    /// (those not written yet, with the next write).
    pub fn dead_letter(&self, device: &str, ids: &[i64], reason: &'static str, detail: &str) -> Result<(), SpoolError> {
        let now = now_ms() as i64;
        self.with(|conn| {
            let ids = self.tails().dead_letter(device, ids, reason, detail);
            let tx = conn.transaction()?;
            {
                let mut copy = tx.prepare_cached(
                    "INSERT OR REPLACE INTO dead_letter (id, device, ts, body, reason, detail, failed_ms) SELECT id, device, ts, body, ?2, ?3, ?4 FROM queue WHERE id = ?1",
                )?;
                let mut delete = tx.prepare_cached("DELETE FROM queue WHERE id = ?1")?;
                for id in ids {
                    copy.execute(params![id, reason, detail, now])?;
                    delete.execute([id])?;
                }
            }
            tx.commit()
        })
    }

    /// Applies the size and age policy; returns the positions dropped per (device, reason).
    pub fn enforce(&self, limits: &SpoolLimits) -> Result<BTreeMap<(String, &'static str), u64>, SpoolError> {
        let cutoff = now_ms().saturating_sub(limits.max_age_ms) as i64;
        self.with(|conn| {
            // Delivered positions are not the policy's to drop.
            self.flush_delivered(conn)?;
            let tx = conn.transaction()?;
            let mut gone: Vec<(i64, String, &'static str)> = Vec::new();
            // Each device's newest row is never dropped: the twin must stay current.
            let keep = "id NOT IN (SELECT MAX(id) FROM queue GROUP BY device)";
            let expired = tx
                .prepare(&format!("DELETE FROM queue WHERE enqueued_ms < ?1 AND {keep} RETURNING id, device"))?
                .query_map([cutoff], |r| Ok((r.get(0)?, r.get(1)?, "expired")))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            gone.extend(expired);
            let total: i64 = tx.query_row("SELECT COALESCE(SUM(bytes), 0) FROM queue", [], |r| r.get(0))?;
            let mut excess = total - limits.max_bytes as i64;
            while excess > 0 {
                let victims: Vec<(i64, String, i64)> = tx
                    .prepare_cached(&format!(
                        "SELECT id, device, bytes FROM queue WHERE {keep} ORDER BY ts, id LIMIT 1000"
                    ))?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<rusqlite::Result<_>>()?;
                if victims.is_empty() {
                    break;
                }
                let mut delete = tx.prepare_cached("DELETE FROM queue WHERE id = ?1")?;
                for (id, device, bytes) in victims {
                    if excess <= 0 {
                        break;
                    }
                    delete.execute([id])?;
                    excess -= bytes;
                    gone.push((id, device, "full"));
                }
            }
            tx.commit()?;
            let mut dropped = BTreeMap::new();
            let mut tails = self.tails();
            for (id, device, reason) in gone {
                tails.discard(&device, &[id]);
                *dropped.entry((device, reason)).or_default() += 1;
            }
            Ok(dropped)
        })
    }

    /// Gives the space of delivered positions back to the filesystem (pages SQLite would
    /// otherwise keep for itself) and empties the write-ahead log into the file.
    pub fn reclaim(&self) -> Result<(), SpoolError> {
        self.with(|conn| {
            // One page per result row: step through them all.
            let mut vacuum = conn.prepare("PRAGMA incremental_vacuum")?;
            let mut pages = vacuum.query([])?;
            while pages.next()?.is_some() {}
            drop(pages);
            checkpoint(conn)
        })
    }

    /// Queue and dead-letter counts per device. Where memory disagrees with them (another
    /// process retried or purged positions), memory is dropped and SQLite read again.
    pub fn counts(&self) -> Result<BTreeMap<String, DeviceCounts>, SpoolError> {
        self.with(|conn| {
            self.flush_delivered(conn)?;
            let mut out: BTreeMap<String, DeviceCounts> = BTreeMap::new();
            let mut queued =
                conn.prepare("SELECT device, COUNT(*), SUM(bytes), MIN(enqueued_ms) FROM queue GROUP BY device")?;
            for row in queued.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?, r.get::<_, Option<i64>>(3)?))
            })? {
                let (device, n, bytes, oldest) = row?;
                let c = out.entry(device).or_default();
                (c.queued, c.queued_bytes, c.oldest_ms) = (n as u64, bytes as u64, oldest.map(|o| o as u64));
            }
            let mut dead = conn.prepare("SELECT device, COUNT(*) FROM dead_letter GROUP BY device")?;
            for row in dead.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
                let (device, n) = row?;
                out.entry(device).or_default().dead = n as u64;
            }
            let mut tails = self.tails();
            let unwritten = tails.unwritten_per_device();
            let stale: Vec<String> = tails
                .exact_counts()
                .filter(|(device, n)| {
                    let written = out.get(*device).map_or(0, |c| c.queued);
                    written + unwritten.get(device).copied().unwrap_or(0) != *n
                })
                .map(|(device, _)| device.to_string())
                .collect();
            for device in stale {
                tails.invalidate(&device);
            }
            Ok(out)
        })
    }

    /// Dead letters, newest first.
    pub fn dead(&self, device: Option<&str>, limit: usize) -> Result<Vec<DeadRow>, SpoolError> {
        self.with(|conn| {
            let mut stmt = conn.prepare(
                "SELECT id, device, ts, reason, detail, failed_ms FROM dead_letter WHERE ?1 IS NULL OR device = ?1 ORDER BY id DESC LIMIT ?2",
            )?;
            stmt.query_map(params![device, limit as i64], |r| {
                Ok(DeadRow { id: r.get(0)?, device: r.get(1)?, timestamp: r.get::<_, i64>(2)? as u64, reason: r.get(3)?, detail: r.get(4)?, failed_ms: r.get::<_, i64>(5)? as u64 })
            })?
            .collect()
        })
    }

    /// Puts dead letters back in the queue; returns how many.
    pub fn retry_dead(&self, device: Option<&str>) -> Result<u64, SpoolError> {
        let now = now_ms() as i64;
        self.with(|conn| {
            let tx = conn.transaction()?;
            let n = tx.execute(
                "INSERT INTO queue (id, device, ts, body, bytes, enqueued_ms) SELECT id, device, ts, body, length(body), ?2 FROM dead_letter WHERE ?1 IS NULL OR device = ?1 ORDER BY id",
                params![device, now],
            )?;
            tx.execute("DELETE FROM dead_letter WHERE ?1 IS NULL OR device = ?1", params![device])?;
            tx.commit()?;
            self.forget_memory(device);
            Ok(n as u64)
        })
    }

    /// Deletes queued positions or dead letters; returns how many.
    pub fn purge(&self, what: Purge, device: Option<&str>) -> Result<u64, SpoolError> {
        let table = match what {
            Purge::Queue => "queue",
            Purge::Dead => "dead_letter",
        };
        self.with(|conn| {
            self.flush_delivered(conn)?;
            let n = conn.execute(&format!("DELETE FROM {table} WHERE ?1 IS NULL OR device = ?1"), params![device])?;
            self.forget_memory(device);
            Ok(n as u64)
        })
    }

    /// Memory of one device's queue (or every device's) no longer holds: read SQLite again.
    fn forget_memory(&self, device: Option<&str>) {
        let mut tails = self.tails();
        match device {
            Some(device) => tails.invalidate(device),
            None => tails.invalidate_all(),
        }
    }

    /// Whether any position of `device` is queued (for restart: who has work).
    pub fn devices_with_work(&self) -> Result<Vec<String>, SpoolError> {
        self.with(|conn| conn.prepare("SELECT DISTINCT device FROM queue")?.query_map([], |r| r.get(0))?.collect())
    }

    /// The newest dead letter's id, to tell "new dead letters since" apart.
    pub fn last_dead_id(&self) -> Result<Option<i64>, SpoolError> {
        self.with(|conn| {
            conn.query_row("SELECT MAX(id) FROM dead_letter", [], |r| r.get(0)).optional().map(Option::flatten)
        })
    }
}

// Rows of a device below an id (`i64::MAX`: all of them): those memory may lack.
const OLDEST_BELOW: &str = "SELECT id, ts, body FROM queue WHERE device = ?1 AND id < ?2 ORDER BY ts, id LIMIT ?3";
const LATEST_BELOW: &str =
    "SELECT id, ts, body FROM queue WHERE device = ?1 AND id < ?2 ORDER BY ts DESC, id DESC LIMIT ?3";

/// A queued row as stored.
struct RawRow {
    id: i64,
    ts: u64,
    body: String,
}

/// What SQLite answered for a device memory does not hold entirely: how many wait in all, and
/// the batch (`None`: the batch is the newest row, which memory holds).
struct Below {
    pending: u64,
    rows: Option<Vec<RawRow>>,
}

/// One transaction: the new positions (with the ids the spool gave them), the refused ones
/// straight to the dead letters, then the owed deletes.
fn write(conn: &mut Connection, unwritten: &Unwritten, deletes: &[i64], now: i64) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO queue (id, device, ts, body, bytes, enqueued_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for (device, row) in &unwritten.rows {
            let body = serde_json::to_string(&row.location).expect("locations serialize");
            insert.execute(params![row.id, device, row.location.timestamp as i64, body, body.len() as i64, now])?;
        }
        let mut dead = tx.prepare_cached(
            "INSERT INTO dead_letter (id, device, ts, body, reason, detail, failed_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for (id, r) in &unwritten.refused {
            let body = serde_json::to_string(&r.location).expect("locations serialize");
            let ts = i64::try_from(r.location.timestamp).unwrap_or(i64::MAX);
            dead.execute(params![id, r.device, ts, body, r.reason, r.detail, now])?;
        }
        let mut delete = tx.prepare_cached("DELETE FROM queue WHERE id = ?1")?;
        for id in deletes {
            delete.execute([id])?;
        }
    }
    tx.commit()
}

fn delete_ids(conn: &mut Connection, ids: &[i64]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut delete = tx.prepare_cached("DELETE FROM queue WHERE id = ?1")?;
        for id in ids {
            delete.execute([id])?;
        }
    }
    tx.commit()
}

/// Rows of `device` below id `below`, counted up to `at_most`.
fn count_below(conn: &Connection, device: &str, below: i64, at_most: u64) -> rusqlite::Result<u64> {
    conn.prepare_cached("SELECT COUNT(*) FROM (SELECT 1 FROM queue WHERE device = ?1 AND id < ?2 LIMIT ?3)")?
        .query_row(params![device, below, at_most as i64], |r| r.get::<_, i64>(0))
        .map(|n| n as u64)
}

fn select_rows(conn: &Connection, sql: &str, device: &str, below: i64, max: usize) -> rusqlite::Result<Vec<RawRow>> {
    conn.prepare_cached(sql)?
        .query_map(params![device, below, max as i64], |r| {
            Ok(RawRow { id: r.get(0)?, ts: r.get::<_, i64>(1)? as u64, body: r.get(2)? })
        })?
        .collect()
}

/// Copies the write-ahead log into the database file and truncates the log.
fn checkpoint(conn: &Connection) -> rusqlite::Result<()> {
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Views the tests look through.
    impl Spool {
        /// Positions waiting for `device`.
        fn pending(&self, device: &str) -> Result<u64, SpoolError> {
            self.with(|conn| {
                self.flush_delivered(conn)?;
                count_below(conn, device, i64::MAX, u64::MAX >> 1)
            })
        }

        /// Up to `max` of `device`'s oldest positions, in time order.
        fn oldest(&self, device: &str, max: usize) -> Result<Vec<Row>, SpoolError> {
            Ok(self.next_batch(device, BatchRequest { max, posted_up_to: Some(u64::MAX), history: true })?.rows)
        }

        /// `device`'s most recent position.
        fn latest(&self, device: &str) -> Result<Option<Row>, SpoolError> {
            Ok(self.next_batch(device, BatchRequest { max: 1, posted_up_to: None, history: false })?.rows.pop())
        }
    }

    fn location(ts: u64) -> TwinzoLocation {
        TwinzoLocation::test_at(ts, 1.0)
    }

    fn spool() -> (tempfile::TempDir, Spool) {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("s.sqlite"), DiskLimits::default()).unwrap();
        (dir, spool)
    }

    #[test]
    fn queue_in_time_order_latest_and_removal() {
        let (_dir, s) = spool();
        s.append(&[("a".into(), location(3)), ("a".into(), location(1)), ("b".into(), location(2))]).unwrap();
        let oldest = s.oldest("a", 10).unwrap();
        assert_eq!(oldest.iter().map(|r| r.location.timestamp).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(s.latest("a").unwrap().unwrap().location.timestamp, 3);
        s.remove("a", &[oldest[0].id]);
        assert_eq!(s.pending("a").unwrap(), 1);
        assert_eq!(s.pending("b").unwrap(), 1);
    }

    fn stamps(batch: &NextBatch) -> Vec<u64> {
        batch.rows.iter().map(|r| r.location.timestamp).collect()
    }

    #[test]
    fn next_batch_puts_the_newest_ahead_of_a_backlog_only() {
        let (_dir, s) = spool();
        s.append(&(1..=5).map(|t| ("a".to_string(), location(t))).collect::<Vec<_>>()).unwrap();
        let want = |posted_up_to, max| BatchRequest { max, posted_up_to, history: true };
        let batch = s.next_batch("a", want(None, 2)).unwrap();
        assert_eq!((batch.pending, stamps(&batch)), (5, vec![5]));
        // Once the newest went out, the backlog in time order.
        assert_eq!(stamps(&s.next_batch("a", want(Some(5), 2)).unwrap()), vec![1, 2]);
        // A newer position arriving during the replay jumps the queue again.
        assert_eq!(stamps(&s.next_batch("a", want(Some(4), 2)).unwrap()), vec![5]);
        // No backlog: time order, newest included.
        assert_eq!(stamps(&s.next_batch("a", want(None, 10)).unwrap()), vec![1, 2, 3, 4, 5]);
        assert_eq!(s.next_batch("b", want(None, 2)).unwrap(), NextBatch::default());
    }

    #[test]
    fn while_history_is_held_only_newer_positions_go() {
        let (_dir, s) = spool();
        s.append(&(1..=3).map(|t| ("a".to_string(), location(t))).collect::<Vec<_>>()).unwrap();
        let held = |posted_up_to| BatchRequest { max: 10, posted_up_to, history: false };
        assert_eq!(stamps(&s.next_batch("a", held(None)).unwrap()), vec![3]);
        let nothing_newer = s.next_batch("a", held(Some(3))).unwrap();
        assert_eq!((nothing_newer.pending, stamps(&nothing_newer)), (3, vec![]));
    }

    #[test]
    fn an_unreadable_row_is_quarantined_not_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        let s = Spool::open(&path, DiskLimits::default()).unwrap();
        s.append(&[("a".into(), location(1)), ("a".into(), location(2))]).unwrap();
        s.with(|c| c.execute("UPDATE queue SET body = '{not json' WHERE ts = 1", [])).unwrap();
        // Memory never holds a bad row: a damaged file is read after a restart.
        let s = Spool::open(&path, DiskLimits::default()).unwrap();
        let batch = s.next_batch("a", BatchRequest { max: 10, posted_up_to: Some(9), history: true }).unwrap();
        assert_eq!((batch.quarantined, batch.pending, stamps(&batch)), (1, 1, vec![2]));
        let dead = s.dead(Some("a"), 10).unwrap();
        assert_eq!((dead.len(), dead[0].reason.as_str()), (1, "undecodable"));
    }

    #[test]
    fn refused_positions_go_straight_to_the_dead_letters() {
        let (_dir, s) = spool();
        let refused = Refused {
            device: "a".into(),
            location: location(u64::MAX),
            reason: "out-of-range",
            detail: "Timestamp".into(),
        };
        s.stage(&[("a".into(), location(1))], vec![refused]);
        s.commit().unwrap();
        assert_eq!(s.pending("a").unwrap(), 1);
        let dead = s.dead(Some("a"), 10).unwrap();
        assert_eq!((dead.len(), dead[0].reason.as_str()), (1, "out-of-range"));
    }

    #[test]
    fn dead_letters_keep_their_reason_and_can_be_retried() {
        let (_dir, s) = spool();
        s.append(&[("a".into(), location(1)), ("a".into(), location(2))]).unwrap();
        let ids: Vec<i64> = s.oldest("a", 10).unwrap().iter().map(|r| r.id).collect();
        s.dead_letter("a", &ids, "success-false", "Device tugger-01 does not exist.").unwrap();
        assert_eq!(s.pending("a").unwrap(), 0);
        let dead = s.dead(Some("a"), 10).unwrap();
        assert_eq!(dead.len(), 2);
        assert_eq!(dead[0].reason, "success-false");
        assert_eq!(s.counts().unwrap()["a"].dead, 2);
        assert_eq!(s.retry_dead(None).unwrap(), 2);
        assert_eq!(s.pending("a").unwrap(), 2);
        assert!(s.dead(None, 10).unwrap().is_empty());
    }

    #[test]
    fn size_policy_drops_oldest_history_but_keeps_each_latest() {
        let (_dir, s) = spool();
        let items: Vec<(String, TwinzoLocation)> =
            (0..100).flat_map(|t| [("a".to_string(), location(t)), ("b".to_string(), location(t))]).collect();
        s.append(&items).unwrap();
        let dropped = s.enforce(&SpoolLimits { max_bytes: 0, max_age_ms: u64::MAX }).unwrap();
        assert_eq!(dropped[&("a".to_string(), "full")] + dropped[&("b".to_string(), "full")], 198);
        assert_eq!(s.latest("a").unwrap().unwrap().location.timestamp, 99);
        assert_eq!(s.pending("a").unwrap() + s.pending("b").unwrap(), 2);
    }

    #[test]
    fn age_policy_drops_expired_history() {
        let (_dir, s) = spool();
        s.append(&[("a".into(), location(1)), ("a".into(), location(2))]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let dropped = s.enforce(&SpoolLimits { max_bytes: u64::MAX, max_age_ms: 10 }).unwrap();
        assert_eq!(dropped[&("a".to_string(), "expired")], 1);
        assert_eq!(s.pending("a").unwrap(), 1);
    }

    #[test]
    fn a_hard_cap_is_a_full_error_not_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(
            &dir.path().join("s.sqlite"),
            DiskLimits { hard_cap_bytes: Some(64 << 10), ..DiskLimits::default() },
        )
        .unwrap();
        let batch: Vec<(String, TwinzoLocation)> = (0..200).map(|t| ("a".to_string(), location(t))).collect();
        let mut outcome = Ok(());
        for _ in 0..100 {
            outcome = s.append(&batch);
            if outcome.is_err() {
                break;
            }
        }
        assert!(matches!(outcome, Err(SpoolError::Full { .. })), "{outcome:?}");
        // What was committed before is intact.
        assert!(s.pending("a").unwrap() >= 200);
    }

    #[test]
    fn below_min_free_nothing_is_taken_but_delivery_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        Spool::open(&path, DiskLimits::default()).unwrap().append(&[("a".into(), location(1))]).unwrap();
        let s = Spool::open(&path, DiskLimits { min_free_bytes: u64::MAX, ..DiskLimits::default() }).unwrap();
        let refused = s.append(&[("a".into(), location(2))]);
        assert!(matches!(refused, Err(SpoolError::LowDisk { .. })), "{refused:?}");
        assert!(refused.unwrap_err().to_string().contains("spool.min_free_mb"));
        let queued = s.oldest("a", 10).unwrap();
        assert_eq!(queued.len(), 1);
        s.remove("a", &[queued[0].id]);
        assert_eq!(s.pending("a").unwrap(), 0);
    }

    #[test]
    fn reclaim_gives_delivered_space_back_to_the_disk() {
        let (dir, s) = spool();
        let size = || std::fs::read_dir(dir.path()).unwrap().map(|f| f.unwrap().metadata().unwrap().len()).sum::<u64>();
        let batch: Vec<(String, TwinzoLocation)> = (0..5000).map(|t| ("a".to_string(), location(t))).collect();
        s.append(&batch).unwrap();
        s.reclaim().unwrap();
        let full = size();
        assert_eq!(drain(&s, "a", 1000).len(), 5000);
        s.commit().unwrap();
        s.reclaim().unwrap();
        assert!(size() < full / 4, "{} bytes after delivering everything, {full} before", size());
    }

    /// Posts every batch the spool gives until nothing waits; the delivered timestamps in order.
    fn drain(s: &Spool, device: &str, max: usize) -> Vec<u64> {
        let mut posted = Vec::new();
        let mut up_to = None;
        loop {
            let batch = s.next_batch(device, BatchRequest { max, posted_up_to: up_to, history: true }).unwrap();
            if batch.rows.is_empty() {
                assert_eq!(batch.pending, 0);
                return posted;
            }
            let ids: Vec<i64> = batch.rows.iter().map(|r| r.id).collect();
            posted.extend(stamps(&batch));
            up_to = up_to.max(batch.rows.iter().map(|r| r.location.timestamp).max());
            s.remove(device, &ids);
        }
    }

    #[test]
    fn a_backlog_past_memory_is_read_from_sqlite_once_each() {
        let (_dir, s) = spool();
        let n = super::super::tails::TAIL_ROWS_MAX as u64 + 107;
        for t in 1..=n {
            s.append(&[("a".into(), location(t))]).unwrap();
        }
        let posted = drain(&s, "a", 10);
        // The newest first (a backlog waits), then the rest in time order, each once.
        assert_eq!(posted[0], n);
        assert_eq!(posted[1..], (1..n).collect::<Vec<_>>()[..]);
        assert_eq!(s.pending("a").unwrap(), 0);
    }

    #[test]
    fn live_positions_come_from_memory_and_deletes_wait_for_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        let s = Spool::open(&path, DiskLimits::default()).unwrap();
        s.append(&[("a".into(), location(1))]).unwrap();
        // The first look at a device asks SQLite what memory may lack; from then on, memory.
        assert_eq!(drain(&s, "a", 10), vec![1]);
        s.append(&[("a".into(), location(2))]).unwrap();
        let want = BatchRequest { max: 10, posted_up_to: Some(1), history: true };
        let batch = s.next_batch_from_memory("a", want).expect("memory holds everything");
        assert_eq!(stamps(&batch), vec![2]);
        s.remove("a", &[batch.rows[0].id]);
        assert_eq!(s.tails().delivered_waiting(), 1, "the first delete went with the second append");
        // A crash now would post the second again (at least once)...
        let reopened = Spool::open(&path, DiskLimits::default()).unwrap();
        assert_eq!(reopened.pending("a").unwrap(), 1);
        // ...the next write carries the deletes.
        s.append(&[("b".into(), location(3))]).unwrap();
        assert_eq!((s.tails().delivered_waiting(), reopened.pending("a").unwrap()), (0, 0));
    }

    #[test]
    fn a_staged_position_can_be_posted_before_it_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        let s = Spool::open(&path, DiskLimits::default()).unwrap();
        s.append(&[("a".into(), location(1))]).unwrap();
        assert_eq!(drain(&s, "a", 10), vec![1]);
        s.stage(&[("a".into(), location(2)), ("a".into(), location(3))], Vec::new());
        let want = BatchRequest { max: 10, posted_up_to: Some(1), history: true };
        let first = s.next_batch_from_memory("a", want).unwrap();
        assert_eq!(stamps(&first), vec![2, 3], "in memory before any write");
        s.remove("a", &[first.rows[0].id]);
        s.commit().unwrap();
        // Delivered before the write: never written. The other one is durable.
        let reopened = Spool::open(&path, DiskLimits::default()).unwrap();
        assert_eq!(drain(&reopened, "a", 10), vec![3]);
        // Refused before it was written: straight to the dead letters with the next write.
        reopened.stage(&[("a".into(), location(5))], Vec::new());
        let refused =
            reopened.next_batch_from_memory("a", BatchRequest { max: 10, posted_up_to: Some(3), history: true });
        let id = refused.unwrap().rows[0].id;
        reopened.dead_letter("a", &[id], "success-false", "refused").unwrap();
        reopened.commit().unwrap();
        assert_eq!((reopened.pending("a").unwrap(), reopened.dead(Some("a"), 10).unwrap().len()), (0, 1));
        // New ids continue after what the file holds.
        reopened.append(&[("a".into(), location(4))]).unwrap();
        let ids: Vec<i64> = reopened.oldest("a", 10).unwrap().iter().map(|r| r.id).collect();
        assert!(ids[0] > first.rows[0].id + 1, "{ids:?}");
    }

    #[test]
    fn a_position_delivered_before_its_write_owes_the_spool_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(&dir.path().join("s.sqlite"), DiskLimits::default()).unwrap();
        s.append(&[("a".into(), location(1))]).unwrap();
        assert_eq!(drain(&s, "a", 10), vec![1]);
        s.commit().unwrap();
        assert!(!s.owes_a_write());
        s.stage(&[("a".into(), location(2)), ("b".into(), location(3))], Vec::new());
        assert_eq!((s.unwritten(), s.owes_a_write()), (2, true));
        let want = BatchRequest { max: 10, posted_up_to: Some(1), history: true };
        let batch = s.next_batch_from_memory("a", want).unwrap();
        s.remove("a", &[batch.rows[0].id]);
        // No write for it, and no delete of a row SQLite never had.
        assert_eq!((s.unwritten(), s.tails().delivered_waiting()), (1, 0));
        assert_eq!(drain(&s, "b", 10), vec![3]);
        assert!(!s.owes_a_write(), "both delivered before any write");
        assert_eq!(s.take_settled().len(), 2);
        s.commit().unwrap();
        assert_eq!((s.pending("a").unwrap(), s.pending("b").unwrap()), (0, 0));
    }

    #[test]
    fn positions_another_process_puts_back_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        let s = Spool::open(&path, DiskLimits::default()).unwrap();
        s.append(&[("a".into(), location(1)), ("a".into(), location(2))]).unwrap();
        let ids: Vec<i64> = s.oldest("a", 10).unwrap().iter().map(|r| r.id).collect();
        s.dead_letter("a", &ids[..1], "success-false", "refused").unwrap();
        // `edge spool retry` runs as another process, with a spool of its own.
        assert_eq!(Spool::open(&path, DiskLimits::default()).unwrap().retry_dead(None).unwrap(), 1);
        s.counts().unwrap();
        assert_eq!(drain(&s, "a", 10), vec![1, 2]);
    }

    #[test]
    fn survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        Spool::open(&path, DiskLimits::default()).unwrap().append(&[("a".into(), location(7))]).unwrap();
        assert_eq!(
            Spool::open(&path, DiskLimits::default()).unwrap().latest("a").unwrap().unwrap().location.timestamp,
            7
        );
    }
}
