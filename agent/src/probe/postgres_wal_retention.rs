//! `postgres.wal_retention`: what keeps WAL on this server — its replication slots (an inactive
//! one keeps every segment since its `restart_lsn`) and its archiver (a failing
//! `archive_command` keeps every segment not archived) — and the WAL directory's size. The
//! agent judges what PostgreSQL itself says: a slot `lost` or `unreserved`, or the archiver
//! failing on a node that must archive, is critical; an inactive slot past `max_wal_size`
//! (`extended`) a warning. How soon the disk fills is the collector's to say (it sees the WAL
//! rate over time).

use vigie_proto::Facts;
use vigie_proto::v1::{Archiver, PostgresWalRetentionFacts, ReplicationSlot};

use super::postgres_session::{Lsn, PgContext, PgSnapshot};
use super::system_cpu::round1;
use super::{Outcome, ProbeId};
use crate::result::{ProbeResult, Status, human_bytes};

/// Whether this server must archive: `always`, or `on` outside recovery.
pub fn must_archive(snap: &PgSnapshot) -> bool {
    match snap.retention.archive_mode.as_str() {
        "always" => true,
        "on" => !snap.in_recovery,
        _ => false,
    }
}

pub fn judge(ctx: &PgContext<'_>) -> ProbeResult {
    let id = ProbeId::PostgresWalRetention;
    let snap = ctx.snapshot;
    let r = &snap.retention;
    let mut status = Status::Ok;
    let mut parts = Vec::new();
    for s in &r.slots {
        let retained = s.retained_bytes.unwrap_or(0).max(0) as u64;
        match s.wal_status.as_deref() {
            Some(w @ ("lost" | "unreserved")) => {
                status = status.worst(Status::Critical);
                parts.push(format!(
                    "slot {} is {w} ({} retained)",
                    s.name,
                    human_bytes(retained)
                ));
            }
            Some("extended") if !s.active => {
                status = status.worst(Status::Warning);
                parts.push(format!(
                    "inactive slot {} retains {}, past max_wal_size",
                    s.name,
                    human_bytes(retained)
                ));
            }
            _ => {}
        }
    }
    if let Some(a) = r
        .archiver
        .as_ref()
        .filter(|a| a.failing && must_archive(snap))
    {
        status = status.worst(Status::Critical);
        parts.push(format!(
            "archive_command failing ({} failures, last on {}; {} segments waiting)",
            a.failed_count,
            a.last_failed_wal.as_deref().unwrap_or("?"),
            r.archive_ready.unwrap_or(0)
        ));
    }
    let inactive = r.slots.iter().filter(|s| !s.active).count();
    let summary = format!(
        "{} slot(s), {inactive} inactive; pg_wal {}",
        r.slots.len(),
        r.wal_dir_bytes
            .map_or("unreadable".into(), |b| human_bytes(b.max(0) as u64))
    );
    let text = if parts.is_empty() {
        summary
    } else {
        format!("{}; {summary}", parts.join("; "))
    };
    let result = if status == Status::Ok {
        id.ok(text)
    } else {
        ProbeResult::new(id, status, text)
    };
    result.with(Facts::PostgresWalRetention(facts(snap)))
}

fn facts(snap: &PgSnapshot) -> PostgresWalRetentionFacts {
    let r = &snap.retention;
    let unsigned = |v: Option<i64>| v.and_then(|v| u64::try_from(v).ok());
    PostgresWalRetentionFacts {
        slots: r
            .slots
            .iter()
            .map(|s| ReplicationSlot {
                name: s.name.clone(),
                slot_type: s.slot_type.clone(),
                database: s.database.clone(),
                active: s.active,
                active_pid: s.active_pid.and_then(|p| u32::try_from(p).ok()),
                wal_status: s.wal_status.clone(),
                safe_wal_bytes: s.safe_wal_size,
                restart_lsn: s.restart_lsn.as_deref().and_then(Lsn::parse).map(|l| l.0),
                retained_bytes: unsigned(s.retained_bytes),
                xmin_age: unsigned(s.xmin_age),
                catalog_xmin_age: unsigned(s.catalog_xmin_age),
            })
            .collect(),
        archive_mode: r.archive_mode.clone(),
        archiver: r.archiver.as_ref().map(|a| Archiver {
            archived_count: a.archived_count,
            failed_count: a.failed_count,
            last_archived_wal: a.last_archived_wal.clone(),
            last_archived_age_s: a.last_archived_age_s.map(round1),
            last_failed_wal: a.last_failed_wal.clone(),
            last_failed_age_s: a.last_failed_age_s.map(round1),
            failing: a.failing,
            ready_count: unsigned(r.archive_ready),
        }),
        wal_dir_bytes: unsigned(r.wal_dir_bytes),
        wal_dir_files: unsigned(r.wal_dir_files),
        max_wal_bytes: u64::try_from(r.max_wal_bytes).unwrap_or(0),
        max_slot_wal_keep_bytes: unsigned(Some(r.max_slot_wal_keep_bytes)),
        position: snap.current_lsn.or(snap.replay_lsn).map(|l| l.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::postgres_session::tests_support::{cfg, snapshot};
    use crate::probe::postgres_session::{ArchiverRow, Slot};

    fn slot(name: &str, active: bool, wal_status: &str, retained: i64) -> Slot {
        Slot {
            name: name.into(),
            slot_type: "physical".into(),
            database: None,
            active,
            active_pid: active.then_some(42),
            wal_status: Some(wal_status.into()),
            safe_wal_size: None,
            restart_lsn: Some("0/3000000".into()),
            retained_bytes: Some(retained),
            xmin_age: None,
            catalog_xmin_age: None,
        }
    }

    fn judged(snap: &PgSnapshot) -> ProbeResult {
        let cfg = cfg();
        judge(&PgContext {
            snapshot: snap,
            role: None,
            cluster: None,
            node: "n",
            cfg: &cfg,
        })
    }

    #[test]
    fn judge_table() {
        for (slots, status) in [
            (vec![slot("node2", true, "reserved", 1 << 20)], Status::Ok),
            (vec![slot("old", false, "reserved", 1 << 20)], Status::Ok),
            (
                vec![slot("old", false, "extended", 2 << 30)],
                Status::Warning,
            ),
            (vec![slot("node2", true, "extended", 2 << 30)], Status::Ok),
            (
                vec![slot("old", false, "unreserved", 2 << 30)],
                Status::Critical,
            ),
            (vec![slot("old", false, "lost", 0)], Status::Critical),
        ] {
            let mut snap = snapshot();
            snap.retention.slots = slots.clone();
            let r = judged(&snap);
            assert_eq!(r.status, status, "{slots:?}: {}", r.message);
            let f = r
                .facts
                .as_ref()
                .and_then(|f| f.postgres_wal_retention())
                .expect("facts");
            assert_eq!(f.slots.len(), 1);
            assert_eq!(f.slots[0].restart_lsn, Some(0x300_0000));
        }
    }

    #[test]
    fn a_failing_archiver_is_critical_only_where_it_must_archive() {
        let mut snap = snapshot();
        snap.retention.archive_mode = "on".into();
        snap.retention.archive_ready = Some(7);
        snap.retention.archiver = Some(ArchiverRow {
            archived_count: 10,
            failed_count: 3,
            last_archived_wal: Some("000000010000000000000009".into()),
            last_archived_age_s: Some(120.0),
            last_failed_wal: Some("00000001000000000000000A".into()),
            last_failed_age_s: Some(1.0),
            failing: true,
        });
        // A standby with archive_mode=on does not archive.
        assert_eq!(judged(&snap).status, Status::Ok);
        snap.in_recovery = false;
        let r = judged(&snap);
        assert_eq!(r.status, Status::Critical, "{}", r.message);
        assert!(r.message.contains("7 segments waiting"), "{}", r.message);
        snap.retention.archive_mode = "always".into();
        snap.in_recovery = true;
        assert_eq!(judged(&snap).status, Status::Critical);
    }
}
