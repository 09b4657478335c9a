//! `postgres.recovery`: `pg_is_in_recovery()` judged against the role Patroni gives this node
//! now — a leader must be writable, a replica must be in recovery. After a failover nothing needs
//! reconfiguring: the expectation follows the live role.

use vigie_proto::Facts;
use vigie_proto::v1::PostgresRecoveryFacts;

use super::patroni_node::Role;
use super::postgres_session::PgContext;
use super::{Outcome, ProbeId};
use crate::result::ProbeResult;

pub fn judge(ctx: &PgContext<'_>) -> ProbeResult {
    let id = ProbeId::PostgresRecovery;
    let in_recovery = ctx.snapshot.in_recovery;
    let actual = if in_recovery {
        "in recovery (read-only)"
    } else {
        "not in recovery (writable)"
    };
    let result = match ctx.role.map(|r| (r, r.expects_recovery())) {
        None => id.unknown(format!(
            "PostgreSQL is {actual}; Patroni's role for this node is unknown"
        )),
        Some((role, None)) => id.unknown(format!(
            "PostgreSQL is {actual}; Patroni's role `{}` sets no expectation",
            role.as_str()
        )),
        Some((role, Some(expected))) if expected == in_recovery => {
            id.ok(format!("{}, {actual} as expected", role.as_str()))
        }
        Some((Role::Primary, Some(_))) => id.critical(
            "Patroni's leader is in recovery: the leader is read-only, writes fail".to_string(),
        ),
        Some((role, Some(_))) => id.critical(format!(
            "Patroni says {} but PostgreSQL is writable: a second primary?",
            role.as_str()
        )),
    };
    result.with(Facts::PostgresRecovery(PostgresRecoveryFacts {
        in_recovery,
        patroni_role: ctx.role.map(|r| r.as_str().to_string()),
        timeline: ctx.snapshot.timeline.map(u64::from),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::postgres_session::tests_support::{cfg, snapshot};
    use crate::result::Status;

    #[test]
    fn judge_table() {
        let table = [
            (Some(Role::Primary), false, Status::Ok),
            (Some(Role::Replica), true, Status::Ok),
            (Some(Role::StandbyLeader), true, Status::Ok),
            (Some(Role::Primary), true, Status::Critical),
            (Some(Role::Replica), false, Status::Critical),
            (None, false, Status::Unknown),
            (
                Some(Role::Other("uninitialized".into())),
                true,
                Status::Unknown,
            ),
        ];
        let cfg = cfg();
        for (role, in_recovery, status) in table {
            let mut snap = snapshot();
            snap.in_recovery = in_recovery;
            let ctx = PgContext {
                snapshot: &snap,
                role: role.as_ref(),
                cluster: None,
                node: "node1",
                cfg: &cfg,
            };
            let r = judge(&ctx);
            assert_eq!(
                r.status, status,
                "{role:?} in_recovery={in_recovery}: {}",
                r.message
            );
        }
    }
}
