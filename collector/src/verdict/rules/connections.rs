//! CONNECTIONS_SATURATED: a database node's connection slots for ordinary roles are (nearly) used
//! up. At 100 % applications' new logins are refused ("remaining connection slots are
//! reserved…") while the agent's and Patroni's long-lived sessions still work: critical where
//! writes are served, a warning on a replica. Above `connections_warning_percent`, a warning.

use crate::model::ProbeId;
use crate::model::wire::Refusal;
use crate::verdict::view::View;
use crate::verdict::{Code, Finding, Severity};

pub fn check(view: &View<'_>, findings: &mut Vec<Finding>) {
    let threshold = view.policy.connections_warning_percent;
    for n in view.fresh().filter(|n| n.is_db()) {
        let name = n.name().to_string();
        let slots = n.connections();
        let refused = n.accept().map(|a| a.refused()) == Some(Refusal::TooManyConnections);
        let full = refused || slots.is_some_and(|c| c.free == 0);
        let slots_text = match slots {
            Some(c) => format!(
                "{} client sessions, {} slots usable",
                c.client_backends, c.usable
            ),
            None => "connection slots unknown".to_string(),
        };
        let role = view.role_words(&name);
        let finding = if full {
            let severity = if view.serves_writes(&name) {
                Severity::Critical
            } else {
                Severity::Warning
            };
            let why = n
                .accept()
                .and_then(|a| a.error.as_deref())
                .filter(|_| refused)
                .map_or(String::new(), |e| {
                    format!("; the monitoring role's login: {e}")
                });
            Finding::new(
                Code::ConnectionsSaturated,
                severity,
                vec![name.clone()],
                format!(
                    "{name} ({role}) refuses new logins, no connection slot left for applications ({slots_text}){why}"
                ),
            )
        } else if let Some(pct) = slots.map(|c| c.used_percent)
            && pct >= threshold
        {
            Finding::new(
                Code::ConnectionsSaturated,
                Severity::Warning,
                vec![name.clone()],
                format!(
                    "{name} ({role}): {pct:.0}% of its connection slots in use ({slots_text}; warning from {threshold:.0}%)"
                ),
            )
        } else {
            continue;
        };
        findings.push(
            finding
                .with_all(n.evidence(ProbeId::PostgresConnections))
                .with_all(n.evidence(ProbeId::PostgresAccept).filter(|_| refused))
                // One busy instant is not saturation yet: a second observation confirms it.
                .confirmed_later(),
        );
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::model::Status;
    use crate::verdict::testkit::{Lab, has};
    use crate::verdict::{Code, Severity, evaluate};

    fn slots(lab: Lab, node: &str, used: u32, usable: u32) -> Lab {
        let status = if used >= usable {
            Status::Critical
        } else {
            Status::Ok
        };
        lab.set(
            node,
            "postgres.connections",
            status,
            json!({"client_backends": used, "usable": usable, "free": usable.saturating_sub(used),
                   "used_percent": f64::from(used) * 100.0 / f64::from(usable)}),
        )
    }

    fn severity(lab: &Lab, node: &str) -> Option<Severity> {
        let v = evaluate(&lab.snap, crate::verdict::testkit::NOW, &Default::default());
        v.findings
            .iter()
            .find(|f| f.code == Code::ConnectionsSaturated && f.nodes == [node])
            .map(|f| f.severity)
    }

    #[test]
    fn table() {
        for (node, used, usable, expected) in [
            ("node1", 50, 97, None),
            ("node1", 87, 97, None),
            ("node1", 88, 97, Some(Severity::Warning)),
            ("node1", 97, 97, Some(Severity::Critical)),
            ("node2", 97, 97, Some(Severity::Warning)),
            ("node2", 88, 97, Some(Severity::Warning)),
        ] {
            let lab = slots(Lab::healthy(), node, used, usable);
            assert_eq!(severity(&lab, node), expected, "{node} {used}/{usable}");
        }
    }

    #[test]
    fn a_refused_login_is_saturation_not_postgres_down() {
        let lab = Lab::healthy().set(
            "node1",
            "postgres.accept",
            Status::Critical,
            json!({"refused": "too_many_connections", "sqlstate": "53300"}),
        );
        assert_eq!(severity(&lab, "node1"), Some(Severity::Critical));
        let v = lab.verdict();
        assert!(
            has(&v, Code::ConnectionsSaturated, &["node1"]),
            "{:?}",
            v.findings
        );
        assert!(
            !v.findings.iter().any(|f| f.code == Code::PostgresDown),
            "{:?}",
            v.findings
        );
    }

    #[test]
    fn the_threshold_is_the_policy_s() {
        let lab = slots(Lab::healthy(), "node2", 80, 100);
        let policy = crate::verdict::Policy {
            connections_warning_percent: 75.0,
            ..Default::default()
        };
        let v = evaluate(&lab.snap, crate::verdict::testkit::NOW, &policy);
        assert!(
            v.findings
                .iter()
                .any(|f| f.code == Code::ConnectionsSaturated)
        );
        assert_eq!(
            severity(&lab, "node2"),
            None,
            "80% is under the default 90%"
        );
    }
}
