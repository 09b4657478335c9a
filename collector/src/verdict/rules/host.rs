//! RESOURCE_PRESSURE, LOCK_WAITS, CLOCK_SKEW: host resources, sessions stuck on locks, and an
//! agent clock that disagrees with the collector's.

use crate::model::ProbeId;
use crate::model::Status;
use crate::verdict::view::View;
use crate::verdict::{Code, Finding, Severity};

fn severity(s: Option<Status>) -> Option<Severity> {
    match s {
        Some(Status::Critical) => Some(Severity::Critical),
        Some(Status::Warning) => Some(Severity::Warning),
        _ => None,
    }
}

pub fn check(view: &View<'_>, findings: &mut Vec<Finding>) {
    for n in view.fresh() {
        let name = n.name().to_string();
        for probe in [
            ProbeId::SystemCpu,
            ProbeId::SystemMemory,
            ProbeId::SystemDisk,
        ] {
            if let Some(sev) = severity(n.status(probe))
                && n.result(probe).is_some_and(|o| o.facts.is_some())
            {
                let msg = n.result(probe).map_or("", |o| o.message.as_str());
                findings.push(
                    Finding::new(
                        Code::ResourcePressure,
                        sev,
                        vec![name.clone()],
                        format!("{name} {probe}: {msg}"),
                    )
                    .with_all(n.evidence(probe)),
                );
            }
        }
        // A failed SQL snapshot says nothing about locks (POSTGRES_DOWN speaks for it).
        if let Some(sev) = severity(n.status(ProbeId::PostgresLocks))
            && n.locks().is_some()
        {
            let msg = n
                .result(ProbeId::PostgresLocks)
                .map_or("", |o| o.message.as_str());
            findings.push(
                Finding::new(
                    Code::LockWaits,
                    sev,
                    vec![name.clone()],
                    format!("{name}: {msg}"),
                )
                .with_all(n.evidence(ProbeId::PostgresLocks)),
            );
        }
        if let Some(offset) = n.state.clock_offset_ms
            && offset.saturating_abs() > view.policy.clock_skew_ms
        {
            findings.push(
                Finding::new(
                    Code::ClockSkew,
                    Severity::Warning,
                    vec![name.clone()],
                    format!(
                        "{name}'s clock is {:.1}s {} the collector's",
                        offset.saturating_abs() as f64 / 1000.0,
                        if offset > 0 { "behind" } else { "ahead of" }
                    ),
                )
                .with_all([crate::verdict::Evidence {
                    node: name.clone(),
                    probe: "clock".to_string(),
                    observed: format!("receive time − agent time = {offset} ms"),
                    at_ms: n.state.last_seen_ms,
                }])
                // One batch delayed on its way is not a skewed clock: the next one must agree.
                .confirmed_later(),
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
        let v = Lab::healthy()
            .set(
                "node2",
                "system.disk",
                Status::Critical,
                json!({"filesystems": []}),
            )
            .verdict();
        assert!(has(&v, Code::ResourcePressure, &["node2"]));
        assert_eq!(v.health, Health::Critical);
        let v = Lab::healthy()
            .set(
                "node1",
                "postgres.locks",
                Status::Warning,
                json!({"waiting_sessions": 2}),
            )
            .verdict();
        assert!(has(&v, Code::LockWaits, &["node1"]));
        assert_eq!(v.health, Health::Degraded);
        let mut lab = Lab::healthy();
        lab.node_mut("node3").clock_offset_ms = Some(-7_000);
        let v = lab.verdict();
        assert!(has(&v, Code::ClockSkew, &["node3"]));
    }
}
