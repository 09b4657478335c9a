//! DCS_QUORUM_LOST, DCS_MEMBER_DOWN: etcd keeps a quorum of healthy members; each member down is
//! named. Members whose agents are silent cannot count either way.

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
        .filter_map(|n| {
            n.fact("etcd.health", "members")
                .and_then(|m| m.as_array())
                .map(Vec::len)
        })
        .max()
        .unwrap_or(members.len())
        .max(members.len());
    let quorum = size / 2 + 1;
    let mut healthy = 0;
    let mut silent = 0;
    let mut down = Vec::new();
    for n in &members {
        if !n.fresh {
            silent += 1;
            continue;
        }
        let ok = n.status("etcd.health") == Some(Status::Ok);
        if ok {
            healthy += 1;
        } else {
            down.push(*n);
        }
    }
    if healthy < quorum {
        if healthy + silent >= quorum {
            blind.push(format!("etcd: {healthy}/{size} members healthy and {silent} silent: cannot tell whether the quorum holds"));
        } else {
            let names: Vec<String> = down.iter().map(|n| n.name().to_string()).collect();
            let mut f = Finding::new(
                Code::DcsQuorumLost,
                Severity::Critical,
                names,
                format!(
                    "etcd has lost its quorum: {healthy}/{size} members healthy, {quorum} needed; Patroni cannot hold or elect a leader"
                ),
            );
            for n in &down {
                f.evidence.extend(n.evidence("etcd.health"));
            }
            findings.push(f);
            return;
        }
    }
    for n in down {
        let name = n.name().to_string();
        findings.push(
            Finding::new(
                Code::DcsMemberDown,
                Severity::Warning,
                vec![name.clone()],
                format!(
                    "etcd member on {name} is down ({healthy}/{size} healthy, quorum {quorum})"
                ),
            )
            .with_all(n.evidence("etcd.health"))
            .with_all(n.evidence("etcd.process")),
        );
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::model::Status;
    use crate::verdict::testkit::{Lab, check_cases};
    use crate::verdict::{Code, Health};

    #[test]
    fn table() {
        let down = |lab: Lab, n: &str| {
            lab.set(
                n,
                "etcd.health",
                Status::Critical,
                json!({"healthy": false}),
            )
        };
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
                "two members down",
                down(down(Lab::healthy(), "node2"), "node3"),
                Health::Critical,
                Some(Code::DcsQuorumLost),
                &["node2", "node3"][..],
            ),
        ];
        check_cases(cases);
    }

    #[test]
    fn quorum_unknowable_with_silent_members_is_blind() {
        let lab = Lab::healthy()
            .set("node2", "etcd.health", Status::Critical, json!({}))
            .silent("node3", 60_000);
        let v = lab.verdict();
        assert!(
            v.blind_spots.iter().any(|b| b.contains("etcd")),
            "{:?}",
            v.blind_spots
        );
        assert_ne!(v.health, Health::Healthy);
    }
}
