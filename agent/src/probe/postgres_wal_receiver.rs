//! `postgres.wal_receiver`: `pg_stat_wal_receiver`, judged by role — a replica must stream (and
//! from the leader Patroni names), a primary has no receiver.

use vigie_proto::Facts;
use vigie_proto::v1::PostgresWalReceiverFacts;

use super::postgres_session::{Lsn, PgContext};
use super::{Outcome, ProbeId};
use crate::result::ProbeResult;

pub fn judge(ctx: &PgContext<'_>) -> ProbeResult {
    let id = ProbeId::PostgresWalReceiver;
    let snap = ctx.snapshot;
    let receiver = snap.wal_receiver.as_ref();
    let last_msg_age = receiver
        .and_then(|w| w.last_msg_receipt)
        .map(|t| ((snap.now - t) * 10.0).round() / 10.0);
    let facts = Facts::PostgresWalReceiver(PostgresWalReceiverFacts {
        present: receiver.is_some(),
        status: receiver.map(|w| w.status.clone()),
        sender_host: receiver.and_then(|w| w.sender_host.clone()),
        sender_port: receiver.and_then(|w| w.sender_port),
        received_tli: receiver.and_then(|w| w.received_tli),
        latest_end_lsn: receiver
            .and_then(|w| w.latest_end_lsn.as_deref())
            .and_then(Lsn::parse)
            .map(|l| l.0),
        last_msg_age_s: last_msg_age,
        slot_name: receiver.and_then(|w| w.slot_name.clone()),
    });
    let Some(expects_recovery) = ctx.role.and_then(|r| r.expects_recovery()) else {
        let seen = receiver.map_or("no WAL receiver".to_string(), |w| {
            format!("WAL receiver {}", w.status)
        });
        return id
            .unknown(format!("{seen}; Patroni's role for this node is unknown"))
            .with(facts);
    };
    let result = match (expects_recovery, receiver) {
        (false, None) => id.ok("primary: no WAL receiver, as expected"),
        (false, Some(w)) => id.critical(format!("primary has a WAL receiver ({})", w.status)),
        (true, None) => id.critical("no WAL receiver: this replica is not streaming"),
        (true, Some(w)) if w.status != "streaming" => {
            id.critical(format!("WAL receiver is {}, not streaming", w.status))
        }
        (true, Some(w)) => {
            let from = format!(
                "{}:{}",
                w.sender_host.as_deref().unwrap_or("?"),
                w.sender_port.map_or("?".to_string(), |p| p.to_string())
            );
            let tli = w
                .received_tli
                .map(|t| format!(" on timeline {t}"))
                .unwrap_or_default();
            let leader_host = ctx
                .cluster
                .and_then(|c| c.leader())
                .filter(|l| l.name != ctx.node)
                .and_then(|l| l.host.clone());
            match leader_host {
                Some(leader) if w.sender_host.as_deref() != Some(leader.as_str()) => id.warning(
                    format!("streaming from {from}{tli}, but the leader is at {leader}"),
                ),
                _ => id.ok(format!("streaming from {from}{tli}")),
            }
        }
    };
    result.with(facts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::patroni_cluster::{ClusterView, Member};
    use crate::probe::patroni_node::Role;
    use crate::probe::postgres_session::tests_support::{cfg, snapshot};
    use crate::result::Status;

    fn cluster(leader_host: &str) -> ClusterView {
        ClusterView {
            members: vec![Member {
                name: "node1".into(),
                host: Some(leader_host.into()),
                role: Role::Primary,
                state: "running".into(),
                timeline: Some(3),
                lag: None,
                sync_standby: false,
            }],
            paused: false,
        }
    }

    #[test]
    fn judge_table() {
        let cfg = cfg();
        let streaming = snapshot();
        let mut none = snapshot();
        none.wal_receiver = None;
        let mut starting = snapshot();
        if let Some(w) = starting.wal_receiver.as_mut() {
            w.status = "starting".into();
        }
        let here = cluster("127.0.0.11");
        let elsewhere = cluster("127.0.0.13");
        let table = [
            (Some(Role::Replica), &streaming, Some(&here), Status::Ok),
            (Some(Role::Replica), &streaming, None, Status::Ok),
            (
                Some(Role::Replica),
                &streaming,
                Some(&elsewhere),
                Status::Warning,
            ),
            (Some(Role::Replica), &none, Some(&here), Status::Critical),
            (
                Some(Role::Replica),
                &starting,
                Some(&here),
                Status::Critical,
            ),
            (Some(Role::Primary), &none, Some(&here), Status::Ok),
            (
                Some(Role::Primary),
                &streaming,
                Some(&here),
                Status::Critical,
            ),
            (None, &streaming, Some(&here), Status::Unknown),
        ];
        for (role, snap, cluster, status) in table {
            let ctx = PgContext {
                snapshot: snap,
                role: role.as_ref(),
                cluster,
                node: "node2",
                cfg: &cfg,
            };
            let r = judge(&ctx);
            assert_eq!(r.status, status, "{role:?}: {}", r.message);
        }
    }
}
