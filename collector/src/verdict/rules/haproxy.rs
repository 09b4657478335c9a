//! HAPROXY_DOWN, RW_ENDPOINT_DOWN, RW_MISROUTED, RO_ENDPOINT_DOWN: HAProxy runs, its RW port
//! routes to exactly the writable leader and nothing else, its RO port to at least one server.
//! (Replicas DOWN with L7STS/503 in the RW proxy are by design and say nothing here.)

use std::collections::BTreeMap;

use crate::model::wire::{HaproxyProxy, PatroniMember, ProxyKind};
use crate::model::{ProbeId, Status};
use crate::verdict::view::View;
use crate::verdict::{Code, Finding, Severity};

pub fn check(view: &View<'_>, findings: &mut Vec<Finding>, blind: &mut Vec<String>) {
    let writable = view.writable();
    // Where writes must go: the one writable node, else whom Patroni names.
    let target = match writable.as_slice() {
        [one] => Some(one.name().to_string()),
        _ => view.patroni_leader().map(str::to_string),
    };
    let members = view.patroni_members();
    for h in view.fresh().filter(|n| n.state.has("haproxy")) {
        let name = h.name().to_string();
        let proc_down = h.status(ProbeId::HaproxyProcess) == Some(Status::Critical);
        if proc_down {
            findings.push(
                Finding::new(
                    Code::HaproxyDown,
                    Severity::Critical,
                    vec![name.clone()],
                    format!("HAProxy is not running on {name}"),
                )
                .with_all(h.evidence(ProbeId::HaproxyProcess)),
            );
        }
        let proxies = h.backends().map(|b| &b.proxies);
        let of_kind = |kind: ProxyKind| -> Vec<&HaproxyProxy> {
            proxies
                .into_iter()
                .flatten()
                .filter(|p| p.kind() == kind)
                .collect()
        };

        // RW
        let rw_port_down = h.status(ProbeId::HaproxyRwPort) == Some(Status::Critical);
        let rw = of_kind(ProxyKind::Rw);
        if proc_down || rw_port_down {
            findings.push(
                Finding::new(
                    Code::RwEndpointDown,
                    Severity::Critical,
                    vec![name.clone()],
                    format!("the RW endpoint on {name} does not listen: writes fail"),
                )
                .with_all(h.evidence(ProbeId::HaproxyRwPort)),
            );
        } else if proxies.is_none() {
            blind.push(format!(
                "HAProxy's stats on {name} are unreadable: cannot tell where writes go"
            ));
        } else {
            for p in rw {
                let servers = &p.up;
                let proxy = &p.proxy;
                if servers.is_empty() {
                    findings.push(
                        Finding::new(
                            Code::RwEndpointDown,
                            Severity::Critical,
                            vec![name.clone()],
                            format!("{proxy} on {name} has no server UP: writes fail"),
                        )
                        .with_all(h.evidence(ProbeId::HaproxyBackends))
                        .grace(view.observation_skew_ms()),
                    );
                    continue;
                }
                let wrong: Vec<&String> = servers
                    .iter()
                    .filter(|s| {
                        target
                            .as_deref()
                            .is_none_or(|t| !same_node(p, s, t, members))
                    })
                    .collect();
                if !wrong.is_empty() && target.is_some() {
                    let mut nodes = vec![name.clone()];
                    nodes.extend(wrong.iter().map(|s| s.to_string()));
                    findings.push(
                        Finding::new(
                            Code::RwMisrouted,
                            Severity::Critical,
                            nodes,
                            format!(
                                "{proxy} on {name} routes writes to {} but the writable leader is {}",
                                servers.join(", "),
                                target.as_deref().unwrap_or("?")
                            ),
                        )
                        .with_all(h.evidence(ProbeId::HaproxyBackends))
                        .grace(view.observation_skew_ms()),
                    );
                }
            }
        }

        // RO
        let ro_port_down = h.status(ProbeId::HaproxyRoPort) == Some(Status::Critical);
        let ro_empty: Vec<&str> = of_kind(ProxyKind::Ro)
            .into_iter()
            .filter(|p| p.up.is_empty())
            .map(|p| p.proxy.as_str())
            .collect();
        if !proc_down && (ro_port_down || !ro_empty.is_empty()) {
            let what = if ro_port_down {
                "does not listen".to_string()
            } else {
                format!("{} has no server UP", ro_empty.join(", "))
            };
            findings.push(
                Finding::new(
                    Code::RoEndpointDown,
                    Severity::Warning,
                    vec![name.clone()],
                    format!("the RO endpoint on {name} {what}: reads fail"),
                )
                .with_all(h.evidence(ProbeId::HaproxyBackends)),
            );
        }
    }
}

/// Whether HAProxy's server `server` (in proxy `p`) is the node `node`: by name, or by the
/// address Patroni publishes for it.
pub(super) fn same_node(
    p: &HaproxyProxy,
    server: &str,
    node: &str,
    members: &BTreeMap<&str, &PatroniMember>,
) -> bool {
    if server == node {
        return true;
    }
    let address = p
        .servers
        .iter()
        .find(|s| s.name == server)
        .map(|s| s.address.as_str());
    let host = members.get(node).and_then(|m| m.host.as_deref());
    match (address, host) {
        (Some(a), Some(h)) => a.rsplit_once(':').map_or(a, |(ip, _)| ip) == h,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::model::Status;
    use crate::verdict::testkit::{Lab, check_cases};
    use crate::verdict::{Code, Health};

    fn backends(rw_up: &[&str], ro_up: &[&str]) -> serde_json::Value {
        json!({"proxies": [
            {"proxy": "demo_rw", "kind": "rw", "up": rw_up, "servers": [{"name": "pg-a", "address": "127.0.0.11:5432"}]},
            {"proxy": "demo_ro", "kind": "ro", "up": ro_up, "servers": []},
        ]})
    }

    #[test]
    fn table() {
        let cases = [
            ("healthy", Lab::healthy(), Health::Healthy, None, &[][..]),
            (
                "process down",
                Lab::healthy().set(
                    "haproxy",
                    "haproxy.process",
                    Status::Critical,
                    serde_json::Value::Null,
                ),
                Health::Critical,
                Some(Code::HaproxyDown),
                &["haproxy"][..],
            ),
            (
                "rw port down",
                Lab::healthy().set(
                    "haproxy",
                    "haproxy.rw_port",
                    Status::Critical,
                    serde_json::Value::Null,
                ),
                Health::Critical,
                Some(Code::RwEndpointDown),
                &["haproxy"][..],
            ),
            (
                "no rw server",
                Lab::healthy().set(
                    "haproxy",
                    "haproxy.backends",
                    Status::Critical,
                    backends(&[], &["node2"]),
                ),
                Health::Critical,
                Some(Code::RwEndpointDown),
                &["haproxy"][..],
            ),
            (
                "writes to a replica",
                Lab::healthy().set(
                    "haproxy",
                    "haproxy.backends",
                    Status::Ok,
                    backends(&["node2"], &["node3"]),
                ),
                Health::Critical,
                Some(Code::RwMisrouted),
                &["haproxy", "node2"][..],
            ),
            (
                "writes to two nodes",
                Lab::healthy().set(
                    "haproxy",
                    "haproxy.backends",
                    Status::Critical,
                    backends(&["node1", "node3"], &["node2"]),
                ),
                Health::Critical,
                Some(Code::RwMisrouted),
                &["haproxy", "node3"][..],
            ),
            (
                "server named otherwise, same address",
                Lab::healthy().set(
                    "haproxy",
                    "haproxy.backends",
                    Status::Ok,
                    backends(&["pg-a"], &["node2"]),
                ),
                Health::Healthy,
                None,
                &[][..],
            ),
            (
                "no ro server",
                Lab::healthy().set(
                    "haproxy",
                    "haproxy.backends",
                    Status::Critical,
                    backends(&["node1"], &[]),
                ),
                Health::Degraded,
                Some(Code::RoEndpointDown),
                &["haproxy"][..],
            ),
        ];
        check_cases(cases);
    }

    #[test]
    fn unreadable_stats_leave_the_verdict_blind() {
        let v = Lab::healthy()
            .set(
                "haproxy",
                "haproxy.backends",
                Status::Critical,
                serde_json::Value::Null,
            )
            .verdict();
        assert_eq!(v.health, Health::Unknown, "{:?}", v.findings);
    }
}
