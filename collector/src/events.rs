//! The event log: every verdict change, finding opened or resolved, leader change, node event and
//! journaled probe transition, with a stable id, persisted in an embedded SQLite database (it
//! survives a collector restart), pruned by age, and broadcast live to SSE subscribers.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, params};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::broadcast;

use crate::model::Status;
use crate::verdict::history::Change;

/// One entry of the event log, as written.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub id: i64,
    /// When the collector recorded it.
    pub recorded_ms: i64,
    /// When it happened (for agent journals: the agent's clock).
    pub at_ms: i64,
    pub cluster: String,
    #[serde(flatten)]
    pub body: EventBody,
}

#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum EventBody {
    Change(Change),
    Probe(ProbeTransition),
    Node(NodeEvent),
}

impl EventBody {
    fn kind(&self) -> &'static str {
        match self {
            EventBody::Change(Change::Verdict { .. }) => "verdict",
            EventBody::Change(Change::FindingOpened { .. }) => "finding_opened",
            EventBody::Change(Change::FindingResolved { .. }) => "finding_resolved",
            EventBody::Change(Change::LeaderChanged { .. }) => "leader_changed",
            EventBody::Probe(p) => p.kind,
            EventBody::Node(n) => n.kind,
        }
    }
}

/// A probe status change an agent recorded while it could not reach the collector.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeTransition {
    pub kind: &'static str,
    pub node: String,
    pub probe: String,
    pub from: Status,
    pub to: Status,
    pub message: String,
    /// Delivered late, from the agent's journal.
    pub journaled: bool,
}

/// Something a node's facts say happened between two batches — seen even when it came and went
/// between two probe cycles (a PostgreSQL restarted in place, a new timeline).
#[derive(Debug, Clone, Serialize)]
pub struct NodeEvent {
    /// `postgres_restarted`, `timeline_changed` or `role_changed`.
    pub kind: &'static str,
    pub node: String,
    pub from: Value,
    pub to: Value,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
#[error("event store {path}: {source}")]
pub struct StoreError {
    path: String,
    source: rusqlite::Error,
}

/// The persisted log (written by the state task, read by the API).
#[derive(Debug)]
pub struct EventLog {
    db: Connection,
    live: broadcast::Sender<Value>,
    retention: Duration,
    last_prune_ms: i64,
}

impl EventLog {
    /// Opens (or creates) the database at `path` (`:memory:` for a throw-away log).
    pub fn open(path: &Path, retention: Duration) -> Result<EventLog, StoreError> {
        let err = |source| StoreError {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
        let db = Connection::open(path).map_err(err)?;
        db.execute_batch(
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
        let (live, _) = broadcast::channel(1024);
        Ok(EventLog {
            db,
            live,
            retention,
            last_prune_ms: 0,
        })
    }

    /// Live events, for SSE subscribers.
    pub fn subscribe(&self) -> broadcast::Receiver<Value> {
        self.live.subscribe()
    }

    /// Records one event; a write error is logged, never fatal (the verdict goes on).
    pub fn push(&mut self, recorded_ms: i64, at_ms: i64, cluster: &str, body: EventBody) {
        let kind = body.kind();
        let inserted = self
            .db
            .execute(
                "INSERT INTO events (recorded_ms, at_ms, cluster, kind, doc) VALUES (?1, ?2, ?3, ?4, '{}')",
                params![recorded_ms, at_ms, cluster, kind],
            )
            .map(|_| self.db.last_insert_rowid());
        let id = match inserted {
            Ok(id) => id,
            Err(e) => {
                tracing::error!(error = %e, "Cannot record an event: the event store needs attention");
                return;
            }
        };
        let event = Event {
            id,
            recorded_ms,
            at_ms,
            cluster: cluster.to_string(),
            body,
        };
        let doc = serde_json::to_value(&event).unwrap_or(Value::Null);
        if let Err(e) = self.db.execute(
            "UPDATE events SET doc = ?1 WHERE id = ?2",
            params![doc.to_string(), id],
        ) {
            tracing::error!(error = %e, "Cannot record an event: the event store needs attention");
        }
        let _ = self.live.send(doc);
        self.prune(recorded_ms);
    }

    /// Drops events older than the retention, at most once a minute.
    fn prune(&mut self, now_ms: i64) {
        if now_ms - self.last_prune_ms < 60_000 {
            return;
        }
        self.last_prune_ms = now_ms;
        let cutoff = now_ms - i64::try_from(self.retention.as_millis()).unwrap_or(i64::MAX);
        if let Err(e) = self
            .db
            .execute("DELETE FROM events WHERE recorded_ms < ?1", params![cutoff])
        {
            tracing::warn!(error = %e, "Cannot prune old events");
        }
    }

    /// Remembers that a finding is open since `since_ms` (so a restarted collector keeps its
    /// `since`, and does not announce it as new).
    pub fn save_open(&self, cluster: &str, code: &str, nodes: &[String], since_ms: i64) {
        let r = self.db.execute(
            "INSERT OR REPLACE INTO open_findings (cluster, code, nodes, since_ms) VALUES (?1, ?2, ?3, ?4)",
            params![cluster, code, nodes.join(","), since_ms],
        );
        if let Err(e) = r {
            tracing::warn!(error = %e, "Cannot persist an open finding");
        }
    }

    pub fn remove_open(&self, cluster: &str, code: &str, nodes: &[String]) {
        let r = self.db.execute(
            "DELETE FROM open_findings WHERE cluster = ?1 AND code = ?2 AND nodes = ?3",
            params![cluster, code, nodes.join(",")],
        );
        if let Err(e) = r {
            tracing::warn!(error = %e, "Cannot persist a resolved finding");
        }
    }

    /// Every open finding saved: (cluster, code, nodes, since).
    pub fn load_open(&self) -> Vec<(String, String, Vec<String>, i64)> {
        let rows = self
            .db
            .prepare("SELECT cluster, code, nodes, since_ms FROM open_findings")
            .and_then(|mut stmt| {
                stmt.query_map([], |r| {
                    let nodes: String = r.get(2)?;
                    let nodes = if nodes.is_empty() {
                        Vec::new()
                    } else {
                        nodes.split(',').map(str::to_string).collect()
                    };
                    Ok((r.get(0)?, r.get(1)?, nodes, r.get(3)?))
                })?
                .collect::<Result<Vec<_>, _>>()
            });
        rows.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "Cannot read the open findings");
            Vec::new()
        })
    }

    /// Events after id `since` (0: from the oldest kept), oldest first, at most `limit` (the
    /// newest ones), optionally of one cluster.
    pub fn query(&self, cluster: Option<&str>, since: i64, limit: usize) -> Vec<Value> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .db
            .prepare_cached(
                "SELECT doc FROM (SELECT id, doc FROM events WHERE id > ?1 AND (?2 IS NULL OR cluster = ?2)
                 ORDER BY id DESC LIMIT ?3) ORDER BY id ASC",
            )
            .and_then(|mut stmt| {
                stmt.query_map(params![since, cluster, limit], |r| r.get::<_, String>(0))?
                    .collect::<Result<Vec<String>, _>>()
            });
        match rows {
            Ok(docs) => docs
                .iter()
                .filter_map(|d| serde_json::from_str(d).ok())
                .collect(),
            Err(e) => {
                tracing::error!(error = %e, "Cannot read events");
                Vec::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::Health;

    fn verdict(to: Health) -> EventBody {
        EventBody::Change(Change::Verdict {
            from: None,
            to,
            leader: Some("node1".into()),
        })
    }

    #[test]
    fn events_survive_a_reopen_with_stable_ids_and_queries_filter() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.db");
        let mut log = EventLog::open(&path, Duration::from_secs(3600)).expect("open");
        let mut live = log.subscribe();
        log.push(1_000, 1_000, "demo", verdict(Health::Critical));
        log.push(2_000, 2_000, "other", verdict(Health::Healthy));
        assert_eq!(live.try_recv().expect("live")["to"], "critical");
        drop(log);
        let mut log = EventLog::open(&path, Duration::from_secs(3600)).expect("reopen");
        log.push(3_000, 3_000, "demo", verdict(Health::Healthy));
        let all = log.query(None, 0, 100);
        let ids: Vec<i64> = all.iter().filter_map(|e| e["id"].as_i64()).collect();
        assert_eq!(ids, [1, 2, 3]);
        assert_eq!(log.query(Some("demo"), 0, 100).len(), 2);
        assert_eq!(log.query(Some("demo"), 1, 100)[0]["id"], 3);
        assert_eq!(
            log.query(None, 0, 1)[0]["id"],
            3,
            "the limit keeps the newest"
        );
        assert_eq!(all[0]["kind"], "verdict");
    }

    #[test]
    fn open_findings_round_trip() {
        let log = EventLog::open(Path::new(":memory:"), Duration::from_secs(60)).expect("open");
        log.save_open("demo", "SPLIT_BRAIN", &["node1".into(), "node2".into()], 42);
        log.save_open("demo", "NO_LEADER", &[], 43);
        log.remove_open("demo", "NO_LEADER", &[]);
        assert_eq!(
            log.load_open(),
            vec![(
                "demo".to_string(),
                "SPLIT_BRAIN".to_string(),
                vec!["node1".to_string(), "node2".to_string()],
                42
            )]
        );
    }

    #[test]
    fn old_events_are_pruned() {
        let mut log = EventLog::open(Path::new(":memory:"), Duration::from_secs(60)).expect("open");
        log.push(1_000, 1_000, "demo", verdict(Health::Critical));
        log.push(200_000, 200_000, "demo", verdict(Health::Healthy));
        let left: Vec<i64> = log
            .query(None, 0, 10)
            .iter()
            .filter_map(|e| e["id"].as_i64())
            .collect();
        assert_eq!(left, [2]);
    }
}
