//! AGENT_STALE: an agent gone silent. What the other nodes still see tells a silent agent from a
//! dead host. A silent leader, a silent HAProxy host, or no fresh database node at all leaves the
//! verdict blind: `unknown`, never `healthy`.

use crate::verdict::view::View;
use crate::verdict::{Code, Evidence, Finding, Severity};

pub fn check(view: &View<'_>, findings: &mut Vec<Finding>, blind: &mut Vec<String>) {
    let members = view.patroni_members();
    let leader = view.patroni_leader();
    for n in view.nodes.iter().filter(|n| !n.fresh) {
        let name = n.name();
        let seen_by_others = match members.get(name) {
            Some(m) => format!(
                "Patroni still lists it as {} {}",
                m["state"].as_str().unwrap_or("?"),
                m["role"].as_str().unwrap_or("?")
            ),
            None if n.is_db() && !members.is_empty() => {
                "Patroni no longer lists it: the host or its Patroni is likely down".to_string()
            }
            None => "no other node reports on it".to_string(),
        };
        let mut f = Finding::new(
            Code::AgentStale,
            Severity::Warning,
            vec![name.to_string()],
            format!(
                "agent on {name} silent for {}s; {seen_by_others}",
                n.silent_ms / 1000
            ),
        );
        if let Some(m) = members.get(name) {
            f.evidence.push(Evidence {
                node: "patroni".to_string(),
                probe: "patroni.cluster".to_string(),
                observed: m.to_string(),
                at_ms: view.now_ms,
            });
        }
        findings.push(f);
        if n.state.has("haproxy") {
            blind.push(format!(
                "the HAProxy host's agent ({name}) is silent: cannot tell whether writes are routed"
            ));
        }
        if leader.as_deref() == Some(name) || (leader.is_none() && n.is_db()) {
            blind.push(format!(
                "the agent of {name} is silent: cannot tell whether the leader is writable"
            ));
        }
    }
    // Patroni members whose agent the collector has never heard from.
    for (name, m) in &members {
        if view.node(name).is_none() {
            findings.push(Finding::new(
                Code::AgentStale,
                Severity::Warning,
                vec![name.clone()],
                format!(
                    "no agent has reported for {name}; Patroni lists it as {} {}",
                    m["state"].as_str().unwrap_or("?"),
                    m["role"].as_str().unwrap_or("?")
                ),
            ));
            if leader.as_deref() == Some(name.as_str()) {
                blind.push(format!(
                    "the leader {name} has no agent: cannot tell whether it is writable"
                ));
            }
        }
    }
    for n in view.fresh().filter(|n| n.state.results.is_empty()) {
        blind.push(format!(
            "{} has connected but not reported results yet",
            n.name()
        ));
    }
    if !view.fresh().any(|n| n.is_db()) {
        blind.push(if view.nodes.iter().any(|n| n.is_db()) {
            "no fresh data from any database node".to_string()
        } else {
            "no database node has reported: nothing vouches for PostgreSQL".to_string()
        });
    }
    if view.nodes.is_empty() {
        blind.push("no agent has reported for this cluster".to_string());
    }
}

#[cfg(test)]
mod tests {
    use crate::verdict::testkit::{Lab, has};
    use crate::verdict::{Code, Health};

    #[test]
    fn table() {
        let cases = [
            (Lab::healthy(), Health::Healthy, None),
            (
                Lab::healthy().silent("node3", 60_000),
                Health::Degraded,
                Some("node3"),
            ),
            (
                Lab::healthy().silent("node1", 60_000),
                Health::Unknown,
                Some("node1"),
            ),
            (
                Lab::healthy().silent("haproxy", 60_000),
                Health::Unknown,
                Some("haproxy"),
            ),
            // Silent for less than 3 intervals: not stale yet (but connected matters).
            (Lab::healthy(), Health::Healthy, None),
        ];
        for (lab, health, stale) in cases {
            let v = lab.verdict();
            assert_eq!(v.health, health, "{:?}", v.findings);
            if let Some(node) = stale {
                assert!(has(&v, Code::AgentStale, &[node]), "{:?}", v.findings);
            }
        }
    }

    #[test]
    fn a_patroni_member_without_an_agent_is_named() {
        let mut lab = Lab::healthy();
        lab.snap.nodes.retain(|n| n.name != "node3");
        let v = lab.verdict();
        assert!(has(&v, Code::AgentStale, &["node3"]), "{:?}", v.findings);
        assert_eq!(v.health, Health::Degraded);
        let mut lab = Lab::healthy();
        lab.snap.nodes.retain(|n| n.name != "node1");
        assert_eq!(lab.verdict().health, Health::Unknown);
    }

    #[test]
    fn a_node_that_has_not_reported_yet_is_a_blind_spot() {
        let mut lab = Lab::healthy();
        lab.node_mut("node2").results.clear();
        assert_eq!(lab.verdict().health, Health::Unknown);
    }

    #[test]
    fn a_cluster_seen_only_by_haproxy_is_unknown() {
        let mut lab = Lab::healthy();
        lab.snap.nodes.retain(|n| n.name == "haproxy");
        assert_eq!(lab.verdict().health, Health::Unknown);
    }

    #[test]
    fn every_agent_silent_is_unknown() {
        let mut lab = Lab::healthy();
        for n in ["node1", "node2", "node3", "haproxy"] {
            lab = lab.silent(n, 60_000);
        }
        let v = lab.verdict();
        assert_eq!(v.health, Health::Unknown);
        assert!(v.blind_spots.iter().any(|b| b.contains("no fresh data")));
    }

    #[test]
    fn silent_agent_of_a_dead_host_is_told_apart() {
        let mut lab = Lab::healthy().silent("node3", 60_000);
        for n in ["node1", "node2"] {
            let o = lab
                .node_mut(n)
                .results
                .get_mut("patroni.cluster")
                .map(std::sync::Arc::make_mut)
                .expect("cluster");
            if let Some(members) = o.facts["members"].as_array_mut() {
                members.retain(|m| m["name"] != "node3");
            }
        }
        let v = lab.verdict();
        let f = v
            .findings
            .iter()
            .find(|f| f.code == Code::AgentStale)
            .expect("stale");
        assert!(f.message.contains("likely down"), "{}", f.message);
        let alive = Lab::healthy().silent("node3", 60_000).verdict();
        let f = alive
            .findings
            .iter()
            .find(|f| f.code == Code::AgentStale)
            .expect("stale");
        assert!(
            f.message.contains("still lists it as running replica"),
            "{}",
            f.message
        );
    }
}
