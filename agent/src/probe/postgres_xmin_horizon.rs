//! `postgres.xmin_horizon`: who holds back the oldest transaction id VACUUM must keep — the
//! oldest session's snapshot or transaction (`idle in transaction` included), a prepared
//! transaction, a standby's `hot_standby_feedback` through its walsender (a slot's `xmin` is in
//! `postgres.wal_retention`) — and how close the oldest database is to XID wraparound. The agent
//! judges wraparound only, against PostgreSQL's own limit (2^31 transactions, where it stops
//! accepting writes): a warning from half the way, critical from 80 %. Whether a holder is held
//! too long is the collector's threshold.

use vigie_proto::Facts;
use vigie_proto::v1::{FeedbackXmin, PostgresXminHorizonFacts, PreparedXact, XminSession};

use super::postgres_session::{PgContext, PgSnapshot};
use super::system_cpu::round1;
use super::{Outcome, ProbeId};
use crate::result::{ProbeResult, Status};

use vigie_proto::probes::WRAPAROUND_XIDS;

pub fn judge(ctx: &PgContext<'_>) -> ProbeResult {
    let id = ProbeId::PostgresXminHorizon;
    let snap = ctx.snapshot;
    let h = &snap.horizon;
    let mut parts = Vec::new();
    let status = match &h.frozen {
        Some(f) => {
            let pct = f.xid_age as f64 * 100.0 / WRAPAROUND_XIDS;
            parts.push(format!(
                "oldest database {} at {} XIDs, {pct:.1}% of the way to wraparound",
                f.datname, f.xid_age
            ));
            if pct >= 80.0 {
                Status::Critical
            } else if pct >= 50.0 {
                Status::Warning
            } else {
                Status::Ok
            }
        }
        None => Status::Ok,
    };
    if let Some(s) = &h.oldest_session {
        parts.push(format!(
            "oldest transaction: pid {} ({}, {}) open {:.0}s",
            s.pid,
            s.state.as_deref().unwrap_or("?"),
            s.application_name
                .as_deref()
                .filter(|a| !a.is_empty())
                .unwrap_or("no application name"),
            s.xact_age_s.unwrap_or(0.0)
        ));
    }
    if let Some(p) = &h.oldest_prepared {
        parts.push(format!(
            "prepared transaction {} for {:.0}s",
            p.gid,
            p.age_s.unwrap_or(0.0)
        ));
    }
    let text = parts.join("; ");
    let result = if status == Status::Ok {
        id.ok(if text.is_empty() {
            "no transaction holds the horizon".into()
        } else {
            text
        })
    } else {
        ProbeResult::new(id, status, text)
    };
    result.with(Facts::PostgresXminHorizon(facts(snap)))
}

fn facts(snap: &PgSnapshot) -> PostgresXminHorizonFacts {
    let h = &snap.horizon;
    let unsigned = |v: Option<i64>| v.and_then(|v| u64::try_from(v).ok());
    PostgresXminHorizonFacts {
        oldest_session: h.oldest_session.as_ref().map(|s| XminSession {
            pid: u32::try_from(s.pid).unwrap_or(0),
            user: s.user.clone(),
            application_name: s.application_name.clone(),
            client_addr: s.client_addr.clone(),
            state: s.state.clone(),
            xact_age_s: s.xact_age_s.map(round1),
            xid_age: unsigned(s.xid_age),
        }),
        oldest_prepared: h.oldest_prepared.as_ref().map(|p| PreparedXact {
            gid: p.gid.clone(),
            owner: p.owner.clone(),
            database: p.database.clone(),
            age_s: p.age_s.map(round1),
            xid_age: unsigned(p.xid_age),
        }),
        oldest_feedback: h.oldest_feedback.as_ref().map(|f| FeedbackXmin {
            application_name: f.application_name.clone(),
            xid_age: unsigned(f.xid_age),
        }),
        frozen_database: h.frozen.as_ref().map(|f| f.datname.clone()),
        frozen_xid_age: h
            .frozen
            .as_ref()
            .and_then(|f| u64::try_from(f.xid_age).ok()),
        autovacuum_freeze_max_age: u64::try_from(h.autovacuum_freeze_max_age).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::postgres_session::tests_support::{cfg, snapshot};
    use crate::probe::postgres_session::{Frozen, OldestSession};

    #[test]
    fn wraparound_is_judged_against_two_to_the_31() {
        let cfg = cfg();
        // Real catalogue figures: a fresh cluster, one past autovacuum_freeze_max_age, one where
        // anti-wraparound vacuum has been failing for long.
        for (age, status) in [
            (1_043_i64, Status::Ok),
            (210_000_000, Status::Ok),
            (1_073_741_824, Status::Warning),
            (1_717_986_919, Status::Critical),
            (2_146_483_647, Status::Critical),
        ] {
            let mut snap = snapshot();
            snap.horizon.frozen = Some(Frozen {
                datname: "app".into(),
                xid_age: age,
            });
            snap.horizon.oldest_session = Some(OldestSession {
                pid: 4242,
                user: Some("app".into()),
                application_name: Some("psql".into()),
                client_addr: None,
                state: Some("idle in transaction".into()),
                xact_age_s: Some(75.0),
                xid_age: Some(12),
            });
            let r = judge(&PgContext {
                snapshot: &snap,
                role: None,
                cluster: None,
                node: "n",
                cfg: &cfg,
            });
            assert_eq!(r.status, status, "{age}: {}", r.message);
            assert!(
                r.message.contains("pid 4242 (idle in transaction"),
                "{}",
                r.message
            );
            let f = r
                .facts
                .as_ref()
                .and_then(|f| f.postgres_xmin_horizon())
                .expect("facts");
            assert_eq!(f.frozen_xid_age, Some(age as u64));
            assert_eq!(f.oldest_session.as_ref().map(|s| s.pid), Some(4242));
        }
    }
}
