//! The only module that touches SQLite. One writer task owns the write connection and applies
//! what the state task hands it, one transaction per tick, from a bounded queue (overflow is
//! dropped and counted, never waited for); API reads use a read-only connection of their own, off
//! the async threads. A write error (disk full) is counted and shown in `/healthz` and `/metrics`;
//! it never stops the verdict or the live event stream.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags, params};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;

/// Ticks' worth of writes the queue holds before it drops.
const QUEUE_TICKS: usize = 256;

#[derive(Debug, thiserror::Error)]
#[error("event store {path}: {source}")]
pub struct StoreError {
    path: String,
    source: rusqlite::Error,
}

/// A finding open when the collector stopped: (cluster, code, nodes, since).
pub type OpenFinding = (String, String, Vec<String>, i64);

/// One write.
#[derive(Debug, Clone)]
pub enum Op {
    Event {
        id: i64,
        recorded_ms: i64,
        at_ms: i64,
        cluster: String,
        kind: &'static str,
        doc: String,
    },
    SaveOpen {
        cluster: String,
        code: String,
        nodes: Vec<String>,
        since_ms: i64,
    },
    RemoveOpen {
        cluster: String,
        code: String,
        nodes: Vec<String>,
    },
    /// Drop events recorded before this.
    Prune { before_ms: i64 },
}

/// How the store is doing, shared with `/healthz` and `/metrics`.
#[derive(Debug, Default)]
pub struct StoreHealth {
    pub transactions: AtomicU64,
    pub write_errors: AtomicU64,
    /// Writes dropped because the queue was full (the writer could not keep up).
    pub dropped_writes: AtomicU64,
    pub writer_stopped: AtomicBool,
    /// The last transaction failed, or writes were dropped since the last one that landed.
    pub failing: AtomicBool,
    pub last_error: Mutex<Option<String>>,
    /// Every event with an id up to this one is in the log, or never will be (its write failed;
    /// ids from a prune are gone too): what an SSE resume waits for instead of the log's
    /// largest id, which a prune can leave behind.
    pub settled_id: AtomicI64,
}

impl StoreHealth {
    /// For `/healthz`.
    pub fn report(&self) -> StoreReport {
        StoreReport {
            transactions: self.transactions.load(Ordering::Relaxed),
            write_errors: self.write_errors.load(Ordering::Relaxed),
            dropped_writes: self.dropped_writes.load(Ordering::Relaxed),
            writer_running: !self.writer_stopped.load(Ordering::Relaxed),
            failing: self.failing.load(Ordering::Relaxed),
            last_error: self
                .last_error
                .lock()
                .map(|e| e.clone())
                .unwrap_or_default(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct StoreReport {
    pub transactions: u64,
    pub write_errors: u64,
    pub dropped_writes: u64,
    pub writer_running: bool,
    /// The last transaction failed, or writes were dropped since the last one that landed.
    pub failing: bool,
    pub last_error: Option<String>,
}

impl StoreReport {
    /// Writing now (the counters keep the history).
    pub fn ok(&self) -> bool {
        self.writer_running && !self.failing
    }
}

/// The store, opened: what the collector restores at start, and the two connections.
#[derive(Debug)]
pub struct Opened {
    pub writer: Connection,
    pub reader: Reader,
    /// The id the next event gets (ids are stable across restarts).
    pub next_id: i64,
    /// Every open finding saved: (cluster, code, nodes, since).
    pub open: Vec<OpenFinding>,
}

/// Opens (or creates) the database at `path` (`:memory:` for a throw-away one).
pub fn open(path: &Path) -> Result<Opened, StoreError> {
    let err = |source| StoreError {
        path: path.display().to_string(),
        source,
    };
    let memory = path.as_os_str() == ":memory:";
    // A memory database both connections share (a plain `:memory:` is private to one).
    let uri = if memory {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        format!(
            "file:vigie-events-{}-{}?mode=memory&cache=shared",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        )
    } else {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
        path.display().to_string()
    };
    let rw = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let writer = Connection::open_with_flags(&uri, rw).map_err(err)?;
    writer
        .execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             CREATE TABLE IF NOT EXISTS events (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 recorded_ms INTEGER NOT NULL,
                 at_ms INTEGER NOT NULL,
                 cluster TEXT NOT NULL,
                 kind TEXT NOT NULL,
                 doc TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS events_cluster ON events (cluster, id);
             CREATE INDEX IF NOT EXISTS events_recorded ON events (recorded_ms);
             CREATE TABLE IF NOT EXISTS open_findings (
                 cluster TEXT NOT NULL,
                 code TEXT NOT NULL,
                 nodes TEXT NOT NULL,
                 since_ms INTEGER NOT NULL,
                 PRIMARY KEY (cluster, code, nodes));",
        )
        .map_err(err)?;
    let last = last_event_id(&writer).map_err(err)?;
    let open = load_open(&writer).map_err(err)?;
    let ro = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let reader = Connection::open_with_flags(&uri, ro).map_err(err)?;
    if memory {
        // Shared-cache tables lock by table, and SQLite does not retry SQLITE_LOCKED: the reader
        // takes no read locks, so neither side fails on the other.
        reader
            .execute_batch("PRAGMA read_uncommitted = 1")
            .map_err(err)?;
    } else {
        reader
            .busy_timeout(std::time::Duration::from_secs(2))
            .map_err(err)?;
    }
    Ok(Opened {
        writer,
        reader: Reader {
            db: Arc::new(Mutex::new(reader)),
        },
        next_id: last + 1,
        open,
    })
}

fn load_open(db: &Connection) -> rusqlite::Result<Vec<OpenFinding>> {
    let mut stmt = db.prepare("SELECT cluster, code, nodes, since_ms FROM open_findings")?;
    stmt.query_map([], |r| {
        let nodes: String = r.get(2)?;
        let nodes = if nodes.is_empty() {
            Vec::new()
        } else {
            nodes.split(',').map(str::to_string).collect()
        };
        Ok((r.get(0)?, r.get(1)?, nodes, r.get(3)?))
    })?
    .collect()
}

/// The state task's end of the write queue.
#[derive(Debug, Clone)]
pub struct WriteQueue {
    tx: mpsc::Sender<Vec<Op>>,
    health: Arc<StoreHealth>,
}

impl WriteQueue {
    /// Hands one tick's writes to the writer, never waiting: a full queue drops them, counted.
    pub fn send(&self, ops: Vec<Op>) {
        if ops.is_empty() {
            return;
        }
        let n = ops.len() as u64;
        if self.tx.try_send(ops).is_err() {
            self.health.dropped_writes.fetch_add(n, Ordering::Relaxed);
            self.health.failing.store(true, Ordering::Relaxed);
            tracing::warn!(
                dropped = n,
                "Event store writer behind or stopped: writes dropped"
            );
        }
    }

    pub fn health(&self) -> &Arc<StoreHealth> {
        &self.health
    }
}

/// Starts the writer on a blocking thread; it ends when every queue handle is dropped.
pub fn spawn_writer(db: Connection) -> (WriteQueue, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Vec<Op>>(QUEUE_TICKS);
    let health = Arc::new(StoreHealth::default());
    // Every id up to it was written before (some since pruned).
    health
        .settled_id
        .store(last_event_id(&db).unwrap_or(0), Ordering::Release);
    let h = health.clone();
    let handle = tokio::task::spawn_blocking(move || {
        let mut db = db;
        while let Some(ops) = rx.blocking_recv() {
            let newest = ops
                .iter()
                .filter_map(|op| match op {
                    Op::Event { id, .. } => Some(*id),
                    _ => None,
                })
                .max();
            let written = write(&mut db, &ops);
            // Landed or lost for good: either way no resume should wait for these ids.
            if let Some(id) = newest {
                h.settled_id.fetch_max(id, Ordering::AcqRel);
            }
            match written {
                Ok(()) => {
                    h.transactions.fetch_add(1, Ordering::Relaxed);
                    h.failing.store(false, Ordering::Relaxed);
                }
                Err(e) => {
                    h.write_errors.fetch_add(1, Ordering::Relaxed);
                    h.failing.store(true, Ordering::Relaxed);
                    tracing::error!(error = %e, writes = ops.len(), "Cannot write to the event store: it needs attention");
                    if let Ok(mut last) = h.last_error.lock() {
                        *last = Some(e.to_string());
                    }
                }
            }
        }
        h.writer_stopped.store(true, Ordering::Relaxed);
    });
    (WriteQueue { tx, health }, handle)
}

/// The id of the last event ever written: AUTOINCREMENT's counter, not max(id), since ids are
/// never reused, even after a prune.
fn last_event_id(db: &Connection) -> rusqlite::Result<i64> {
    db.query_row(
        "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0)",
        [],
        |r| r.get(0),
    )
}

fn write(db: &mut Connection, ops: &[Op]) -> rusqlite::Result<()> {
    let tx = db.transaction()?;
    for op in ops {
        match op {
            Op::Event {
                id,
                recorded_ms,
                at_ms,
                cluster,
                kind,
                doc,
            } => {
                tx.prepare_cached(
                    "INSERT INTO events (id, recorded_ms, at_ms, cluster, kind, doc) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![id, recorded_ms, at_ms, cluster, kind, doc])?;
            }
            Op::SaveOpen {
                cluster,
                code,
                nodes,
                since_ms,
            } => {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO open_findings (cluster, code, nodes, since_ms) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![cluster, code, nodes.join(","), since_ms])?;
            }
            Op::RemoveOpen {
                cluster,
                code,
                nodes,
            } => {
                tx.prepare_cached(
                    "DELETE FROM open_findings WHERE cluster = ?1 AND code = ?2 AND nodes = ?3",
                )?
                .execute(params![cluster, code, nodes.join(",")])?;
            }
            Op::Prune { before_ms } => {
                tx.prepare_cached("DELETE FROM events WHERE recorded_ms < ?1")?
                    .execute(params![before_ms])?;
            }
        }
    }
    tx.commit()
}

/// The API's read-only connection.
#[derive(Debug, Clone)]
pub struct Reader {
    db: Arc<Mutex<Connection>>,
}

impl Reader {
    /// Events with `after < id < before`, oldest first, at most `limit` (the oldest ones),
    /// optionally of one cluster — read on a blocking thread.
    pub async fn range(
        &self,
        cluster: Option<String>,
        after: i64,
        before: i64,
        limit: usize,
    ) -> Result<Vec<Value>, String> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let db = db.lock().map_err(|_| "event reader poisoned".to_string())?;
            range(&db, cluster.as_deref(), after, before, limit).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// The newest event id committed (0 when the log is empty).
    pub async fn max_id(&self) -> Result<i64, String> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let db = db.lock().map_err(|_| "event reader poisoned".to_string())?;
            db.query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// Events after id `since` (0: from the oldest kept), oldest first, at most `limit` (the
    /// newest ones), optionally of one cluster — read on a blocking thread.
    pub async fn query(
        &self,
        cluster: Option<String>,
        since: i64,
        limit: usize,
    ) -> Result<Vec<Value>, String> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let db = db.lock().map_err(|_| "event reader poisoned".to_string())?;
            query(&db, cluster.as_deref(), since, limit).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    }
}

/// Stored event documents as JSON (one that does not parse is left out).
fn parsed(docs: &[String]) -> Vec<Value> {
    docs.iter()
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect()
}

/// Events with `after < id < before`, oldest first, at most `limit`, optionally of one cluster.
fn range(
    db: &Connection,
    cluster: Option<&str>,
    after: i64,
    before: i64,
    limit: usize,
) -> rusqlite::Result<Vec<Value>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = db.prepare_cached(
        "SELECT doc FROM events WHERE id > ?1 AND id < ?2 AND (?3 IS NULL OR cluster = ?3)
         ORDER BY id ASC LIMIT ?4",
    )?;
    let docs = stmt
        .query_map(params![after, before, cluster, limit], |r| {
            r.get::<_, String>(0)
        })?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(parsed(&docs))
}

fn query(
    db: &Connection,
    cluster: Option<&str>,
    since: i64,
    limit: usize,
) -> rusqlite::Result<Vec<Value>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = db.prepare_cached(
        "SELECT doc FROM (SELECT id, doc FROM events WHERE id > ?1 AND (?2 IS NULL OR cluster = ?2)
         ORDER BY id DESC LIMIT ?3) ORDER BY id ASC",
    )?;
    let docs = stmt
        .query_map(params![since, cluster, limit], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(parsed(&docs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: i64, recorded_ms: i64, cluster: &str) -> Op {
        Op::Event {
            id,
            recorded_ms,
            at_ms: recorded_ms,
            cluster: cluster.into(),
            kind: "verdict",
            doc: serde_json::json!({"id": id, "cluster": cluster}).to_string(),
        }
    }

    async fn settle(q: &WriteQueue, transactions: u64) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while q.health.transactions.load(Ordering::Relaxed)
            + q.health.write_errors.load(Ordering::Relaxed)
            < transactions
        {
            assert!(tokio::time::Instant::now() < deadline, "writer stuck");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn ids_survive_a_reopen_and_reads_filter() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.db");
        let o = open(&path).expect("open");
        assert_eq!(o.next_id, 1);
        let (q, task) = spawn_writer(o.writer);
        q.send(vec![event(1, 1_000, "demo"), event(2, 2_000, "other")]);
        settle(&q, 1).await;
        let all = o.reader.query(None, 0, 100).await.expect("read");
        assert_eq!(all.len(), 2);
        drop(q);
        task.await.expect("writer");
        drop(o.reader);
        let o = open(&path).expect("reopen");
        assert_eq!(o.next_id, 3, "ids continue where they were");
        let (q, _task) = spawn_writer(o.writer);
        q.send(vec![
            event(3, 3_000, "demo"),
            Op::Prune { before_ms: 1_500 },
        ]);
        settle(&q, 1).await;
        let ids =
            |v: Vec<Value>| -> Vec<i64> { v.iter().filter_map(|e| e["id"].as_i64()).collect() };
        assert_eq!(
            ids(o.reader.query(None, 0, 100).await.expect("read")),
            [2, 3]
        );
        assert_eq!(
            ids(o
                .reader
                .query(Some("demo".into()), 0, 100)
                .await
                .expect("read")),
            [3]
        );
        assert_eq!(
            ids(o.reader.query(None, 0, 1).await.expect("read")),
            [3],
            "the limit keeps the newest"
        );
    }

    #[tokio::test]
    async fn open_findings_round_trip_in_memory() {
        let o = open(Path::new(":memory:")).expect("open");
        let (q, _task) = spawn_writer(o.writer);
        q.send(vec![
            Op::SaveOpen {
                cluster: "demo".into(),
                code: "SPLIT_BRAIN".into(),
                nodes: vec!["node1".into(), "node2".into()],
                since_ms: 42,
            },
            Op::SaveOpen {
                cluster: "demo".into(),
                code: "NO_LEADER".into(),
                nodes: vec![],
                since_ms: 43,
            },
            Op::RemoveOpen {
                cluster: "demo".into(),
                code: "NO_LEADER".into(),
                nodes: vec![],
            },
        ]);
        settle(&q, 1).await;
        let db = o.reader.db.lock().expect("reader");
        assert_eq!(
            load_open(&db).expect("read"),
            vec![(
                "demo".to_string(),
                "SPLIT_BRAIN".to_string(),
                vec!["node1".to_string(), "node2".to_string()],
                42
            )]
        );
    }

    #[tokio::test]
    async fn a_full_disk_is_counted_and_named_and_later_writes_still_land() {
        let dir = tempfile::tempdir().expect("tempdir");
        let o = open(&dir.path().join("events.db")).expect("open");
        // The database may not grow: SQLite's own "database or disk is full".
        let pages: i64 = o
            .writer
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .expect("pages");
        o.writer
            .execute_batch(&format!("PRAGMA max_page_count = {pages}"))
            .expect("limit");
        let (q, _task) = spawn_writer(o.writer);
        let big = "x".repeat(64 * 1024);
        q.send(vec![Op::Event {
            id: 1,
            recorded_ms: 1,
            at_ms: 1,
            cluster: "demo".into(),
            kind: "verdict",
            doc: big,
        }]);
        settle(&q, 1).await;
        let report = q.health.report();
        assert_eq!(report.write_errors, 1, "{report:?}");
        assert!(!report.ok());
        assert!(
            report
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("full")),
            "{report:?}"
        );
        // A small write still fits: the writer goes on.
        q.send(vec![event(2, 2, "demo")]);
        settle(&q, 2).await;
        assert_eq!(q.health.transactions.load(Ordering::Relaxed), 1);
        let report = q.health.report();
        assert!(report.ok(), "writing again: {report:?}");
        assert_eq!(report.write_errors, 1, "the history stays counted");
    }

    #[tokio::test]
    async fn a_writer_that_cannot_keep_up_drops_and_counts() {
        let o = open(Path::new(":memory:")).expect("open");
        let (tx, _rx) = mpsc::channel(1);
        let q = WriteQueue {
            tx,
            health: Arc::default(),
        };
        drop(o);
        q.send(vec![event(1, 1, "demo")]);
        q.send(vec![event(2, 2, "demo"), event(3, 3, "demo")]);
        assert_eq!(q.health.dropped_writes.load(Ordering::Relaxed), 2);
    }
}
