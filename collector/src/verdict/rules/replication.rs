//! REPLICA_NOT_STREAMING, REPLICA_COUNT_MISMATCH, REPLICATION_LAG, TIMELINE_MISMATCH,
//! WRONG_UPSTREAM: every replica streams from the current leader on its timeline, the leader's
//! walsenders match the replicas' receivers, and byte lag is the leader's current LSN minus the
//! replica's replay LSN.

use crate::model::Status;
use crate::verdict::view::View;
use crate::verdict::{Code, Finding, Severity};

pub fn check(view: &View<'_>, findings: &mut Vec<Finding>) {
    let Some(leader_name) = view.patroni_leader() else {
        return;
    };
    let leader = view.node(&leader_name).filter(|n| n.fresh);
    let members = view.patroni_members();
    let leader_host = members
        .get(&leader_name)
        .and_then(|m| m["host"].as_str())
        .map(str::to_string);
    let leader_lsn = leader
        .and_then(|l| l.fact("postgres.replication_lag", "current_lsn_bytes"))
        .and_then(|v| v.as_u64());
    let leader_tli = leader
        .and_then(|l| l.fact("postgres.recovery", "timeline"))
        .and_then(|v| v.as_u64());

    if let Some(l) = leader
        && matches!(
            l.status("postgres.replication"),
            Some(Status::Warning | Status::Critical)
        )
        && let Some(obs) = l.result("postgres.replication")
    {
        let missing: Vec<String> = obs
            .fact("missing")
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        // Writes still work: redundancy is what is lost (degraded), whatever the count.
        let severity = Severity::Warning;
        let mut nodes = vec![leader_name.clone()];
        nodes.extend(missing);
        findings.push(
            Finding::new(
                Code::ReplicaCountMismatch,
                severity,
                nodes,
                format!("leader {leader_name}: {}", obs.message),
            )
            .with_all(l.evidence("postgres.replication")),
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
                    .and_then(|l| l.fact("postgres.replication", "missing"))
                    .and_then(|m| m.as_array())
                    .is_some_and(|m| m.iter().any(|x| x == name.as_str()));
                if missing {
                    findings.push(
                        Finding::new(
                            Code::ReplicaNotStreaming,
                            Severity::Warning,
                            vec![name.clone()],
                            format!("replica {name} is not streaming: the leader {leader_name} has no walsender for it"),
                        )
                        .with_all(leader.and_then(|l| l.evidence("postgres.replication")))
                        .with_all(r.evidence("postgres.recovery")),
                    );
                }
                continue;
            }
        }
        let receiver = r.result("postgres.wal_receiver");
        let streaming = r
            .fact("postgres.wal_receiver", "status")
            .and_then(|v| v.as_str())
            == Some("streaming");
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
                .with_all(r.evidence("postgres.wal_receiver"))
                .with_all(leader.and_then(|l| l.evidence("postgres.replication"))),
            );
            continue;
        }
        let sender = r
            .fact("postgres.wal_receiver", "sender_host")
            .and_then(|v| v.as_str());
        if let (Some(sender), Some(lh)) = (sender, leader_host.as_deref())
            && sender != lh
        {
            findings.push(
                Finding::new(Code::WrongUpstream, Severity::Warning, vec![name.clone()], format!("replica {name} streams from {sender}, not from the leader {leader_name} ({lh})"))
                    .with_all(r.evidence("postgres.wal_receiver")),
            );
        }
        let tli = r
            .fact("postgres.wal_receiver", "received_tli")
            .and_then(|v| v.as_u64());
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
                .with_all(r.evidence("postgres.wal_receiver"))
                .with_all(leader.and_then(|l| l.evidence("postgres.recovery"))),
            );
        }
        // Byte lag against the leader's position; seconds from the replica's own measure.
        let replay = r
            .fact("postgres.replication_lag", "replay_lsn_bytes")
            .and_then(|v| v.as_u64());
        let own_bytes = r
            .fact("postgres.replication_lag", "lag_bytes")
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        let bytes = match (leader_lsn, replay) {
            (Some(l), Some(rp)) => l.saturating_sub(rp).max(own_bytes),
            _ => own_bytes,
        };
        let seconds = r
            .fact("postgres.replication_lag", "lag_seconds")
            .and_then(|v| v.as_f64())
            .unwrap_or(0.0);
        let p = view.policy;
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
                    format!("replica {name} lags {} bytes ({seconds:.0}s) behind the leader {leader_name}", bytes),
                )
                .with_all(r.evidence("postgres.replication_lag"))
                .with_all(leader.and_then(|l| l.evidence("postgres.replication_lag"))),
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
                    json!({"replay_lsn_bytes": 10_000_000u64}),
                ),
                Health::Degraded,
                Some(Code::ReplicationLag),
                &["node2"][..],
            ),
            (
                "lag in seconds",
                Lab::healthy().patch(
                    "node2",
                    "postgres.replication_lag",
                    Status::Warning,
                    json!({"lag_seconds": 400.0, "lag_bytes": 1000}),
                ),
                Health::Critical,
                Some(Code::ReplicationLag),
                &["node2"][..],
            ),
        ];
        check_cases(cases);
    }
}
