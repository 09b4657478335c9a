//! XID_WRAPAROUND: the oldest database's `datfrozenxid` is far behind. At 2^31 transactions
//! PostgreSQL stops accepting writes to protect itself, and only a long single-user VACUUM
//! brings it back: a warning from half the way, critical from 80 %. Judged on the writable node
//! (standbys replay the same catalogue).

use crate::model::ProbeId;
use crate::verdict::view::View;
use crate::verdict::{Code, Finding, Severity};

use vigie_proto::probes::WRAPAROUND_XIDS;

pub fn check(view: &View<'_>, findings: &mut Vec<Finding>) {
    for n in view.writable() {
        let Some(h) = n.xmin_horizon() else {
            continue;
        };
        let Some(age) = h.frozen_xid_age else {
            continue;
        };
        let pct = age as f64 * 100.0 / WRAPAROUND_XIDS;
        let severity = if pct >= 80.0 {
            Severity::Critical
        } else if pct >= 50.0 {
            Severity::Warning
        } else {
            continue;
        };
        let name = n.name();
        findings.push(
            Finding::new(
                Code::XidWraparound,
                severity,
                vec![name.to_string()],
                format!(
                    "{name}: database {} is {age} transactions old ({pct:.0}% of the way to the 2^31 stop; autovacuum_freeze_max_age {}): anti-wraparound VACUUM is not keeping up — end what holds the xmin horizon, then VACUUM FREEZE it",
                    h.frozen_database.as_deref().unwrap_or("?"),
                    h.autovacuum_freeze_max_age
                ),
            )
            .with_all(n.evidence(ProbeId::PostgresXminHorizon)),
        );
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::model::Status;
    use crate::verdict::testkit::Lab;
    use crate::verdict::{Code, Severity};

    #[test]
    fn judged_against_the_2_31_stop_on_the_primary() {
        // Real `age(datfrozenxid)` figures: a young cluster, one just past the default
        // autovacuum_freeze_max_age, half way, and one that vacuum has not frozen for long.
        for (node, age, expected) in [
            ("node1", 1_043u64, None),
            ("node1", 200_000_321, None),
            ("node1", 1_073_741_824, Some(Severity::Warning)),
            ("node1", 1_800_000_000, Some(Severity::Critical)),
            ("node2", 1_800_000_000, None),
        ] {
            let lab = Lab::healthy().set(
                node,
                "postgres.xmin_horizon",
                Status::Ok,
                json!({"frozen_database": "shop", "frozen_xid_age": age,
                       "autovacuum_freeze_max_age": 200000000}),
            );
            let v = lab.verdict();
            let got = v.findings.iter().find(|f| f.code == Code::XidWraparound);
            assert_eq!(
                got.map(|f| f.severity),
                expected,
                "{node} {age}: {:?}",
                v.findings
            );
            if let Some(f) = got {
                assert!(f.message.contains("database shop"), "{}", f.message);
            }
        }
    }
}
