//! vigie-agent tells the truth about the real lab cluster: role expectations on the leader and the
//! replicas, following a switchover with no configuration change; etcd, frozen PostgreSQL, a
//! postmaster that accepts no new connections, replay lag; and bad input from targets.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;
use vigie_agent::agent::Agent;
use vigie_agent::probe::ProbeId;
use vigie_agent::result::{Facts, ProbeResult, Status};
use vigie_tests::{
    CLUSTER_CHANGE, Lab, NODES, Role, Target, lab_agent, node_ip, query_text, wait_until,
    write_through_rw,
};

/// Runs one cycle and indexes the results by probe id.
async fn cycle(agent: &mut Agent) -> HashMap<ProbeId, ProbeResult> {
    agent.cycle().await.into_iter().map(|r| (r.id, r)).collect()
}

fn get(results: &HashMap<ProbeId, ProbeResult>, id: ProbeId) -> &ProbeResult {
    results.get(&id).unwrap_or_else(|| panic!("no {id} result"))
}

/// A result's typed facts (the probe must have reported some).
fn facts(r: &ProbeResult) -> &Facts {
    r.facts
        .as_ref()
        .unwrap_or_else(|| panic!("{}: no facts ({})", r.id, r.message))
}

fn not_ok(results: &HashMap<ProbeId, ProbeResult>) -> Vec<String> {
    let mut v: Vec<String> = results
        .values()
        .filter(|r| r.status != Status::Ok)
        .map(|r| format!("{} {}: {}", r.id, r.status.as_str(), r.message))
        .collect();
    v.sort();
    v
}

/// Cycles until `accept` holds for a cycle's results; returns them.
async fn cycle_until(
    agent: &mut Agent,
    what: &str,
    timeout: Duration,
    accept: impl Fn(&HashMap<ProbeId, ProbeResult>) -> bool,
) -> HashMap<ProbeId, ProbeResult> {
    let deadline = Instant::now() + timeout;
    loop {
        let results = cycle(agent).await;
        if accept(&results) {
            return results;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; last cycle: {:#?}",
            not_ok(&results)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

const DB_PROBES: [ProbeId; 22] = [
    ProbeId::EtcdClientPort,
    ProbeId::EtcdPeerPort,
    ProbeId::EtcdProcess,
    ProbeId::EtcdHealth,
    ProbeId::PatroniApiPort,
    ProbeId::PatroniHealth,
    ProbeId::PatroniCluster,
    ProbeId::PatroniProcess,
    ProbeId::PatroniNode,
    ProbeId::SystemCpu,
    ProbeId::SystemMemory,
    ProbeId::SystemDisk,
    ProbeId::PostgresLocks,
    ProbeId::PostgresConnections,
    ProbeId::PostgresWalReceiver,
    ProbeId::PostgresRecovery,
    ProbeId::PostgresReplication,
    ProbeId::PostgresReplicationLag,
    ProbeId::PostgresAccept,
    ProbeId::PostgresWalRetention,
    ProbeId::PostgresXminHorizon,
    ProbeId::PatroniConfig,
];

#[tokio::test]
async fn healthy_lab_every_probe_ok_with_leader_and_replica_expectations() {
    let lab = Lab::acquire().await;
    let leader = lab.leader().await.expect("a leader");
    for n in NODES {
        let mut agent = lab_agent(&format!("node{n}"));
        // A replica's agent may catch a probe mid-change right after `up`: let it settle.
        let results = cycle_until(&mut agent, "every probe ok", Duration::from_secs(30), |r| {
            not_ok(r).is_empty()
        })
        .await;
        let mut ids: Vec<ProbeId> = results.keys().copied().collect();
        ids.sort_unstable();
        let mut expected: Vec<ProbeId> = DB_PROBES.to_vec();
        expected.sort_unstable();
        assert_eq!(ids, expected, "node{n}");

        let recovery = facts(get(&results, ProbeId::PostgresRecovery))
            .postgres_recovery()
            .expect("recovery facts");
        let receiver = facts(get(&results, ProbeId::PostgresWalReceiver))
            .postgres_wal_receiver()
            .expect("receiver facts");
        let replication = facts(get(&results, ProbeId::PostgresReplication))
            .postgres_replication()
            .expect("replication facts");
        // The lab runs asynchronous replication, as Patroni's configuration says on every node.
        let config = facts(get(&results, ProbeId::PatroniConfig))
            .patroni_config()
            .expect("config facts");
        assert_eq!(
            config.synchronous_mode(),
            vigie_proto::v1::SyncMode::Off,
            "node{n}"
        );
        assert!(
            config.ttl.is_some() && config.loop_wait.is_some(),
            "{config:?}"
        );
        assert_eq!(replication.synchronous_standby_names.as_deref(), Some(""));
        assert_eq!(replication.sync_waiters, Some(0));
        if n == leader {
            assert!(!recovery.in_recovery);
            assert_eq!(recovery.patroni_role.as_deref(), Some("primary"));
            assert!(!receiver.present);
            assert_eq!(replication.expected, Some(2));
            assert_eq!(replication.streaming, 2);
            let lag = facts(get(&results, ProbeId::PostgresReplicationLag))
                .postgres_replication_lag()
                .expect("lag facts");
            assert!(lag.current_lsn.is_some_and(|b| b > 0));
        } else {
            assert!(recovery.in_recovery);
            assert_eq!(recovery.patroni_role.as_deref(), Some("replica"));
            assert_eq!(receiver.status.as_deref(), Some("streaming"));
            assert_eq!(
                receiver.sender_host.as_deref(),
                Some(node_ip(leader).as_str())
            );
        }
        let cluster = facts(get(&results, ProbeId::PatroniCluster))
            .patroni_cluster()
            .expect("cluster facts");
        assert_eq!(cluster.leader, Some(format!("node{leader}")));
        assert_eq!(cluster.members.len(), 3);
    }

    let mut haproxy = lab_agent("haproxy");
    let results = cycle(&mut haproxy).await;
    assert!(not_ok(&results).is_empty(), "{:#?}", not_ok(&results));
    let backends = get(&results, ProbeId::HaproxyBackends);
    assert!(
        backends
            .message
            .contains(&format!("demo_rw → node{leader}")),
        "{}",
        backends.message
    );
    assert_eq!(results.len(), 7);
}

#[tokio::test]
async fn after_switchover_the_same_agents_judge_the_new_roles() {
    let lab = Lab::acquire().await;
    let old = lab.leader().await.expect("a leader");
    let mut agents: Vec<(u8, Agent)> = NODES
        .iter()
        .map(|&n| (n, lab_agent(&format!("node{n}"))))
        .collect();
    for (_, a) in agents.iter_mut() {
        cycle(a).await;
    }
    lab.fault("switchover", None).await;
    let new = lab.leader().await.expect("a new leader");
    assert_ne!(new, old);
    for (n, agent) in agents.iter_mut() {
        let want_recovery = *n != new;
        let results = cycle_until(
            agent,
            "the new role's expectations met",
            CLUSTER_CHANGE,
            |r| {
                let rec = get(r, ProbeId::PostgresRecovery);
                rec.status == Status::Ok
                    && rec
                        .facts
                        .as_ref()
                        .and_then(Facts::postgres_recovery)
                        .is_some_and(|f| f.in_recovery == want_recovery)
                    && get(r, ProbeId::PostgresWalReceiver).status == Status::Ok
                    && get(r, ProbeId::PostgresReplication).status == Status::Ok
            },
        )
        .await;
        let role = facts(get(&results, ProbeId::PostgresRecovery))
            .postgres_recovery()
            .and_then(|f| f.patroni_role.clone());
        assert_eq!(
            role.as_deref(),
            Some(if *n == new { "primary" } else { "replica" }),
            "node{n}"
        );
    }
}

#[tokio::test]
async fn stop_etcd_2_turns_node2_etcd_probes_critical_only() {
    let lab = Lab::acquire().await;
    lab.fault("stop-etcd", Some("2")).await;
    let mut node2 = lab_agent("node2");
    let results = cycle(&mut node2).await;
    for id in [
        ProbeId::EtcdClientPort,
        ProbeId::EtcdPeerPort,
        ProbeId::EtcdProcess,
        ProbeId::EtcdHealth,
    ] {
        let r = get(&results, id);
        assert_eq!(r.status, Status::Critical, "{}: {}", r.id, r.message);
    }
    assert!(
        get(&results, ProbeId::EtcdClientPort)
            .message
            .contains("refused")
    );
    let mut node1 = lab_agent("node1");
    let results = cycle(&mut node1).await;
    let health = get(&results, ProbeId::EtcdHealth);
    assert_eq!(health.status, Status::Ok, "{}", health.message);
    assert_eq!(
        facts(health).etcd_health().map(|e| e.members.len()),
        Some(3)
    );
    lab.fault("start-etcd", Some("2")).await;
}

#[tokio::test]
async fn freeze_pg_3_makes_node3_sql_probes_critical_on_time_while_others_answer() {
    let lab = Lab::acquire().await;
    let mut node3 = lab_agent("node3");
    let timeout = node3.config().timeout;
    let healthy = cycle(&mut node3).await;
    assert_eq!(get(&healthy, ProbeId::PostgresRecovery).status, Status::Ok);

    lab.fault("freeze-pg", Some("3")).await;
    let started = Instant::now();
    let results = cycle(&mut node3).await;
    let took = started.elapsed();
    lab.fault("thaw-pg", Some("3")).await;

    for id in [
        ProbeId::PostgresLocks,
        ProbeId::PostgresWalReceiver,
        ProbeId::PostgresRecovery,
        ProbeId::PostgresReplication,
        ProbeId::PostgresReplicationLag,
        ProbeId::PostgresWalRetention,
        ProbeId::PostgresXminHorizon,
    ] {
        let r = get(&results, id);
        assert_eq!(r.status, Status::Critical, "{}: {}", r.id, r.message);
        assert!(
            r.message.contains("timed out after 2s"),
            "{}: {}",
            r.id,
            r.message
        );
    }
    let accept = get(&results, ProbeId::PostgresAccept);
    assert_ne!(accept.status, Status::Ok, "{}", accept.message);
    for id in [
        ProbeId::EtcdHealth,
        ProbeId::EtcdClientPort,
        ProbeId::PatroniApiPort,
        ProbeId::SystemMemory,
    ] {
        assert_eq!(get(&results, id).status, Status::Ok, "{id}");
    }
    // The probes ran concurrently: the whole cycle took about one timeout, not one per probe.
    assert!(
        took < timeout * 2,
        "cycle took {took:?} with a {timeout:?} timeout"
    );
    assert_eq!(results.len(), DB_PROBES.len());

    // After the thaw, the agent recovers by itself (a new connection replaces the dropped one).
    cycle_until(&mut node3, "SQL probes back", CLUSTER_CHANGE, |r| {
        get(r, ProbeId::PostgresRecovery).status == Status::Ok
    })
    .await;
}

#[tokio::test]
async fn freeze_postmaster_3_is_reported_as_new_connections_hanging() {
    let lab = Lab::acquire().await;
    let mut node3 = lab_agent("node3");
    let interval = node3.config().interval;
    let healthy = cycle(&mut node3).await;
    assert_eq!(get(&healthy, ProbeId::PostgresAccept).status, Status::Ok);
    let opened = node3.pg_connections_opened();

    lab.fault("freeze-postmaster", Some("3")).await;
    let results = cycle_until(&mut node3, "postgres.accept critical", interval * 2, |r| {
        get(r, ProbeId::PostgresAccept).status == Status::Critical
    })
    .await;
    lab.fault("thaw-postmaster", Some("3")).await;
    let accept = get(&results, ProbeId::PostgresAccept);
    assert!(
        accept.message.contains("new connections hang"),
        "{}",
        accept.message
    );
    // The reused session still works: the SQL probes keep answering, no reconnection happened.
    assert_eq!(get(&results, ProbeId::PostgresRecovery).status, Status::Ok);
    assert_eq!(node3.pg_connections_opened(), opened);
}

#[tokio::test]
async fn pause_replay_3_with_writes_grows_lag_in_bytes_and_seconds() {
    let lab = Lab::acquire().await;
    if lab.leader().await == Some(3) {
        lab.fault("switchover", None).await;
    }
    let mut node3 = lab_agent("node3");
    cycle(&mut node3).await;
    lab.fault("pause-replay", Some("3")).await;
    let lag = |r: &HashMap<ProbeId, ProbeResult>| {
        let f = facts(get(r, ProbeId::PostgresReplicationLag)).postgres_replication_lag();
        (
            f.and_then(|f| f.lag_bytes).unwrap_or(0),
            f.and_then(|f| f.lag_seconds).unwrap_or(0.0),
        )
    };
    write_through_rw().await.expect("write");
    let first = cycle_until(
        &mut node3,
        "lag in bytes and seconds",
        CLUSTER_CHANGE,
        |r| {
            let (b, s) = lag(r);
            b > 0 && s > 0.0
        },
    )
    .await;
    let (b1, s1) = lag(&first);
    write_through_rw().await.expect("write");
    let later = cycle_until(&mut node3, "lag growing", CLUSTER_CHANGE, |r| {
        let (b, s) = lag(r);
        b > b1 && s > s1 + 1.0
    })
    .await;
    lab.fault("resume-replay", Some("3")).await;
    let r = get(&later, ProbeId::PostgresReplicationLag);
    assert!(r.message.contains("behind received WAL"), "{}", r.message);
    assert!(
        facts(r)
            .postgres_replication_lag()
            .is_some_and(|f| f.streaming)
    );
    cycle_until(&mut node3, "lag back to zero", CLUSTER_CHANGE, |r| {
        lag(r).0 == 0
    })
    .await;
}

#[tokio::test]
async fn idle_cluster_for_a_minute_raises_no_lag_warning() {
    let _lab = Lab::acquire().await;
    let mut agents: Vec<Agent> = NODES
        .iter()
        .map(|n| lab_agent(&format!("node{n}")))
        .collect();
    let until = Instant::now() + Duration::from_secs(60);
    let mut cycles = 0;
    while Instant::now() < until {
        for agent in agents.iter_mut() {
            let results = cycle(agent).await;
            let lag = get(&results, ProbeId::PostgresReplicationLag);
            assert_eq!(lag.status, Status::Ok, "{}", lag.message);
            let f = facts(lag).postgres_replication_lag().expect("lag facts");
            if f.streaming {
                assert_eq!(f.lag_seconds, Some(0.0), "{}", lag.message);
            }
        }
        cycles += 1;
        tokio::time::sleep(agents[0].config().interval).await;
    }
    assert!(cycles >= 10, "only {cycles} cycles in a minute");
}

#[tokio::test]
async fn wrong_password_is_a_clear_probe_result() {
    let lab = Lab::acquire().await;
    let leader = lab.leader().await.expect("a leader");
    let path = vigie_tests::repo_root().join(format!("deploy/lab/agent-node{leader}.toml"));
    let env = HashMap::from([(
        "VIGIE_AGENT__POSTGRES__PASSWORD".to_string(),
        "wrong".to_string(),
    )]);
    let cfg = vigie_agent::config::load(&path, env).expect("config");
    let mut agent = Agent::new(cfg);
    let results = cycle(&mut agent).await;
    let r = get(&results, ProbeId::PostgresRecovery);
    assert_eq!(r.status, Status::Critical);
    assert!(
        r.message.contains("password authentication failed"),
        "{}",
        r.message
    );
    // The monitoring role's own login is refused: nothing is known of the applications' logins,
    // and the probe says so rather than "PostgreSQL refuses connections".
    let accept = get(&results, ProbeId::PostgresAccept);
    assert_eq!(accept.status, Status::Unknown, "{}", accept.message);
    assert!(
        accept.message.contains("the monitoring role cannot log in")
            && accept.message.contains("password authentication failed"),
        "{}",
        accept.message
    );
    assert_eq!(
        facts(accept).postgres_accept().map(|a| a.refused()),
        Some(vigie_proto::v1::Refusal::Authentication)
    );
}

/// The JSON an agent's results serialise to carries every field a machine needs, each result's
/// facts in its probe's typed form.
#[tokio::test]
async fn results_carry_facts_timing_and_ids() {
    let lab = Lab::acquire().await;
    let leader = lab.leader().await.expect("a leader");
    let mut agent = lab_agent(&format!("node{leader}"));
    let results = agent.cycle().await;
    let json: Value = serde_json::to_value(&results).expect("serialises");
    for r in json.as_array().expect("array") {
        assert!(r["id"].is_string() && r["message"].is_string());
        assert!(r["facts"].is_object(), "{r}");
        // The JSON form reads back into the probe's typed facts (what `vigie` and the API use).
        let probe = ProbeId::from_name(r["id"].as_str().unwrap_or_default()).expect("known id");
        let back = probe
            .facts_from_json(r["facts"].clone())
            .unwrap_or_else(|e| panic!("{probe}: {e}"));
        assert!(back.is_some_and(|f| probe.carries(&f)), "{probe}");
        assert!(
            r["started_unix_ms"]
                .as_i64()
                .is_some_and(|t| t > 1_700_000_000_000)
        );
        assert!(r["duration_us"].is_u64());
    }
}

#[tokio::test]
async fn one_reused_postgres_connection_across_cycles() {
    let lab = Lab::acquire().await;
    let replica = *lab.replicas().await.first().expect("a replica");
    let mut agent = lab_agent(&format!("node{replica}"));
    for _ in 0..5 {
        let results = cycle(&mut agent).await;
        assert_eq!(get(&results, ProbeId::PostgresRecovery).status, Status::Ok);
    }
    assert_eq!(agent.pg_connections_opened(), 1);
    // Server side: exactly one session of the agent (sessions of earlier tests' agents end soon).
    wait_until(
        "one vigie-agent session on the server",
        Duration::from_secs(10),
        || async {
            let count = query_text(
                Target::Node(replica),
                Role::Superuser,
                "select count(*) from pg_stat_activity where application_name = 'vigie-agent'",
                Duration::from_secs(5),
            )
            .await
            .ok()?;
            (count == "1").then_some(())
        },
    )
    .await;
}
