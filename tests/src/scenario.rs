//! Scenario bookkeeping: how long the verdict took to change after a fault (detection) and to
//! come back after the repair (recovery), appended as JSON lines to one file that the
//! benchmarks reuse (`VIGIE_SCENARIO_TIMES`, default `target/scenario-times.jsonl`).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

/// Where the figures go.
pub fn times_file() -> PathBuf {
    std::env::var_os("VIGIE_SCENARIO_TIMES")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::repo_root().join("target/scenario-times.jsonl"))
}

/// One scenario's clock.
#[derive(Debug)]
pub struct Timer {
    scenario: String,
    interval: Duration,
    fault_at: Instant,
    detected: Option<Duration>,
    repair_at: Option<Instant>,
    recovered: Option<Duration>,
    notes: Vec<String>,
}

impl Timer {
    /// Starts the clock at the fault.
    pub fn fault(scenario: &str, interval: Duration) -> Timer {
        Timer {
            scenario: scenario.to_string(),
            interval,
            fault_at: Instant::now(),
            detected: None,
            repair_at: None,
            recovered: None,
            notes: Vec::new(),
        }
    }

    /// The verdict showed the fault.
    pub fn detected(&mut self) -> Duration {
        let d = self.fault_at.elapsed();
        self.detected.get_or_insert(d);
        d
    }

    /// The repair starts now.
    pub fn repair(&mut self) {
        self.repair_at = Some(Instant::now());
    }

    /// The verdict is back to healthy.
    pub fn recovered(&mut self) {
        if let Some(at) = self.repair_at {
            self.recovered = Some(at.elapsed());
        }
    }

    pub fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    /// Appends the figures to the times file (and prints them).
    pub fn record(self) {
        let line = json!({
            "scenario": self.scenario,
            "interval_s": self.interval.as_secs_f64(),
            "profile": std::fs::read_to_string(crate::lab_dir().join("profile")).unwrap_or_default().trim(),
            "detected_s": self.detected.map(|d| (d.as_secs_f64() * 100.0).round() / 100.0),
            "recovered_s": self.recovered.map(|d| (d.as_secs_f64() * 100.0).round() / 100.0),
            "notes": self.notes,
        });
        eprintln!("scenario times: {line}");
        let path = times_file();
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
        {
            let _ = writeln!(f, "{line}");
        }
    }
}
