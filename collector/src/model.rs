//! The collector's domain model: what it knows of every node, as received from the agents.
//! Converted from the wire types at the ingest boundary.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

/// A probe status, as agents report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warning,
    Critical,
    Unknown,
}

impl Status {
    pub fn from_wire(s: i32) -> Status {
        match vigie_proto::v1::Status::try_from(s) {
            Ok(vigie_proto::v1::Status::Ok) => Status::Ok,
            Ok(vigie_proto::v1::Status::Warning) => Status::Warning,
            Ok(vigie_proto::v1::Status::Critical) => Status::Critical,
            _ => Status::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warning => "warning",
            Status::Critical => "critical",
            Status::Unknown => "unknown",
        }
    }
}

/// The latest result of one probe on one node.
#[derive(Debug, Clone, Serialize)]
pub struct Observation {
    pub status: Status,
    pub message: String,
    pub facts: Value,
    /// When the agent ran it (agent clock, ms since the epoch).
    pub started_ms: i64,
    pub duration_us: u64,
    /// When the collector received it (collector clock): staleness is judged on this.
    pub received_ms: i64,
}

impl Observation {
    /// A fact of this observation (`Null` when absent).
    pub fn fact(&self, key: &str) -> &Value {
        self.facts.get(key).unwrap_or(&Value::Null)
    }
}

/// What the collector knows of one node.
#[derive(Debug, Clone, Serialize)]
pub struct NodeState {
    pub name: String,
    pub cluster: String,
    pub components: Vec<String>,
    pub agent_version: String,
    pub interval_ms: u64,
    /// Whether the agent's stream is open now.
    pub connected: bool,
    /// Last message from the agent (collector clock).
    pub last_seen_ms: i64,
    /// Collector receive time minus the agent's clock at the end of its last cycle.
    pub clock_offset_ms: Option<i64>,
    /// Batches the agent reported dropped, in total.
    pub dropped_batches: u64,
    /// Shared with the published snapshots: a batch replaces observations, never edits them.
    pub results: BTreeMap<String, Arc<Observation>>,
    /// The last non-null value of each watched fact (`probe/fact`), to see changes across a gap
    /// (a PostgreSQL down for a cycle reports no start time).
    #[serde(skip)]
    pub last_known: BTreeMap<String, Value>,
}

impl NodeState {
    pub fn has(&self, component: &str) -> bool {
        self.components.iter().any(|c| c == component)
    }
}

/// Every node of one cluster, as of one instant.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterSnapshot {
    pub scope: String,
    pub nodes: Vec<NodeState>,
}
