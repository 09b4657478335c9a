//! The collector's domain model: what it knows of every node, as received from the agents.
//! Converted from the wire types at the ingest boundary.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde::{Serialize, Serializer};
pub use vigie_proto::v1::{self as wire, probe_result::Facts};
pub use vigie_proto::{ProbeId, Status};

/// The latest result of one probe on one node.
#[derive(Debug, Clone, Serialize)]
pub struct Observation {
    pub status: Status,
    pub message: String,
    /// The probe did not answer within its timeout.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unanswered: bool,
    /// The typed facts behind the status: none when the probe could not look, or from an agent
    /// older than the typed wire (it sends none).
    pub facts: Option<Facts>,
    /// When the agent ran it (agent clock, ms since the epoch).
    pub started_ms: i64,
    pub duration_us: u64,
    /// When the collector received it (collector wall clock, for display).
    pub received_ms: i64,
    /// The same instant on the collector's monotonic clock: freshness is judged on this.
    #[serde(skip)]
    pub received_mono_ms: i64,
    /// When the probe ran, on the collector's monotonic clock (the receive time less how long
    /// before the end of its batch the agent started it): cross-node timing is judged on this,
    /// free of delivery delays.
    #[serde(skip)]
    pub observed_mono_ms: i64,
}

/// A node's latest observations by probe.
pub type Results = BTreeMap<ProbeId, Arc<Observation>>;

/// Serializes results keyed by the probes' dotted names (`postgres.recovery`).
pub fn results_by_name<S: Serializer>(results: &Results, s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(results.iter().map(|(id, o)| (id.name(), o)))
}

/// Streams refused because another live stream already spoke for the node.
#[derive(Debug, Clone, Serialize)]
pub struct Impostor {
    /// The last refused stream's address.
    pub peer: String,
    pub attempts: u64,
    pub last_ms: i64,
    #[serde(skip)]
    pub last_mono_ms: i64,
    /// The first attempt of this run of attempts.
    #[serde(skip)]
    pub first_mono_ms: i64,
}

impl Impostor {
    /// How long a run of attempts is remembered after its last one.
    pub const REMEMBERED_MS: i64 = 10 * 60 * 1000;
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
    /// Last message from the agent (collector wall clock, for display).
    pub last_seen_ms: i64,
    /// Last message from the agent (`Hello` or batch), monotonic clock.
    #[serde(skip)]
    pub last_seen_mono_ms: i64,
    /// Last result batch, monotonic clock: a `Hello` alone vouches for nothing.
    #[serde(skip)]
    pub last_batch_mono_ms: Option<i64>,
    /// Collector receive time minus the agent's clock at the end of its last cycle.
    pub clock_offset_ms: Option<i64>,
    /// Batches the agent reported dropped, in total.
    pub dropped_batches: u64,
    /// The last batch came from an agent older than the typed wire (probes named by text, facts
    /// as JSON the collector no longer reads): its statuses are judged, its facts are missing.
    pub untyped_facts: bool,
    /// Shared with the published snapshots: a batch replaces observations, never edits them.
    #[serde(serialize_with = "results_by_name")]
    pub results: Results,
    /// A second agent that tried to speak for this node while its stream was live (refused).
    pub impostor: Option<Impostor>,
    /// This node's WAL position over time while it is a primary (for cross-node lag).
    #[serde(skip)]
    pub lsn_series: Arc<LsnSeries>,
}

impl NodeState {
    pub fn has(&self, component: &str) -> bool {
        self.components.iter().any(|c| c == component)
    }

    /// Records a second stream's attempt to speak for this node, from `peer` at (`wall_ms`,
    /// `mono_ms`). Attempts after a long quiet start a new run.
    pub fn record_impostor(&mut self, peer: String, wall_ms: i64, mono_ms: i64) {
        let run = self
            .impostor
            .take()
            .filter(|i| mono_ms.saturating_sub(i.last_mono_ms) <= Impostor::REMEMBERED_MS);
        self.impostor = Some(Impostor {
            peer,
            attempts: run.as_ref().map_or(0, |i| i.attempts) + 1,
            last_ms: wall_ms,
            last_mono_ms: mono_ms,
            first_mono_ms: run.map_or(mono_ms, |i| i.first_mono_ms),
        });
    }
}

/// Every node of one cluster, as of one instant.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterSnapshot {
    pub scope: String,
    /// Shared with the state task: publishing a snapshot copies no node.
    pub nodes: Vec<Arc<NodeState>>,
}

/// A primary's WAL position over time, on the collector's monotonic clock: one sample each time
/// the position moved, the last [`LsnSeries::MAX`] of them. From it the verdict tells how long
/// ago the primary was where a replica is now — the true time lag, which neither alarms on an
/// idle primary (no movement, no lag) nor reads 0 on a stalled stream.
#[derive(Debug, Clone, Default)]
pub struct LsnSeries {
    samples: VecDeque<(i64, u64)>,
}

/// When a primary's position went past a given LSN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Passed {
    /// It never did: the position is at most that LSN (caught up).
    Never,
    /// At this instant (the first sample above it).
    At(i64),
    /// Before the oldest sample kept, which is this one: the lag is at least its age.
    Before(i64),
}

impl LsnSeries {
    /// Samples kept: six minutes of continuous writes at a 1 s agent interval.
    pub const MAX: usize = 360;

    /// Records the position `lsn` observed at `mono_ms`.
    pub fn record(&mut self, mono_ms: i64, lsn: u64) {
        match self.samples.back() {
            Some(&(_, last)) if lsn == last => return,
            // Backwards: a new history (a rewound or re-initialised primary). Start again.
            Some(&(_, last)) if lsn < last => self.samples.clear(),
            _ => {}
        }
        if self.samples.len() == Self::MAX {
            self.samples.pop_front();
        }
        self.samples.push_back((mono_ms, lsn));
    }

    /// The latest position and when it was observed.
    pub fn latest(&self) -> Option<(i64, u64)> {
        self.samples.back().copied()
    }

    /// The WAL rate in bytes per second over the last `window_ms` before `now_ms`: from the last
    /// sample at or before the window's start (or the oldest kept) to the latest position,
    /// over the time up to now (an idle spell since counts as such). `None` over less than ten
    /// seconds of samples or when the position has not moved: no rate to extrapolate.
    pub fn rate_bps(&self, now_ms: i64, window_ms: i64) -> Option<f64> {
        let (_, latest) = self.latest()?;
        let start = now_ms - window_ms;
        let i = self.samples.partition_point(|&(t, _)| t <= start);
        let (t0, l0) = self.samples.get(i.saturating_sub(1)).copied()?;
        let span_ms = now_ms - t0;
        if span_ms < 10_000 || latest <= l0 {
            return None;
        }
        Some((latest - l0) as f64 * 1_000.0 / span_ms as f64)
    }

    /// When the position first went past `lsn`.
    pub fn passed(&self, lsn: u64) -> Passed {
        let i = self.samples.partition_point(|&(_, l)| l <= lsn);
        match self.samples.get(i) {
            None => Passed::Never,
            Some(&(at, _)) if i == 0 => Passed::Before(at),
            Some(&(at, _)) => Passed::At(at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_is_measured_over_the_window_up_to_now() {
        let mut s = LsnSeries::default();
        assert_eq!(s.rate_bps(0, 300_000), None);
        // 1 MiB/s for 60 s, sampled every second.
        for i in 0..=60 {
            s.record(i * 1_000, (i as u64) << 20);
        }
        assert_eq!(s.rate_bps(60_000, 300_000), Some(1_048_576.0));
        // Thirty idle seconds later, the same bytes over 90 s.
        let r = s.rate_bps(90_000, 300_000).expect("a rate");
        assert!((r - 60.0 * 1_048_576.0 / 90.0).abs() < 1.0, "{r}");
        // A window of 20 s: from the sample 20 s before now.
        assert_eq!(s.rate_bps(60_000, 20_000), Some(1_048_576.0));
        // Under ten seconds of history: no rate.
        let mut short = LsnSeries::default();
        short.record(0, 0);
        short.record(5_000, 1 << 20);
        assert_eq!(short.rate_bps(5_000, 300_000), None);
    }

    #[test]
    fn the_series_says_when_a_position_was_passed() {
        let mut s = LsnSeries::default();
        assert_eq!(s.passed(10), Passed::Never);
        s.record(1_000, 100);
        s.record(2_000, 100); // idle: not a new sample
        s.record(3_000, 200);
        s.record(4_000, 300);
        assert_eq!(s.passed(300), Passed::Never);
        assert_eq!(s.passed(250), Passed::At(4_000));
        assert_eq!(s.passed(100), Passed::At(3_000));
        assert_eq!(s.passed(50), Passed::Before(1_000));
        assert_eq!(s.latest(), Some((4_000, 300)));
        s.record(5_000, 10);
        assert_eq!(s.latest(), Some((5_000, 10)));
        assert_eq!(s.passed(10), Passed::Never);
    }

    #[test]
    fn the_series_is_bounded() {
        let mut s = LsnSeries::default();
        for i in 0..(LsnSeries::MAX as u64 * 2) {
            s.record(i as i64, i);
        }
        assert_eq!(s.samples.len(), LsnSeries::MAX);
        assert_eq!(s.passed(0), Passed::Before(LsnSeries::MAX as i64));
    }
}
