//! What a probe reports: a status, one line for people, and the structured facts behind it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Map, Value};

/// Probe status, ordered from best to worst as Nagios ranks them for an overall exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warning,
    Critical,
    Unknown,
}

impl Status {
    /// Nagios plugin exit code: 0 ok, 1 warning, 2 critical, 3 unknown.
    pub fn exit_code(self) -> i32 {
        match self {
            Status::Ok => 0,
            Status::Warning => 1,
            Status::Critical => 2,
            Status::Unknown => 3,
        }
    }

    /// Rank for "worst of": critical > warning > unknown > ok (the Nagios convention).
    fn severity(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::Unknown => 1,
            Status::Warning => 2,
            Status::Critical => 3,
        }
    }

    /// The worse of two statuses.
    pub fn worst(self, other: Status) -> Status {
        if other.severity() > self.severity() {
            other
        } else {
            self
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

/// One probe's result for one cycle.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeResult {
    /// Stable probe id (`postgres.recovery`, …).
    pub id: &'static str,
    pub status: Status,
    /// One line a person understands.
    pub message: String,
    /// The facts behind the status (LSNs, role, members, …): a JSON object.
    pub facts: Map<String, Value>,
    /// When the probe started, in milliseconds since the Unix epoch (agent clock).
    pub started_unix_ms: i64,
    /// How long it took, in microseconds.
    pub duration_us: u64,
}

impl ProbeResult {
    pub fn new(id: &'static str, status: Status, message: impl Into<String>) -> Self {
        ProbeResult {
            id,
            status,
            message: message.into(),
            facts: Map::new(),
            started_unix_ms: 0,
            duration_us: 0,
        }
    }

    pub fn ok(id: &'static str, message: impl Into<String>) -> Self {
        Self::new(id, Status::Ok, message)
    }

    pub fn warning(id: &'static str, message: impl Into<String>) -> Self {
        Self::new(id, Status::Warning, message)
    }

    pub fn critical(id: &'static str, message: impl Into<String>) -> Self {
        Self::new(id, Status::Critical, message)
    }

    pub fn unknown(id: &'static str, message: impl Into<String>) -> Self {
        Self::new(id, Status::Unknown, message)
    }

    /// Adds one fact.
    pub fn fact(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.facts.insert(key.to_string(), value.into());
        self
    }

    /// Adds every field of a JSON object as facts (anything else is stored under `value`).
    pub fn facts(mut self, value: Value) -> Self {
        match value {
            Value::Object(map) => self.facts.extend(map),
            other => {
                self.facts.insert("value".to_string(), other);
            }
        }
        self
    }

    /// Stamps when the probe started and how long it took.
    pub fn timed(mut self, started: SystemTime, took: Duration) -> Self {
        self.started_unix_ms = unix_ms(started);
        self.duration_us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self
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

/// Renders a byte count for people: `0 B`, `12.0 KiB`, `3.4 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_follows_the_nagios_ranking() {
        use Status::*;
        assert_eq!(Ok.worst(Warning), Warning);
        assert_eq!(Warning.worst(Unknown), Warning);
        assert_eq!(Unknown.worst(Ok), Unknown);
        assert_eq!(Critical.worst(Warning), Critical);
        assert_eq!(Unknown.worst(Critical), Critical);
    }

    #[test]
    fn overall_of_nothing_is_ok_and_of_results_is_the_worst() {
        assert_eq!(overall(&[]), Status::Ok);
        let rs = [ProbeResult::ok("a", "x"), ProbeResult::unknown("b", "y")];
        assert_eq!(overall(&rs), Status::Unknown);
    }

    #[test]
    fn human_bytes_picks_a_unit() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(16 * 1024 * 1024), "16.0 MiB");
    }
}
