//! What a probe reports: a status, one line for people, and the structured facts behind it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
pub use vigie_proto::probes::human_bytes;
pub use vigie_proto::{Facts, ProbeId, Status};

/// One probe's result for one cycle.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeResult {
    /// Stable probe id (`postgres.recovery`, …).
    #[serde(serialize_with = "probe_name")]
    pub id: ProbeId,
    pub status: Status,
    /// One line a person understands.
    pub message: String,
    /// The probe did not answer within its timeout.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unanswered: bool,
    /// The typed facts behind the status (none when the probe could not look).
    pub facts: Option<Facts>,
    /// When the probe started, in milliseconds since the Unix epoch (agent clock).
    pub started_unix_ms: i64,
    /// How long it took, in microseconds.
    pub duration_us: u64,
}

fn probe_name<S: serde::Serializer>(id: &ProbeId, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(id.name())
}

impl ProbeResult {
    pub fn new(id: ProbeId, status: Status, message: impl Into<String>) -> Self {
        ProbeResult {
            id,
            status,
            message: message.into(),
            unanswered: false,
            facts: None,
            started_unix_ms: 0,
            duration_us: 0,
        }
    }

    /// Attaches the probe's facts.
    pub fn with(mut self, facts: Facts) -> Self {
        debug_assert!(self.id.carries(&facts), "{} facts of another kind", self.id);
        self.facts = Some(facts);
        self
    }

    /// Marks a probe that did not answer in time.
    pub fn unanswered(mut self) -> Self {
        self.unanswered = true;
        self
    }

    /// The facts in their JSON form (for tests that read one field).
    #[cfg(test)]
    pub fn json(&self) -> serde_json::Value {
        serde_json::to_value(&self.facts).unwrap_or_default()
    }

    /// Stamps when the probe started and how long it took.
    pub fn timed(mut self, started: SystemTime, took: Duration) -> Self {
        self.started_unix_ms = unix_ms(started);
        self.duration_us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self
    }
}

/// Builds a probe's result from its id.
pub trait Outcome {
    fn ok(self, message: impl Into<String>) -> ProbeResult;
    fn warning(self, message: impl Into<String>) -> ProbeResult;
    fn critical(self, message: impl Into<String>) -> ProbeResult;
    fn unknown(self, message: impl Into<String>) -> ProbeResult;
}

impl Outcome for ProbeId {
    fn ok(self, message: impl Into<String>) -> ProbeResult {
        ProbeResult::new(self, Status::Ok, message)
    }
    fn warning(self, message: impl Into<String>) -> ProbeResult {
        ProbeResult::new(self, Status::Warning, message)
    }
    fn critical(self, message: impl Into<String>) -> ProbeResult {
        ProbeResult::new(self, Status::Critical, message)
    }
    fn unknown(self, message: impl Into<String>) -> ProbeResult {
        ProbeResult::new(self, Status::Unknown, message)
    }
}

/// Milliseconds since the Unix epoch (0 for a clock set before 1970).
pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The worst status of a set of results (`ok` for none).
pub fn overall(results: &[ProbeResult]) -> Status {
    results
        .iter()
        .fold(Status::Ok, |acc, r| acc.worst(r.status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overall_of_nothing_is_ok_and_of_results_is_the_worst() {
        assert_eq!(overall(&[]), Status::Ok);
        let rs = [ProbeId::SystemCpu.ok("x"), ProbeId::SystemDisk.unknown("y")];
        assert_eq!(overall(&rs), Status::Unknown);
    }
}
