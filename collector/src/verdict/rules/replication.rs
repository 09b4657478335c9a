//! REPLICA_NOT_STREAMING, REPLICA_COUNT_MISMATCH, REPLICATION_LAG, TIMELINE_MISMATCH,
//! WRONG_UPSTREAM: every replica streams from the current leader on its timeline, the leader's
//! walsenders match the replicas' receivers, and lag is judged across nodes: bytes are the
//! leader's current LSN minus the replica's replay LSN, seconds are how long ago the leader was
//! where the replica has received or replayed to (from the leader's LSN series). A stream whose
//! receiver gets nothing while the leader moves on has stalled, whatever the write rate.

use serde::Serialize;

use crate::model::Passed;
use crate::model::ProbeId;
use crate::verdict::view::{NodeView, View};
use crate::verdict::{Code, Finding, Severity};
use vigie_proto::probes::human_bytes;

/// One replica's lag, measured across nodes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplicaLag {
    pub node: String,
    /// The leader's current LSN minus the replica's replay LSN.
    pub lag_bytes: Option<u64>,
    /// The leader's current LSN minus what the replica has received.
    pub receive_lag_bytes: Option<u64>,
    /// How long ago the leader was where the replica's received WAL ends.
    pub receive_lag_s: Option<f64>,
    /// How long ago the leader was where the replica's replay is.
    pub replay_lag_s: Option<f64>,
    /// The seconds are lower bounds: the leader's history kept is shorter than the lag.
    pub at_least: bool,
    /// Age of the last message the replica's WAL receiver got from its sender.
    pub last_msg_age_s: Option<f64>,
}

/// Every fresh replica's lag behind Patroni's leader.
pub fn lags(view: &View<'_>) -> Vec<ReplicaLag> {
    let Some(leader_name) = view.patroni_leader() else {
        return Vec::new();
    };
    let leader = view.node(leader_name).filter(|n| n.fresh);
    view.fresh()
        .filter(|n| n.is_db() && n.name() != leader_name && n.in_recovery() == Some(true))
        .filter_map(|r| measure(leader, r))
        .collect()
}

/// `r`'s lag behind `leader` (whose SQL may be unobserved: then only the replica's own view).
fn measure(leader: Option<&NodeView<'_>>, r: &NodeView<'_>) -> Option<ReplicaLag> {
    let obs = r.result(ProbeId::PostgresReplicationLag)?;
    let own = obs.facts.as_ref()?.postgres_replication_lag()?;
    let replay = own.replay_lsn;
    // What was replayed was received: a standby just restarted reports a receive position
    // behind its replay until its receiver has streamed something.
    let receive = own.receive_lsn.max(replay);
    let last_msg_age_s = r.wal_receiver().and_then(|w| w.last_msg_age_s);
    let series = leader
        .filter(|l| l.result(ProbeId::PostgresReplicationLag).is_some())
        .map(|l| &*l.state.lsn_series);
    let latest = series.and_then(|s| s.latest());
    let Some((_, leader_lsn)) = latest else {
        // No cross-node figure: the replica's own (receive − replay), no seconds.
        return Some(ReplicaLag {
            node: r.name().to_string(),
            lag_bytes: own.lag_bytes,
            receive_lag_bytes: None,
            receive_lag_s: None,
            replay_lag_s: None,
            at_least: false,
            last_msg_age_s,
        });
    };
    let series = series?;
    let mut at_least = false;
    let mut seconds = |lsn: Option<u64>| -> Option<f64> {
        let ms = match series.passed(lsn?) {
            Passed::Never => 0,
            Passed::At(t) => obs.observed_mono_ms - t,
            Passed::Before(t) => {
                at_least = true;
                obs.observed_mono_ms - t
            }
        };
        Some((ms.max(0) as f64 / 100.0).round() / 10.0)
    };
    let receive_lag_s = seconds(receive);
    let replay_lag_s = seconds(replay);
    Some(ReplicaLag {
        node: r.name().to_string(),
        lag_bytes: replay.map(|rp| leader_lsn.saturating_sub(rp)),
        receive_lag_bytes: receive.map(|rc| leader_lsn.saturating_sub(rc)),
        receive_lag_s,
        replay_lag_s,
        at_least,
        last_msg_age_s,
    })
}

pub fn check(view: &View<'_>, findings: &mut Vec<Finding>) {
    let Some(leader_name) = view.patroni_leader() else {
        return;
    };
    let leader = view.node(leader_name).filter(|n| n.fresh);
    let members = view.patroni_members();
    let leader_host = members.get(leader_name).and_then(|m| m.host.clone());
    let leader_tli = leader.and_then(|l| l.recovery()).and_then(|r| r.timeline);

    // The leader's walsenders against the replicas expected (its agent's `expected_replicas`,
    // else every other member Patroni lists), judged here from the facts.
    if let Some(l) = leader
        && let Some(rep) = l.replication()
        && let Some(expected) = rep.expected
        && rep.streaming != expected
    {
        let mut text = format!(
            "leader {leader_name}: {}/{expected} replicas streaming",
            rep.streaming
        );
        if !rep.missing.is_empty() {
            text.push_str(&format!("; missing {}", rep.missing.join(", ")));
        } else if rep.streaming > expected {
            text.push_str("; more than expected");
        }
        // Writes still work: redundancy is what is lost (degraded), whatever the count.
        let mut nodes = vec![leader_name.to_string()];
        nodes.extend(rep.missing.iter().cloned());
        findings.push(
            Finding::new(Code::ReplicaCountMismatch, Severity::Warning, nodes, text)
                .with_all(l.evidence(ProbeId::PostgresReplication)),
        );
    }

    for r in view
        .fresh()
        .filter(|n| n.is_db() && n.name() != leader_name)
    {
        let name = r.name().to_string();
        match r.in_recovery() {
            Some(true) => {}
            Some(false) => continue, // writable: SPLIT_BRAIN or LEADER_NOT_WRITABLE say it
            None => {
                // SQL unreadable on a replica: the leader's walsenders tell whether it streams.
                let missing = leader
                    .and_then(|l| l.replication())
                    .is_some_and(|r| r.missing.contains(&name));
                if missing {
                    findings.push(
                        Finding::new(
                            Code::ReplicaNotStreaming,
                            Severity::Warning,
                            vec![name.clone()],
                            format!("replica {name} is not streaming: the leader {leader_name} has no walsender for it"),
                        )
                        .with_all(leader.and_then(|l| l.evidence(ProbeId::PostgresReplication)))
                        .with_all(r.evidence(ProbeId::PostgresRecovery)),
                    );
                }
                continue;
            }
        }
        let receiver = r.result(ProbeId::PostgresWalReceiver);
        let streaming = r.wal_receiver().and_then(|w| w.status.as_deref()) == Some("streaming");
        if !streaming {
            findings.push(
                Finding::new(
                    Code::ReplicaNotStreaming,
                    Severity::Warning,
                    vec![name.clone()],
                    format!(
                        "replica {name} is not streaming: {}",
                        receiver.map_or("no WAL receiver", |o| o.message.as_str())
                    ),
                )
                .with_all(r.evidence(ProbeId::PostgresWalReceiver))
                .with_all(leader.and_then(|l| l.evidence(ProbeId::PostgresReplication))),
            );
            continue;
        }
        let sender = r.wal_receiver().and_then(|w| w.sender_host.as_deref());
        if let (Some(sender), Some(lh)) = (sender, leader_host.as_deref())
            && sender != lh
        {
            findings.push(
                Finding::new(Code::WrongUpstream, Severity::Warning, vec![name.clone()], format!("replica {name} streams from {sender}, not from the leader {leader_name} ({lh})"))
                    .with_all(r.evidence(ProbeId::PostgresWalReceiver)),
            );
        }
        let tli = r
            .wal_receiver()
            .and_then(|w| w.received_tli)
            .and_then(|t| u64::try_from(t).ok());
        if let (Some(t), Some(lt)) = (tli, leader_tli)
            && t != lt
        {
            findings.push(
                Finding::new(
                    Code::TimelineMismatch,
                    Severity::Warning,
                    vec![name.clone()],
                    format!("replica {name} is on timeline {t}, the leader on {lt}"),
                )
                .with_all(r.evidence(ProbeId::PostgresWalReceiver))
                .with_all(leader.and_then(|l| l.evidence(ProbeId::PostgresRecovery))),
            );
        }
        let Some(lag) = measure(leader, r) else {
            continue;
        };
        let p = view.policy;
        // A stalled stream: the leader passed what the replica received a while ago, and the
        // receiver has heard nothing since — the TCP session may look fine for a minute.
        let stall_s = (p.stall_min_ms.max(r.state.interval_ms as i64 / 2)) as f64 / 1000.0;
        if let (Some(behind_s), Some(silent_s)) = (lag.receive_lag_s, lag.last_msg_age_s)
            && behind_s >= stall_s
            && silent_s >= stall_s
        {
            findings.push(
                Finding::new(
                    Code::ReplicaNotStreaming,
                    Severity::Warning,
                    vec![name.clone()],
                    format!(
                        "replica {name}'s WAL stream has stalled: nothing received from its sender for {silent_s:.1}s while the leader {leader_name} went {} ({}{behind_s:.1}s) past what it received",
                        human_bytes(lag.receive_lag_bytes.unwrap_or(0)),
                        if lag.at_least { "at least " } else { "" },
                    ),
                )
                .with_all(r.evidence(ProbeId::PostgresWalReceiver))
                .with_all(r.evidence(ProbeId::PostgresReplicationLag))
                .with_all(leader.and_then(|l| l.evidence(ProbeId::PostgresReplicationLag))),
            );
            continue;
        }
        let bytes = lag.lag_bytes.unwrap_or(0);
        // Seconds across nodes when the leader is observed; else the replica's own measure.
        let own_seconds = r.lag().and_then(|l| l.lag_seconds);
        let seconds = lag.replay_lag_s.or(own_seconds).unwrap_or(0.0);
        let severity = if bytes >= p.lag_critical_bytes || seconds >= p.lag_critical_s {
            Some(Severity::Critical)
        } else if bytes >= p.lag_warning_bytes || seconds >= p.lag_warning_s {
            Some(Severity::Warning)
        } else {
            None
        };
        if let Some(severity) = severity {
            findings.push(
                Finding::new(
                    Code::ReplicationLag,
                    severity,
                    vec![name.clone()],
                    format!(
                        "replica {name} lags {bytes} bytes ({}, replay {}{seconds:.1}s) behind the leader {leader_name}",
                        human_bytes(bytes),
                        if lag.at_least { "at least " } else { "" },
                    ),
                )
                .with_all(r.evidence(ProbeId::PostgresReplicationLag))
                .with_all(leader.and_then(|l| l.evidence(ProbeId::PostgresReplicationLag))),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::model::Status;
    use crate::verdict::testkit::{Lab, check_cases};
    use crate::verdict::{Code, Health};

    #[test]
    fn table() {
        let cases = [
            ("healthy", Lab::healthy(), Health::Healthy, None, &[][..]),
            (
                "replica without receiver",
                Lab::healthy()
                    .set(
                        "node3",
                        "postgres.wal_receiver",
                        Status::Critical,
                        json!({"present": false}),
                    )
                    .patch(
                        "node1",
                        "postgres.replication",
                        Status::Warning,
                        json!({"streaming": 1, "missing": ["node3"]}),
                    ),
                Health::Degraded,
                Some(Code::ReplicaNotStreaming),
                &["node3"][..],
            ),
            (
                "replica PostgreSQL down, the leader misses it",
                Lab::healthy()
                    .sql_failed("node3", "connection refused")
                    .patch(
                        "node1",
                        "postgres.replication",
                        Status::Warning,
                        json!({"streaming": 1, "missing": ["node3"]}),
                    ),
                Health::Degraded,
                Some(Code::ReplicaNotStreaming),
                &["node3"][..],
            ),
            (
                "leader misses a replica",
                Lab::healthy().patch(
                    "node1",
                    "postgres.replication",
                    Status::Warning,
                    json!({"streaming": 1, "missing": ["node2"]}),
                ),
                Health::Degraded,
                Some(Code::ReplicaCountMismatch),
                &["node1", "node2"][..],
            ),
            (
                // The count is the collector's to judge, from the facts: whatever status the
                // leader's agent gave it (its thresholds serve its own `--once` check).
                "leader misses a replica, its agent's status ok",
                Lab::healthy().patch(
                    "node1",
                    "postgres.replication",
                    Status::Ok,
                    json!({"streaming": 1, "missing": ["node2"]}),
                ),
                Health::Degraded,
                Some(Code::ReplicaCountMismatch),
                &["node1", "node2"][..],
            ),
            (
                "streaming from a replica",
                Lab::healthy().patch(
                    "node3",
                    "postgres.wal_receiver",
                    Status::Ok,
                    json!({"sender_host": "127.0.0.12"}),
                ),
                Health::Degraded,
                Some(Code::WrongUpstream),
                &["node3"][..],
            ),
            (
                "old timeline",
                Lab::healthy().patch(
                    "node2",
                    "postgres.wal_receiver",
                    Status::Ok,
                    json!({"received_tli": 0}),
                ),
                Health::Degraded,
                Some(Code::TimelineMismatch),
                &["node2"][..],
            ),
            (
                "replay far behind the leader",
                Lab::healthy().patch(
                    "node2",
                    "postgres.replication_lag",
                    Status::Ok,
                    json!({"replay_lsn": 10_000_000u64}),
                ),
                Health::Degraded,
                Some(Code::ReplicationLag),
                &["node2"][..],
            ),
            (
                // Replay sits where the leader was 400 s ago: critical, though few bytes.
                "true lag in seconds",
                Lab::healthy()
                    .leader_positions("node1", &[(401_000, 49_999_000), (400_000, 50_000_000)])
                    .patch(
                        "node2",
                        "postgres.replication_lag",
                        Status::Ok,
                        json!({"replay_lsn": 49_999_000u64, "lag_seconds": 0.0}),
                    ),
                Health::Critical,
                Some(Code::ReplicationLag),
                &["node2"][..],
            ),
            (
                // The replica's own replay timestamp is an hour old on an idle cluster: no lag.
                "idle primary, old replay timestamp",
                Lab::healthy().patch(
                    "node2",
                    "postgres.replication_lag",
                    Status::Ok,
                    json!({"lag_seconds": 3600.0}),
                ),
                Health::Healthy,
                None,
                &[][..],
            ),
            (
                // The walsender hangs under light writes: receive = replay, a few kB behind,
                // nothing received for 4 s while the leader moved on.
                "stalled stream, light writes",
                stalled(Lab::healthy(), 4_000, 4.0),
                Health::Degraded,
                Some(Code::ReplicaNotStreaming),
                &["node2"][..],
            ),
            (
                // An idle walsender sends nothing for up to 30 s: with the leader not moving,
                // an old last message is no stall.
                "idle stream",
                Lab::healthy().patch(
                    "node2",
                    "postgres.wal_receiver",
                    Status::Ok,
                    json!({"last_msg_age_s": 25.0}),
                ),
                Health::Healthy,
                None,
                &[][..],
            ),
            (
                // Just restarted: the receiver reports the segment start, behind replay, and
                // the idle stream sends nothing. Not a stall: what was replayed was received.
                "restarted standby, receive behind replay",
                Lab::healthy()
                    .patch(
                        "node2",
                        "postgres.replication_lag",
                        Status::Ok,
                        json!({"receive_lsn": 48_000_000u64}),
                    )
                    .patch(
                        "node2",
                        "postgres.wal_receiver",
                        Status::Ok,
                        json!({"last_msg_age_s": 9.0}),
                    ),
                Health::Healthy,
                None,
                &[][..],
            ),
            (
                // Busy but receiving (messages arrive): lag, not a stall.
                "slow stream, messages arriving",
                stalled(Lab::healthy(), 4_000, 0.1),
                Health::Healthy,
                None,
                &[][..],
            ),
        ];
        check_cases(cases);
    }

    /// node2 received and replayed up to where the leader was `behind_ms` before node2's
    /// observation, and its receiver got its last message `silent_s` ago.
    fn stalled(lab: Lab, behind_ms: i64, silent_s: f64) -> Lab {
        // node2 is observed 1 s before NOW; the leader passed 50_000_000 behind_ms before that.
        let passed_ago = 1_000 + behind_ms;
        lab.leader_positions(
            "node1",
            &[
                (passed_ago + 500, 50_000_000),
                (passed_ago, 50_004_000),
                (1_000, 50_008_000),
            ],
        )
        .patch(
            "node2",
            "postgres.wal_receiver",
            Status::Ok,
            json!({"last_msg_age_s": silent_s}),
        )
    }

    #[test]
    fn lag_is_measured_across_nodes() {
        let v = stalled(Lab::healthy(), 4_000, 4.0)
            .patch(
                "node3",
                "postgres.replication_lag",
                Status::Ok,
                json!({"replay_lsn": 50_008_000u64, "receive_lsn": 50_008_000u64}),
            )
            .verdict();
        let lag = v
            .replication
            .iter()
            .find(|l| l.node == "node2")
            .expect("node2 measured");
        assert_eq!(lag.receive_lag_bytes, Some(8_000));
        assert_eq!(lag.lag_bytes, Some(8_000));
        assert_eq!(lag.receive_lag_s, Some(4.0));
        assert_eq!(lag.replay_lag_s, Some(4.0));
        assert!(!lag.at_least);
        let f = v
            .findings
            .iter()
            .find(|f| f.code == Code::ReplicaNotStreaming)
            .expect("stall");
        assert!(f.message.contains("stalled"), "{}", f.message);
        assert!(f.message.contains("4.0s"), "{}", f.message);
        // node3 is caught up with the leader's latest position.
        let node3 = v
            .replication
            .iter()
            .find(|l| l.node == "node3")
            .expect("node3");
        assert_eq!(node3.replay_lag_s, Some(0.0));
    }
}
