//! MAINTENANCE_MODE, PENDING_RESTART: Patroni paused (it will not fail over), a node waiting
//! for a restart to apply settings.

use crate::model::ProbeId;
use crate::verdict::view::View;
use crate::verdict::{Code, Finding, Severity};

pub fn check(view: &View<'_>, findings: &mut Vec<Finding>) {
    if let Some(n) = view
        .fresh()
        .find(|n| n.patroni_cluster().is_some_and(|c| c.paused))
    {
        findings.push(
            Finding::new(
                Code::MaintenanceMode,
                Severity::Warning,
                Vec::new(),
                "Patroni is in maintenance mode: it will neither fail over nor restart PostgreSQL"
                    .to_string(),
            )
            .with_all(n.evidence(ProbeId::PatroniCluster)),
        );
    }
    for n in view.fresh() {
        if n.patroni_node().is_some_and(|p| p.pending_restart) {
            let name = n.name().to_string();
            findings.push(
                Finding::new(
                    Code::PendingRestart,
                    Severity::Warning,
                    vec![name.clone()],
                    format!("{name} needs a restart to apply its settings"),
                )
                .with_all(n.evidence(ProbeId::PatroniNode)),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::model::Status;
    use crate::verdict::testkit::{Lab, has};
    use crate::verdict::{Code, Health};

    #[test]
    fn table() {
        let paused = Lab::healthy().patch(
            "node2",
            "patroni.cluster",
            Status::Warning,
            json!({"paused": true}),
        );
        let v = paused.verdict();
        assert!(has(&v, Code::MaintenanceMode, &[]), "{:?}", v.findings);
        assert_eq!(v.health, Health::Degraded);
        let pending = Lab::healthy().patch(
            "node3",
            "patroni.node",
            Status::Warning,
            json!({"pending_restart": true}),
        );
        assert!(has(&pending.verdict(), Code::PendingRestart, &["node3"]));
    }

    #[test]
    fn faults_during_maintenance_are_still_reported() {
        let lab = Lab::healthy()
            .patch(
                "node2",
                "patroni.cluster",
                Status::Warning,
                json!({"paused": true}),
            )
            .set(
                "node3",
                "postgres.wal_receiver",
                Status::Critical,
                json!({"present": false}),
            );
        let v = lab.verdict();
        assert!(has(&v, Code::MaintenanceMode, &[]));
        assert!(has(&v, Code::ReplicaNotStreaming, &["node3"]));
    }
}
