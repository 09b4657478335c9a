//! ARCHIVING_FAILING: the node that must archive (the writable one with `archive_mode = on`,
//! any with `always`) has a failed `archive_command` newer than its last success. Every
//! segment not archived stays in `pg_wal` until the disk fills, and point-in-time recovery
//! loses everything since the last archived one: critical, with the segments waiting and, at
//! the WAL rate seen, when the disk fills. One failed attempt that the next one repairs is not
//! a failure yet: a second observation confirms it.

use vigie_proto::probes::human_bytes;

use super::wal_retention::{full_text, must_archive, time_to_full};
use crate::model::ProbeId;
use crate::verdict::view::View;
use crate::verdict::{Code, Finding, Severity};

pub fn check(view: &View<'_>, findings: &mut Vec<Finding>) {
    let rate = view.wal_rate_bps();
    for n in view.fresh().filter(|n| n.is_db()) {
        let Some(f) = n.wal_retention() else {
            continue;
        };
        let Some(a) = f.archiver.as_ref().filter(|a| a.failing) else {
            continue;
        };
        if !must_archive(n, &f.archive_mode) {
            continue;
        }
        let name = n.name();
        let since = a
            .last_archived_age_s
            .map_or("never archived a segment".to_string(), |s| {
                format!(
                    "last success {s:.0}s ago on {}",
                    a.last_archived_wal.as_deref().unwrap_or("?")
                )
            });
        let text = format!(
            "{name} ({}): archive_command fails (last on {}, {:.0}s ago; {} failures in all; {since}); {} segments wait in pg_wal ({}){}",
            view.role_words(name),
            a.last_failed_wal.as_deref().unwrap_or("?"),
            a.last_failed_age_s.unwrap_or(0.0),
            a.failed_count,
            a.ready_count.map_or("?".to_string(), |c| c.to_string()),
            f.wal_dir_bytes
                .map_or("size unknown".to_string(), human_bytes),
            full_text(time_to_full(n.disk(), rate), rate),
        );
        findings.push(
            Finding::new(
                Code::ArchivingFailing,
                Severity::Critical,
                vec![name.to_string()],
                text,
            )
            .with_all(n.evidence(ProbeId::PostgresWalRetention))
            .confirmed_later(),
        );
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::model::Status;
    use crate::verdict::Code;
    use crate::verdict::testkit::{Lab, has};

    fn archiving(lab: Lab, node: &str, mode: &str, failing: bool) -> Lab {
        lab.set(
            node,
            "postgres.wal_retention",
            Status::Ok,
            json!({"archive_mode": mode, "max_wal_bytes": 1_073_741_824u64, "wal_dir_bytes": 301_989_888u64,
                   "archiver": {"archived_count": 40, "failed_count": 12, "failing": failing,
                                "last_archived_wal": "000000010000000000000020", "last_archived_age_s": 600.0,
                                "last_failed_wal": "000000010000000000000021", "last_failed_age_s": 2.0,
                                "ready_count": 17}}),
        )
    }

    #[test]
    fn only_the_node_that_must_archive_is_failing() {
        for (node, mode, failing, expected) in [
            ("node1", "on", true, true),
            ("node1", "on", false, false),
            ("node1", "off", true, false),
            ("node2", "on", true, false),
            ("node2", "always", true, true),
        ] {
            let v = archiving(Lab::healthy(), node, mode, failing).verdict();
            assert_eq!(
                has(&v, Code::ArchivingFailing, &[node]),
                expected,
                "{node} {mode} {failing}: {:?}",
                v.findings
            );
        }
        let v = archiving(Lab::healthy(), "node1", "on", true).verdict();
        let f = v
            .findings
            .iter()
            .find(|f| f.code == Code::ArchivingFailing)
            .expect("finding");
        assert!(
            f.message.contains("17 segments wait in pg_wal (288.0 MiB)")
                && f.message.contains("000000010000000000000021"),
            "{}",
            f.message
        );
    }
}
