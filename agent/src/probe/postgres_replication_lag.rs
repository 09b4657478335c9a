//! `postgres.replication_lag`: on a standby, how far replay is behind the WAL it received — in
//! bytes (receive − replay) and in seconds. Seconds never grow on an idle primary (caught up means
//! 0) and never read 0 on a broken stream (no stream means the lag is unknown). On the primary,
//! its current LSN: the collector computes each replica's byte lag from it.

use vigie_proto::Facts;
use vigie_proto::v1::PostgresReplicationLagFacts;

use super::postgres_session::PgContext;
use super::{Outcome, ProbeId};
use crate::result::{ProbeResult, Status, human_bytes};

/// Remembers when replay was last caught up with what was received (server clock), so that a
/// burst after a long idle period does not read as hours of lag.
#[derive(Debug, Default)]
pub struct LagTracker {
    caught_up_at: Option<f64>,
}

impl LagTracker {
    pub fn judge(&mut self, ctx: &PgContext<'_>) -> ProbeResult {
        let id = ProbeId::PostgresReplicationLag;
        let snap = ctx.snapshot;
        if !snap.in_recovery {
            self.caught_up_at = None;
            let Some(lsn) = snap.current_lsn else {
                return id.unknown("primary, but its current WAL position is unreadable");
            };
            return id
                .ok(format!("primary at {lsn}"))
                .with(Facts::PostgresReplicationLag(PostgresReplicationLagFacts {
                    current_lsn: Some(lsn.0),
                    ..Default::default()
                }));
        }
        let (Some(received), Some(replayed)) = (snap.receive_lsn, snap.replay_lsn) else {
            return id.unknown("standby with no received or replayed WAL position yet");
        };
        let bytes = received.0.saturating_sub(replayed.0);
        if bytes == 0 {
            self.caught_up_at = Some(snap.now);
        }
        let streaming = snap
            .wal_receiver
            .as_ref()
            .is_some_and(|w| w.status == "streaming");
        let seconds = if bytes == 0 {
            Some(0.0)
        } else {
            let since_commit = snap.replay_timestamp.map(|t| snap.now - t);
            let since_caught_up = self.caught_up_at.map(|t| snap.now - t);
            match (since_commit, since_caught_up) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
            .map(|s| s.max(0.0))
        };
        let seconds = seconds.map(|s| (s * 10.0).round() / 10.0);
        let cfg = ctx.cfg;
        let base = |r: ProbeResult| {
            r.with(Facts::PostgresReplicationLag(PostgresReplicationLagFacts {
                current_lsn: None,
                receive_lsn: Some(received.0),
                replay_lsn: Some(replayed.0),
                lag_bytes: Some(bytes),
                lag_seconds: if streaming { seconds } else { None },
                streaming,
            }))
        };
        if !streaming {
            return base(id.unknown(format!(
                "not streaming: lag unknown (replay {} behind the WAL received before the stream stopped)",
                human_bytes(bytes)
            )));
        }
        let secs_text = seconds.map_or("?s".to_string(), |s| format!("{s}s"));
        let text = format!(
            "replay {} ({secs_text}) behind received WAL",
            human_bytes(bytes)
        );
        let over = |limit_bytes: u64, limit: std::time::Duration| {
            bytes >= limit_bytes || seconds.is_some_and(|s| s >= limit.as_secs_f64())
        };
        let status = if over(cfg.lag_critical_bytes, cfg.lag_critical) {
            Status::Critical
        } else if over(cfg.lag_warning_bytes, cfg.lag_warning) {
            Status::Warning
        } else {
            Status::Ok
        };
        base(ProbeResult::new(id, status, text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::patroni_node::Role;
    use crate::probe::postgres_session::tests_support::{cfg, snapshot};
    use crate::probe::postgres_session::{Lsn, PgSnapshot};

    fn run(tracker: &mut LagTracker, snap: &PgSnapshot) -> ProbeResult {
        let cfg = cfg();
        let ctx = PgContext {
            snapshot: snap,
            role: Some(&Role::Replica),
            cluster: None,
            node: "n",
            cfg: &cfg,
        };
        tracker.judge(&ctx)
    }

    #[test]
    fn idle_caught_up_replica_reads_zero_even_with_an_old_replay_timestamp() {
        let snap = snapshot(); // last replayed commit an hour ago, nothing pending
        let r = run(&mut LagTracker::default(), &snap);
        assert_eq!(r.status, Status::Ok, "{}", r.message);
        assert_eq!(r.json()["lag_seconds"], 0.0);
        assert_eq!(r.json()["lag_bytes"], 0);
    }

    #[test]
    fn stuck_replay_grows_in_bytes_and_seconds() {
        let mut t = LagTracker::default();
        let mut snap = snapshot();
        run(&mut t, &snap); // caught up at `now`
        snap.now += 40.0;
        snap.receive_lsn = Some(Lsn(0x500_0000 + 20 * 1024 * 1024));
        snap.replay_timestamp = Some(snap.now - 45.0);
        let r = run(&mut t, &snap);
        assert_eq!(r.status, Status::Warning, "{}", r.message);
        assert_eq!(r.json()["lag_bytes"], 20 * 1024 * 1024);
        assert_eq!(r.json()["lag_seconds"], 40.0);
    }

    #[test]
    fn burst_after_idle_is_not_hours_of_lag() {
        let mut t = LagTracker::default();
        let mut snap = snapshot();
        run(&mut t, &snap);
        snap.now += 5.0;
        snap.receive_lsn = Some(Lsn(0x500_1000));
        let r = run(&mut t, &snap);
        assert_eq!(r.json()["lag_seconds"], 5.0);
        assert_eq!(r.status, Status::Ok);
    }

    #[test]
    fn broken_stream_is_unknown_never_zero() {
        let mut snap = snapshot();
        snap.wal_receiver = None;
        let r = run(&mut LagTracker::default(), &snap);
        assert_eq!(r.status, Status::Unknown);
        assert!(r.json()["lag_seconds"].is_null());
    }

    #[test]
    fn primary_reports_its_position() {
        let mut snap = snapshot();
        snap.in_recovery = false;
        snap.current_lsn = Some(Lsn(0x700_0000));
        let r = run(&mut LagTracker::default(), &snap);
        assert_eq!(r.status, Status::Ok);
        assert_eq!(r.json()["current_lsn"], 0x700_0000);
    }
}
