//! The verdict engine: a pure function from one cluster's snapshot (and `now`) to a verdict with
//! its findings and evidence. No I/O, no clock reads: everything it needs is an argument. Each
//! rule is a small function in `rules/`; `history` adds `since` and grace windows across
//! evaluations.

#[cfg(test)]
mod contract;
pub mod history;
pub mod rules;
pub mod view;

use serde::Serialize;

use crate::clock::Now;
use crate::model::ClusterSnapshot;
use view::View;

/// Cluster health, from best to worst information.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Healthy,
    Degraded,
    Critical,
    /// Not enough fresh data to exclude a critical condition: never `healthy` when blind.
    Unknown,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Degraded => "degraded",
            Health::Critical => "critical",
            Health::Unknown => "unknown",
        }
    }

    /// Badness order for "never better" checks: healthy < degraded < unknown < critical.
    pub fn rank(self) -> u8 {
        match self {
            Health::Healthy => 0,
            Health::Degraded => 1,
            Health::Unknown => 2,
            Health::Critical => 3,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Critical,
}

macro_rules! codes {
    ($($variant:ident => $text:literal,)*) => {
        /// Stable finding codes.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Code { $($variant),* }

        impl Code {
            pub const ALL: &'static [Code] = &[$(Code::$variant),*];
            pub fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $text),* }
            }
        }
    };
}

codes! {
    NoLeader => "NO_LEADER",
    SplitBrain => "SPLIT_BRAIN",
    LeaderNotWritable => "LEADER_NOT_WRITABLE",
    RwEndpointDown => "RW_ENDPOINT_DOWN",
    RwMisrouted => "RW_MISROUTED",
    DcsQuorumLost => "DCS_QUORUM_LOST",
    ReplicaNotStreaming => "REPLICA_NOT_STREAMING",
    ReplicaCountMismatch => "REPLICA_COUNT_MISMATCH",
    ReplicationLag => "REPLICATION_LAG",
    TimelineMismatch => "TIMELINE_MISMATCH",
    WrongUpstream => "WRONG_UPSTREAM",
    DcsMemberDown => "DCS_MEMBER_DOWN",
    RoEndpointDown => "RO_ENDPOINT_DOWN",
    HaproxyDown => "HAPROXY_DOWN",
    PatroniDown => "PATRONI_DOWN",
    PatroniUnknownState => "PATRONI_UNKNOWN_STATE",
    PostgresDown => "POSTGRES_DOWN",
    AgentStale => "AGENT_STALE",
    MaintenanceMode => "MAINTENANCE_MODE",
    PendingRestart => "PENDING_RESTART",
    ResourcePressure => "RESOURCE_PRESSURE",
    LockWaits => "LOCK_WAITS",
    ConnectionsSaturated => "CONNECTIONS_SATURATED",
    ClockSkew => "CLOCK_SKEW",
    DuplicateAgent => "DUPLICATE_AGENT",
    WalRetention => "WAL_RETENTION",
    ArchivingFailing => "ARCHIVING_FAILING",
    XminHorizonHeld => "XMIN_HORIZON_HELD",
    XidWraparound => "XID_WRAPAROUND",
    WritesBlockedSyncrep => "WRITES_BLOCKED_SYNCREP",
    SyncStandbyMissing => "SYNC_STANDBY_MISSING",
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Which node observed what, and when (collector receive clock).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evidence {
    pub node: String,
    pub probe: String,
    pub observed: String,
    pub at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub code: Code,
    pub severity: Severity,
    /// The node(s) the finding is about.
    pub nodes: Vec<String>,
    pub message: String,
    pub evidence: Vec<Evidence>,
    /// Since when the finding holds (set by [`history`]).
    pub since_ms: Option<i64>,
    /// Still inside its grace window: shown, but it cannot make the verdict worse than degraded.
    pub pending: bool,
    /// A rule's own minimum grace, which applies whether or not a transition is visible (e.g.
    /// one probe interval, so that two observations a cycle apart do not read as two primaries).
    #[serde(skip)]
    pub min_grace_ms: i64,
    /// A condition that one failed read can fake: pending until a later observation confirms
    /// it.
    #[serde(skip)]
    pub confirm: bool,
}

impl Finding {
    pub fn new(code: Code, severity: Severity, nodes: Vec<String>, message: String) -> Finding {
        Finding {
            code,
            severity,
            nodes,
            message,
            evidence: Vec::new(),
            since_ms: None,
            pending: false,
            min_grace_ms: 0,
            confirm: false,
        }
    }

    /// Marks the finding as needing a second observation before it counts: its evidence must
    /// show a newer observation than when it opened.
    pub fn confirmed_later(mut self) -> Finding {
        self.confirm = true;
        self
    }

    /// The newest observation the finding rests on.
    pub fn newest_evidence_ms(&self) -> Option<i64> {
        self.evidence.iter().map(|e| e.at_ms).max()
    }

    /// Sets the finding's minimum grace window.
    pub fn grace(mut self, ms: i64) -> Finding {
        self.min_grace_ms = ms;
        self
    }

    /// Adds whatever evidence there is (an `Option` adds zero or one).
    pub fn with_all(mut self, evidence: impl IntoIterator<Item = Evidence>) -> Finding {
        self.evidence.extend(evidence);
        self
    }
}

/// Thresholds and windows of the verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// An agent silent for this many of its intervals is stale…
    pub stale_intervals: u32,
    /// …and never sooner than this.
    pub min_stale_ms: i64,
    pub lag_warning_bytes: u64,
    pub lag_critical_bytes: u64,
    pub lag_warning_s: f64,
    pub lag_critical_s: f64,
    pub clock_skew_ms: i64,
    /// Grace for findings that a planned switchover or Patroni's own failover produce briefly
    /// (no leader, RW endpoint down, leader not writable), applied only while a transition is
    /// visible.
    pub transition_grace_ms: i64,
    /// Grace for two writable primaries during a transition: short, so a real split brain is
    /// not hidden for long.
    pub split_brain_grace_ms: i64,
    /// A leader change is a visible transition for this long (Patroni's default `ttl`).
    pub transition_window_ms: i64,
    /// A replica's WAL stream counts as stalled when the leader passed its received position
    /// this long ago (and no message came since): half the replica's interval, never less than
    /// this.
    pub stall_min_ms: i64,
    /// CONNECTIONS_SATURATED warns above this share of the usable connection slots in use.
    pub connections_warning_percent: f64,
    /// A node without a stream and silent this long is forgotten (with an event), and a
    /// cluster left with no node disappears.
    pub forget_after_ms: i64,
    /// WAL_RETENTION warns when an inactive slot retains this much WAL…
    pub wal_retention_warning_bytes: u64,
    /// …and is critical when, at the WAL rate seen, the disk is full within this long.
    pub wal_full_critical_ms: i64,
    /// The WAL rate is measured over this window.
    pub wal_rate_window_ms: i64,
    /// XMIN_HORIZON_HELD: a transaction (or a prepared one) open this long holding the horizon…
    pub xmin_hold_warning_s: f64,
    /// …or a holder (a session, a slot, a standby's feedback) this many transactions behind.
    pub xmin_age_warning: u64,
    /// WRITES_BLOCKED_SYNCREP: a commit waiting this long for a synchronous standby.
    pub syncrep_wait_critical_s: f64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            stale_intervals: 3,
            forget_after_ms: 7 * 24 * 3600 * 1000,
            min_stale_ms: 5_000,
            lag_warning_bytes: 16 * 1024 * 1024,
            lag_critical_bytes: 256 * 1024 * 1024,
            lag_warning_s: 30.0,
            lag_critical_s: 300.0,
            clock_skew_ms: 2_000,
            transition_grace_ms: 6_000,
            split_brain_grace_ms: 3_000,
            transition_window_ms: 30_000,
            stall_min_ms: 500,
            connections_warning_percent: 90.0,
            wal_retention_warning_bytes: 1 << 30,
            wal_full_critical_ms: 3_600_000,
            wal_rate_window_ms: 300_000,
            xmin_hold_warning_s: 1_800.0,
            xmin_age_warning: 100_000_000,
            syncrep_wait_critical_s: 5.0,
        }
    }
}

impl Policy {
    /// How long a finding must hold before it counts fully.
    pub fn grace_ms(&self, code: Code) -> i64 {
        match code {
            Code::NoLeader | Code::RwEndpointDown | Code::LeaderNotWritable | Code::RwMisrouted => {
                self.transition_grace_ms
            }
            Code::SplitBrain => self.split_brain_grace_ms,
            _ => 0,
        }
    }
}

/// One cluster's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub cluster: String,
    pub health: Health,
    /// The leader as Patroni names it (from the freshest views).
    pub leader: Option<String>,
    pub findings: Vec<Finding>,
    /// Why the verdict cannot be `healthy` for lack of data, when it is `unknown`.
    pub blind_spots: Vec<String>,
    /// A transition in progress that the nodes show (a member starting or stopping, a
    /// scheduled switchover, HAProxy servers changing state, a recent leader change): only
    /// then do transitional findings get their grace window.
    pub transition: Option<String>,
    /// Each replica's lag measured across nodes.
    pub replication: Vec<rules::replication::ReplicaLag>,
    pub evaluated_ms: i64,
    #[serde(skip)]
    pub evaluated_mono_ms: i64,
}

/// Evaluates one cluster (pure). `since` and grace are applied afterwards by
/// [`history::FindingHistory`]; without history every finding counts at once.
pub fn evaluate(cluster: &ClusterSnapshot, now: impl Into<Now>, policy: &Policy) -> Verdict {
    let now = now.into();
    let view = View::new(cluster, now, policy);
    let mut findings = Vec::new();
    let mut blind = Vec::new();
    rules::run_all(&view, &mut findings, &mut blind);
    let replication = rules::replication::lags(&view);
    findings.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(a.code.cmp(&b.code))
            .then(a.nodes.cmp(&b.nodes))
    });
    let mut verdict = Verdict {
        cluster: cluster.scope.clone(),
        health: Health::Healthy,
        leader: view.patroni_leader().map(str::to_string),
        findings,
        blind_spots: blind,
        transition: view.transition(),
        replication,
        evaluated_ms: now.wall_ms,
        evaluated_mono_ms: now.mono_ms,
    };
    verdict.health = health_of(&verdict);
    verdict
}

/// critical > unknown > degraded > healthy; a pending finding counts as degraded at most.
pub fn health_of(v: &Verdict) -> Health {
    let counted = |f: &&Finding| !f.pending;
    if v.findings
        .iter()
        .filter(counted)
        .any(|f| f.severity == Severity::Critical)
    {
        Health::Critical
    } else if !v.blind_spots.is_empty() {
        Health::Unknown
    } else if !v.findings.is_empty() {
        Health::Degraded
    } else {
        Health::Healthy
    }
}

#[cfg(test)]
pub mod testkit;

#[cfg(test)]
mod tests;
