//! PATRONI_UNKNOWN_STATE: Patroni reports a role or a state word the agent does not know (a newer
//! Patroni, a patched one). Shown verbatim and judged not healthy: vigie cannot vouch for a state
//! it does not understand.

use std::collections::BTreeSet;

use crate::model::ProbeId;
use crate::verdict::view::{StateKind, View};
use crate::verdict::{Code, Finding, Severity};

pub fn check(view: &View<'_>, findings: &mut Vec<Finding>) {
    let mut seen = BTreeSet::new();
    // What each node's Patroni says of itself, then what the members list says of the others.
    for n in view.fresh().filter(|n| n.is_db()) {
        let Some(p) = n.patroni_node() else {
            continue;
        };
        if let Some(words) = unknown_words(p.state_kind(), &p.state, p.role_known, &p.role) {
            let name = n.name().to_string();
            seen.insert(name.clone());
            findings.push(
                Finding::new(
                    Code::PatroniUnknownState,
                    Severity::Warning,
                    vec![name.clone()],
                    format!("Patroni on {name} reports {words}: vigie does not know it, so cannot call it healthy"),
                )
                .with_all(n.evidence(ProbeId::PatroniNode)),
            );
        }
    }
    for n in view.fresh() {
        for m in n.patroni_cluster().into_iter().flat_map(|c| &c.members) {
            if seen.contains(&m.name) {
                continue;
            }
            if let Some(words) = unknown_words(m.state_kind(), &m.state, m.role_known, &m.role) {
                seen.insert(m.name.clone());
                findings.push(
                    Finding::new(
                        Code::PatroniUnknownState,
                        Severity::Warning,
                        vec![m.name.clone()],
                        format!("Patroni lists {} with {words}: vigie does not know it, so cannot call it healthy", m.name),
                    )
                    .with_all(n.evidence(ProbeId::PatroniCluster)),
                );
            }
        }
    }
}

/// The words at fault, verbatim (`state "hibernating"`, `role "archiver"`), if any.
fn unknown_words(kind: StateKind, state: &str, role_known: bool, role: &str) -> Option<String> {
    let mut words = Vec::new();
    if kind == StateKind::Unknown {
        words.push(format!("state {state:?}"));
    }
    if !role_known {
        words.push(format!("role {role:?}"));
    }
    (!words.is_empty()).then(|| words.join(" and "))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::model::Status;
    use crate::verdict::testkit::{Lab, has};
    use crate::verdict::{Code, Health};

    #[test]
    fn unknown_words_are_named_and_not_healthy() {
        let v = Lab::healthy().verdict();
        assert!(
            !v.findings
                .iter()
                .any(|f| f.code == Code::PatroniUnknownState)
        );

        let odd_state = Lab::healthy().patch(
            "node2",
            "patroni.node",
            Status::Critical,
            json!({"state": "hibernating", "state_kind": "unknown"}),
        );
        let v = odd_state.verdict();
        assert!(
            has(&v, Code::PatroniUnknownState, &["node2"]),
            "{:?}",
            v.findings
        );
        let f = v
            .findings
            .iter()
            .find(|f| f.code == Code::PatroniUnknownState)
            .expect("finding");
        assert!(f.message.contains("state \"hibernating\""), "{}", f.message);
        assert_ne!(v.health, Health::Healthy);

        let odd_role = Lab::healthy().patch(
            "node3",
            "patroni.node",
            Status::Warning,
            json!({"role": "archiver", "role_known": false}),
        );
        let v = odd_role.verdict();
        assert!(
            has(&v, Code::PatroniUnknownState, &["node3"]),
            "{:?}",
            v.findings
        );
        assert_ne!(v.health, Health::Healthy);
    }

    #[test]
    fn a_member_listed_with_an_unknown_state_is_named_once() {
        let lab = Lab::healthy().edit_members(&["node1", "node2", "node3"], |m| {
            if m.name == "node3" {
                m.state = "hibernating".into();
                m.state_kind = crate::model::wire::StateKind::Unknown as i32;
            }
        });
        let v = lab.verdict();
        let found: Vec<_> = v
            .findings
            .iter()
            .filter(|f| f.code == Code::PatroniUnknownState)
            .collect();
        assert_eq!(found.len(), 1, "{:?}", v.findings);
        assert_eq!(found[0].nodes, vec!["node3".to_string()]);
    }
}
