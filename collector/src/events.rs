//! The event log: every verdict change, finding opened or resolved, leader change, node event and
//! journaled probe transition, with a stable id. The state task records them here: each is
//! broadcast live to SSE subscribers at once and queued for the store (`store`: SQLite, pruned by
//! age, surviving a restart), one transaction per tick.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::broadcast;

use crate::model::{ProbeId, Results, Status};
use crate::store::{Op, WriteQueue};
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

/// The state task's side of the log: ids, the live broadcast, and this tick's writes.
#[derive(Debug)]
pub struct EventLog {
    next_id: i64,
    live: broadcast::Sender<Value>,
    /// The id of the last event broadcast (for an SSE resume: what it must read from the log).
    sent: Arc<AtomicI64>,
    pending: Vec<Op>,
    retention: Duration,
    last_prune_ms: i64,
}

impl EventLog {
    /// A log whose next event gets `next_id` (the store's, so ids stay stable across restarts).
    pub fn new(next_id: i64, retention: Duration) -> EventLog {
        let (live, _) = broadcast::channel(1024);
        EventLog {
            next_id,
            live,
            sent: Arc::new(AtomicI64::new(next_id - 1)),
            pending: Vec::new(),
            retention,
            last_prune_ms: 0,
        }
    }

    /// The live stream's sender, for SSE subscribers.
    pub fn live(&self) -> broadcast::Sender<Value> {
        self.live.clone()
    }

    /// The id of the last event broadcast, kept up to date: set before the broadcast, so that
    /// a subscriber that reads it after subscribing gets every later event live.
    pub fn sent(&self) -> Arc<AtomicI64> {
        self.sent.clone()
    }

    /// Records one event: broadcast now, written with this tick's transaction.
    pub fn push(&mut self, recorded_ms: i64, at_ms: i64, cluster: &str, body: EventBody) {
        let id = self.next_id;
        self.next_id += 1;
        let kind = body.kind();
        let event = Event {
            id,
            recorded_ms,
            at_ms,
            cluster: cluster.to_string(),
            body,
        };
        let doc = serde_json::to_value(&event).unwrap_or(Value::Null);
        self.pending.push(Op::Event {
            id,
            recorded_ms,
            at_ms,
            cluster: cluster.to_string(),
            kind,
            doc: doc.to_string(),
        });
        self.sent.store(id, Ordering::Release);
        let _ = self.live.send(doc);
        // Drops events older than the retention, at most once a minute.
        if recorded_ms - self.last_prune_ms >= 60_000 {
            self.last_prune_ms = recorded_ms;
            let keep = i64::try_from(self.retention.as_millis()).unwrap_or(i64::MAX);
            self.pending.push(Op::Prune {
                before_ms: recorded_ms.saturating_sub(keep),
            });
        }
    }

    /// Remembers that a finding is open since `since_ms` (so a restarted collector keeps its
    /// `since`, and does not announce it as new).
    pub fn save_open(&mut self, cluster: &str, code: &str, nodes: &[String], since_ms: i64) {
        self.pending.push(Op::SaveOpen {
            cluster: cluster.to_string(),
            code: code.to_string(),
            nodes: nodes.to_vec(),
            since_ms,
        });
    }

    pub fn remove_open(&mut self, cluster: &str, code: &str, nodes: &[String]) {
        self.pending.push(Op::RemoveOpen {
            cluster: cluster.to_string(),
            code: code.to_string(),
            nodes: nodes.to_vec(),
        });
    }

    /// Hands this tick's writes to the store (without one, as in tests, they are dropped).
    pub fn flush(&mut self, store: Option<&WriteQueue>) {
        let ops = std::mem::take(&mut self.pending);
        if let Some(q) = store {
            q.send(ops);
        }
    }
}

/// Facts whose change between two batches is an event: (event kind, what, the fact).
type Watched = (&'static str, &'static str, fn(&Results) -> Option<Value>);

const WATCHED_FACTS: [Watched; 3] = [
    ("postgres_restarted", "PostgreSQL restarted", |r| {
        node_fact(r).and_then(|n| n.postmaster_start_time.clone().map(Value::from))
    }),
    ("timeline_changed", "timeline changed", |r| {
        node_fact(r).and_then(|n| n.timeline.map(Value::from))
    }),
    ("role_changed", "role changed", |r| {
        node_fact(r).map(|n| Value::from(n.role.clone()))
    }),
];

fn node_fact(results: &Results) -> Option<&crate::model::wire::PatroniNodeFacts> {
    results
        .get(&ProbeId::PatroniNode)?
        .facts
        .as_ref()?
        .patroni_node()
}

/// The node events a node's latest results show against what was last known of it (pure):
/// `last_known` is updated with the watched facts present now.
pub fn node_events(
    node: &str,
    results: &Results,
    last_known: &mut BTreeMap<String, Value>,
) -> Vec<NodeEvent> {
    let mut found = Vec::new();
    for (kind, what, fact) in WATCHED_FACTS {
        let Some(to) = fact(results) else {
            continue;
        };
        let Some(from) = last_known.insert(kind.to_string(), to.clone()) else {
            continue;
        };
        if from != to {
            found.push(NodeEvent {
                kind,
                message: format!("{node}: {what} ({from} → {to})"),
                node: node.to_string(),
                from,
                to,
            });
        }
    }
    found
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
    fn events_are_live_at_once_with_ids_and_written_with_the_tick() {
        let mut log = EventLog::new(7, Duration::from_secs(60));
        let mut live = log.live().subscribe();
        log.push(1_000, 1_000, "demo", verdict(Health::Critical));
        log.push(200_000, 200_000, "demo", verdict(Health::Healthy));
        let first = live.try_recv().expect("live");
        assert_eq!(
            (first["id"].as_i64(), first["to"].as_str()),
            (Some(7), Some("critical"))
        );
        assert_eq!(live.try_recv().expect("live")["id"], 8);
        assert_eq!(first["kind"], "verdict");
        let prunes: Vec<i64> = log
            .pending
            .iter()
            .filter_map(|op| match op {
                Op::Prune { before_ms } => Some(*before_ms),
                _ => None,
            })
            .collect();
        assert_eq!(prunes, [140_000], "pruned by age, at most once a minute");
        log.flush(None);
        assert!(log.pending.is_empty());
    }

    #[test]
    fn node_events_come_from_changed_facts_only() {
        use crate::model::{Facts, Observation, wire::PatroniNodeFacts};
        use std::sync::Arc;
        let results = |start: &str, tl: u64| -> Results {
            let facts = PatroniNodeFacts {
                role: "primary".into(),
                postmaster_start_time: Some(start.into()),
                timeline: Some(tl),
                ..Default::default()
            };
            let obs = Observation {
                status: Status::Ok,
                message: String::new(),
                unanswered: false,
                facts: Some(Facts::PatroniNode(facts)),
                started_ms: 0,
                duration_us: 0,
                received_ms: 0,
                received_mono_ms: 0,
                observed_mono_ms: 0,
            };
            BTreeMap::from([(ProbeId::PatroniNode, Arc::new(obs))])
        };
        let mut known = BTreeMap::new();
        assert!(node_events("node1", &results("a", 3), &mut known).is_empty());
        assert!(node_events("node1", &results("a", 3), &mut known).is_empty());
        // PostgreSQL gone for a cycle: nothing is forgotten, nothing is an event.
        assert!(node_events("node1", &BTreeMap::new(), &mut known).is_empty());
        let kinds: Vec<&str> = node_events("node1", &results("b", 4), &mut known)
            .iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(kinds, ["postgres_restarted", "timeline_changed"]);
    }
}
