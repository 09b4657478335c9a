//! DCS_QUORUM_LOST, DCS_MEMBER_DOWN: etcd keeps a quorum of healthy members; each member down is
//! named. Only what is known is judged: a member that answers `/health` healthy proves the
//! quorum holds (etcd says healthy only with a leader it can reach); members without a fresh
//! agent, and health reads that timed out (as they do during an election), count neither way.
//! A lost quorum is critical only once a second observation confirms it.

use crate::model::ProbeId;
use crate::model::Status;
use crate::verdict::view::View;
use crate::verdict::{Code, Finding, Severity};

pub fn check(view: &View<'_>, findings: &mut Vec<Finding>, blind: &mut Vec<String>) {
    let members: Vec<_> = view.nodes.iter().filter(|n| n.state.has("etcd")).collect();
    if members.is_empty() {
        return;
    }
    // The cluster's size as etcd itself reports it (members list), else the agents we know.
    let size = members
        .iter()
        .filter_map(|n| n.etcd().map(|e| e.members.len()))
        .max()
        .unwrap_or(members.len())
        .max(members.len());
    let quorum = size / 2 + 1;
    let mut healthy = 0;
    let mut down = Vec::new();
    for n in &members {
        let Some(obs) = n.result(ProbeId::EtcdHealth) else {
            continue; // silent agent, or no fresh health read: unknown
        };
        let unanswered = obs.unanswered;
        match obs.status {
            Status::Ok => healthy += 1,
            _ if unanswered => {}
            Status::Critical => down.push(*n),
            _ => {}
        }
    }
    let unknown = size.saturating_sub(healthy + down.len());
    if healthy == 0 && !down.is_empty() {
        if size - down.len() < quorum {
            let names: Vec<String> = down.iter().map(|n| n.name().to_string()).collect();
            let mut f = Finding::new(
                Code::DcsQuorumLost,
                Severity::Critical,
                names,
                format!(
                    "etcd has lost its quorum: {} of {size} members down, {quorum} needed; Patroni cannot hold or elect a leader",
                    down.len()
                ),
            )
            .confirmed_later();
            for n in &down {
                f.evidence.extend(n.evidence(ProbeId::EtcdHealth));
            }
            findings.push(f);
            return;
        }
        blind.push(format!(
            "etcd: {} of {size} members down and {unknown} unobserved: cannot tell whether the quorum holds",
            down.len()
        ));
    }
    for n in down {
        let name = n.name().to_string();
        findings.push(
            Finding::new(
                Code::DcsMemberDown,
                Severity::Warning,
                vec![name.clone()],
                format!(
                    "etcd member on {name} is down ({healthy}/{size} healthy, {unknown} unobserved, quorum {quorum})"
                ),
            )
            .with_all(n.evidence(ProbeId::EtcdHealth))
            .with_all(n.evidence(ProbeId::EtcdProcess)),
        );
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::model::Status;
    use crate::verdict::testkit::{Lab, check_cases};
    use crate::verdict::{Code, Health};

    fn down(lab: Lab, n: &str) -> Lab {
        lab.set(
            n,
            "etcd.health",
            Status::Critical,
            json!({"healthy": false}),
        )
    }

    fn timed_out(lab: Lab, n: &str) -> Lab {
        lab.set(n, "etcd.health", Status::Critical, serde_json::Value::Null)
            .unanswered(n, "etcd.health")
    }

    /// etcd runs on node3 too, but no agent watches it there.
    fn unwatched(mut lab: Lab, n: &str) -> Lab {
        let node = lab.node_mut(n);
        node.components.retain(|c| c != "etcd");
        node.results.remove(&crate::model::ProbeId::EtcdHealth);
        lab
    }

    #[test]
    fn table() {
        let cases = [
            ("healthy", Lab::healthy(), Health::Healthy, None, &[][..]),
            (
                "one member down",
                down(Lab::healthy(), "node2"),
                Health::Degraded,
                Some(Code::DcsMemberDown),
                &["node2"][..],
            ),
            (
                "every member down",
                down(down(down(Lab::healthy(), "node1"), "node2"), "node3"),
                Health::Critical,
                Some(Code::DcsQuorumLost),
                &["node1", "node2", "node3"][..],
            ),
            (
                "two members down, the third silent",
                down(down(Lab::healthy(), "node2"), "node3").silent("node1", 60_000),
                Health::Critical,
                Some(Code::DcsQuorumLost),
                &["node2", "node3"][..],
            ),
            (
                // A healthy member proves the quorum: the unhealthy reads are members down.
                "two unhealthy reads, one healthy member",
                down(down(Lab::healthy(), "node2"), "node3"),
                Health::Degraded,
                Some(Code::DcsMemberDown),
                &["node3"][..],
            ),
            (
                "agents on two of three members, one down",
                down(unwatched(Lab::healthy(), "node3"), "node2"),
                Health::Degraded,
                Some(Code::DcsMemberDown),
                &["node2"][..],
            ),
            (
                "health reads timing out during an election say nothing",
                timed_out(timed_out(Lab::healthy(), "node2"), "node3"),
                Health::Healthy,
                None,
                &[][..],
            ),
        ];
        check_cases(cases);
    }

    #[test]
    fn quorum_unknowable_with_unobserved_members_is_blind() {
        let lab = down(Lab::healthy(), "node2")
            .silent("node1", 60_000)
            .silent("node3", 60_000);
        let v = lab.verdict();
        assert!(
            v.blind_spots.iter().any(|b| b.contains("etcd")),
            "{:?}",
            v.blind_spots
        );
        assert_ne!(v.health, Health::Healthy);
    }

    #[test]
    fn a_lost_quorum_waits_for_a_second_observation() {
        use crate::verdict::history::FindingHistory;
        use crate::verdict::testkit::NOW;
        use crate::verdict::{Policy, evaluate};
        let policy = Policy::default();
        let lost = |lab: Lab| down(down(down(lab, "node1"), "node2"), "node3");
        let mut h = FindingHistory::default();
        let mut once = evaluate(&lost(Lab::healthy()).snap, NOW, &policy);
        h.apply(&mut once, &policy);
        assert_eq!(once.health, Health::Degraded, "{:?}", once.findings);
        // The same reads, evaluated again: still one observation.
        let mut again = evaluate(&lost(Lab::healthy()).snap, NOW + 500, &policy);
        h.apply(&mut again, &policy);
        assert_eq!(again.health, Health::Degraded);
        // The next cycle's reads still say so: confirmed.
        let mut next = lost(Lab::healthy());
        for n in ["node1", "node2", "node3"] {
            let o = next
                .node_mut(n)
                .results
                .get_mut(&crate::model::ProbeId::EtcdHealth)
                .map(std::sync::Arc::make_mut)
                .expect("etcd.health");
            o.received_ms += 1_000;
            o.received_mono_ms += 1_000;
        }
        let mut confirmed = evaluate(&next.snap, NOW + 1_000, &policy);
        h.apply(&mut confirmed, &policy);
        assert_eq!(
            confirmed.health,
            Health::Critical,
            "{:?}",
            confirmed.findings
        );
    }
}
