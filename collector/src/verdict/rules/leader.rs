//! NO_LEADER, SPLIT_BRAIN, LEADER_NOT_WRITABLE: exactly one writable primary across the nodes,
//! and it is the node Patroni names leader.

use crate::model::ProbeId;
use crate::verdict::view::View;
use crate::verdict::{Code, Finding, Severity};

pub fn check(view: &View<'_>, findings: &mut Vec<Finding>, _blind: &mut [String]) {
    let writable = view.writable();
    let leader = view.patroni_leader();
    let names: Vec<String> = writable.iter().map(|n| n.name().to_string()).collect();

    if writable.len() > 1 {
        let mut f = Finding::new(
            Code::SplitBrain,
            Severity::Critical,
            names.clone(),
            format!(
                "{} writable primaries: {} (Patroni's leader: {})",
                writable.len(),
                names.join(", "),
                leader.unwrap_or("none")
            ),
        )
        .grace(view.observation_skew_ms());
        for n in &writable {
            f.evidence.extend(n.evidence(ProbeId::PostgresRecovery));
        }
        findings.push(f);
    }

    let Some(leader) = leader else {
        // Only say so when someone fresh could have told us.
        if view
            .fresh()
            .any(|n| n.result(ProbeId::PatroniCluster).is_some())
            || !writable.is_empty()
        {
            let mut f = Finding::new(
                Code::NoLeader,
                Severity::Critical,
                Vec::new(),
                "Patroni names no leader".to_string(),
            )
            .grace(view.observation_skew_ms());
            for n in view.fresh().filter(|n| n.is_db()) {
                f.evidence.extend(n.evidence(ProbeId::PatroniCluster));
            }
            findings.push(f);
        } else if view.fresh().any(|n| n.is_db()) {
            // DB agents are fresh but none can reach Patroni: judge from SQL alone.
            if writable.is_empty() {
                findings.push(Finding::new(
                    Code::NoLeader,
                    Severity::Critical,
                    Vec::new(),
                    "no node is writable and no Patroni answers".to_string(),
                ));
            }
        }
        return;
    };
    let Some(node) = view.node(leader).filter(|n| n.fresh) else {
        return; // blind spot already recorded by the agents rule
    };
    match node.in_recovery() {
        Some(true) => {
            let others: Vec<&str> = names
                .iter()
                .map(String::as_str)
                .filter(|n| *n != leader)
                .collect();
            let also = if others.is_empty() {
                String::new()
            } else {
                format!("; writable instead: {}", others.join(", "))
            };
            let mut f = Finding::new(
                Code::LeaderNotWritable,
                Severity::Critical,
                vec![leader.to_string()],
                format!("Patroni's leader {leader} is in recovery (read-only): writes fail{also}"),
            )
            .grace(view.observation_skew_ms());
            f.evidence.extend(node.evidence(ProbeId::PostgresRecovery));
            f.evidence.extend(node.evidence(ProbeId::PatroniNode));
            findings.push(f);
        }
        Some(false) => {}
        // SQL unreadable on the leader: POSTGRES_DOWN speaks for it.
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::model::Status;
    use crate::verdict::testkit::{Lab, check_cases, has};
    use crate::verdict::{Code, Health};

    #[test]
    fn table() {
        let cases = [
            ("healthy", Lab::healthy(), Health::Healthy, None, &[][..]),
            (
                "second writable node",
                Lab::healthy().patch(
                    "node2",
                    "postgres.recovery",
                    Status::Critical,
                    json!({"in_recovery": false}),
                ),
                Health::Critical,
                Some(Code::SplitBrain),
                &["node1", "node2"][..],
            ),
            (
                "read-only leader",
                Lab::healthy().patch(
                    "node1",
                    "postgres.recovery",
                    Status::Critical,
                    json!({"in_recovery": true}),
                ),
                Health::Critical,
                Some(Code::LeaderNotWritable),
                &["node1"][..],
            ),
        ];
        check_cases(cases);
    }

    #[test]
    fn no_leader_in_any_view() {
        let mut lab = Lab::healthy();
        for n in ["node1", "node2", "node3"] {
            lab = lab.patch(
                n,
                "patroni.cluster",
                Status::Critical,
                json!({"leader": null}),
            );
        }
        let v = lab.verdict();
        assert!(has(&v, Code::NoLeader, &[]), "{:?}", v.findings);
        assert_eq!(v.health, Health::Critical);
    }

    #[test]
    fn orphaned_old_primary_after_failover_is_split_brain() {
        // node1's Patroni was killed: node2 took over, node1's PostgreSQL is still writable.
        let lab = Lab::healthy_with_leader(2)
            .patch(
                "node1",
                "postgres.recovery",
                Status::Critical,
                json!({"in_recovery": false}),
            )
            .set(
                "node1",
                "patroni.process",
                Status::Critical,
                serde_json::Value::Null,
            )
            .set(
                "node1",
                "patroni.node",
                Status::Critical,
                serde_json::Value::Null,
            )
            .set(
                "node1",
                "patroni.cluster",
                Status::Critical,
                serde_json::Value::Null,
            );
        let v = lab.verdict();
        assert!(
            has(&v, Code::SplitBrain, &["node1", "node2"]),
            "{:?}",
            v.findings
        );
        assert_eq!(v.leader.as_deref(), Some("node2"));
    }
}
