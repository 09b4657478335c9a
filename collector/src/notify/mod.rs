//! Notifications to Alertmanager: open findings become alerts (labels: cluster, code, severity,
//! node — comma-separated when a finding names several; annotations: message, evidence), re-sent on a cadence with `endsAt` ahead so that
//! Alertmanager keeps them firing, and sent once more with `endsAt` = now when they resolve.
//! Flap control: a finding notifies only once it has held for its code's hold time (and is out
//! of its grace window), so a failover's transient findings do not page.
//!
//! The bookkeeping (`Notifier::update`) is pure and runs in the state task; the sender task does
//! the HTTP, always with the latest set (a `watch`: nothing queues up behind a slow Alertmanager).

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::sync::watch;

pub mod webhook;

use crate::verdict::{Code, Finding, Severity, Verdict};

/// How long a finding must hold before it notifies, by code (after its grace window).
pub fn default_hold(code: Code, severity: Severity) -> Duration {
    match code {
        Code::ResourcePressure | Code::LockWaits => Duration::from_secs(300),
        Code::ReplicationLag | Code::AgentStale | Code::ClockSkew => Duration::from_secs(60),
        _ if severity == Severity::Critical => Duration::ZERO,
        _ => Duration::from_secs(30),
    }
}

/// One alert, as Alertmanager's v2 API takes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub labels: Vec<(String, String)>,
    pub message: String,
    pub evidence: String,
    pub starts_ms: i64,
    /// Set once resolved.
    pub ended_ms: Option<i64>,
}

/// A webhook delivery: an alert that started firing or resolved. Its id is stable (cluster,
/// code, nodes, since, state), so a receiver can de-duplicate — also across collector restarts,
/// which keep each finding's `since`.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub id: String,
    pub body: Value,
}

/// Which findings are notifiable, per cluster (pure bookkeeping).
#[derive(Debug, Default)]
pub struct Notifier {
    /// Deliveries produced by the last updates, taken by [`Notifier::take_deliveries`].
    deliveries: Vec<Delivery>,
    holds: HashMap<Code, Duration>,
    /// Alerts by (cluster, code, nodes).
    alerts: HashMap<(String, Code, Vec<String>), Alert>,
    /// How long a resolved alert keeps being sent (so Alertmanager surely hears it).
    keep_resolved: Duration,
}

impl Notifier {
    pub fn new(holds: HashMap<Code, Duration>) -> Notifier {
        Notifier {
            deliveries: Vec::new(),
            holds,
            alerts: HashMap::new(),
            keep_resolved: Duration::from_secs(300),
        }
    }

    fn hold(&self, f: &Finding) -> i64 {
        let d = self
            .holds
            .get(&f.code)
            .copied()
            .unwrap_or_else(|| default_hold(f.code, f.severity));
        i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
    }

    /// Takes a cluster's new verdict; returns whether the alert set changed.
    pub fn update(&mut self, v: &Verdict) -> bool {
        let now = v.evaluated_ms;
        let mut changed = false;
        let mut current = Vec::new();
        for f in &v.findings {
            let since = f.since_ms.unwrap_or(now);
            if f.pending || now - since < self.hold(f) {
                continue;
            }
            let key = (v.cluster.clone(), f.code, f.nodes.clone());
            current.push(key.clone());
            let alert = Alert {
                labels: vec![
                    ("alertname".into(), "VigieFinding".into()),
                    ("cluster".into(), v.cluster.clone()),
                    ("code".into(), f.code.as_str().into()),
                    (
                        "severity".into(),
                        match f.severity {
                            Severity::Critical => "critical".into(),
                            Severity::Warning => "warning".into(),
                        },
                    ),
                    ("node".into(), f.nodes.join(",")),
                ],
                message: f.message.clone(),
                evidence: serde_json::to_string(&f.evidence).unwrap_or_default(),
                starts_ms: since,
                ended_ms: None,
            };
            match self.alerts.get(&key) {
                Some(a) if a.ended_ms.is_none() && a.labels == alert.labels => {}
                _ => {
                    self.deliveries.push(delivery(&alert, "firing", now));
                    self.alerts.insert(key, alert);
                    changed = true;
                }
            }
        }
        let keep = i64::try_from(self.keep_resolved.as_millis()).unwrap_or(i64::MAX);
        let mut resolved = Vec::new();
        let blind = !v.blind_spots.is_empty();
        self.alerts.retain(|key, a| {
            // Another cluster's: kept unless resolved long ago (a forgotten cluster has no
            // update of its own).
            if key.0 != v.cluster {
                return a.ended_ms.is_none_or(|ended| now - ended < keep);
            }
            // While blind, an alert whose finding is not seen may still hold: not resolved.
            if current.contains(key) || (blind && a.ended_ms.is_none()) {
                return true;
            }
            match a.ended_ms {
                None => {
                    a.ended_ms = Some(now);
                    resolved.push(delivery(a, "resolved", now));
                    changed = true;
                    true
                }
                Some(ended) => now - ended < keep,
            }
        });
        self.deliveries.extend(resolved);
        changed
    }

    /// Resolves a forgotten cluster's alerts: those still firing are sent resolved once
    /// (webhooks) and pushed resolved to Alertmanager for as long as any resolved alert is, then
    /// dropped (by a later update of any cluster).
    pub fn forget(&mut self, cluster: &str, now: i64) -> bool {
        let mut resolved = Vec::new();
        for (key, a) in &mut self.alerts {
            if key.0 == cluster && a.ended_ms.is_none() {
                a.ended_ms = Some(now);
                resolved.push(delivery(a, "resolved", now));
            }
        }
        let changed = !resolved.is_empty();
        self.deliveries.extend(resolved);
        changed
    }

    /// The webhook deliveries produced since the last call.
    pub fn take_deliveries(&mut self) -> Vec<Delivery> {
        std::mem::take(&mut self.deliveries)
    }

    /// Every alert to send now.
    pub fn alerts(&self) -> Vec<Alert> {
        let mut v: Vec<Alert> = self.alerts.values().cloned().collect();
        v.sort_by(|a, b| a.labels.cmp(&b.labels));
        v
    }
}

fn delivery(a: &Alert, state: &str, now_ms: i64) -> Delivery {
    let label = |k: &str| {
        a.labels
            .iter()
            .find(|(n, _)| n == k)
            .map_or("", |(_, v)| v.as_str())
    };
    let id = format!(
        "{}:{}:{}:{}:{state}",
        label("cluster"),
        label("code"),
        label("node"),
        a.starts_ms
    );
    let labels: serde_json::Map<String, Value> = a
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let body = json!({
        "delivery_id": id,
        "state": state,
        "labels": labels,
        "message": a.message,
        "evidence": serde_json::from_str::<Value>(&a.evidence).unwrap_or(Value::Null),
        "since": rfc3339(a.starts_ms),
        "at": rfc3339(now_ms),
    });
    Delivery { id, body }
}

fn rfc3339(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

/// The v2 API body for `alerts`, firing ones ending `resend × 4` from `now`.
pub fn body(alerts: &[Alert], now_ms: i64, resend: Duration) -> Value {
    let ahead = i64::try_from(resend.as_millis() * 4).unwrap_or(i64::MAX);
    Value::Array(
        alerts
            .iter()
            .map(|a| {
                // An empty value means "no such label" to Alertmanager: leave it out.
                let labels: serde_json::Map<String, Value> = a
                    .labels
                    .iter()
                    .filter(|(_, v)| !v.is_empty())
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect();
                json!({
                    "labels": labels,
                    "annotations": {"summary": a.message, "evidence": a.evidence},
                    "startsAt": rfc3339(a.starts_ms),
                    "endsAt": rfc3339(a.ended_ms.unwrap_or(now_ms + ahead)),
                })
            })
            .collect(),
    )
}

/// Sends the latest alert set to Alertmanager whenever it changes and every `resend`.
pub async fn run_sender(
    client: reqwest::Client,
    url: reqwest::Url,
    resend: Duration,
    mut alerts: watch::Receiver<Vec<Alert>>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let endpoint = format!("{}/api/v2/alerts", url.as_str().trim_end_matches('/'));
    let mut tick = tokio::time::interval(resend);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tick.tick() => {}
            changed = alerts.changed() => if changed.is_err() { return },
        }
        let set = alerts.borrow_and_update().clone();
        if set.is_empty() {
            continue;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(0))
            .unwrap_or(0);
        match client
            .post(&endpoint)
            .json(&body(&set, now, resend))
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => {
                let status = r.status();
                let why = r.text().await.unwrap_or_default();
                tracing::warn!(%status, reason = %why.trim(), "Alertmanager refused the alerts");
            }
            Err(e) => tracing::warn!(error = %e, "Cannot reach Alertmanager"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::Health;

    fn verdict(now: i64, findings: Vec<Finding>) -> Verdict {
        Verdict {
            cluster: "demo".into(),
            health: Health::Critical,
            leader: None,
            findings,
            blind_spots: vec![],
            transition: None,
            replication: vec![],
            evaluated_ms: now,
            evaluated_mono_ms: now,
        }
    }

    fn finding(code: Code, severity: Severity, since: i64) -> Finding {
        let mut f = Finding::new(code, severity, vec!["node1".into()], "msg".into());
        f.since_ms = Some(since);
        f
    }

    #[test]
    fn holds_pending_and_resolution() {
        let mut n = Notifier::new(HashMap::new());
        // A warning younger than its hold does not notify; a critical does at once.
        assert!(!n.update(&verdict(
            10_000,
            vec![finding(Code::ReplicaNotStreaming, Severity::Warning, 0)]
        )));
        assert!(n.update(&verdict(
            10_000,
            vec![finding(Code::SplitBrain, Severity::Critical, 9_000)]
        )));
        assert_eq!(n.alerts().len(), 1);
        // Pending (inside its grace window): no notification.
        let mut p = finding(Code::NoLeader, Severity::Critical, 10_000);
        p.pending = true;
        let mut m = Notifier::new(HashMap::new());
        assert!(!m.update(&verdict(10_000, vec![p])));
        // The same alert again changes nothing; its disappearance resolves it once.
        assert!(!n.update(&verdict(
            11_000,
            vec![finding(Code::SplitBrain, Severity::Critical, 9_000)]
        )));
        assert!(n.update(&verdict(12_000, vec![])));
        assert_eq!(n.alerts()[0].ended_ms, Some(12_000));
        assert!(!n.update(&verdict(13_000, vec![])));
        let body = body(&n.alerts(), 13_000, Duration::from_secs(30));
        assert_eq!(body[0]["labels"]["code"], "SPLIT_BRAIN");
        assert_eq!(body[0]["endsAt"], "1970-01-01T00:00:12.000Z");
        let d = n.take_deliveries();
        let states: Vec<&str> = d.iter().filter_map(|x| x.body["state"].as_str()).collect();
        assert_eq!(states, ["firing", "resolved"]);
        assert_eq!(d[0].id, "demo:SPLIT_BRAIN:node1:9000:firing");
        assert!(n.take_deliveries().is_empty());
        // Long after, the resolved alert is forgotten.
        n.update(&verdict(1_000_000, vec![]));
        assert!(n.alerts().is_empty());
    }

    #[test]
    fn a_forgotten_cluster_s_alerts_are_sent_resolved_then_dropped() {
        let mut n = Notifier::new(HashMap::new());
        assert!(n.update(&verdict(
            10_000,
            vec![finding(Code::SplitBrain, Severity::Critical, 9_000)]
        )));
        n.take_deliveries();
        assert!(n.forget("demo", 20_000));
        // Still pushed, resolved, so that Alertmanager ends it now rather than at its endsAt.
        assert_eq!(n.alerts().len(), 1);
        assert_eq!(n.alerts()[0].ended_ms, Some(20_000));
        let d = n.take_deliveries();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].body["state"], "resolved");
        // Forgetting it again resolves nothing twice.
        assert!(!n.forget("demo", 21_000));
        // Another cluster's update, long after, drops it.
        let mut other = verdict(1_000_000, vec![]);
        other.cluster = "other".into();
        n.update(&other);
        assert!(n.alerts().is_empty());
    }
}
