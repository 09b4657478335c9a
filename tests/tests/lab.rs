//! The lab does what it says: `lab.sh up` gives a real HA cluster, and each fault has its real
//! effect on Patroni, etcd, PostgreSQL and HAProxy — proven against the running daemons.

use std::collections::BTreeMap;
use std::time::Duration;

use vigie_tests::{
    CLUSTER_CHANGE, Lab, NODES, Role, Target, connect, lab_dir, node_ip, parse_lsn, query_one_text,
    query_text, wait_until, write_through_rw,
};

const SQL: Duration = Duration::from_secs(5);
/// Short enough to tell a hung server from a slow one, long enough for a healthy loopback one.
const HANG: Duration = Duration::from_secs(2);

/// Recorded pids of every lab daemon (`run/*.pid`), by name.
fn recorded_pids() -> BTreeMap<String, String> {
    let mut pids = BTreeMap::new();
    for entry in std::fs::read_dir(lab_dir().join("run")).expect("lab run dir") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_some_and(|e| e == "pid") {
            let pid = std::fs::read_to_string(&path).expect("pid file");
            pids.insert(
                path.file_stem()
                    .expect("stem")
                    .to_string_lossy()
                    .into_owned(),
                pid.trim().to_string(),
            );
        }
    }
    pids
}

/// The postmaster pid node `n` recorded in its data directory.
fn postmaster_pid(n: u8) -> Option<String> {
    let f = std::fs::read_to_string(lab_dir().join(format!("node{n}/data/postmaster.pid"))).ok()?;
    f.lines().next().map(str::to_string)
}

/// A pid that exists and is not a zombie.
fn process_alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.to_string()))
        .is_some_and(|rest| !rest.starts_with('Z') && !rest.starts_with('X'))
}

async fn server_addr(target: Target) -> Result<String, String> {
    query_text(
        target,
        Role::Monitor,
        "select host(inet_server_addr())",
        SQL,
    )
    .await
}

async fn streaming_replicas(leader: u8) -> Result<Vec<String>, String> {
    let names = query_text(
        Target::Node(leader),
        Role::Monitor,
        "select coalesce(string_agg(application_name, ',' order by application_name), '') \
         from pg_stat_replication where state = 'streaming'",
        SQL,
    )
    .await?;
    Ok(names
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect())
}

async fn wait_ready(lab: &Lab) {
    wait_until("the lab to be ready again", CLUSTER_CHANGE, || async {
        lab.script(&["ready"]).await.success.then_some(())
    })
    .await;
}

async fn a_replica(lab: &Lab) -> u8 {
    *lab.replicas().await.first().expect("a replica")
}

#[tokio::test]
async fn up_gives_one_leader_two_streaming_replicas_and_rw_through_haproxy() {
    let lab = Lab::acquire().await;
    let cluster = lab.cluster().await.expect("/cluster answers");
    let members = cluster["members"].as_array().expect("members");
    assert_eq!(members.len(), 3, "{cluster}");
    let leader = lab.leader().await.expect("a leader");
    let mut expected: Vec<String> = NODES
        .iter()
        .filter(|&&n| n != leader)
        .map(|n| format!("node{n}"))
        .collect();
    expected.sort();
    assert_eq!(streaming_replicas(leader).await.expect("query"), expected);
    assert_eq!(server_addr(Target::Rw).await.expect("RW"), node_ip(leader));
    let rw_recovery = query_text(Target::Rw, Role::Monitor, "select pg_is_in_recovery()", SQL);
    assert_eq!(rw_recovery.await.expect("RW"), "f");
    let ro_recovery = query_text(Target::Ro, Role::Monitor, "select pg_is_in_recovery()", SQL);
    assert_eq!(ro_recovery.await.expect("RO"), "t");
}

#[tokio::test]
async fn monitoring_role_has_pg_monitor_and_nothing_more() {
    let lab = Lab::acquire().await;
    let leader = lab.leader().await.expect("a leader");
    let facts = query_text(
        Target::Node(leader),
        Role::Monitor,
        "select rolsuper::text || ' ' || rolcreaterole::text || ' ' || rolcreatedb::text || ' ' || \
         pg_has_role(current_user, 'pg_monitor', 'member')::text from pg_roles where rolname = current_user",
        SQL,
    )
    .await
    .expect("monitor role connects");
    assert_eq!(facts, "false false false true");
    let write = query_text(
        Target::Rw,
        Role::Monitor,
        "create table vigie_must_fail (x int)",
        SQL,
    )
    .await;
    assert!(write.is_err(), "the monitoring role could create a table");
}

#[tokio::test]
async fn up_and_start_commands_on_a_running_lab_change_nothing() {
    let lab = Lab::acquire().await;
    let before = recorded_pids();
    let postmasters: Vec<_> = NODES.iter().map(|&n| postmaster_pid(n)).collect();
    lab.script_ok(&["up"]).await;
    lab.fault("start-patroni", Some("1")).await;
    lab.fault("start-etcd", Some("2")).await;
    lab.fault("start-haproxy", None).await;
    lab.fault("start-pg", Some("3")).await;
    assert_eq!(recorded_pids(), before);
    let after: Vec<_> = NODES.iter().map(|&n| postmaster_pid(n)).collect();
    assert_eq!(after, postmasters);
}

#[tokio::test]
async fn bad_fault_names_and_nodes_are_refused_with_a_message() {
    let lab = Lab::acquire().await;
    let out = lab.script(&["fault", "explode"]).await;
    assert!(!out.success);
    assert!(
        out.stderr.contains("unknown fault 'explode'"),
        "{}",
        out.stderr
    );
    let out = lab.script(&["fault", "stop-pg", "7"]).await;
    assert!(!out.success);
    assert!(out.stderr.contains("unknown node '7'"), "{}", out.stderr);
    let out = lab.script(&["fault", "stop-pg"]).await;
    assert!(!out.success);
    assert!(out.stderr.contains("needs a node"), "{}", out.stderr);
}

#[tokio::test]
async fn switchover_moves_the_leader_and_haproxy_rw_follows() {
    let lab = Lab::acquire().await;
    let old = lab.leader().await.expect("a leader");
    lab.fault("switchover", None).await;
    let new = lab.leader().await.expect("a leader after switchover");
    assert_ne!(new, old);
    assert_eq!(server_addr(Target::Rw).await.expect("RW"), node_ip(new));
}

#[tokio::test]
async fn kill_primary_patroni_elects_another_leader_and_rw_follows() {
    let lab = Lab::acquire().await;
    let old = lab.leader().await.expect("a leader");
    lab.fault("kill-primary-patroni", None).await;
    let new = wait_until("another leader", CLUSTER_CHANGE, || async {
        lab.leader().await.filter(|&n| n != old)
    })
    .await;
    wait_until("HAProxy RW on the new leader", CLUSTER_CHANGE, || async {
        (server_addr(Target::Rw).await.ok()? == node_ip(new)).then_some(())
    })
    .await;
    // The old primary runs on with no manager, still writable: only HAProxy keeps clients off.
    let orphan = query_text(
        Target::Node(old),
        Role::Monitor,
        "select pg_is_in_recovery()",
        SQL,
    );
    assert_eq!(orphan.await.expect("old primary answers"), "f");

    lab.fault("start-patroni", Some(&old.to_string())).await;
    wait_until(
        "the old leader to rejoin as a replica",
        CLUSTER_CHANGE,
        || async {
            let q = "select pg_is_in_recovery()";
            let rejoined = query_text(Target::Node(old), Role::Monitor, q, SQL)
                .await
                .ok()?
                == "t";
            let streaming = streaming_replicas(new).await.ok()?;
            (rejoined && streaming.contains(&format!("node{old}"))).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn kill_primary_pg_is_followed_by_working_writes() {
    let lab = Lab::acquire().await;
    let leader = lab.leader().await.expect("a leader");
    let before = postmaster_pid(leader).expect("postmaster pid");
    lab.fault("kill-primary-pg", None).await;
    wait_until("the killed postmaster to be gone", SQL, || async {
        (!process_alive(&before)).then_some(())
    })
    .await;
    wait_until("a write through HAProxy RW", CLUSTER_CHANGE, || async {
        write_through_rw().await.ok()
    })
    .await;
    wait_ready(&lab).await;
}

#[tokio::test]
async fn stop_etcd_on_one_member_keeps_quorum() {
    let lab = Lab::acquire().await;
    lab.fault("stop-etcd", Some("1")).await;
    assert!(!lab.etcd_healthy(1).await, "etcd1 still answers");
    assert!(lab.etcd_healthy(2).await && lab.etcd_healthy(3).await);
    // A write to etcd needs a quorum: two of three members are enough.
    let put = lab
        .post_json(
            "http://127.0.0.12:2379/v3/kv/put",
            &serde_json::json!({"key": "dmlnaWUtbGFi", "value": "cXVvcnVt"}),
        )
        .await;
    assert!(put.is_some_and(|v| v["header"]["revision"].is_string()));
    wait_until("a write through HAProxy RW", CLUSTER_CHANGE, || async {
        write_through_rw().await.ok()
    })
    .await;
    lab.fault("start-etcd", Some("1")).await;
    assert!(lab.etcd_healthy(1).await);
}

#[tokio::test]
async fn freeze_pg_hangs_every_connection_until_thaw_pg() {
    let lab = Lab::acquire().await;
    let r = a_replica(&lab).await;
    let existing = connect(Target::Node(r), Role::Monitor, SQL)
        .await
        .expect("connect");
    lab.fault("freeze-pg", Some(&r.to_string())).await;
    let fresh = connect(Target::Node(r), Role::Monitor, HANG).await;
    assert!(fresh.is_err_and(|e| e.contains("timed out")));
    let old_session = query_one_text(&existing, "select 1", HANG).await;
    assert!(old_session.is_err_and(|e| e.contains("timed out")));
    lab.fault("thaw-pg", Some(&r.to_string())).await;
    connect(Target::Node(r), Role::Monitor, SQL)
        .await
        .expect("connect after thaw");
    assert_eq!(
        query_one_text(&existing, "select 1", SQL)
            .await
            .expect("old session"),
        "1"
    );
}

#[tokio::test]
async fn freeze_postmaster_of_the_leader_hangs_new_connections_only() {
    let lab = Lab::acquire().await;
    let leader = lab.leader().await.expect("a leader");
    let existing = connect(Target::Node(leader), Role::Monitor, SQL)
        .await
        .expect("connect");
    lab.fault("freeze-postmaster", Some("leader")).await;
    let fresh = connect(Target::Node(leader), Role::Monitor, HANG).await;
    assert!(fresh.is_err_and(|e| e.contains("timed out")));
    let old_session = query_one_text(&existing, "select 1", SQL).await;
    assert_eq!(old_session.expect("existing session goes on"), "1");
    lab.fault("thaw-postmaster", Some(&leader.to_string()))
        .await;
    connect(Target::Node(leader), Role::Monitor, SQL)
        .await
        .expect("connect after thaw");
}

#[tokio::test]
async fn pause_replay_stops_replay_while_wal_keeps_arriving() {
    let lab = Lab::acquire().await;
    let r = a_replica(&lab).await;
    let lsn = |f: &'static str| async move {
        let text = query_text(
            Target::Node(r),
            Role::Monitor,
            &format!("select {f}()"),
            SQL,
        )
        .await;
        parse_lsn(&text.expect("lsn query")).expect("an lsn")
    };
    lab.fault("pause-replay", Some(&r.to_string())).await;
    let replay_at_pause = lsn("pg_last_wal_replay_lsn").await;
    write_through_rw().await.expect("write");
    wait_until(
        "WAL to reach the paused replica",
        CLUSTER_CHANGE,
        || async { (lsn("pg_last_wal_receive_lsn").await > replay_at_pause).then_some(()) },
    )
    .await;
    write_through_rw().await.expect("write");
    assert_eq!(lsn("pg_last_wal_replay_lsn").await, replay_at_pause);

    lab.fault("resume-replay", Some(&r.to_string())).await;
    wait_until("replay to catch up", CLUSTER_CHANGE, || async {
        let received = lsn("pg_last_wal_receive_lsn").await;
        let replayed = lsn("pg_last_wal_replay_lsn").await;
        (replayed > replay_at_pause && replayed >= received).then_some(())
    })
    .await;
}

#[tokio::test]
async fn stop_pg_keeps_postgres_down_although_patroni_retries_until_start_pg() {
    let lab = Lab::acquire().await;
    let leader = lab.leader().await.expect("a leader");
    let r = a_replica(&lab).await;
    lab.fault("stop-pg", Some(&r.to_string())).await;
    let refused = lab_dir().join(format!("node{r}/pg-refused"));
    wait_until(
        "Patroni to try (and fail) to restart PostgreSQL",
        CLUSTER_CHANGE,
        || async { refused.exists().then_some(()) },
    )
    .await;
    assert!(connect(Target::Node(r), Role::Monitor, SQL).await.is_err());
    assert!(
        !streaming_replicas(leader)
            .await
            .expect("query")
            .contains(&format!("node{r}"))
    );
    // Patroni itself is still up and says so.
    let node = lab
        .get_json(&format!("http://{}:8008/patroni", node_ip(r)))
        .await
        .expect("Patroni answers");
    assert_ne!(node["state"], "running", "{node}");

    lab.fault("start-pg", Some(&r.to_string())).await;
    wait_until("the replica to stream again", CLUSTER_CHANGE, || async {
        let streaming = streaming_replicas(leader).await.ok()?;
        streaming.contains(&format!("node{r}")).then_some(())
    })
    .await;
}

#[tokio::test]
async fn stop_patroni_takes_its_postgres_down_and_start_patroni_brings_it_back() {
    let lab = Lab::acquire().await;
    let r = a_replica(&lab).await;
    lab.fault("stop-patroni", Some(&r.to_string())).await;
    let api = lab
        .get_json(&format!("http://{}:8008/patroni", node_ip(r)))
        .await;
    assert!(api.is_none(), "Patroni API still answers: {api:?}");
    assert!(connect(Target::Node(r), Role::Monitor, SQL).await.is_err());
    lab.fault("start-patroni", Some(&r.to_string())).await;
    wait_ready(&lab).await;
}

#[tokio::test]
async fn stop_haproxy_closes_the_rw_port_and_start_haproxy_reopens_it() {
    let lab = Lab::acquire().await;
    let leader = lab.leader().await.expect("a leader");
    lab.fault("stop-haproxy", None).await;
    assert!(connect(Target::Rw, Role::Monitor, SQL).await.is_err());
    lab.fault("start-haproxy", None).await;
    wait_until("HAProxy RW on the leader", CLUSTER_CHANGE, || async {
        (server_addr(Target::Rw).await.ok()? == node_ip(leader)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn pause_puts_patroni_in_maintenance_mode_and_resume_ends_it() {
    let lab = Lab::acquire().await;
    lab.fault("pause", None).await;
    let cluster = lab.cluster().await.expect("/cluster");
    assert_eq!(cluster["pause"], true, "{cluster}");
    lab.fault("resume", None).await;
    let cluster = lab.cluster().await.expect("/cluster");
    assert_ne!(cluster["pause"], true, "{cluster}");
}

#[tokio::test]
async fn down_leaves_no_lab_process_and_no_state() {
    let lab = Lab::acquire().await;
    let mut pids: Vec<String> = recorded_pids().into_values().collect();
    pids.extend(NODES.iter().filter_map(|&n| postmaster_pid(n)));
    assert_eq!(
        pids.len(),
        10,
        "3 etcd + 3 Patroni + HAProxy + 3 postmasters: {pids:?}"
    );
    // Faults must not stop `down`: a frozen instance and held replay included.
    lab.fault("freeze-pg", Some("1")).await;
    lab.script_ok(&["down"]).await;
    let survivors: Vec<_> = pids.iter().filter(|p| process_alive(p)).collect();
    assert!(survivors.is_empty(), "still running: {survivors:?}");
    assert!(!lab_dir().exists(), "{} still exists", lab_dir().display());
}
