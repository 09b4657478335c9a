//! `postgres.connections`: connection slots, every cycle from the agent's one session — client
//! backends against what an ordinary role may use (`max_connections` minus
//! `superuser_reserved_connections`, minus `reserved_connections` on PostgreSQL 16+). At zero free
//! slots applications get "remaining connection slots are reserved…" while the agent's reused
//! session and Patroni's superuser session still work. The warning threshold is the collector's
//! (`[verdict] connections_warning_percent`); this probe only says when no slot is left.

use vigie_proto::Facts;
use vigie_proto::v1::PostgresConnectionsFacts;

use super::postgres_session::PgContext;
use super::{Outcome, ProbeId};
use crate::result::ProbeResult;

pub fn judge(ctx: &PgContext<'_>) -> ProbeResult {
    let id = ProbeId::PostgresConnections;
    let c = ctx.snapshot.connections;
    let (used, usable) = (c.client_backends, c.usable());
    let result = if c.free() == 0 {
        id.critical(format!(
            "no connection slot left for ordinary roles: {used} client sessions, {usable} usable of max_connections {} — new application logins are refused",
            c.max_connections
        ))
    } else {
        id.ok(format!(
            "{used} of {usable} usable connection slots in use ({:.0}%)",
            c.used_percent()
        ))
    };
    result.with(Facts::PostgresConnections(PostgresConnectionsFacts {
        client_backends: used,
        max_connections: c.max_connections,
        superuser_reserved: c.superuser_reserved,
        reserved: c.reserved,
        usable,
        free: c.free(),
        used_percent: (c.used_percent() * 10.0).round() / 10.0,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::postgres_session::Connections;
    use crate::probe::postgres_session::tests_support::{cfg, snapshot};
    use crate::result::Status;

    #[test]
    fn judge_table() {
        let cfg = cfg();
        // (client backends, max, superuser reserved, reserved, status, usable, free)
        for (used, max, su, res, status, usable, free) in [
            (5, 100, 3, 0, Status::Ok, 97, 92),
            (96, 100, 3, 0, Status::Ok, 97, 1),
            (97, 100, 3, 0, Status::Critical, 97, 0),
            // Superusers may pass the ordinary limit into their reserve.
            (99, 100, 3, 0, Status::Critical, 97, 0),
            // PostgreSQL 16's reserved_connections come off too.
            (94, 100, 3, 3, Status::Critical, 94, 0),
            (10, 3, 3, 0, Status::Critical, 0, 0),
        ] {
            let mut snap = snapshot();
            snap.connections = Connections {
                client_backends: used,
                max_connections: max,
                superuser_reserved: su,
                reserved: res,
            };
            let ctx = PgContext {
                snapshot: &snap,
                role: None,
                cluster: None,
                node: "n",
                cfg: &cfg,
            };
            let r = judge(&ctx);
            assert_eq!(r.status, status, "{used}/{max}-{su}-{res}: {}", r.message);
            assert_eq!(r.json()["usable"], usable);
            assert_eq!(r.json()["free"], free);
        }
    }
}
