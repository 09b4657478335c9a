//! Agent ↔ collector version skew: an agent older than the typed wire names its probes by text
//! and sends its facts in a form this collector no longer reads. Its statuses are still judged
//! (a probe it reports critical still counts), but every fact the rules correlate — roles, WAL
//! positions, members, HAProxy's routing — is missing from that node: each is a blind spot,
//! named with the agent's version, so the verdict is never `healthy` on statuses alone.

use crate::model::ProbeId;
use crate::verdict::view::View;

/// Probes newer than the typed wire's first version, by the probe that shows their component
/// is watched on a node: a typed agent older than them reports that component without these,
/// and what they watch is then unwatched there.
const LATER_PROBES: [(ProbeId, &[ProbeId], &str); 2] = [
    (
        ProbeId::PostgresRecovery,
        &[ProbeId::PostgresWalRetention, ProbeId::PostgresXminHorizon],
        "WAL retention, archiving and the xmin horizon are",
    ),
    (
        ProbeId::PatroniNode,
        &[ProbeId::PatroniConfig],
        "Patroni's synchronous mode is",
    ),
];

pub fn check(view: &View<'_>, blind: &mut Vec<String>) {
    for (shown_by, later, what) in LATER_PROBES {
        for n in view.fresh().filter(|n| !n.state.untyped_facts) {
            if n.result(shown_by).is_none() {
                continue; // that component is not watched on this node
            }
            let missing: Vec<&str> = later
                .iter()
                .filter(|id| !n.state.results.contains_key(id))
                .map(|id| id.name())
                .collect();
            if !missing.is_empty() {
                blind.push(format!(
                    "the agent on {} (version {}) does not report {}: {what} unwatched there; upgrade it",
                    n.name(),
                    n.state.agent_version,
                    missing.join(", ")
                ));
            }
        }
    }
    for n in view.fresh().filter(|n| n.state.untyped_facts) {
        let missing: Vec<&str> = n
            .state
            .results
            .iter()
            .filter(|(_, o)| o.facts.is_none())
            .map(|(id, _)| id.name())
            .collect();
        if missing.is_empty() {
            continue;
        }
        blind.push(format!(
            "the agent on {} (version {}) predates the typed wire: its statuses are judged, but its facts are unread ({}); upgrade it",
            n.name(),
            n.state.agent_version,
            missing.join(", ")
        ));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::model::Status;
    use crate::verdict::testkit::{Lab, has};
    use crate::verdict::{Code, Health};

    /// `node`'s agent is an older one: the same statuses, no typed facts.
    fn older_agent(mut lab: Lab, node: &str) -> Lab {
        let n = lab.node_mut(node);
        n.untyped_facts = true;
        n.agent_version = "0.1.0".into();
        for o in n.results.values_mut() {
            Arc::make_mut(o).facts = None;
        }
        lab
    }

    #[test]
    fn a_typed_agent_without_the_later_sql_probes_is_a_blind_spot() {
        let mut lab = Lab::healthy();
        let n = lab.node_mut("node3");
        n.agent_version = "0.2.0".into();
        n.results
            .remove(&crate::model::ProbeId::PostgresWalRetention);
        let v = lab.verdict();
        assert_eq!(v.health, Health::Unknown, "{:?}", v.findings);
        assert!(
            v.blind_spots.iter().any(|b| b.contains("node3 (version 0.2.0) does not report postgres.wal_retention")),
            "{:?}",
            v.blind_spots
        );
    }

    #[test]
    fn a_typed_agent_without_patroni_config_is_a_blind_spot() {
        let mut lab = Lab::healthy();
        let n = lab.node_mut("node2");
        n.agent_version = "0.2.1".into();
        n.results.remove(&crate::model::ProbeId::PatroniConfig);
        let v = lab.verdict();
        assert_eq!(v.health, Health::Unknown, "{:?}", v.findings);
        assert!(
            v.blind_spots
                .iter()
                .any(|b| b.contains("node2 (version 0.2.1) does not report patroni.config")),
            "{:?}",
            v.blind_spots
        );
    }

    #[test]
    fn an_older_agent_is_judged_on_its_statuses_and_its_missing_facts_are_named() {
        let v = older_agent(Lab::healthy(), "node2").verdict();
        assert_eq!(v.health, Health::Unknown, "{:?}", v.findings);
        let spot = v
            .blind_spots
            .iter()
            .find(|b| b.contains("node2 (version 0.1.0)"))
            .expect("a blind spot naming the agent");
        assert!(
            spot.contains("postgres.recovery") && spot.contains("patroni.cluster"),
            "{spot}"
        );

        // What it still reports is used: its Patroni down is found.
        let down = older_agent(Lab::healthy(), "node2").set(
            "node2",
            "patroni.process",
            Status::Critical,
            serde_json::Value::Null,
        );
        let v = down.verdict();
        assert!(has(&v, Code::PatroniDown, &["node2"]), "{:?}", v.findings);

        // An up-to-date agent with the same results is no blind spot.
        assert_eq!(Lab::healthy().verdict().health, Health::Healthy);
    }
}
