//! Scenario bookkeeping: how long the verdict took to change after a fault (detection) and to
//! come back after the repair (recovery), appended as JSON lines to one file that the
//! benchmarks reuse (`VIGIE_SCENARIO_TIMES`, default `target/scenario-times.jsonl`). Beside them,
//! the reference clocks of the same run: when HAProxy's own checks changed a server's state and
//! when Patroni's `/cluster` changed (a new leader, a member's state), polled every 100 ms.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
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
    reference: Arc<Mutex<Reference>>,
    watcher: tokio::task::JoinHandle<()>,
}

/// When the daemons' own view first changed after the fault.
#[derive(Debug, Default, Clone)]
struct Reference {
    haproxy: Option<Duration>,
    patroni: Option<Duration>,
    patroni_leader: Option<Duration>,
}

/// HAProxy's server states (`proxy/server=status`), sorted.
async fn haproxy_states() -> Option<Vec<String>> {
    let csv =
        vigie_agent::probe::haproxy_backends::read_socket(&crate::lab_dir().join("haproxy.sock"))
            .await
            .ok()?;
    let rows = vigie_agent::probe::haproxy_backends::parse_stat_csv(&csv).ok()?;
    let mut s: Vec<String> = rows
        .iter()
        .map(|r| format!("{}/{}={}", r.proxy, r.server, r.status))
        .collect();
    s.sort();
    Some(s)
}

/// Patroni's leader and member states, from the first node that answers.
async fn patroni_view(http: &reqwest::Client) -> Option<(Option<String>, Vec<String>)> {
    let doc = crate::patroni_cluster(http).await?;
    let members = doc["members"].as_array().cloned().unwrap_or_default();
    let leader = members
        .iter()
        .find(|m| m["role"] == "leader" || m["role"] == "standby_leader")
        .and_then(|m| m["name"].as_str().map(String::from));
    let mut states: Vec<String> = members
        .iter()
        .map(|m| format!("{}={}/{}", m["name"], m["role"], m["state"]))
        .collect();
    states.sort();
    Some((leader, states))
}

/// Polls HAProxy and Patroni from the fault on, noting the first change of each.
async fn watch(fault_at: Instant, reference: Arc<Mutex<Reference>>) {
    let http = crate::lab_http(Duration::from_millis(500));
    let (h0, p0) = (haproxy_states().await, patroni_view(&http).await);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        let (h, p) = (haproxy_states().await, patroni_view(&http).await);
        let at = fault_at.elapsed();
        let Ok(mut r) = reference.lock() else { return };
        if h != h0 {
            r.haproxy.get_or_insert(at);
        }
        if let (Some((l0, s0)), Some((l, s))) = (&p0, &p) {
            if s != s0 {
                r.patroni.get_or_insert(at);
            }
            if l.is_some() && l != l0 {
                r.patroni_leader.get_or_insert(at);
            }
        } else if p0.is_some() != p.is_some() {
            r.patroni.get_or_insert(at);
        }
        if r.haproxy.is_some() && r.patroni.is_some() && r.patroni_leader.is_some() {
            return;
        }
    }
}

impl Timer {
    /// Starts the clock at the fault.
    /// Starts the clock at the fault, and the reference clocks (inside a tokio runtime).
    pub fn fault(scenario: &str, interval: Duration) -> Timer {
        let fault_at = Instant::now();
        let reference = Arc::new(Mutex::new(Reference::default()));
        let watcher = tokio::spawn(watch(fault_at, reference.clone()));
        Timer {
            scenario: scenario.to_string(),
            interval,
            fault_at,
            detected: None,
            repair_at: None,
            recovered: None,
            notes: Vec::new(),
            reference,
            watcher,
        }
    }

    /// The verdict showed the fault.
    pub fn detected(&mut self) -> Duration {
        let d = self.fault_at.elapsed();
        self.detected.get_or_insert(d);
        d
    }

    /// The repair starts now (the reference clocks stop: they time the fault only).
    pub fn repair(&mut self) {
        self.repair_at = Some(Instant::now());
        self.watcher.abort();
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
        self.watcher.abort();
        let reference = self.reference.lock().map(|r| r.clone()).unwrap_or_default();
        let secs = |d: Option<Duration>| d.map(|d| (d.as_secs_f64() * 100.0).round() / 100.0);
        let line = json!({
            "scenario": self.scenario,
            "interval_s": self.interval.as_secs_f64(),
            "profile": std::fs::read_to_string(crate::lab_dir().join("profile")).unwrap_or_default().trim(),
            "detected_s": secs(self.detected),
            "recovered_s": secs(self.recovered),
            "haproxy_changed_s": secs(reference.haproxy),
            "patroni_changed_s": secs(reference.patroni),
            "patroni_leader_changed_s": secs(reference.patroni_leader),
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
