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

/// Per-cluster memory of the open findings.
#[derive(Debug, Default)]
pub struct FindingHistory {
    open: HashMap<(Code, Vec<String>), i64>,
    last_health: Option<Health>,
    last_leader: Option<Option<String>>,
}

impl FindingHistory {
    /// A history that already knows these open findings (code, nodes, since), e.g. from before a
    /// collector restart.
    pub fn restore(open: impl IntoIterator<Item = (Code, Vec<String>, i64)>) -> FindingHistory {
        FindingHistory {
            open: open.into_iter().map(|(c, n, s)| ((c, n), s)).collect(),
            ..FindingHistory::default()
        }
    }

    /// Sets `since_ms` and `pending` on the verdict's findings, recomputes its health, and
    /// returns what changed since the previous call.
    pub fn apply(&mut self, v: &mut Verdict, policy: &Policy) -> Vec<Change> {
        let now = v.evaluated_ms;
        let mut changes = Vec::new();
        let mut seen = HashMap::new();
        for f in &mut v.findings {
            let key = (f.code, f.nodes.clone());
            let since = match self.open.get(&key) {
                Some(&s) => s,
                None => {
                    changes.push(Change::FindingOpened { finding: f.clone() });
                    now
                }
            };
            f.since_ms = Some(since);
            f.pending = now - since < policy.grace_ms(f.code).max(f.min_grace_ms);
            seen.insert(key, since);
        }
        // While blind, a finding that is not seen may still hold: it is not called resolved.
        let blind = !v.blind_spots.is_empty();
        for ((code, nodes), since_ms) in &self.open {
            let key = (*code, nodes.clone());
            if seen.contains_key(&key) {
                continue;
            }
            if blind {
                seen.insert(key, *since_ms);
            } else {
                changes.push(Change::FindingResolved {
                    code: *code,
                    nodes: nodes.clone(),
                    since_ms: *since_ms,
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
        if self.last_leader.as_ref() != Some(&v.leader) {
            if let Some(previous) = self.last_leader.take() {
                changes.push(Change::LeaderChanged {
                    from: previous,
                    to: v.leader.clone(),
                });
            }
            self.last_leader = Some(v.leader.clone());
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
        let mut h = FindingHistory::restore([(
            Code::ReplicaNotStreaming,
            vec!["node3".to_string()],
            NOW - 60_000,
        )]);
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
}
