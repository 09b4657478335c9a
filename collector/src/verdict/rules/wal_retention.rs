//! WAL_RETENTION: an inactive replication slot keeps every WAL segment since its `restart_lsn`
//! — a dropped member's, a forgotten permanent or logical slot — until the disk holding the
//! WAL fills and PostgreSQL stops (and then Patroni may not fail over). A warning from
//! `wal_retention_warning_bytes` retained; critical when PostgreSQL is about to drop the WAL
//! (`unreserved`) or has (`lost`), or when, at the WAL rate the collector sees on the primary,
//! the node's fullest watched filesystem is full within `wal_full_critical`. The finding says
//! whose slot it is: a Patroni member's (and how that member is) or nobody's.

use vigie_proto::probes::human_bytes;

use crate::model::ProbeId;
use crate::model::wire::{ReplicationSlot, SystemDiskFacts};
use crate::verdict::view::{NodeView, View};
use crate::verdict::{Code, Finding, Severity};

pub fn check(view: &View<'_>, findings: &mut Vec<Finding>) {
    let p = view.policy;
    let rate = view.wal_rate_bps();
    for n in view.fresh().filter(|n| n.is_db()) {
        let Some(f) = n.wal_retention() else {
            continue;
        };
        let name = n.name();
        for s in &f.slots {
            let retained = s.retained_bytes.unwrap_or(0);
            let dropping = matches!(s.wal_status.as_deref(), Some("unreserved" | "lost"));
            if s.active && !dropping {
                continue; // its consumer keeps up or lags: replication's findings
            }
            let full = time_to_full(n.disk(), rate);
            let near_full = full.is_some_and(|(_, ms)| ms <= p.wal_full_critical_ms);
            if !dropping && !near_full && retained < p.wal_retention_warning_bytes {
                continue;
            }
            let severity = if dropping || near_full {
                Severity::Critical
            } else {
                Severity::Warning
            };
            let state = match s.wal_status.as_deref() {
                Some("lost") => {
                    "; its WAL is gone (lost): its consumer can no longer catch up".to_string()
                }
                Some("unreserved") => {
                    "; PostgreSQL drops its WAL at the next checkpoint (unreserved)".to_string()
                }
                Some("extended") => ", past max_wal_size".to_string(),
                _ => String::new(),
            };
            let text = format!(
                "{name} ({}): {} slot {} ({}, {}) retains {} of WAL{state}{}",
                view.role_words(name),
                s.slot_type,
                s.name,
                if s.active { "active" } else { "inactive" },
                owner(view, s),
                human_bytes(retained),
                full_text(full, rate),
            );
            findings.push(
                Finding::new(Code::WalRetention, severity, vec![name.to_string()], text)
                    .with_all(n.evidence(ProbeId::PostgresWalRetention))
                    .with_all(n.evidence(ProbeId::SystemDisk)),
            );
        }
    }
}

/// Whose slot it is, in words: Patroni names a member's slot after the member.
fn owner(view: &View<'_>, slot: &ReplicationSlot) -> String {
    match view
        .patroni_members()
        .iter()
        .find(|(member, _)| patroni_slot_name(member) == slot.name)
    {
        Some((member, m)) => format!("member {member}'s slot, {member} is {}", m.state),
        None => match view.patroni_config() {
            Some(c) if c.permanent_slots.contains(&slot.name) => {
                "no Patroni member's: a permanent slot of Patroni's configuration (`slots:`), kept whether or not anything reads it"
                    .to_string()
            }
            Some(_) => "no Patroni member's and not in Patroni's `slots:`: made outside Patroni"
                .to_string(),
            None => "no Patroni member's: a permanent slot of Patroni's configuration, or made outside Patroni"
                .to_string(),
        },
    }
}

/// The slot Patroni keeps for a member: its name lowercased, anything but `[a-z0-9_]` as `_`
/// (Patroni's `slot_name_from_member_name`), at most 63 bytes.
pub fn patroni_slot_name(member: &str) -> String {
    let mut s: String = member
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    s.truncate(63);
    s
}

/// The node's watched filesystem that fills first at `rate`: its path and the time left, in
/// ms. The WAL may sit on any of the paths the agent watches (the data directory by default):
/// the nearest full is the one to warn of.
pub fn time_to_full(disk: Option<&SystemDiskFacts>, rate: Option<f64>) -> Option<(&str, i64)> {
    let rate = rate.filter(|r| *r > 0.0)?;
    disk?
        .filesystems
        .iter()
        .filter_map(|fs| Some((fs.path.as_str(), fs.available_bytes?)))
        .map(|(path, free)| (path, (free as f64 / rate * 1_000.0) as i64))
        .min_by_key(|(_, ms)| *ms)
}

/// `; at 1.2 MiB/s of WAL, /var/lib/postgresql is full in ~3h 20m`, or why there is no estimate.
pub fn full_text(full: Option<(&str, i64)>, rate: Option<f64>) -> String {
    match (full, rate) {
        (Some((path, ms)), Some(r)) => format!(
            "; at {}/s of WAL, {path} is full in ~{}",
            human_bytes(r as u64),
            rough(ms)
        ),
        (None, Some(_)) => "; the disk's free space is unknown: no estimate".to_string(),
        (_, None) => {
            "; the primary writes no WAL now: no estimate of when the disk fills".to_string()
        }
    }
}

/// A duration for an estimate: `45s`, `4m 10s`, `12m`, `3h 20m`, `4d 2h`.
fn rough(ms: i64) -> String {
    let s = ms.max(0) / 1_000;
    match s {
        0..=59 => format!("{s}s"),
        60..=599 => format!("{}m {}s", s / 60, s % 60),
        600..=3_599 => format!("{}m", s / 60),
        3_600..=86_399 => format!("{}h {}m", s / 3_600, s % 3_600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3_600),
    }
}

/// Whether `n` must archive: `archive_mode = always`, or `on` on a writable node.
pub fn must_archive(n: &NodeView<'_>, archive_mode: &str) -> bool {
    match archive_mode {
        "always" => true,
        "on" => n.in_recovery() == Some(false),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::model::Status;
    use crate::verdict::testkit::{Lab, NOW};
    use crate::verdict::{Policy, evaluate};

    fn slot(name: &str, active: bool, wal_status: &str, retained: u64) -> Value {
        json!({"name": name, "slot_type": "physical", "active": active, "wal_status": wal_status,
               "retained_bytes": retained, "restart_lsn": 50_331_648})
    }

    fn with_slots(lab: Lab, node: &str, slots: Vec<Value>) -> Lab {
        lab.set(
            node,
            "postgres.wal_retention",
            Status::Ok,
            json!({"slots": slots, "archive_mode": "off", "max_wal_bytes": 1_073_741_824u64}),
        )
    }

    fn findings(lab: &Lab, policy: &Policy) -> Vec<(Severity, String)> {
        evaluate(&lab.snap, NOW, policy)
            .findings
            .into_iter()
            .filter(|f| f.code == Code::WalRetention)
            .map(|f| (f.severity, f.message))
            .collect()
    }

    #[test]
    fn table() {
        let gib = 1u64 << 30;
        for (slots, expected) in [
            (vec![slot("node2", true, "reserved", 5 * gib)], None),
            (vec![slot("backup", false, "reserved", 1 << 20)], None),
            (
                vec![slot("backup", false, "extended", 2 * gib)],
                Some(Severity::Warning),
            ),
            (
                vec![slot("backup", false, "unreserved", 2 * gib)],
                Some(Severity::Critical),
            ),
            (
                vec![slot("backup", true, "lost", 0)],
                Some(Severity::Critical),
            ),
        ] {
            let lab = with_slots(Lab::healthy(), "node1", slots.clone());
            let got = findings(&lab, &Policy::default());
            assert_eq!(got.first().map(|f| f.0), expected, "{slots:?}: {got:?}");
        }
    }

    #[test]
    fn the_finding_names_the_slot_and_whose_it_is() {
        let lab = with_slots(
            Lab::healthy(),
            "node1",
            vec![
                slot("node3", false, "extended", 3 << 30),
                slot("debezium", false, "extended", 3 << 30),
            ],
        );
        let got = findings(&lab, &Policy::default());
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(
            got[0]
                .1
                .contains("slot node3 (inactive, member node3's slot, node3 is"),
            "{}",
            got[0].1
        );
        assert!(got[1].1.contains("debezium") && got[1].1.contains("no Patroni member's"));
        assert!(got[0].1.contains("no estimate"), "{}", got[0].1);
    }

    #[test]
    fn the_estimate_of_time_to_full_comes_from_the_wal_rate_and_the_free_space() {
        // 1 MiB/s on the leader over the last five minutes; 3 GiB free: ~51 minutes.
        let positions: Vec<(i64, u64)> = (0..=300)
            .map(|i| (300_000 - i * 1_000, (i as u64) << 20))
            .collect();
        let lab = with_slots(
            Lab::healthy().leader_positions("node1", &positions),
            "node1",
            vec![slot("backup", false, "reserved", 64 << 20)],
        )
        .set(
            "node1",
            "system.disk",
            Status::Ok,
            json!({"filesystems": [{"path": "/var/lib/postgresql", "available_bytes": 3u64 << 30,
                                     "total_bytes": 100u64 << 30, "used_percent": 97.0}]}),
        );
        let got = findings(&lab, &Policy::default());
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].0, Severity::Critical, "{}", got[0].1);
        assert!(
            got[0]
                .1
                .contains("at 1.0 MiB/s of WAL, /var/lib/postgresql is full in ~51m"),
            "{}",
            got[0].1
        );
        // With more room the same slot is under every threshold.
        let roomy = lab.set(
            "node1",
            "system.disk",
            Status::Ok,
            json!({"filesystems": [{"path": "/var/lib/postgresql", "available_bytes": 300u64 << 30}]}),
        );
        assert!(findings(&roomy, &Policy::default()).is_empty());
    }

    #[test]
    fn patroni_names_a_member_s_slot_after_the_member() {
        assert_eq!(patroni_slot_name("node2"), "node2");
        assert_eq!(patroni_slot_name("pg-db.01"), "pg_db_01");
        assert_eq!(patroni_slot_name("Node-A"), "node_a");
        assert_eq!(patroni_slot_name(&"x".repeat(70)).len(), 63);
    }
}
