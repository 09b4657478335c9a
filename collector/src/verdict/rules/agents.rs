//! AGENT_STALE: an agent gone silent, or no longer sending some of its probes. What the other
//! nodes still see tells a silent agent from a dead host, and vouches for it: a silent leader
//! that Patroni's DCS view, its replicas' WAL streams and HAProxy's checks still show running
//! leaves the verdict `degraded`, naming what is now unobserved. Only when fewer than two
//! independent observers vouch is the verdict blind: `unknown`, never `healthy`.

use std::collections::BTreeMap;

use crate::model::ProbeId;
use crate::model::wire::PatroniMember;
use crate::verdict::view::{NodeView, StateKind, View};
use crate::verdict::{Code, Evidence, Finding, Severity};

/// How recent a replica's last message from its sender must be to vouch for the sender: an
/// idle walsender answers within `wal_sender_timeout / 2` (30 s by default).
const WAL_VOUCH_S: f64 = 35.0;

/// Independent observers needed to vouch for a node whose agent is silent.
const VOUCHERS_NEEDED: usize = 2;

pub fn check(view: &View<'_>, findings: &mut Vec<Finding>, blind: &mut Vec<String>) {
    let members = view.patroni_members();
    let leader = view.patroni_leader();
    for n in view.nodes.iter().filter(|n| !n.fresh) {
        let name = n.name();
        if n.awaiting_batch {
            blind.push(format!("{name} has connected but not reported results yet"));
            continue;
        }
        let is_leader = leader == Some(name);
        let seen_by_others = match members.get(name) {
            Some(m) => format!("Patroni still lists it as {} {}", m.state, m.role),
            None if n.is_db() && !members.is_empty() => {
                "Patroni no longer lists it: the host or its Patroni is likely down".to_string()
            }
            None => "no other node reports on it".to_string(),
        };
        let vouched = vouchers(view, name, members);
        let mut message = format!(
            "agent on {name} silent for {}s; {seen_by_others}",
            n.silent_ms / 1000
        );
        if vouched.len() >= VOUCHERS_NEEDED {
            let who: Vec<&str> = vouched.iter().map(|e| e.observed.as_str()).collect();
            message.push_str(&format!(
                "; vouched for by {}; unobserved: {}",
                who.join(", "),
                unobserved(n.state.components.as_slice())
            ));
        }
        let mut f = Finding::new(
            Code::AgentStale,
            Severity::Warning,
            vec![name.to_string()],
            message,
        );
        if let Some(m) = members.get(name) {
            f.evidence.push(Evidence {
                node: "patroni".to_string(),
                probe: ProbeId::PatroniCluster.to_string(),
                observed: serde_json::to_string(m).unwrap_or_default(),
                at_ms: view.now_ms,
            });
        }
        f.evidence.extend(vouched.iter().cloned());
        findings.push(f);
        if n.state.has("haproxy") {
            blind.push(format!(
                "the HAProxy host's agent ({name}) is silent: cannot tell whether writes are routed"
            ));
        }
        let vouched_leader = is_leader && vouched.len() >= VOUCHERS_NEEDED;
        if (is_leader && !vouched_leader) || (leader.is_none() && n.is_db()) {
            blind.push(format!(
                "the agent of {name} is silent and {} other observer(s) vouch for it: cannot tell whether the leader is writable",
                vouched.len()
            ));
        }
    }
    // Patroni members whose agent the collector has never heard from.
    for (&name, m) in members {
        if view.node(name).is_none() {
            let vouched = vouchers(view, name, members);
            let mut f = Finding::new(
                Code::AgentStale,
                Severity::Warning,
                vec![name.to_string()],
                format!(
                    "no agent has reported for {name}; Patroni lists it as {} {}",
                    m.state, m.role
                ),
            );
            f.evidence.extend(vouched.iter().cloned());
            findings.push(f);
            if leader == Some(name) && vouched.len() < VOUCHERS_NEEDED {
                blind.push(format!(
                    "the leader {name} has no agent: cannot tell whether it is writable"
                ));
            }
        }
    }
    // Fresh agents that stopped sending some probes (restarted with another config, …).
    for n in view.fresh() {
        let dropped = n.dropped_probes();
        if dropped.is_empty() {
            continue;
        }
        let name = n.name();
        let list: Vec<String> = dropped
            .iter()
            .map(|(id, age)| format!("{id} ({}s ago)", age / 1000))
            .collect();
        findings.push(Finding::new(
            Code::AgentStale,
            Severity::Warning,
            vec![name.to_string()],
            format!("agent on {name} no longer reports {}", list.join(", ")),
        ));
        let sql_gone = dropped
            .iter()
            .any(|(id, _)| *id == ProbeId::PostgresRecovery);
        if sql_gone && leader == Some(name) {
            blind.push(format!(
                "the agent of the leader {name} no longer reports its SQL: cannot tell whether it is writable"
            ));
        }
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

/// What the other nodes still observe of `name`, one piece of evidence per independent
/// observer: Patroni's DCS view (from another node), the WAL streams replicas receive from it,
/// HAProxy's health checks of it.
fn vouchers(
    view: &View<'_>,
    name: &str,
    members: &BTreeMap<&str, &PatroniMember>,
) -> Vec<Evidence> {
    let mut out = Vec::new();
    let member = members.get(name);
    let host = member.and_then(|m| m.host.as_deref());
    if let Some(m) = member
        && m.state_kind() == StateKind::Running
    {
        let by = view
            .fresh()
            .filter(|o| o.name() != name)
            .filter_map(|o| o.result(ProbeId::PatroniCluster).map(|r| (o, r)))
            .max_by_key(|(_, r)| r.received_ms);
        if let Some((o, r)) = by {
            out.push(Evidence {
                node: o.name().to_string(),
                probe: ProbeId::PatroniCluster.to_string(),
                observed: format!("Patroni's DCS (running {})", m.role),
                at_ms: r.received_ms,
            });
        }
    }
    if let Some(host) = host {
        let streaming: Vec<(&NodeView<'_>, i64)> = view
            .fresh()
            .filter(|o| o.name() != name)
            .filter_map(|o| {
                let r = o.result(ProbeId::PostgresWalReceiver)?;
                let w = r.facts.as_ref()?.postgres_wal_receiver()?;
                let recent = w.last_msg_age_s.is_some_and(|a| a <= WAL_VOUCH_S);
                (w.status.as_deref() == Some("streaming")
                    && w.sender_host.as_deref() == Some(host)
                    && recent)
                    .then_some((o, r.received_ms))
            })
            .collect();
        if let Some(&(_, at)) = streaming.iter().max_by_key(|(_, at)| *at) {
            let names: Vec<&str> = streaming.iter().map(|(o, _)| o.name()).collect();
            out.push(Evidence {
                node: names.join(","),
                probe: ProbeId::PostgresWalReceiver.to_string(),
                observed: format!("the WAL stream to {}", names.join(", ")),
                at_ms: at,
            });
        }
    }
    for h in view.fresh().filter(|h| h.state.has("haproxy")) {
        let Some(r) = h.result(ProbeId::HaproxyBackends) else {
            continue;
        };
        let up = r
            .facts
            .as_ref()
            .and_then(crate::model::Facts::haproxy_backends)
            .into_iter()
            .flat_map(|b| &b.proxies)
            .filter(|p| {
                p.up.iter()
                    .any(|s| super::haproxy::same_node(p, s, name, members))
            })
            .map(|p| p.proxy.as_str())
            .collect::<Vec<_>>();
        if !up.is_empty() {
            out.push(Evidence {
                node: h.name().to_string(),
                probe: ProbeId::HaproxyBackends.to_string(),
                observed: format!("HAProxy's checks ({} UP)", up.join(", ")),
                at_ms: r.received_ms,
            });
            break;
        }
    }
    out
}

/// What nobody observes while a node's agent is silent, by the components it runs.
fn unobserved(components: &[String]) -> String {
    let mut out = Vec::new();
    for c in components {
        out.push(match c.as_str() {
            "postgres" => "its SQL (writability, connection slots, locks, replication)",
            "patroni" => "its Patroni process",
            "etcd" => "its etcd member",
            "haproxy" => "its HAProxy",
            "system" => "its disk, CPU and memory",
            _ => continue,
        });
    }
    if out.is_empty() {
        "everything its agent checked".to_string()
    } else {
        out.join(", ")
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
        let cases = [
            (Lab::healthy(), Health::Healthy, None),
            (
                Lab::healthy().silent("node3", 60_000),
                Health::Degraded,
                Some("node3"),
            ),
            // The leader's agent silent, the leader vouched for by the DCS, the replicas' WAL
            // streams and HAProxy's checks: degraded, not blind.
            (
                Lab::healthy().silent("node1", 60_000),
                Health::Degraded,
                Some("node1"),
            ),
            // …and nobody vouching: blind.
            (
                unvouched(Lab::healthy().silent("node1", 60_000)),
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

    /// The other nodes no longer see node1 as a running leader: Patroni lists it stopped, the
    /// replicas' receivers have no stream, and no HAProxy host is watched.
    fn unvouched(lab: Lab) -> Lab {
        let mut lab = lab.edit_members(&["node2", "node3"], |m| {
            if m.name == "node1" {
                m.state = "stopped".into();
                m.state_kind = crate::model::wire::StateKind::Stopped as i32;
            }
        });
        for n in ["node2", "node3"] {
            lab = lab.set(
                n,
                "postgres.wal_receiver",
                Status::Critical,
                json!({"present": false}),
            );
        }
        lab.snap.nodes.retain(|n| n.name != "haproxy");
        lab
    }

    #[test]
    fn vouching_needs_two_independent_observers() {
        // The DCS view alone: one observer.
        let lab = Lab::healthy().silent("node1", 60_000);
        let dcs_only = unvouched(lab.clone()).edit_members(&["node2", "node3"], |m| {
            m.state = "running".into();
            m.state_kind = crate::model::wire::StateKind::Running as i32;
        });
        assert_eq!(dcs_only.verdict().health, Health::Unknown);
        // The replicas' WAL streams alone: one observer; with HAProxy's checks: two.
        let mut streams = unvouched(lab.clone());
        for n in ["node2", "node3"] {
            streams = streams.set(
                n,
                "postgres.wal_receiver",
                Status::Ok,
                json!({"status": "streaming", "sender_host": "127.0.0.11", "last_msg_age_s": 0.4}),
            );
        }
        assert_eq!(streams.verdict().health, Health::Unknown);
        let haproxy = Lab::healthy()
            .snap
            .nodes
            .into_iter()
            .find(|n| n.name == "haproxy")
            .expect("haproxy");
        streams.snap.nodes.push(haproxy);
        let v = streams.verdict();
        assert_eq!(
            v.health,
            Health::Degraded,
            "{:?} {:?}",
            v.findings,
            v.blind_spots
        );
        let f = v
            .findings
            .iter()
            .find(|f| f.code == Code::AgentStale)
            .expect("stale");
        assert!(
            f.message.contains("the WAL stream to node2, node3"),
            "{}",
            f.message
        );
        assert!(
            f.message.contains("HAProxy's checks (demo_rw UP)"),
            "{}",
            f.message
        );
        assert!(f.message.contains("connection slots"), "{}", f.message);
        // Streams whose last message is old vouch for nothing.
        let mut old = unvouched(lab);
        for n in ["node2", "node3"] {
            old = old.set(n, "postgres.wal_receiver", Status::Ok, json!({"status": "streaming", "sender_host": "127.0.0.11", "last_msg_age_s": 120.0}));
        }
        let v = old.verdict();
        assert_eq!(v.health, Health::Unknown, "{:?}", v.findings);
    }

    #[test]
    fn a_patroni_member_without_an_agent_is_named() {
        let mut lab = Lab::healthy();
        lab.snap.nodes.retain(|n| n.name != "node3");
        let v = lab.verdict();
        assert!(has(&v, Code::AgentStale, &["node3"]), "{:?}", v.findings);
        assert_eq!(v.health, Health::Degraded);
        // The leader without an agent, vouched for by the others: degraded; else blind.
        let mut lab = Lab::healthy();
        lab.snap.nodes.retain(|n| n.name != "node1");
        assert_eq!(lab.verdict().health, Health::Degraded);
        let mut lab = unvouched(Lab::healthy());
        lab.snap.nodes.retain(|n| n.name != "node1");
        assert_eq!(lab.verdict().health, Health::Unknown);
    }

    #[test]
    fn a_node_that_has_not_reported_yet_is_a_blind_spot() {
        let mut lab = Lab::healthy();
        let n = lab.node_mut("node2");
        n.results.clear();
        n.last_batch_mono_ms = None;
        let v = lab.verdict();
        assert_eq!(v.health, Health::Unknown);
        assert!(
            v.blind_spots
                .iter()
                .any(|b| b.contains("not reported results yet"))
        );
    }

    #[test]
    fn a_hello_does_not_make_old_results_current() {
        use crate::verdict::testkit::NOW;
        // node1's agent reconnects after an hour away: Hello now, its results an hour old.
        let mut lab = Lab::healthy().silent("node1", 3_600_000);
        let n = lab.node_mut("node1");
        n.connected = true;
        n.last_seen_mono_ms = NOW - 100;
        n.last_seen_ms = NOW - 100;
        let v = unvouched(lab).verdict();
        assert_eq!(v.health, Health::Unknown, "{:?}", v.findings);
        assert!(
            v.leader.as_deref() != Some("node1")
                || v.findings.iter().all(|f| f.code != Code::LeaderNotWritable)
        );
    }

    #[test]
    fn a_probe_no_longer_sent_ages_out_and_is_named() {
        use crate::verdict::testkit::NOW;
        // The leader's agent still reports, but its SQL results stopped coming a minute ago.
        let mut lab = Lab::healthy();
        let n = lab.node_mut("node1");
        for (id, o) in n.results.iter_mut() {
            if id.component() == "postgres" {
                let o = std::sync::Arc::make_mut(o);
                o.received_mono_ms = NOW - 60_000;
                o.received_ms = NOW - 60_000;
            }
        }
        let v = lab.verdict();
        assert_eq!(v.health, Health::Unknown, "{:?}", v.findings);
        assert!(
            v.findings.iter().any(|f| f.code == Code::AgentStale
                && f.message.contains("no longer reports")
                && f.message.contains("postgres.recovery (60s ago)")),
            "{:?}",
            v.findings
        );
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
                .get_mut(&crate::model::ProbeId::PatroniCluster)
                .map(std::sync::Arc::make_mut)
                .expect("cluster");
            if let Some(crate::model::Facts::PatroniCluster(c)) = &mut o.facts {
                c.members.retain(|m| m.name != "node3");
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
