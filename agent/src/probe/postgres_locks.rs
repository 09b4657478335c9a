//! `postgres.locks`: sessions waiting on a lock and the longest current wait (the procedure's
//! "Locks" standard probe).

use vigie_proto::Facts;
use vigie_proto::v1::PostgresLocksFacts;

use super::postgres_session::PgContext;
use super::{Outcome, ProbeId};
use crate::result::{ProbeResult, Status};

pub fn judge(ctx: &PgContext<'_>) -> ProbeResult {
    let id = ProbeId::PostgresLocks;
    let snap = ctx.snapshot;
    let waiting = snap.waiting_sessions;
    let longest = snap.longest_lock_wait.unwrap_or(0.0).max(0.0);
    let result = if waiting == 0 {
        id.ok("no session waits on a lock")
    } else {
        let text = format!("{waiting} session(s) waiting on locks, longest for {longest:.0}s");
        let status = if longest >= ctx.cfg.lock_wait_critical.as_secs_f64() {
            Status::Critical
        } else if longest >= ctx.cfg.lock_wait_warning.as_secs_f64() {
            Status::Warning
        } else {
            Status::Ok
        };
        ProbeResult::new(id, status, text)
    };
    result.with(Facts::PostgresLocks(PostgresLocksFacts {
        waiting_sessions: waiting,
        longest_wait_s: (longest * 10.0).round() / 10.0,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::postgres_session::tests_support::{cfg, snapshot};

    #[test]
    fn judge_table() {
        let cfg = cfg();
        for (waiting, longest, status) in [
            (0, None, Status::Ok),
            (2, Some(3.0), Status::Ok),
            (1, Some(45.0), Status::Warning),
            (1, Some(600.0), Status::Critical),
        ] {
            let mut snap = snapshot();
            snap.waiting_sessions = waiting;
            snap.longest_lock_wait = longest;
            let ctx = PgContext {
                snapshot: &snap,
                role: None,
                cluster: None,
                node: "n",
                cfg: &cfg,
            };
            assert_eq!(judge(&ctx).status, status);
        }
    }
}
