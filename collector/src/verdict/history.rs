//! What a single evaluation cannot know: since when each finding holds, which findings are still
//! inside their grace window, and what changed since the previous evaluation. Pure: `now` comes
//! from the verdict.

use std::collections::HashMap;

use serde::Serialize;

use super::{Code, Finding, Health, Policy, Verdict, health_of};

/// A change between two evaluations of one cluster.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    Verdict {
        from: Option<Health>,
        to: Health,
        leader: Option<String>,
    },
    FindingOpened {
        finding: Finding,
    },
    FindingResolved {
        code: Code,
        nodes: Vec<String>,
        since_ms: i64,
    },
    LeaderChanged {
        from: Option<String>,
        to: Option<String>,
    },
}

/// What is remembered of one open finding.
#[derive(Debug, Clone, Copy)]
struct Open {
    /// Wall clock: shown, persisted.
    since_ms: i64,
    /// Monotonic clock: grace windows are measured on it.
    since_mono_ms: i64,
    /// The newest observation it rested on when it opened (for confirmation).
    first_evidence_ms: Option<i64>,
    /// A later observation still showed it.
    confirmed: bool,
}

/// Per-cluster memory of the open findings.
#[derive(Debug, Default)]
pub struct FindingHistory {
    open: HashMap<(Code, Vec<String>), Open>,
    last_health: Option<Health>,
    last_leader: Option<Option<String>>,
    /// When the leader last changed (monotonic clock).
    leader_changed_mono_ms: Option<i64>,
}

impl FindingHistory {
    /// A history that already knows these open findings (code, nodes, since on the wall
    /// clock), e.g. from before a collector restart; `now` places them on the monotonic clock.
    pub fn restore(
        open: impl IntoIterator<Item = (Code, Vec<String>, i64)>,
        now: crate::clock::Now,
    ) -> FindingHistory {
        FindingHistory {
            open: open
                .into_iter()
                .map(|(c, n, s)| {
                    let o = Open {
                        since_ms: s,
                        since_mono_ms: now.mono_ms - (now.wall_ms - s).max(0),
                        first_evidence_ms: None,
                        confirmed: true,
                    };
                    ((c, n), o)
                })
                .collect(),
            ..FindingHistory::default()
        }
    }

    /// The open findings' keys (code, nodes).
    pub fn open_keys(&self) -> impl Iterator<Item = (Code, Vec<String>)> + '_ {
        self.open.keys().cloned()
    }

    /// Sets `since_ms` and `pending` on the verdict's findings, recomputes its health, and
    /// returns what changed since the previous call.
    pub fn apply(&mut self, v: &mut Verdict, policy: &Policy) -> Vec<Change> {
        let (now, now_mono) = (v.evaluated_ms, v.evaluated_mono_ms);
        let mut changes = Vec::new();
        let leader_change = self.last_leader.as_ref() != Some(&v.leader);
        if leader_change {
            if let Some(previous) = self.last_leader.take() {
                changes.push(Change::LeaderChanged {
                    from: previous,
                    to: v.leader.clone(),
                });
                self.leader_changed_mono_ms = Some(now_mono);
            }
            self.last_leader = Some(v.leader.clone());
        }
        if v.transition.is_none()
            && let Some(at) = self.leader_changed_mono_ms
            && now_mono - at < policy.transition_window_ms
        {
            v.transition = Some(format!(
                "the leader changed {}s ago",
                (now_mono - at) / 1000
            ));
        }
        let in_transition = v.transition.is_some();
        let mut opened = Vec::new();
        let mut seen = HashMap::new();
        for f in &mut v.findings {
            let key = (f.code, f.nodes.clone());
            let newest = f.newest_evidence_ms();
            let mut open = match self.open.get(&key) {
                Some(&o) => o,
                None => {
                    opened.push(f.clone());
                    Open {
                        since_ms: now,
                        since_mono_ms: now_mono,
                        first_evidence_ms: newest,
                        confirmed: false,
                    }
                }
            };
            // Confirmed once a later observation still shows it.
            if newest > open.first_evidence_ms {
                open.confirmed = true;
            }
            let grace = if in_transition {
                policy.grace_ms(f.code).max(f.min_grace_ms)
            } else {
                f.min_grace_ms
            };
            f.since_ms = Some(open.since_ms);
            f.pending = now_mono - open.since_mono_ms < grace || (f.confirm && !open.confirmed);
            seen.insert(key, open);
        }
        for finding in opened {
            let mut finding = finding;
            finding.since_ms = Some(now);
            changes.push(Change::FindingOpened { finding });
        }
        // While blind, a finding that is not seen may still hold: it is not called resolved.
        let blind = !v.blind_spots.is_empty();
        for ((code, nodes), open) in &self.open {
            let key = (*code, nodes.clone());
            if seen.contains_key(&key) {
                continue;
            }
            if blind {
                seen.insert(key, *open);
            } else {
                changes.push(Change::FindingResolved {
                    code: *code,
                    nodes: nodes.clone(),
                    since_ms: open.since_ms,
                });
            }
        }
        self.open = seen;
        v.health = health_of(v);
        if self.last_health != Some(v.health) {
            changes.push(Change::Verdict {
                from: self.last_health,
                to: v.health,
                leader: v.leader.clone(),
            });
            self.last_health = Some(v.health);
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::Status;
    use crate::verdict::evaluate;
    use crate::verdict::testkit::{Lab, NOW};

    #[test]
    fn a_short_no_leader_window_is_pending_then_counts() {
        let policy = Policy::default();
        let mut lab = Lab::healthy();
        for n in ["node1", "node2", "node3"] {
            lab = lab.patch(
                n,
                "patroni.cluster",
                Status::Critical,
                json!({"leader": null}),
            );
        }
        let mut h = FindingHistory::default();
        let mut v = evaluate(&lab.snap, NOW, &policy);
        let changes = h.apply(&mut v, &policy);
        assert_eq!(
            v.health,
            Health::Degraded,
            "inside the grace window: {:?}",
            v.findings
        );
        assert!(changes.iter().any(
            |c| matches!(c, Change::FindingOpened { finding } if finding.code == Code::NoLeader)
        ));
        let mut later = evaluate(&lab.snap, NOW + policy.transition_grace_ms, &policy);
        h.apply(&mut later, &policy);
        assert_eq!(later.health, Health::Critical);
        assert_eq!(later.findings[0].since_ms, Some(NOW));
    }

    #[test]
    fn a_restored_history_keeps_since_and_announces_nothing_new() {
        let policy = Policy::default();
        let lab = Lab::healthy().set(
            "node3",
            "postgres.wal_receiver",
            Status::Critical,
            json!({"present": false}),
        );
        let mut h = FindingHistory::restore(
            [(
                Code::ReplicaNotStreaming,
                vec!["node3".to_string()],
                NOW - 60_000,
            )],
            crate::clock::Now::same(NOW),
        );
        let mut v = evaluate(&lab.snap, NOW, &policy);
        let changes = h.apply(&mut v, &policy);
        assert!(
            !changes
                .iter()
                .any(|c| matches!(c, Change::FindingOpened { .. })),
            "{changes:?}"
        );
        assert_eq!(v.findings[0].since_ms, Some(NOW - 60_000));
    }

    #[test]
    fn nothing_is_called_resolved_while_blind() {
        let policy = Policy::default();
        let broken = Lab::healthy().set(
            "node3",
            "postgres.wal_receiver",
            Status::Critical,
            json!({"present": false}),
        );
        let mut h = FindingHistory::default();
        let mut v = evaluate(&broken.snap, NOW, &policy);
        h.apply(&mut v, &policy);
        // node3's agent goes silent: its finding is no longer computed, but not resolved either.
        let mut v = evaluate(
            &broken.clone().silent("node1", 60_000).snap,
            NOW + 5_000,
            &policy,
        );
        let changes = h.apply(&mut v, &policy);
        assert!(
            !changes
                .iter()
                .any(|c| matches!(c, Change::FindingResolved { .. })),
            "{changes:?}"
        );
        // Data back: still there, with its first `since`.
        let mut v = evaluate(&broken.snap, NOW + 10_000, &policy);
        h.apply(&mut v, &policy);
        let f = v
            .findings
            .iter()
            .find(|f| f.code == Code::ReplicaNotStreaming)
            .expect("finding");
        assert_eq!(f.since_ms, Some(NOW));
    }

    #[test]
    fn split_brain_is_hidden_for_seconds_only() {
        let policy = Policy::default();
        let lab = Lab::healthy().patch(
            "node2",
            "postgres.recovery",
            Status::Critical,
            json!({"in_recovery": false}),
        );
        let mut h = FindingHistory::default();
        let mut first = evaluate(&lab.snap, NOW, &policy);
        h.apply(&mut first, &policy);
        assert_eq!(
            first.health,
            Health::Degraded,
            "two observations one cycle apart"
        );
        // Hidden for one agent interval (5 s in the kit) plus a second at most.
        let mut later = evaluate(&lab.snap, NOW + 6_000, &policy);
        h.apply(&mut later, &policy);
        assert_eq!(later.health, Health::Critical);
    }

    #[test]
    fn resolution_and_leader_change_are_reported() {
        let policy = Policy::default();
        let mut h = FindingHistory::default();
        let broken = Lab::healthy().set(
            "node3",
            "postgres.wal_receiver",
            Status::Critical,
            json!({"present": false}),
        );
        let mut v = evaluate(&broken.snap, NOW, &policy);
        h.apply(&mut v, &policy);
        let mut v = evaluate(&Lab::healthy_with_leader(2).snap, NOW + 5_000, &policy);
        let changes = h.apply(&mut v, &policy);
        assert!(
            changes.iter().any(|c| matches!(
                c,
                Change::FindingResolved {
                    code: Code::ReplicaNotStreaming,
                    ..
                }
            )),
            "{changes:?}"
        );
        assert!(changes.iter().any(|c| matches!(
            c,
            Change::Verdict {
                to: Health::Healthy,
                ..
            }
        )));
        assert!(changes.contains(&Change::LeaderChanged {
            from: Some("node1".into()),
            to: Some("node2".into())
        }));
    }

    fn misrouted() -> Lab {
        Lab::healthy().set(
            "haproxy",
            "haproxy.backends",
            Status::Critical,
            json!({"proxies": [
                {"proxy": "demo_rw", "kind": "rw", "up": ["node1", "node2"], "servers": []},
                {"proxy": "demo_ro", "kind": "ro", "up": ["node2"], "servers": []},
            ]}),
        )
    }

    #[test]
    fn grace_applies_only_while_a_transition_is_visible() {
        let policy = Policy {
            transition_grace_ms: 12_000,
            ..Policy::default()
        };
        // Steady cluster: critical after one observation skew (interval + 1 s), not 12 s.
        let mut h = FindingHistory::default();
        let mut v = evaluate(&misrouted().snap, NOW, &policy);
        h.apply(&mut v, &policy);
        assert_eq!(v.health, Health::Degraded);
        assert_eq!(v.transition, None);
        let mut v = evaluate(&misrouted().snap, NOW + 6_000, &policy);
        h.apply(&mut v, &policy);
        assert_eq!(v.health, Health::Critical, "{:?}", v.findings);
        // A member starting: the transition grace holds.
        let starting = || {
            misrouted().patch(
                "node3",
                "patroni.node",
                Status::Warning,
                json!({"state": "starting", "state_kind": "transitional"}),
            )
        };
        let mut h = FindingHistory::default();
        let mut v = evaluate(&starting().snap, NOW, &policy);
        h.apply(&mut v, &policy);
        assert!(
            v.transition
                .as_deref()
                .is_some_and(|t| t.contains("starting"))
        );
        let mut v = evaluate(&starting().snap, NOW + 6_000, &policy);
        h.apply(&mut v, &policy);
        assert_eq!(v.health, Health::Degraded, "{:?}", v.findings);
        let mut v = evaluate(&starting().snap, NOW + 12_000, &policy);
        h.apply(&mut v, &policy);
        assert_eq!(v.health, Health::Critical);
    }

    #[test]
    fn a_recent_leader_change_and_haproxy_changes_are_transitions() {
        let policy = Policy {
            transition_window_ms: 10_000,
            ..Policy::default()
        };
        let mut h = FindingHistory::default();
        let mut v = evaluate(&Lab::healthy().snap, NOW, &policy);
        h.apply(&mut v, &policy);
        assert_eq!(v.transition, None);
        let mut v = evaluate(&Lab::healthy_with_leader(2).snap, NOW + 1_000, &policy);
        h.apply(&mut v, &policy);
        assert!(
            v.transition
                .as_deref()
                .is_some_and(|t| t.contains("leader changed"))
        );
        let mut v = evaluate(
            &Lab::healthy_with_leader(2).snap,
            NOW + 1_000 + policy.transition_window_ms,
            &policy,
        );
        h.apply(&mut v, &policy);
        assert_eq!(v.transition, None);
        // HAProxy's server changed state 2 s ago (agent interval 5 s): a transition.
        let lab = Lab::healthy().patch(
            "haproxy",
            "haproxy.backends",
            Status::Ok,
            json!({"proxies": [{"proxy": "demo_rw", "kind": "rw", "up": ["node1"],
                    "servers": [{"name": "node1", "status": "UP", "lastchg_s": 2}]}]}),
        );
        assert!(
            evaluate(&lab.snap, NOW, &policy)
                .transition
                .is_some_and(|t| t.contains("HAProxy"))
        );
    }

    #[test]
    fn grace_is_measured_on_the_monotonic_clock() {
        use crate::clock::Now;
        let policy = Policy::default();
        let mut h = FindingHistory::default();
        let mut v = evaluate(&misrouted().snap, NOW, &policy);
        h.apply(&mut v, &policy);
        // The wall clock jumps 15 s forward, 1 s passes: still inside the grace window.
        let later = Now {
            wall_ms: NOW + 16_000,
            mono_ms: NOW + 1_000,
        };
        let mut v = evaluate(&misrouted().snap, later, &policy);
        h.apply(&mut v, &policy);
        assert_eq!(v.health, Health::Degraded, "{:?}", v.findings);
    }
}
