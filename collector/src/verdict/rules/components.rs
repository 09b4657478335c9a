//! PATRONI_DOWN, POSTGRES_DOWN: a database node's Patroni daemon or PostgreSQL is down (or
//! accepts no new connections). Critical on the leader, a warning on a replica.

use crate::model::wire::Refusal;
use crate::model::{ProbeId, Status};
use crate::verdict::view::{NodeView, StateKind, View};
use crate::verdict::{Code, Finding, Severity};

pub fn check(view: &View<'_>, findings: &mut Vec<Finding>, blind: &mut Vec<String>) {
    for n in view.fresh().filter(|n| n.is_db()) {
        let name = n.name().to_string();
        let severity = if view.serves_writes(&name) {
            Severity::Critical
        } else {
            Severity::Warning
        };
        let role = view.role_words(&name);
        let critical = |probe: ProbeId| n.status(probe) == Some(Status::Critical);

        if critical(ProbeId::PatroniProcess) || critical(ProbeId::PatroniApiPort) {
            findings.push(
                Finding::new(
                    Code::PatroniDown,
                    severity,
                    vec![name.clone()],
                    format!("Patroni is down on {name} ({role})"),
                )
                .with_all(n.evidence(ProbeId::PatroniProcess))
                .with_all(n.evidence(ProbeId::PatroniApiPort)),
            );
        }
        // vigie's own login refused (pg_hba, password, privilege, TLS files) while Patroni says
        // PostgreSQL runs: a monitoring fault, not an outage — but its SQL (writability, slots)
        // is unobserved, so a critical condition cannot be excluded.
        let ours = matches!(
            n.accept().map(|a| a.refused()),
            Some(Refusal::Authentication | Refusal::MonitoringSetup)
        );
        // (Only while the agent's session fails too: a refusal kept from the last login, up to
        // `accept_check_interval` old, says nothing once the SQL answers again.)
        let sql_failed = n.status(ProbeId::PostgresRecovery) == Some(Status::Critical)
            && n.in_recovery().is_none();
        if ours && sql_failed && n.status(ProbeId::PatroniHealth) == Some(Status::Ok) {
            let why = n
                .accept()
                .and_then(|a| a.error.as_deref())
                .unwrap_or("refused");
            blind.push(format!(
                "{name} ({role}): vigie's own PostgreSQL login is refused ({why}); Patroni says PostgreSQL runs, but its SQL (writability, connection slots, locks) is unobserved"
            ));
            continue;
        }
        if let Some(message) = postgres_down(n) {
            // Patroni stopping or starting PostgreSQL itself (a switchover's demotion, a
            // restart it runs) gets the transition grace; a crash Patroni has not seen yet
            // does not.
            let managed = matches!(
                n.patroni_node().map(|p| p.state_kind()),
                Some(StateKind::Transitional | StateKind::Stopped)
            );
            let grace = if managed {
                view.policy
                    .transition_grace_ms
                    .max(view.observation_skew_ms())
            } else {
                0
            };
            findings.push(
                Finding::new(
                    Code::PostgresDown,
                    severity,
                    vec![name.clone()],
                    format!("PostgreSQL on {name} ({role}) {message}"),
                )
                .with_all(n.evidence(ProbeId::PostgresRecovery))
                .with_all(n.evidence(ProbeId::PostgresAccept))
                .with_all(n.evidence(ProbeId::PatroniHealth))
                .with_all(n.evidence(ProbeId::PatroniNode))
                .grace(grace)
                // One statement timeout (a disk-sync stall) is not an outage yet.
                .confirmed_later(),
            );
        }
    }
}

/// Why PostgreSQL counts as down on this node, if it does.
fn postgres_down(n: &NodeView<'_>) -> Option<String> {
    let sql_failed =
        n.status(ProbeId::PostgresRecovery) == Some(Status::Critical) && n.in_recovery().is_none();
    // A login refused for want of a connection slot is CONNECTIONS_SATURATED's.
    let accept_failed = n.status(ProbeId::PostgresAccept) == Some(Status::Critical)
        && n.accept().map(|a| a.refused()) != Some(Refusal::TooManyConnections);
    let patroni_says_down = n.status(ProbeId::PatroniHealth) == Some(Status::Critical)
        && n.status(ProbeId::PatroniApiPort) != Some(Status::Critical);
    if sql_failed && (accept_failed || patroni_says_down) {
        let why = n
            .result(ProbeId::PostgresAccept)
            .filter(|_| accept_failed)
            .or(n.result(ProbeId::PostgresRecovery));
        return Some(format!(
            "is down: {}",
            why.map_or("no answer", |o| o.message.as_str())
        ));
    }
    if accept_failed {
        let why = n
            .result(ProbeId::PostgresAccept)
            .map_or("", |o| o.message.as_str());
        return Some(format!("accepts no new connections: {why}"));
    }
    if sql_failed {
        let why = n
            .result(ProbeId::PostgresRecovery)
            .map_or("", |o| o.message.as_str());
        return Some(format!("does not answer the agent: {why}"));
    }
    None
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::model::Status;
    use crate::verdict::testkit::{Lab, has};
    use crate::verdict::{Code, Health, Severity};

    #[test]
    fn table() {
        let replica_pg_down = Lab::healthy()
            .sql_failed("node3", "cannot connect: connection refused")
            .set(
                "node3",
                "postgres.accept",
                Status::Critical,
                serde_json::Value::Null,
            )
            .set(
                "node3",
                "patroni.health",
                Status::Critical,
                serde_json::Value::Null,
            );
        let cases = [
            (
                "replica PostgreSQL down",
                replica_pg_down,
                Code::PostgresDown,
                "node3",
                Severity::Warning,
            ),
            (
                "leader postmaster frozen",
                Lab::healthy().set(
                    "node1",
                    "postgres.accept",
                    Status::Critical,
                    serde_json::Value::Null,
                ),
                Code::PostgresDown,
                "node1",
                Severity::Critical,
            ),
            (
                "replica Patroni down",
                Lab::healthy().set(
                    "node2",
                    "patroni.process",
                    Status::Critical,
                    serde_json::Value::Null,
                ),
                Code::PatroniDown,
                "node2",
                Severity::Warning,
            ),
        ];
        for (name, lab, code, node, severity) in cases {
            let v = lab.verdict();
            assert!(has(&v, code, &[node]), "{name}: {:?}", v.findings);
            let f = v.findings.iter().find(|f| f.code == code).expect("finding");
            assert_eq!(f.severity, severity, "{name}");
            assert!(!f.evidence.is_empty(), "{name}: no evidence");
        }
        let v = Lab::healthy()
            .set(
                "node1",
                "postgres.accept",
                Status::Critical,
                serde_json::Value::Null,
            )
            .verdict();
        assert_eq!(v.health, Health::Critical);
    }

    #[test]
    fn a_demoted_leader_restarting_under_patroni_is_graced_a_crash_is_not() {
        use crate::verdict::history::FindingHistory;
        use crate::verdict::testkit::NOW;
        use crate::verdict::{Policy, evaluate};
        let policy = Policy::default();
        let down = |state: &str| {
            Lab::healthy()
                .sql_failed("node1", "connection refused")
                .set(
                    "node1",
                    "postgres.accept",
                    Status::Critical,
                    serde_json::Value::Null,
                )
                .patch(
                    "node1",
                    "patroni.node",
                    Status::Critical,
                    json!({"state": state, "state_kind": match state {
                        "running" => "running",
                        _ => "transitional",
                    }}),
                )
        };
        // Observed twice, one agent interval apart (the second batch confirms the first).
        let later = |lab: Lab| {
            let mut lab = lab;
            for o in lab.node_mut("node1").results.values_mut() {
                let o = std::sync::Arc::make_mut(o);
                o.received_ms += 1_000;
                o.received_mono_ms += 1_000;
            }
            lab
        };
        for (state, health) in [
            ("stopping", Health::Degraded),
            ("starting", Health::Degraded),
            ("running", Health::Critical),
        ] {
            let mut h = FindingHistory::default();
            let mut first = evaluate(&down(state).snap, NOW, &policy);
            h.apply(&mut first, &policy);
            assert_eq!(
                first.health,
                Health::Degraded,
                "one failed read is not an outage yet: {:?}",
                first.findings
            );
            let mut v = evaluate(&later(down(state)).snap, NOW + 1_000, &policy);
            h.apply(&mut v, &policy);
            assert_eq!(v.health, health, "Patroni state {state}: {:?}", v.findings);
        }
    }

    #[test]
    fn the_old_leader_down_after_another_took_over_is_a_warning() {
        let lab = Lab::healthy_with_leader(2)
            .sql_failed("node1", "connection refused")
            .set(
                "node1",
                "postgres.accept",
                Status::Critical,
                serde_json::Value::Null,
            );
        let v = lab.verdict();
        let f = v
            .findings
            .iter()
            .find(|f| f.code == Code::PostgresDown)
            .expect("finding");
        assert_eq!(f.severity, Severity::Warning);
    }

    #[test]
    fn the_monitoring_role_refused_is_a_blind_spot_not_postgres_down() {
        let lab = Lab::healthy()
            .sql_failed("node1", "password authentication failed for user \"vigie\"")
            .set(
                "node1",
                "postgres.accept",
                Status::Unknown,
                json!({"refused": "authentication", "error": "127.0.0.11:5432: FATAL: password authentication failed"}),
            );
        let v = lab.verdict();
        assert!(
            !v.findings.iter().any(|f| f.code == Code::PostgresDown),
            "{:?}",
            v.findings
        );
        assert_eq!(v.health, Health::Unknown, "{:?}", v.blind_spots);
        assert!(
            v.blind_spots
                .iter()
                .any(|b| b.contains("node1 (leader): vigie's own PostgreSQL login is refused")),
            "{:?}",
            v.blind_spots
        );

        // The password fixed: the SQL answers again while the last login's refusal is still the
        // latest one — no blind spot.
        let fixed = Lab::healthy().set(
            "node1",
            "postgres.accept",
            Status::Unknown,
            json!({"refused": "authentication", "error": "old"}),
        );
        assert!(fixed.verdict().blind_spots.is_empty());
    }
}
