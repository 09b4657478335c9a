//! The agent ↔ collector contract, checked on the batches the real agents sent on the lab
//! (`bench/fixtures/lab-batches.json`, as recorded, before the testkit bends them): every fact
//! the rules read is there, filled, on the node kind that reports it. A fact renamed in `proto/`
//! breaks the build of both sides; one the agent stops filling fails here.

use std::collections::BTreeMap;

use crate::model::wire::{ProxyKind, StateKind};
use crate::model::{Facts, ProbeId};

/// The recorded batches: node → probe → typed facts.
fn recorded() -> BTreeMap<String, BTreeMap<ProbeId, Facts>> {
    let doc = super::testkit::fixture();
    let mut out = BTreeMap::new();
    for node in doc["results"].as_object().expect("results").keys() {
        let by_probe = super::testkit::recorded_results(doc, node)
            .into_iter()
            .map(|(id, _, facts)| (id, facts.unwrap_or_else(|| panic!("{node} {id}: no facts"))))
            .collect();
        out.insert(node.clone(), by_probe);
    }
    out
}

#[test]
fn every_fact_the_rules_read_is_filled_by_the_real_agents() {
    let lab = recorded();
    let get = |node: &str, id: ProbeId| -> &Facts {
        lab.get(node)
            .and_then(|r| r.get(&id))
            .unwrap_or_else(|| panic!("{node} reports no {id}"))
    };
    let cluster = get("node1", ProbeId::PatroniCluster)
        .patroni_cluster()
        .expect("cluster facts");
    let leader = cluster.leader.clone().expect("/cluster names the leader");
    assert_eq!(cluster.members.len(), 3);
    for m in &cluster.members {
        assert!(m.host.is_some(), "{} has no host", m.name);
        assert!(
            m.role_known && m.state_kind() == StateKind::Running,
            "{m:?}"
        );
        assert!(m.timeline.is_some(), "{m:?}");
    }
    for node in ["node1", "node2", "node3"] {
        let is_leader = node == leader;
        let p = get(node, ProbeId::PatroniNode)
            .patroni_node()
            .expect("node");
        assert!(
            p.role_known && p.state_kind() == StateKind::Running,
            "{p:?}"
        );
        assert!(
            p.timeline.is_some() && p.postmaster_start_time.is_some(),
            "{p:?}"
        );
        let rec = get(node, ProbeId::PostgresRecovery)
            .postgres_recovery()
            .expect("recovery");
        assert_eq!(rec.in_recovery, !is_leader);
        let lag = get(node, ProbeId::PostgresReplicationLag)
            .postgres_replication_lag()
            .expect("lag");
        let w = get(node, ProbeId::PostgresWalReceiver)
            .postgres_wal_receiver()
            .expect("receiver");
        if is_leader {
            assert!(rec.timeline.is_some(), "the leader's timeline");
            assert!(lag.current_lsn.is_some(), "the leader's position");
            let rep = get(node, ProbeId::PostgresReplication)
                .postgres_replication()
                .expect("replication");
            assert_eq!((rep.streaming, rep.expected), (2, Some(2)));
            assert!(!w.present);
        } else {
            assert!(
                lag.receive_lsn.is_some() && lag.replay_lsn.is_some(),
                "{lag:?}"
            );
            assert!(lag.streaming && lag.lag_seconds.is_some(), "{lag:?}");
            assert_eq!(w.status.as_deref(), Some("streaming"));
            assert!(w.sender_host.is_some() && w.received_tli.is_some(), "{w:?}");
            assert!(w.last_msg_age_s.is_some(), "{w:?}");
        }
        let c = get(node, ProbeId::PostgresConnections)
            .postgres_connections()
            .expect("connections");
        assert!(c.usable > 0 && c.client_backends > 0, "{c:?}");
        let a = get(node, ProbeId::PostgresAccept)
            .postgres_accept()
            .expect("accept");
        assert!(a.address.is_some() && a.login_age_s.is_some(), "{a:?}");
        let e = get(node, ProbeId::EtcdHealth).etcd_health().expect("etcd");
        assert!(
            e.healthy && e.members.len() == 3 && e.leader_name.is_some(),
            "{e:?}"
        );
        assert!(get(node, ProbeId::PostgresLocks).postgres_locks().is_some());
        let r = get(node, ProbeId::PostgresWalRetention)
            .postgres_wal_retention()
            .expect("wal retention");
        assert!(
            r.archive_mode == "on" && r.archiver.is_some() && r.max_wal_bytes > 0,
            "{r:?}"
        );
        assert!(r.position.is_some() && r.wal_dir_bytes.is_some(), "{r:?}");
        if is_leader {
            // Patroni's slots for the two replicas, in use, read with what retention needs.
            let slots: Vec<_> = r.slots.iter().map(|s| s.name.as_str()).collect();
            assert_eq!(slots.len(), 2, "{r:?}");
            for s in &r.slots {
                assert!(s.active && s.restart_lsn.is_some(), "{s:?}");
                assert!(
                    s.retained_bytes.is_some() && s.wal_status.is_some(),
                    "{s:?}"
                );
            }
            let a = r.archiver.as_ref().expect("archiver");
            assert!(a.ready_count.is_some() && !a.failing, "{a:?}");
        }
        let h = get(node, ProbeId::PostgresXminHorizon)
            .postgres_xmin_horizon()
            .expect("xmin horizon");
        assert!(
            h.frozen_xid_age.is_some() && h.frozen_database.is_some(),
            "{h:?}"
        );
        assert!(h.autovacuum_freeze_max_age > 0, "{h:?}");
        // Synchronous replication: Patroni's promise and what PostgreSQL runs.
        let c = get(node, ProbeId::PatroniConfig)
            .patroni_config()
            .expect("patroni config");
        assert!(
            c.synchronous_mode() != crate::model::wire::SyncMode::Unspecified
                && c.synchronous_node_count > 0
                && c.ttl.is_some(),
            "{c:?}"
        );
        let p = get(node, ProbeId::PostgresReplication)
            .postgres_replication()
            .expect("replication");
        assert!(
            p.synchronous_standby_names.is_some()
                && p.synchronous_commit.is_some()
                && p.sync_waiters.is_some(),
            "{p:?}"
        );
    }
    let b = get("haproxy", ProbeId::HaproxyBackends)
        .haproxy_backends()
        .expect("backends");
    let rw: Vec<_> = b
        .proxies
        .iter()
        .filter(|p| p.kind() == ProxyKind::Rw)
        .collect();
    let ro: Vec<_> = b
        .proxies
        .iter()
        .filter(|p| p.kind() == ProxyKind::Ro)
        .collect();
    assert_eq!(rw.len(), 1, "{b:?}");
    assert_eq!(rw[0].up, std::slice::from_ref(&leader));
    assert!(!ro.is_empty() && !ro[0].up.is_empty(), "{b:?}");
    for s in rw[0].servers.iter() {
        assert!(!s.address.is_empty() && s.lastchg_s.is_some(), "{s:?}");
    }
}
