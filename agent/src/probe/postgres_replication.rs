//! `postgres.replication`: on the primary, `pg_stat_replication` against the replicas expected
//! (from config, or by default every other member Patroni lists) — which are streaming, which
//! are missing, and how far behind each one's replay is.

use vigie_proto::Facts;
use vigie_proto::v1::{PostgresReplicationFacts, WalSender};

use std::collections::HashMap;

use super::patroni_node::Role;
use super::postgres_session::{Lsn, PgContext, SyncRep, SyncWaiter};
use super::{Outcome, ProbeId};
use crate::result::ProbeResult;

/// Since when each commit has been seen waiting for a synchronous standby (the same session
/// and transaction in consecutive cycles), on the server's clock. One sample cannot tell a
/// commit that hangs from one caught in its milliseconds of confirmation, nor (by
/// `query_start`) from a long statement or a procedure committing as it goes.
#[derive(Debug, Default)]
pub struct SyncWaits {
    first_seen: HashMap<SyncWaiter, f64>,
}

impl SyncWaits {
    /// Remembers this cycle's waiters (forgetting the others) and fills the longest wait.
    pub fn observe(&mut self, sync: &mut SyncRep, now: f64) {
        let mut seen = HashMap::with_capacity(sync.waiting.len());
        for w in &sync.waiting {
            let since = self.first_seen.get(w).copied().unwrap_or(now);
            seen.insert(w.clone(), since);
        }
        sync.longest_wait_s = seen
            .values()
            .map(|since| (now - since).max(0.0))
            .reduce(f64::max);
        self.first_seen = seen;
    }
}

pub fn judge(ctx: &PgContext<'_>) -> ProbeResult {
    let id = ProbeId::PostgresReplication;
    let snap = ctx.snapshot;
    let streaming: Vec<&str> = snap
        .replication
        .iter()
        .filter(|s| s.state.as_deref() == Some("streaming"))
        .filter_map(|s| s.application_name.as_deref())
        .collect();
    let senders: Vec<WalSender> = snap
        .replication
        .iter()
        .map(|s| {
            let replay = s.replay_lsn.as_deref().and_then(Lsn::parse);
            let lag = match (snap.current_lsn, replay) {
                (Some(cur), Some(rep)) => Some(cur.0.saturating_sub(rep.0)),
                _ => None,
            };
            WalSender {
                application_name: s.application_name.clone(),
                client_addr: s.client_addr.clone(),
                state: s.state.clone(),
                sync_state: s.sync_state.clone(),
                sent_lsn: s.sent_lsn.as_deref().and_then(Lsn::parse).map(|l| l.0),
                replay_lsn: replay.map(|l| l.0),
                replay_lag_bytes: lag,
                replay_lag_s: s.replay_lag_s,
            }
        })
        .collect();
    let facts = |expected: Option<usize>, missing: Vec<String>| {
        Facts::PostgresReplication(PostgresReplicationFacts {
            streaming: streaming.len() as u32,
            senders: senders.clone(),
            expected: expected.map(|e| e as u32),
            missing,
            synchronous_standby_names: Some(snap.sync.standby_names.clone()),
            synchronous_commit: Some(snap.sync.commit.clone()),
            sync_waiters: Some(u32::try_from(snap.sync.waiters).unwrap_or(u32::MAX)),
            longest_sync_wait_s: snap.sync.longest_wait_s,
        })
    };
    let base = |r: ProbeResult| r.with(facts(None, Vec::new()));
    match ctx.role {
        None => {
            return base(id.unknown(format!(
                "{} walsenders streaming; Patroni's role for this node is unknown",
                streaming.len()
            )));
        }
        Some(Role::Primary) => {}
        Some(role) => {
            return base(id.ok(format!(
                "{}: no replicas expected to stream from it{}",
                role.as_str(),
                if streaming.is_empty() {
                    String::new()
                } else {
                    format!(" ({} cascading)", streaming.len())
                }
            )));
        }
    }
    let expected_names: Option<Vec<String>> = ctx
        .cluster
        .map(|c| c.others(ctx.node).map(|m| m.name.clone()).collect());
    let expected = match (ctx.cfg.expected_replicas, &expected_names) {
        (Some(n), _) => n as usize,
        (None, Some(names)) => names.len(),
        (None, None) => {
            return base(id.unknown(format!(
                "{} replicas streaming; cannot tell how many to expect: Patroni's member list is unavailable",
                streaming.len()
            )));
        }
    };
    let missing: Vec<String> = expected_names
        .iter()
        .flatten()
        .filter(|n| !streaming.contains(&n.as_str()))
        .cloned()
        .collect();
    let mut names = streaming.clone();
    names.sort_unstable();
    let listed = if names.is_empty() {
        String::new()
    } else {
        format!(": {}", names.join(", "))
    };
    let mut text = format!("{}/{expected} replicas streaming{listed}", streaming.len());
    // Said here, judged by the collector (`[verdict] syncrep_wait_critical`).
    if snap.sync.waiters > 0 {
        text.push_str(&format!(
            "; {} commits wait for a synchronous standby (longest {:.1}s, synchronous_standby_names '{}')",
            snap.sync.waiters,
            snap.sync.longest_wait_s.unwrap_or(0.0),
            snap.sync.standby_names
        ));
    }
    let result = if streaming.len() == expected {
        id.ok(text)
    } else if streaming.is_empty() {
        id.critical(text)
    } else if streaming.len() < expected {
        id.warning(format!("{text}; missing {}", missing.join(", ")))
    } else {
        id.warning(format!("{text}; more than expected"))
    };
    result.with(facts(Some(expected), missing))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::patroni_cluster::{ClusterView, Member};
    use crate::probe::postgres_session::tests_support::{cfg, sender, snapshot};
    use crate::result::Status;

    fn cluster(names: &[&str]) -> ClusterView {
        ClusterView {
            members: names
                .iter()
                .map(|n| Member {
                    name: n.to_string(),
                    host: None,
                    role: if *n == "node1" {
                        Role::Primary
                    } else {
                        Role::Replica
                    },
                    state: "running".into(),
                    timeline: None,
                    lag: None,
                    sync_standby: false,
                })
                .collect(),
            paused: false,
        }
    }

    /// Senders (name, state), role, cluster view, config, expected status, expected text.
    type Case<'a> = (
        Vec<(&'a str, &'a str)>,
        Option<Role>,
        Option<&'a ClusterView>,
        &'a crate::config::PostgresConfig,
        Status,
        &'a str,
    );

    #[test]
    fn judge_table() {
        let three = cluster(&["node1", "node2", "node3"]);
        let mut fixed = cfg();
        let cfg = cfg();
        fixed.expected_replicas = Some(1);
        let table: Vec<Case<'_>> = vec![
            (
                vec![("node2", "streaming"), ("node3", "streaming")],
                Some(Role::Primary),
                Some(&three),
                &cfg,
                Status::Ok,
                "2/2 replicas streaming: node2, node3",
            ),
            (
                vec![("node2", "streaming"), ("node3", "catchup")],
                Some(Role::Primary),
                Some(&three),
                &cfg,
                Status::Warning,
                "missing node3",
            ),
            (
                vec![],
                Some(Role::Primary),
                Some(&three),
                &cfg,
                Status::Critical,
                "0/2",
            ),
            (
                vec![("node2", "streaming")],
                Some(Role::Primary),
                None,
                &fixed,
                Status::Ok,
                "1/1",
            ),
            (
                vec![("node2", "streaming")],
                Some(Role::Primary),
                None,
                &cfg,
                Status::Unknown,
                "cannot tell",
            ),
            (
                vec![],
                Some(Role::Replica),
                Some(&three),
                &cfg,
                Status::Ok,
                "replica",
            ),
            (vec![], None, Some(&three), &cfg, Status::Unknown, "unknown"),
        ];
        for (senders, role, cluster, cfg, status, text) in table {
            let mut snap = snapshot();
            snap.in_recovery = false;
            snap.current_lsn = Some(Lsn(0x500_0000));
            snap.replication = senders.iter().map(|(n, s)| sender(n, s)).collect();
            let ctx = PgContext {
                snapshot: &snap,
                role: role.as_ref(),
                cluster,
                node: "node1",
                cfg,
            };
            let r = judge(&ctx);
            assert_eq!(r.status, status, "{}", r.message);
            assert!(r.message.contains(text), "{}", r.message);
        }
    }

    #[test]
    fn lag_per_sender_is_current_minus_replay() {
        let cfg = cfg();
        let three = cluster(&["node1", "node2"]);
        let mut snap = snapshot();
        snap.current_lsn = Some(Lsn(0x500_0000));
        snap.replication = vec![sender("node2", "streaming")];
        let ctx = PgContext {
            snapshot: &snap,
            role: Some(&Role::Primary),
            cluster: Some(&three),
            node: "node1",
            cfg: &cfg,
        };
        let r = judge(&ctx);
        assert_eq!(r.json()["senders"][0]["replay_lag_bytes"], 0x100_0000);
    }
}

#[cfg(test)]
mod sync_tests {
    use super::*;

    #[test]
    fn a_wait_counts_from_when_the_same_commit_was_first_seen() {
        let mut waits = SyncWaits::default();
        let waiter = |pid, xid: &str| SyncWaiter {
            pid,
            xid: Some(xid.into()),
        };
        let mut sync = SyncRep {
            waiting: vec![waiter(10, "700")],
            ..Default::default()
        };
        waits.observe(&mut sync, 100.0);
        assert_eq!(sync.longest_wait_s, Some(0.0));
        // Still waiting a cycle later; a second session joins.
        sync.waiting = vec![waiter(10, "700"), waiter(11, "701")];
        waits.observe(&mut sync, 101.5);
        assert_eq!(sync.longest_wait_s, Some(1.5));
        // The same session committing its next transaction is a new, short wait.
        sync.waiting = vec![waiter(10, "702")];
        waits.observe(&mut sync, 102.5);
        assert_eq!(sync.longest_wait_s, Some(0.0));
        sync.waiting.clear();
        waits.observe(&mut sync, 103.0);
        assert_eq!(sync.longest_wait_s, None);
    }
    use crate::probe::patroni_cluster::ClusterView;
    use crate::probe::postgres_session::tests_support::{cfg, sender, snapshot};

    #[test]
    fn commits_waiting_for_a_sync_standby_are_reported_with_the_settings() {
        let cfg = cfg();
        let view = ClusterView {
            members: Vec::new(),
            paused: false,
        };
        let mut snap = snapshot();
        snap.in_recovery = false;
        snap.current_lsn = Some(Lsn(0x500_0000));
        snap.replication = vec![sender("node2", "streaming")];
        snap.sync.standby_names = "\"node2\"".into();
        snap.sync.waiters = 3;
        snap.sync.longest_wait_s = Some(12.5);
        let ctx = PgContext {
            snapshot: &snap,
            role: Some(&Role::Primary),
            cluster: Some(&view),
            node: "node1",
            cfg: &cfg,
        };
        let r = judge(&ctx);
        let f = r.json();
        assert_eq!(f["synchronous_standby_names"], "\"node2\"");
        assert_eq!(f["synchronous_commit"], "on");
        assert_eq!(f["sync_waiters"], 3);
        assert_eq!(f["longest_sync_wait_s"], 12.5);
        assert!(
            r.message
                .contains("3 commits wait for a synchronous standby (longest 12.5s"),
            "{}",
            r.message
        );
    }
}
