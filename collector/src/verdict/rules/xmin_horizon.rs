//! XMIN_HORIZON_HELD: something keeps VACUUM from removing dead rows and freezing old ones on a
//! node — a transaction open for `xmin_hold_warning` (an `idle in transaction` session
//! forgotten by an application, a prepared transaction never committed), or a holder
//! `xmin_age_warning` transactions behind (a standby's `hot_standby_feedback`, a slot's `xmin`
//! or `catalog_xmin`). Bloat, then XID wraparound, follow: a warning naming each holder —
//! pid, user, application and client of a session — so that it can be ended.

use crate::model::ProbeId;
use crate::verdict::view::View;
use crate::verdict::{Code, Finding, Severity};

pub fn check(view: &View<'_>, findings: &mut Vec<Finding>) {
    let p = view.policy;
    let old_xids = |age: Option<u64>| age.is_some_and(|a| a >= p.xmin_age_warning);
    for n in view.fresh().filter(|n| n.is_db()) {
        let Some(h) = n.xmin_horizon() else {
            continue;
        };
        let mut holders = Vec::new();
        if let Some(s) = &h.oldest_session
            && (s.xact_age_s.unwrap_or(0.0) >= p.xmin_hold_warning_s || old_xids(s.xid_age))
        {
            holders.push(format!(
                "pid {} (user {}, application {}, client {}) {} for {:.0}s, {} transactions behind",
                s.pid,
                s.user.as_deref().unwrap_or("?"),
                s.application_name
                    .as_deref()
                    .filter(|a| !a.is_empty())
                    .unwrap_or("unnamed"),
                s.client_addr.as_deref().unwrap_or("local"),
                s.state.as_deref().unwrap_or("in a transaction"),
                s.xact_age_s.unwrap_or(0.0),
                s.xid_age.unwrap_or(0)
            ));
        }
        if let Some(t) = &h.oldest_prepared
            && (t.age_s.unwrap_or(0.0) >= p.xmin_hold_warning_s || old_xids(t.xid_age))
        {
            holders.push(format!(
                "prepared transaction '{}' (owner {}, database {}) for {:.0}s",
                t.gid,
                t.owner.as_deref().unwrap_or("?"),
                t.database.as_deref().unwrap_or("?"),
                t.age_s.unwrap_or(0.0)
            ));
        }
        if let Some(f) = &h.oldest_feedback
            && old_xids(f.xid_age)
        {
            holders.push(format!(
                "standby {}'s hot_standby_feedback, {} transactions behind",
                f.application_name.as_deref().unwrap_or("?"),
                f.xid_age.unwrap_or(0)
            ));
        }
        for s in n.wal_retention().into_iter().flat_map(|w| &w.slots) {
            let age = s.xmin_age.max(s.catalog_xmin_age);
            if old_xids(age) {
                holders.push(format!(
                    "slot {}'s xmin, {} transactions behind",
                    s.name,
                    age.unwrap_or(0)
                ));
            }
        }
        if holders.is_empty() {
            continue;
        }
        let name = n.name();
        findings.push(
            Finding::new(
                Code::XminHorizonHeld,
                Severity::Warning,
                vec![name.to_string()],
                format!(
                    "{name} ({}): VACUUM cannot clean up past {}",
                    view.role_words(name),
                    holders.join("; ")
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

    fn horizon(lab: Lab, node: &str, facts: serde_json::Value) -> Lab {
        lab.set(node, "postgres.xmin_horizon", Status::Ok, facts)
    }

    fn message(lab: &Lab) -> Option<String> {
        let v = lab.verdict();
        v.findings
            .iter()
            .find(|f| f.code == Code::XminHorizonHeld)
            .inspect(|f| assert_eq!(f.severity, Severity::Warning))
            .map(|f| f.message.clone())
    }

    #[test]
    fn a_session_idle_in_transaction_for_long_is_named() {
        let session = |age: f64| {
            json!({"oldest_session": {"pid": 31337, "user": "app", "application_name": "billing",
                   "client_addr": "10.0.0.7", "state": "idle in transaction", "xact_age_s": age,
                   "xid_age": 5000}, "autovacuum_freeze_max_age": 200000000})
        };
        assert_eq!(
            message(&horizon(Lab::healthy(), "node1", session(60.0))),
            None
        );
        let m = message(&horizon(Lab::healthy(), "node1", session(2_000.0))).expect("held");
        assert!(
            m.contains("pid 31337 (user app, application billing, client 10.0.0.7) idle in transaction for 2000s"),
            "{m}"
        );
    }

    #[test]
    fn slots_feedback_and_prepared_transactions_hold_it_too() {
        let lab = horizon(
            Lab::healthy(),
            "node1",
            json!({"oldest_feedback": {"application_name": "node3", "xid_age": 150000000},
                   "oldest_prepared": {"gid": "tx-42", "owner": "app", "database": "shop",
                                       "age_s": 7200.0, "xid_age": 10}}),
        )
        .set(
            "node1",
            "postgres.wal_retention",
            Status::Ok,
            json!({"slots": [{"name": "debezium", "slot_type": "logical", "active": true,
                              "catalog_xmin_age": 120000000u64}], "archive_mode": "off"}),
        );
        let m = message(&lab).expect("held");
        assert!(m.contains("standby node3's hot_standby_feedback"), "{m}");
        assert!(m.contains("prepared transaction 'tx-42'"), "{m}");
        assert!(m.contains("slot debezium's xmin, 120000000"), "{m}");
    }
}
