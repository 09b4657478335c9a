//! The truth during faults: each scenario brings the real lab to a known state, injects a fault
//! with `lab.sh fault …`, waits (polling, with a deadline) for the verdict and findings it expects
//! from the collector's API, repairs, and waits for `healthy` again — recording how long the
//! verdict took to change and to come back (`vigie_tests::scenario`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;
use vigie_tests::scenario::Timer;
use vigie_tests::stack::{Collector, Stack, finding_codes, has_finding};
use vigie_tests::{CLUSTER_CHANGE, Lab, Role, Target, connect, query_one_text, write_through_rw};

/// Agent interval in the suite: 1 s, or `VIGIE_SCENARIO_INTERVAL` (the detection benchmark runs
/// the suite at 1 s and 5 s; detection scales with it).
fn interval() -> Duration {
    std::env::var("VIGIE_SCENARIO_INTERVAL")
        .ok()
        .map(|v| {
            humantime::parse_duration(&v)
                .unwrap_or_else(|e| panic!("VIGIE_SCENARIO_INTERVAL={v}: {e}"))
        })
        .unwrap_or(Duration::from_secs(1))
}

fn verdict(d: &Value) -> &str {
    d["verdict"].as_str().unwrap_or("")
}

fn healthy(d: &Value) -> bool {
    verdict(d) == "healthy"
}

/// Starts the stack on a ready lab and waits for its first healthy verdict.
async fn stack() -> Stack {
    let s = Stack::start(interval()).await;
    s.wait_demo("a first healthy verdict", CLUSTER_CHANGE, healthy)
        .await;
    s
}

/// Writes through HAProxy RW in the background until dropped; counts successes.
struct Writer {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
}

impl Writer {
    fn start() -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let (s, o) = (stop.clone(), ok.clone());
        tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                if write_through_rw().await.is_ok() {
                    o.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        Writer { stop, ok }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn events_of(doc: &Value) -> Vec<Value> {
    doc["events"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn s01_quiet_cluster_with_writes_stays_healthy_for_two_minutes() {
    let _lab = Lab::acquire().await;
    let s = stack().await;
    let writer = Writer::start();
    let until = Instant::now() + Duration::from_secs(120);
    let mut polls = 0;
    while Instant::now() < until {
        let doc = s.demo().await.expect("the API answers");
        assert!(
            healthy(&doc),
            "not healthy during a quiet period: {:?} {}",
            finding_codes(&doc),
            doc["blind_spots"]
        );
        assert!(
            doc["findings"].as_array().is_some_and(Vec::is_empty),
            "{:?}",
            finding_codes(&doc)
        );
        polls += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let writes = writer.ok.load(Ordering::Relaxed);
    assert!(writes > 100, "only {writes} writes went through");
    assert!(polls > 200);
    s.stop().await;
}

#[tokio::test]
async fn s02_planned_switchover_is_never_critical_and_names_old_and_new_leader() {
    let lab = Lab::acquire().await;
    let s = stack().await;
    let old = lab.leader().await.expect("a leader");
    let since = s
        .get("/api/v1/events")
        .await
        .map(|e| events_of(&e).len())
        .unwrap_or(0);
    let mut timer = Timer::fault("switchover", interval());
    let watch = {
        let api = s.collector.api("/api/v1/clusters/demo");
        tokio::spawn(async move {
            let mut worst = Vec::new();
            let end = Instant::now() + Duration::from_secs(25);
            while Instant::now() < end {
                if let Ok(r) = reqwest::get(&api).await
                    && let Ok(d) = r.json::<Value>().await
                    && verdict(&d) == "critical"
                {
                    worst.push(finding_codes(&d));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            worst
        })
    };
    lab.fault("switchover", None).await;
    let new = lab.leader().await.expect("a new leader");
    assert_ne!(new, old);
    s.wait_demo("the new leader named", CLUSTER_CHANGE, |d| {
        d["leader"] == format!("node{new}").as_str()
    })
    .await;
    timer.detected();
    timer.repair();
    s.wait_demo("healthy after the switchover", CLUSTER_CHANGE, healthy)
        .await;
    timer.recovered();
    let criticals = watch.await.expect("watcher");
    assert!(
        criticals.is_empty(),
        "critical during a planned switchover: {criticals:?}"
    );
    let events = events_of(&s.get("/api/v1/events?cluster=demo").await.expect("events"));
    let changed = events.iter().skip(since).any(|e| {
        e["kind"] == "leader_changed"
            && e["from"] == format!("node{old}").as_str()
            && e["to"] == format!("node{new}").as_str()
    });
    assert!(
        changed,
        "no leader_changed node{old} → node{new} in {events:?}"
    );
    timer.note(format!("node{old} -> node{new}"));
    timer.record();
    s.stop().await;
}

#[tokio::test]
async fn s03a_kill_primary_patroni_is_critical_calls_out_the_orphan_and_follows_the_new_leader() {
    let lab = Lab::acquire().await;
    let s = stack().await;
    let old = lab.leader().await.expect("a leader");
    let old_name = format!("node{old}");
    let mut timer = Timer::fault("kill-primary-patroni", interval());
    lab.fault("kill-primary-patroni", None).await;
    let doc = s
        .wait_demo("critical", CLUSTER_CHANGE, |d| verdict(d) == "critical")
        .await;
    let first = timer.detected();
    timer.note(format!(
        "first critical after {:.1}s: {:?}",
        first.as_secs_f64(),
        finding_codes(&doc)
    ));
    // Patroni fails over; the old primary keeps running writable with no manager.
    let doc = s
        .wait_demo(
            "a new leader, and the orphaned old primary called out",
            CLUSTER_CHANGE,
            |d| {
                d["leader"].as_str().is_some_and(|l| l != old_name)
                    && has_finding(d, "SPLIT_BRAIN", &old_name)
            },
        )
        .await;
    assert_eq!(verdict(&doc), "critical");
    let new = doc["leader"].as_str().expect("leader").to_string();
    // The orphan is named for what it is, not as the leader it no longer is.
    let patroni_down = finding_message(&doc, "PATRONI_DOWN", &old_name).unwrap_or_default();
    assert!(
        patroni_down.contains("old primary, still writable, unmanaged"),
        "{patroni_down}"
    );
    // HAProxy RW follows the new leader: no misrouting, the RW endpoint up.
    s.wait_demo("HAProxy RW on the new leader", CLUSTER_CHANGE, |d| {
        let backends = &d["nodes"]
            .as_array()
            .and_then(|n| n.iter().find(|x| x["name"] == "haproxy"))
            .map(|h| h["results"]["haproxy.backends"]["facts"]["proxies"].clone());
        backends
            .as_ref()
            .and_then(|p| p.as_array())
            .is_some_and(|p| {
                p.iter().any(|x| {
                    x["kind"] == "rw"
                        && x["up"]
                            .as_array()
                            .is_some_and(|u| u.len() == 1 && u[0] == new.as_str())
                })
            })
            && !has_finding(d, "RW_MISROUTED", "haproxy")
    })
    .await;
    timer.note(format!("{old_name} -> {new}"));
    timer.repair();
    lab.fault("start-patroni", Some(&old.to_string())).await;
    s.wait_demo(
        "healthy after the old leader rejoined",
        CLUSTER_CHANGE,
        healthy,
    )
    .await;
    timer.recovered();
    timer.record();
    s.stop().await;
}

#[tokio::test]
async fn s03b_kill_primary_pg_outage_is_reported_even_when_restarted_between_probes() {
    let lab = Lab::acquire().await;
    let s = stack().await;
    let leader = format!("node{}", lab.leader().await.expect("a leader"));
    let seen = s
        .get("/api/v1/events")
        .await
        .map(|e| events_of(&e).len())
        .unwrap_or(0);
    let mut timer = Timer::fault("kill-primary-pg", interval());
    lab.fault("kill-primary-pg", None).await;
    // Either the verdict catches the outage, or the restart shows as an event afterwards.
    let mut saw_critical = false;
    let deadline = Instant::now() + CLUSTER_CHANGE;
    loop {
        let doc = s.demo().await.expect("the API answers");
        if verdict(&doc) == "critical" && !saw_critical {
            saw_critical = true;
            timer.detected();
            timer.note(format!("critical: {:?}", finding_codes(&doc)));
        }
        let events = events_of(&s.get("/api/v1/events?cluster=demo").await.expect("events"));
        let restarted = events.iter().skip(seen).any(|e| {
            (e["kind"] == "postgres_restarted"
                || e["kind"] == "timeline_changed"
                || e["kind"] == "leader_changed")
                && (e["node"] == leader.as_str() || e["from"] == leader.as_str())
        });
        if restarted {
            timer.detected();
            timer.note("restart event recorded");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the outage left no trace: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    timer.repair();
    s.wait_demo("healthy after the restart", CLUSTER_CHANGE, healthy)
        .await;
    timer.recovered();
    timer.record();
    s.stop().await;
}

/// The common shape: inject `fault`, wait for the verdict `expect` describes, run `repair`, wait
/// for healthy, record both times. Returns the document that showed the fault.
async fn fault_then_repair(
    lab: &Lab,
    s: &Stack,
    scenario: &str,
    fault: (&str, Option<&str>),
    expect: (&str, impl Fn(&Value) -> bool),
    repair: (&str, Option<&str>),
) -> Value {
    let mut timer = Timer::fault(scenario, interval());
    lab.fault(fault.0, fault.1).await;
    let doc = s.wait_demo(expect.0, CLUSTER_CHANGE, expect.1).await;
    timer.detected();
    timer.repair();
    lab.fault(repair.0, repair.1).await;
    s.wait_demo("healthy after the repair", CLUSTER_CHANGE, healthy)
        .await;
    timer.recovered();
    timer.record();
    doc
}

#[tokio::test]
async fn s04_replica_postgres_stopped_is_degraded_naming_it() {
    let lab = Lab::acquire().await;
    let s = stack().await;
    let r = lab.replicas().await.first().expect("a replica").to_string();
    let node = format!("node{r}");
    let doc = fault_then_repair(
        &lab,
        &s,
        "stop-pg replica",
        ("stop-pg", Some(&r)),
        ("degraded naming the replica", |d: &Value| {
            verdict(d) == "degraded" && has_finding(d, "POSTGRES_DOWN", &node)
        }),
        ("start-pg", Some(&r)),
    )
    .await;
    assert!(
        has_finding(&doc, "REPLICA_NOT_STREAMING", &node)
            || has_finding(&doc, "REPLICA_COUNT_MISMATCH", &node)
    );
    s.stop().await;
}

#[tokio::test]
async fn s05_etcd_one_member_down_is_degraded_two_is_quorum_lost() {
    let lab = Lab::acquire().await;
    let s = stack().await;
    let mut timer = Timer::fault("stop-etcd 1", interval());
    lab.fault("stop-etcd", Some("1")).await;
    s.wait_demo("DCS_MEMBER_DOWN", CLUSTER_CHANGE, |d| {
        verdict(d) == "degraded" && has_finding(d, "DCS_MEMBER_DOWN", "node1")
    })
    .await;
    timer.detected();
    let mut quorum = Timer::fault("stop-etcd 1+2", interval());
    lab.fault("stop-etcd", Some("2")).await;
    s.wait_demo("DCS_QUORUM_LOST", CLUSTER_CHANGE, |d| {
        verdict(d) == "critical" && has_finding(d, "DCS_QUORUM_LOST", "node2")
    })
    .await;
    quorum.detected();
    quorum.repair();
    timer.repair();
    lab.fault("start-etcd", Some("2")).await;
    lab.fault("start-etcd", Some("1")).await;
    s.wait_demo("healthy", CLUSTER_CHANGE, healthy).await;
    quorum.recovered();
    timer.recovered();
    timer.record();
    quorum.record();
    s.stop().await;
}

#[tokio::test]
async fn s06_haproxy_stopped_is_critical_rw_endpoint_down() {
    let lab = Lab::acquire().await;
    let s = stack().await;
    fault_then_repair(
        &lab,
        &s,
        "stop-haproxy",
        ("stop-haproxy", None),
        ("RW_ENDPOINT_DOWN", |d: &Value| {
            verdict(d) == "critical" && has_finding(d, "RW_ENDPOINT_DOWN", "haproxy")
        }),
        ("start-haproxy", None),
    )
    .await;
    s.stop().await;
}

#[tokio::test]
async fn s07_frozen_postgres_is_reported_on_time_and_the_agent_keeps_reporting() {
    let lab = Lab::acquire().await;
    let s = stack().await;
    for (label, target) in [("replica", "replica"), ("leader", "leader")] {
        let n = match target {
            "leader" => lab.leader().await.expect("a leader"),
            _ => *lab.replicas().await.first().expect("a replica"),
        };
        let node = format!("node{n}");
        let mut timer = Timer::fault(&format!("freeze-pg {label}"), interval());
        lab.fault("freeze-pg", Some(&n.to_string())).await;
        let doc = s
            .wait_demo("POSTGRES_DOWN on the frozen node", CLUSTER_CHANGE, |d| {
                has_finding(d, "POSTGRES_DOWN", &node)
            })
            .await;
        let took = timer.detected();
        lab.fault("thaw-pg", Some(&n.to_string())).await;
        // The frozen node's agent kept its rhythm: it is not stale.
        let agent = doc["nodes"]
            .as_array()
            .and_then(|ns| ns.iter().find(|x| x["name"] == node.as_str()))
            .expect("node");
        assert_eq!(agent["connected"], true);
        assert!(
            agent["age_s"].as_f64().is_some_and(|a| a < 3.0),
            "{}",
            agent["age_s"]
        );
        timer.note(format!(
            "{node}: {:?} after {:.1}s",
            finding_codes(&doc),
            took.as_secs_f64()
        ));
        timer.repair();
        s.wait_demo("healthy after the thaw", CLUSTER_CHANGE, healthy)
            .await;
        timer.recovered();
        timer.record();
    }
    s.stop().await;
}

#[tokio::test]
async fn s08_paused_replay_with_writes_is_replication_lag_in_bytes_and_seconds() {
    let lab = Lab::acquire().await;
    let s = stack().await;
    let r = *lab.replicas().await.first().expect("a replica");
    let node = format!("node{r}");
    let mut timer = Timer::fault("pause-replay + writes", interval());
    lab.fault("pause-replay", Some(&r.to_string())).await;
    // About 30 MB of WAL: above the 16 MiB warning threshold.
    let c = connect(Target::Rw, Role::Superuser, Duration::from_secs(10))
        .await
        .expect("connect RW");
    query_one_text(
        &c,
        "create table if not exists lab_bulk (filler text); \
         insert into lab_bulk select repeat(md5(g::text), 30) from generate_series(1, 30000) g; select 'ok'",
        Duration::from_secs(60),
    )
    .await
    .expect("bulk write");
    let doc = s
        .wait_demo("REPLICATION_LAG naming the replica", CLUSTER_CHANGE, |d| {
            has_finding(d, "REPLICATION_LAG", &node)
        })
        .await;
    timer.detected();
    // The leader's position tells the lag before the replica's own figures do (it may not have
    // received the burst yet); the checks below are of the replica's own view too.
    let own_lag = |d: &Value| {
        d["nodes"]
            .as_array()
            .and_then(|ns| ns.iter().find(|x| x["name"] == node.as_str()))
            .and_then(|n| n["results"]["postgres.replication_lag"]["facts"]["lag_bytes"].as_u64())
            .unwrap_or(0)
    };
    let doc = if own_lag(&doc) > 16 * 1024 * 1024 {
        doc
    } else {
        s.wait_demo(
            "the replica's own receive − replay past 16 MiB",
            CLUSTER_CHANGE,
            |d| has_finding(d, "REPLICATION_LAG", &node) && own_lag(d) > 16 * 1024 * 1024,
        )
        .await
    };
    let f = doc["findings"]
        .as_array()
        .and_then(|fs| fs.iter().find(|f| f["code"] == "REPLICATION_LAG"))
        .expect("finding");
    let msg = f["message"].as_str().unwrap_or("");
    assert!(msg.contains("bytes") && msg.contains('s'), "{msg}");
    let lag = &doc["nodes"]
        .as_array()
        .and_then(|ns| ns.iter().find(|x| x["name"] == node.as_str()))
        .expect("node")["results"]["postgres.replication_lag"]["facts"];
    assert!(
        lag["lag_bytes"]
            .as_u64()
            .is_some_and(|b| b > 16 * 1024 * 1024),
        "{lag}"
    );
    assert!(
        lag["lag_seconds"].as_f64().is_some_and(|s| s > 0.0),
        "{lag}"
    );
    timer.note(msg.to_string());
    timer.repair();
    lab.fault("resume-replay", Some(&r.to_string())).await;
    s.wait_demo("healthy", CLUSTER_CHANGE, healthy).await;
    timer.recovered();
    timer.record();
    s.stop().await;
}

#[tokio::test]
async fn s09_maintenance_mode_is_reported_and_faults_during_it_still_are() {
    let lab = Lab::acquire().await;
    let s = stack().await;
    let mut timer = Timer::fault("pause (maintenance)", interval());
    lab.fault("pause", None).await;
    s.wait_demo("MAINTENANCE_MODE", CLUSTER_CHANGE, |d| {
        d["findings"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x["code"] == "MAINTENANCE_MODE"))
    })
    .await;
    timer.detected();
    let r = *lab.replicas().await.first().expect("a replica");
    let node = format!("node{r}");
    lab.fault("stop-pg", Some(&r.to_string())).await;
    s.wait_demo("POSTGRES_DOWN during maintenance", CLUSTER_CHANGE, |d| {
        has_finding(d, "POSTGRES_DOWN", &node)
    })
    .await;
    timer.repair();
    lab.fault("resume", None).await;
    lab.fault("start-pg", Some(&r.to_string())).await;
    s.wait_demo("healthy", CLUSTER_CHANGE, healthy).await;
    timer.recovered();
    timer.record();
    s.stop().await;
}

#[tokio::test]
async fn s10_killed_agents_are_stale_and_never_vouched_for() {
    let lab = Lab::acquire().await;
    let mut s = stack().await;
    let r = format!("node{}", lab.replicas().await.first().expect("a replica"));
    let mut timer = Timer::fault("agent killed (replica)", interval());
    s.kill_agent(&r);
    s.wait_demo("AGENT_STALE", CLUSTER_CHANGE, |d| {
        has_finding(d, "AGENT_STALE", &r)
    })
    .await;
    timer.detected();
    timer.record();
    for name in ["node1", "node2", "node3", "haproxy"] {
        s.kill_agent(name);
    }
    let doc = s
        .wait_demo("unknown with every agent dead", CLUSTER_CHANGE, |d| {
            verdict(d) == "unknown"
        })
        .await;
    assert!(doc["blind_spots"].as_array().is_some_and(|b| !b.is_empty()));
    // And it stays so: nobody sees anything, so nothing is called healthy.
    let until = Instant::now() + interval() * 5;
    while Instant::now() < until {
        assert_ne!(verdict(&s.demo().await.expect("api")), "healthy");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    s.stop().await;
}

#[tokio::test]
async fn s11_collector_restarted_mid_fault_has_the_same_verdict_back_within_two_intervals() {
    let lab = Lab::acquire().await;
    let mut s = stack().await;
    lab.fault("stop-haproxy", None).await;
    let before = s
        .wait_demo("critical", CLUSTER_CHANGE, |d| {
            has_finding(d, "RW_ENDPOINT_DOWN", "haproxy")
        })
        .await;
    let (grpc, http) = (s.collector.grpc, s.collector.http);
    s.collector.stop().await;
    s.collector = Collector::start(grpc, http, None).await;
    let mut timer = Timer::fault("collector restarted mid-fault", interval());
    let after = s
        .wait_demo(
            "the same verdict back",
            interval() * 2 + Duration::from_secs(2),
            |d| verdict(d) == verdict(&before) && has_finding(d, "RW_ENDPOINT_DOWN", "haproxy"),
        )
        .await;
    timer.detected();
    timer.note(format!("{:?}", finding_codes(&after)));
    timer.repair();
    lab.fault("start-haproxy", None).await;
    s.wait_demo("healthy", CLUSTER_CHANGE, healthy).await;
    timer.recovered();
    timer.record();
    s.stop().await;
}

/// Writes through HAProxy RW at a sustained ~2 MB of WAL a second (100 MB a minute, six times
/// `lag_warning_bytes`), for the heavy-write cases.
struct HeavyWriter {
    stop: Arc<AtomicBool>,
}

impl HeavyWriter {
    async fn start() -> HeavyWriter {
        let c = connect(Target::Rw, Role::Superuser, Duration::from_secs(10))
            .await
            .expect("connect RW");
        query_one_text(
            &c,
            "create table if not exists lab_heavy (filler text); select 'ok'",
            Duration::from_secs(10),
        )
        .await
        .expect("create table");
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                let _ = query_one_text(
                    &c,
                    "insert into lab_heavy select repeat(md5(g::text), 10) from generate_series(1, 500) g; select 'ok'",
                    Duration::from_secs(10),
                )
                .await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let _ = query_one_text(
                &c,
                "truncate lab_heavy; select 'ok'",
                Duration::from_secs(10),
            )
            .await;
        });
        HeavyWriter { stop }
    }
}

impl Drop for HeavyWriter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The message of the first finding `code` naming `node`.
fn finding_message(doc: &Value, code: &str, node: &str) -> Option<String> {
    doc["findings"]
        .as_array()?
        .iter()
        .find(|f| {
            f["code"] == code
                && f["nodes"]
                    .as_array()
                    .is_some_and(|n| n.iter().any(|x| x == node))
        })
        .and_then(|f| f["message"].as_str().map(str::to_string))
}

/// Findings `code` on a node other than `node`.
fn elsewhere<'a>(doc: &'a Value, code: &str, node: &str) -> Vec<&'a Value> {
    doc["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["code"] == code && f["nodes"][0] != node)
        .collect()
}

/// Waits for finding `code` on `node` to show (pending or not), then for the verdict to be
/// `critical` with it `within` that: the grace of a steady cluster, no more. Times it.
async fn critical_soon_after_seen(
    s: &Stack,
    timer: &mut Timer,
    (code, node): (&str, &str),
    within: Duration,
) -> Value {
    s.wait_demo(&format!("{code} seen"), CLUSTER_CHANGE, |d| {
        has_finding(d, code, node)
    })
    .await;
    let doc = s
        .wait_demo(&format!("critical {code}"), within, |d| {
            verdict(d) == "critical" && has_finding(d, code, node)
        })
        .await;
    let took = timer.detected();
    timer.note(format!(
        "critical after {:.1}s: {:?}",
        took.as_secs_f64(),
        finding_codes(&doc)
    ));
    doc
}

/// Waits until the cluster is healthy with no transition visible (a leader change of an earlier
/// test, a member restarting): the "steady cluster" a scenario's no-grace promise is about.
async fn steady(s: &Stack) {
    s.wait_demo(
        "a steady healthy cluster (no transition visible)",
        CLUSTER_CHANGE,
        |d| healthy(d) && d["transition"].is_null(),
    )
    .await;
}

/// A metric sample's value in the collector's `/metrics`.
async fn metric(s: &Stack, sample: &str) -> Option<f64> {
    let text = reqwest::get(s.collector.api("/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
}

#[tokio::test]
async fn s12_stalled_wal_stream_is_reported_within_three_intervals_at_light_and_heavy_writes() {
    let lab = Lab::acquire().await;
    let s = stack().await;
    for heavy in [false, true] {
        let label = if heavy {
            "heavy writes"
        } else {
            "light writes"
        };
        let r = *lab.replicas().await.first().expect("a replica");
        let node = format!("node{r}");
        let _light = Writer::start();
        let _heavy = if heavy {
            Some(HeavyWriter::start().await)
        } else {
            None
        };
        s.wait_demo("healthy under writes", CLUSTER_CHANGE, healthy)
            .await;
        let mut timer = Timer::fault(&format!("freeze-walsender ({label})"), interval());
        lab.fault("freeze-walsender", Some(&r.to_string())).await;
        // The WAL receiver times out only after a minute; vigie must not wait for it.
        let doc = s
            .wait_demo(
                "REPLICA_NOT_STREAMING: stream stalled",
                interval() * 3 + Duration::from_secs(3),
                |d| {
                    finding_message(d, "REPLICA_NOT_STREAMING", &node)
                        .is_some_and(|m| m.contains("stalled"))
                },
            )
            .await;
        let took = timer.detected();
        let msg = finding_message(&doc, "REPLICA_NOT_STREAMING", &node).unwrap_or_default();
        // A warning: writes still work. (A loaded machine may add its own RESOURCE_PRESSURE.)
        let severity = doc["findings"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|f| f["code"] == "REPLICA_NOT_STREAMING")
            .map(|f| f["severity"].clone());
        assert_eq!(
            severity,
            Some(Value::from("warning")),
            "{:?}",
            finding_codes(&doc)
        );
        timer.note(format!("after {:.1}s: {msg}", took.as_secs_f64()));
        // /metrics carries the cross-node figures, not the replica's own receive − replay (0).
        let behind = metric(
            &s,
            &format!("vigie_replication_receive_lag_bytes{{cluster=\"demo\",node=\"{node}\"}}"),
        )
        .await;
        assert!(behind.is_some_and(|b| b > 0.0), "receive lag {behind:?}");
        let seconds = metric(
            &s,
            &format!("vigie_replication_receive_lag_seconds{{cluster=\"demo\",node=\"{node}\"}}"),
        )
        .await;
        assert!(
            seconds.is_some_and(|b| b > 0.0),
            "receive lag seconds {seconds:?}"
        );
        timer.repair();
        lab.fault("thaw-walsender", Some(&r.to_string())).await;
        s.wait_demo("healthy after the thaw", CLUSTER_CHANGE, healthy)
            .await;
        timer.recovered();
        timer.record();
    }
    s.stop().await;
}

#[tokio::test]
async fn s13_writes_misrouted_to_a_replica_in_a_steady_cluster_are_critical_within_two_intervals() {
    let lab = Lab::acquire().await;
    let s = stack().await;
    let r = *lab.replicas().await.first().expect("a replica");
    let node = format!("node{r}");
    steady(&s).await;
    let mut timer = Timer::fault("misroute-rw (steady cluster)", interval());
    lab.fault("misroute-rw", Some(&r.to_string())).await;
    // Nothing is transitioning (Patroni's leader has not moved): no transition grace.
    critical_soon_after_seen(
        &s,
        &mut timer,
        ("RW_MISROUTED", &node),
        interval() * 2 + Duration::from_secs(2),
    )
    .await;
    timer.repair();
    lab.fault("unmisroute-rw", Some(&r.to_string())).await;
    s.wait_demo("healthy after the repair", CLUSTER_CHANGE, healthy)
        .await;
    timer.recovered();
    timer.record();
    s.stop().await;
}

#[tokio::test]
async fn s14_a_silent_leader_agent_is_degraded_while_the_others_vouch_for_the_leader() {
    let lab = Lab::acquire().await;
    let mut s = stack().await;
    let leader = format!("node{}", lab.leader().await.expect("a leader"));
    let mut timer = Timer::fault("agent killed (leader)", interval());
    s.kill_agent(&leader);
    let doc = s
        .wait_demo("AGENT_STALE on the leader", CLUSTER_CHANGE, |d| {
            has_finding(d, "AGENT_STALE", &leader)
        })
        .await;
    timer.detected();
    let msg = finding_message(&doc, "AGENT_STALE", &leader).unwrap_or_default();
    assert_eq!(
        verdict(&doc),
        "degraded",
        "{msg}; blind: {}",
        doc["blind_spots"]
    );
    assert!(msg.contains("vouched for by"), "{msg}");
    assert!(msg.contains("unobserved: "), "{msg}");
    timer.note(msg);
    // And it stays so: the replicas' Patroni, their WAL streams and HAProxy still see it.
    let until = Instant::now() + interval() * 5;
    while Instant::now() < until {
        let d = s.demo().await.expect("api");
        assert_eq!(
            verdict(&d),
            "degraded",
            "{:?} {}",
            finding_codes(&d),
            d["blind_spots"]
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    timer.repair();
    s.start_agent(&leader);
    s.wait_demo("healthy with the agent back", CLUSTER_CHANGE, healthy)
        .await;
    timer.recovered();
    timer.record();
    s.stop().await;
}

#[tokio::test]
async fn s15_etcd_with_an_unwatched_member_judges_only_what_it_sees_and_one_stall_is_not_quorum_lost()
 {
    let lab = Lab::acquire().await;
    // node3's host runs etcd and Patroni but no agent: its etcd member is unobserved.
    let s = Stack::start_only(interval(), &["node1", "node2", "haproxy"]).await;
    let only_node3_unwatched = |d: &Value| {
        verdict(d) == "degraded"
            && finding_codes(d) == ["AGENT_STALE node3"]
            && d["blind_spots"].as_array().is_some_and(Vec::is_empty)
    };
    s.wait_demo(
        "degraded by the unwatched node3 only",
        CLUSTER_CHANGE,
        only_node3_unwatched,
    )
    .await;
    // A member that stops answering for a few seconds (a disk stall): never critical.
    let mut timer = Timer::fault("freeze-etcd 1 (one of two watched)", interval());
    lab.fault("freeze-etcd", Some("1")).await;
    let until = Instant::now() + interval() * 4;
    while Instant::now() < until {
        let d = s.demo().await.expect("api");
        assert_ne!(verdict(&d), "critical", "{:?}", finding_codes(&d));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    lab.fault("thaw-etcd", Some("1")).await;
    timer.detected();
    // One watched member down, the other healthy: the quorum holds (a healthy member proves it).
    lab.fault("stop-etcd", Some("1")).await;
    s.wait_demo("DCS_MEMBER_DOWN node1", CLUSTER_CHANGE, |d| {
        has_finding(d, "DCS_MEMBER_DOWN", "node1")
    })
    .await;
    let until = Instant::now() + interval() * 4;
    while Instant::now() < until {
        let d = s.demo().await.expect("api");
        assert_eq!(verdict(&d), "degraded", "{:?}", finding_codes(&d));
        assert!(!has_finding(&d, "DCS_QUORUM_LOST", "node1"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    timer.repair();
    lab.fault("start-etcd", Some("1")).await;
    s.wait_demo(
        "back to node3 unwatched only",
        CLUSTER_CHANGE,
        only_node3_unwatched,
    )
    .await;
    timer.recovered();
    timer.record();
    s.stop().await;
}

#[tokio::test]
async fn s16_a_replica_promoted_by_hand_in_a_steady_cluster_is_split_brain_within_two_intervals() {
    let lab = Lab::acquire().await;
    let s = stack().await;
    // Maintenance mode, so that Patroni leaves the operator's mistake in place.
    lab.fault("pause", None).await;
    s.wait_demo("MAINTENANCE_MODE", CLUSTER_CHANGE, |d| {
        finding_codes(d)
            .iter()
            .any(|c| c.starts_with("MAINTENANCE_MODE"))
    })
    .await;
    let r = *lab.replicas().await.first().expect("a replica");
    let node = format!("node{r}");
    s.wait_demo("no transition visible", CLUSTER_CHANGE, |d| {
        d["transition"].is_null()
    })
    .await;
    let mut timer = Timer::fault("promote a replica by hand (paused)", interval());
    lab.fault("promote", Some(&r.to_string())).await;
    // Patroni's leader has not moved: at most the split-brain grace, if the promotion's own
    // HAProxy changes count as a transition.
    critical_soon_after_seen(
        &s,
        &mut timer,
        ("SPLIT_BRAIN", &node),
        interval() * 2 + Duration::from_millis(1_500),
    )
    .await;
    timer.repair();
    lab.fault("resume", None).await;
    // Patroni demotes the promoted node; 3.0.2 leaves it on its own timeline, unable to follow,
    // while /cluster calls it running: vigie says it does not stream.
    let after = s
        .wait_demo("the second primary demoted", CLUSTER_CHANGE, |d| {
            !has_finding(d, "SPLIT_BRAIN", &node)
        })
        .await;
    timer.note(format!("after resume: {:?}", finding_codes(&after)));
    lab.script_ok(&["repair"]).await;
    s.wait_demo("healthy after the rebuild", CLUSTER_CHANGE, healthy)
        .await;
    timer.recovered();
    timer.record();
    s.stop().await;
}

#[tokio::test]
async fn s20_a_leader_out_of_connection_slots_is_critical_within_two_intervals() {
    let lab = Lab::acquire().await;
    let s = stack().await;
    let leader = lab.leader().await.expect("a leader");
    let node = format!("node{leader}");
    steady(&s).await;
    let mut timer = Timer::fault("saturate-connections (leader)", interval());
    // An application's sessions take every slot: the agent's and Patroni's sessions still work.
    lab.fault("saturate-connections", Some(&leader.to_string()))
        .await;
    critical_soon_after_seen(
        &s,
        &mut timer,
        ("CONNECTIONS_SATURATED", &node),
        interval() * 2 + Duration::from_secs(2),
    )
    .await;
    // The monitoring role's own login is refused too, and said so (not "PostgreSQL down").
    let doc = s
        .wait_demo("the refused login in the finding", CLUSTER_CHANGE, |d| {
            finding_message(d, "CONNECTIONS_SATURATED", &node)
                .is_some_and(|m| m.contains("remaining connection slots are reserved"))
        })
        .await;
    assert_eq!(verdict(&doc), "critical", "{:?}", finding_codes(&doc));
    assert!(
        !has_finding(&doc, "POSTGRES_DOWN", &node),
        "{:?}",
        finding_codes(&doc)
    );
    timer.note(finding_message(&doc, "CONNECTIONS_SATURATED", &node).unwrap_or_default());
    timer.repair();
    lab.fault("release-connections", Some(&leader.to_string()))
        .await;
    s.wait_demo("healthy after the release", CLUSTER_CHANGE, healthy)
        .await;
    timer.recovered();
    timer.record();
    s.stop().await;
}

#[tokio::test]
async fn s21_a_replica_out_of_connection_slots_is_a_warning() {
    let lab = Lab::acquire().await;
    let s = stack().await;
    let r = *lab.replicas().await.first().expect("a replica");
    let node = format!("node{r}");
    steady(&s).await;
    let mut timer = Timer::fault("saturate-connections (replica)", interval());
    lab.fault("saturate-connections", Some(&r.to_string()))
        .await;
    let doc = s
        .wait_demo(
            "CONNECTIONS_SATURATED on the replica",
            interval() * 2 + Duration::from_secs(2),
            |d| has_finding(d, "CONNECTIONS_SATURATED", &node) && verdict(d) == "degraded",
        )
        .await;
    timer.detected();
    timer.note(finding_message(&doc, "CONNECTIONS_SATURATED", &node).unwrap_or_default());
    // A replica refusing reads is not an outage of the writes: it stays a warning.
    let until = Instant::now() + interval() * 3;
    while Instant::now() < until {
        let d = s.demo().await.expect("api");
        assert_eq!(verdict(&d), "degraded", "{:?}", finding_codes(&d));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    timer.repair();
    lab.fault("release-connections", Some(&r.to_string())).await;
    s.wait_demo("healthy after the release", CLUSTER_CHANGE, healthy)
        .await;
    timer.recovered();
    timer.record();
    s.stop().await;
}

/// [`stack`] with the collector's verdict thresholds `verdict`.
async fn stack_judging(verdict: vigie_collector::config::VerdictConfig) -> Stack {
    let s = Stack::start_judging(interval(), verdict).await;
    s.wait_demo("a first healthy verdict", CLUSTER_CHANGE, healthy)
        .await;
    s
}

#[tokio::test]
async fn s22_a_forgotten_slot_retaining_wal_is_named_on_the_leader_and_clears_once_dropped() {
    let lab = Lab::acquire().await;
    // Three segments retained is the warning here (1 GiB by default).
    let s = stack_judging(vigie_collector::config::VerdictConfig {
        wal_retention_warning_bytes: 48 << 20,
        ..Default::default()
    })
    .await;
    let leader = lab.leader().await.expect("a leader").to_string();
    let node = format!("node{leader}");
    steady(&s).await;
    // Patroni creates the permanent slot, reserving WAL from now: nothing retained yet.
    lab.fault("forgotten-slot", None).await;
    s.wait_demo("still healthy under the threshold", CLUSTER_CHANGE, |d| {
        healthy(d) && !has_finding(d, "WAL_RETENTION", &node)
    })
    .await;
    let mut timer = Timer::fault("forgotten slot past the retention threshold", interval());
    // Four segments written: 64 MiB kept for a slot nobody reads.
    lab.script_ok(&["fault", "switch-wal", &leader, "4"]).await;
    let doc = s
        .wait_demo(
            "WAL_RETENTION naming the slot on the leader",
            interval() * 2 + Duration::from_secs(2),
            |d| {
                finding_message(d, "WAL_RETENTION", &node)
                    .is_some_and(|m| m.contains("slot lab_forgotten (inactive"))
            },
        )
        .await;
    timer.detected();
    let message = finding_message(&doc, "WAL_RETENTION", &node).unwrap_or_default();
    assert!(
        message.contains("a permanent slot of Patroni's configuration (`slots:`)")
            && message.contains("retains"),
        "{message}"
    );
    assert_eq!(verdict(&doc), "degraded", "{:?}", finding_codes(&doc));
    timer.note(message);
    timer.repair();
    lab.fault("drop-forgotten-slot", None).await;
    s.wait_demo("healthy once the slot is dropped", CLUSTER_CHANGE, healthy)
        .await;
    timer.recovered();
    timer.record();
    s.stop().await;
}

#[tokio::test]
async fn s23_a_failing_archive_command_is_critical_on_the_leader_and_clears_after_repair() {
    let lab = Lab::acquire().await;
    let s = stack().await;
    let leader = lab.leader().await.expect("a leader").to_string();
    let node = format!("node{leader}");
    steady(&s).await;
    let mut timer = Timer::fault("archive_command failing on the leader", interval());
    // Returns once PostgreSQL's own pg_stat_archiver shows the failure.
    lab.fault("fail-archiving", Some(&leader)).await;
    let doc = critical_soon_after_seen(
        &s,
        &mut timer,
        ("ARCHIVING_FAILING", &node),
        interval() * 2 + Duration::from_secs(2),
    )
    .await;
    let message = finding_message(&doc, "ARCHIVING_FAILING", &node).unwrap_or_default();
    assert!(
        message.contains("archive_command fails") && message.contains("segments wait in pg_wal"),
        "{message}"
    );
    // Only the node that archives: the replicas (archive_mode = on) do not.
    let others = elsewhere(&doc, "ARCHIVING_FAILING", &node);
    assert!(others.is_empty(), "{others:?}");
    timer.note(message);
    timer.repair();
    lab.fault("repair-archiving", Some(&leader)).await;
    s.wait_demo("healthy once archiving works", CLUSTER_CHANGE, healthy)
        .await;
    timer.recovered();
    timer.record();
    s.stop().await;
}

#[tokio::test]
async fn s24_a_session_idle_in_transaction_holding_the_horizon_is_named_and_clears_when_it_ends() {
    let lab = Lab::acquire().await;
    let hold = Duration::from_secs(5);
    let s = stack_judging(vigie_collector::config::VerdictConfig {
        xmin_hold_warning: hold,
        ..Default::default()
    })
    .await;
    let leader = lab.leader().await.expect("a leader").to_string();
    let node = format!("node{leader}");
    steady(&s).await;
    let mut timer = Timer::fault("idle in transaction past the hold threshold", interval());
    lab.fault("hold-snapshot", Some(&leader)).await;
    let doc = s
        .wait_demo(
            "XMIN_HORIZON_HELD naming the session",
            hold + interval() * 2 + Duration::from_secs(2),
            |d| {
                finding_message(d, "XMIN_HORIZON_HELD", &node).is_some_and(|m| {
                    m.contains("application vigie-lab-forgotten-tx")
                        && m.contains("idle in transaction")
                })
            },
        )
        .await;
    timer.detected();
    let message = finding_message(&doc, "XMIN_HORIZON_HELD", &node).unwrap_or_default();
    assert!(message.contains("user lab_app"), "{message}");
    assert_eq!(verdict(&doc), "degraded", "{:?}", finding_codes(&doc));
    timer.note(message);
    timer.repair();
    lab.fault("release-snapshot", Some(&leader)).await;
    s.wait_demo("healthy once the transaction ends", CLUSTER_CHANGE, healthy)
        .await;
    timer.recovered();
    timer.record();
    s.stop().await;
}

/// Patroni's synchronous mode on: with its sync standby confirming, the cluster is quiet. Returns
/// the sync standby.
async fn quiet_in_sync_mode(lab: &Lab, s: &Stack, mode: &str) -> u8 {
    lab.fault("sync-mode", Some(mode)).await;
    steady(s).await;
    let until = Instant::now() + interval() * 5;
    while Instant::now() < until {
        let doc = s.demo().await.expect("the API answers");
        assert!(
            healthy(&doc) && doc["findings"].as_array().is_some_and(Vec::is_empty),
            "synchronous mode {mode} with a sync standby is not quiet: {:?}",
            finding_codes(&doc)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    *lab.sync_standbys()
        .await
        .first()
        .expect("Patroni names a sync standby")
}

#[tokio::test]
async fn s25_a_frozen_sync_standby_hangs_commits_critical_on_the_leader_and_clears_when_thawed() {
    let lab = Lab::acquire().await;
    let wait = Duration::from_secs(2);
    let s = stack_judging(vigie_collector::config::VerdictConfig {
        syncrep_wait_critical: wait,
        ..Default::default()
    })
    .await;
    let leader = lab.leader().await.expect("a leader").to_string();
    let node = format!("node{leader}");
    let sync = quiet_in_sync_mode(&lab, &s, "on").await.to_string();
    let writer = Writer::start();
    let mut timer = Timer::fault("the sync standby frozen, writes going on", interval());
    lab.fault("freeze-pg", Some(&sync)).await;
    // Observable once a commit has waited `wait`; the writer commits every 250 ms.
    let doc = s
        .wait_demo(
            "WRITES_BLOCKED_SYNCREP on the leader",
            wait + interval() * 2 + Duration::from_secs(2),
            |d| verdict(d) == "critical" && has_finding(d, "WRITES_BLOCKED_SYNCREP", &node),
        )
        .await;
    timer.detected();
    let message = finding_message(&doc, "WRITES_BLOCKED_SYNCREP", &node).unwrap_or_default();
    assert!(
        message.contains("wait for a synchronous standby to confirm their commit")
            && message.contains(&format!("synchronous now: node{sync}")),
        "{message}"
    );
    let others = elsewhere(&doc, "WRITES_BLOCKED_SYNCREP", &node);
    assert!(others.is_empty(), "{others:?}");
    timer.note(message);
    timer.repair();
    lab.fault("thaw-pg", Some(&sync)).await;
    s.wait_demo("commits confirmed again", CLUSTER_CHANGE, |d| {
        !has_finding(d, "WRITES_BLOCKED_SYNCREP", &node)
    })
    .await;
    timer.recovered();
    drop(writer);
    lab.fault("sync-mode", Some("off")).await;
    s.wait_demo("healthy, asynchronous again", CLUSTER_CHANGE, healthy)
        .await;
    timer.record();
    s.stop().await;
}

#[tokio::test]
async fn s26_no_standby_left_hangs_commits_in_strict_mode_and_only_degrades_otherwise() {
    let lab = Lab::acquire().await;
    let wait = Duration::from_secs(2);
    let s = stack_judging(vigie_collector::config::VerdictConfig {
        syncrep_wait_critical: wait,
        ..Default::default()
    })
    .await;
    let leader = lab.leader().await.expect("a leader");
    let node = format!("node{leader}");
    let replicas: Vec<String> = (1..=3u8)
        .filter(|n| *n != leader)
        .map(|n| n.to_string())
        .collect();
    quiet_in_sync_mode(&lab, &s, "strict").await;
    let writer = Writer::start();
    let mut timer = Timer::fault("strict synchronous mode, both replicas stopped", interval());
    for r in &replicas {
        lab.fault("stop-patroni", Some(r)).await;
    }
    let doc = s
        .wait_demo(
            "WRITES_BLOCKED_SYNCREP and SYNC_STANDBY_MISSING on the leader",
            wait + interval() * 2 + Duration::from_secs(2),
            |d| {
                has_finding(d, "WRITES_BLOCKED_SYNCREP", &node)
                    && has_finding(d, "SYNC_STANDBY_MISSING", &node)
            },
        )
        .await;
    timer.detected();
    let blocked = finding_message(&doc, "WRITES_BLOCKED_SYNCREP", &node).unwrap_or_default();
    assert!(
        blocked.contains("synchronous_standby_names = '*'")
            && blocked.contains("strict synchronous mode"),
        "{blocked}"
    );
    let missing = finding_message(&doc, "SYNC_STANDBY_MISSING", &node).unwrap_or_default();
    assert!(
        missing.contains("synchronous_mode on (strict) asks for 1")
            && missing.contains("commits wait"),
        "{missing}"
    );
    timer.note(blocked);
    timer.repair();
    for r in &replicas {
        lab.fault("start-patroni", Some(r)).await;
    }
    s.wait_demo("commits confirmed again", CLUSTER_CHANGE, |d| {
        !has_finding(d, "WRITES_BLOCKED_SYNCREP", &node)
            && !has_finding(d, "SYNC_STANDBY_MISSING", &node)
    })
    .await;
    timer.recovered();
    timer.record();

    // Not strict: Patroni stops waiting for the standbys it lost; commits go on, unprotected.
    lab.script_ok(&["ready"]).await;
    quiet_in_sync_mode(&lab, &s, "on").await;
    for r in &replicas {
        lab.fault("stop-patroni", Some(r)).await;
    }
    let doc = s
        .wait_demo(
            "SYNC_STANDBY_MISSING and commits that no longer wait",
            CLUSTER_CHANGE,
            |d| {
                finding_message(d, "SYNC_STANDBY_MISSING", &node)
                    .is_some_and(|m| m.contains("synchronous_standby_names = ''"))
                    && !has_finding(d, "WRITES_BLOCKED_SYNCREP", &node)
            },
        )
        .await;
    let missing = finding_message(&doc, "SYNC_STANDBY_MISSING", &node).unwrap_or_default();
    assert!(missing.contains("a failover now may lose"), "{missing}");
    let before = writer.ok.load(Ordering::Relaxed);
    s.wait_demo("writes still going through", CLUSTER_CHANGE, |_| {
        writer.ok.load(Ordering::Relaxed) > before + 2
    })
    .await;
    drop(writer);
    for r in &replicas {
        lab.fault("start-patroni", Some(r)).await;
    }
    lab.fault("sync-mode", Some("off")).await;
    s.wait_demo("healthy, asynchronous again", CLUSTER_CHANGE, healthy)
        .await;
    s.stop().await;
}

#[tokio::test]
async fn s27_switchover_and_failover_in_synchronous_mode_are_never_critical() {
    let lab = Lab::acquire().await;
    let s = stack().await;
    quiet_in_sync_mode(&lab, &s, "on").await;
    let writer = Writer::start();
    let stop = Arc::new(AtomicBool::new(false));
    let watch = {
        let api = s.collector.api("/api/v1/clusters/demo");
        let stop = stop.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .expect("a client");
            let (mut worst, mut seen) = (Vec::new(), 0u32);
            while !stop.load(Ordering::Relaxed) {
                if let Ok(r) = http.get(&api).send().await
                    && let Ok(d) = r.json::<Value>().await
                {
                    seen += 1;
                    if verdict(&d) == "critical" {
                        worst.push(finding_codes(&d));
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            (worst, seen)
        })
    };
    let mut timer = Timer::fault("switchover in synchronous mode", interval());
    let old = lab.leader().await.expect("a leader");
    lab.fault("switchover", None).await;
    let new = lab.leader().await.expect("a new leader");
    assert_ne!(new, old);
    timer.detected();
    timer.repair();
    s.wait_demo("healthy, a sync standby again", CLUSTER_CHANGE, |d| {
        healthy(d) && d["leader"] == format!("node{new}").as_str()
    })
    .await;
    timer.recovered();
    timer.note(format!("node{old} -> node{new}"));
    timer.record();
    let mut timer = Timer::fault("manual failover in synchronous mode", interval());
    lab.script_ok(&["ready"]).await;
    let candidate = *lab
        .sync_standbys()
        .await
        .first()
        .expect("Patroni names a sync standby");
    lab.fault("failover", Some(&candidate.to_string())).await;
    timer.detected();
    timer.repair();
    s.wait_demo("healthy after the failover", CLUSTER_CHANGE, |d| {
        healthy(d) && d["leader"] == format!("node{candidate}").as_str()
    })
    .await;
    timer.recovered();
    timer.note(format!("node{new} -> node{candidate}"));
    timer.record();
    stop.store(true, Ordering::Relaxed);
    let (criticals, seen) = watch.await.expect("watcher");
    assert!(seen > 20, "the watcher read only {seen} verdicts");
    assert!(
        criticals.is_empty(),
        "critical during a synchronous-mode switchover or failover: {criticals:?}"
    );
    assert!(writer.ok.load(Ordering::Relaxed) > 10);
    drop(writer);
    lab.fault("sync-mode", Some("off")).await;
    s.wait_demo("healthy, asynchronous again", CLUSTER_CHANGE, healthy)
        .await;
    s.stop().await;
}
/// Free bytes on the filesystem holding `path`, as `df` counts them for an ordinary user.
async fn free_bytes(path: &std::path::Path) -> u64 {
    let out = tokio::process::Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(path)
        .output()
        .await
        .expect("df runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("df {}: {out:?}", path.display()))
}

/// The leader's current WAL position, in bytes.
async fn leader_lsn(leader: &str) -> u64 {
    let n = leader.parse::<u8>().expect("a node number");
    let c = connect(Target::Node(n), Role::Superuser, Duration::from_secs(5))
        .await
        .expect("connect to the leader");
    query_one_text(
        &c,
        "select (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint::text",
        Duration::from_secs(5),
    )
    .await
    .expect("the position")
    .parse()
    .expect("a number")
}

/// The estimate in a WAL_RETENTION message (`… is full in ~4m 10s`), in seconds.
fn time_to_full_s(message: &str) -> Option<f64> {
    let rest = message.split("is full in ~").nth(1)?;
    let mut total = 0.0;
    for part in rest.split_whitespace() {
        let (n, unit) = part.split_at(part.find(|c: char| !c.is_ascii_digit())?);
        let n: f64 = n.parse().ok()?;
        total += n * match unit.trim_end_matches([',', ';']) {
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            _ => return None,
        };
    }
    Some(total)
}

#[test]
fn time_to_full_reads_every_shape_of_the_estimate() {
    assert_eq!(time_to_full_s("x is full in ~45s"), Some(45.0));
    assert_eq!(time_to_full_s("x is full in ~4m 10s"), Some(250.0));
    assert_eq!(time_to_full_s("x is full in ~3h 20m"), Some(12_000.0));
    assert_eq!(time_to_full_s("no estimate"), None);
}

#[tokio::test]
async fn s28_the_time_to_full_estimate_is_within_a_factor_of_two_of_the_truth_on_a_filling_wal_volume()
 {
    let lab = Lab::acquire().await;
    let leader = lab.leader().await.expect("a leader").to_string();
    let node = format!("node{leader}");
    // The leader's WAL on a volume of its own, with 480 MiB free: three minutes at the writer's
    // rate below.
    let du = tokio::process::Command::new("du")
        .arg("-sm")
        .arg(vigie_tests::lab_dir().join(format!("node{leader}/data/pg_wal")))
        .output()
        .await
        .expect("du runs");
    let wal_mib: u64 = String::from_utf8_lossy(&du.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("du: {du:?}"));
    let size = (wal_mib + 480).to_string();
    lab.script_ok(&["fault", "small-wal-fs", &leader, &size])
        .await;
    let walfs = vigie_tests::lab_dir().join(format!("node{leader}/walfs"));
    let window = Duration::from_secs(30);
    let s = stack_judging(vigie_collector::config::VerdictConfig {
        wal_retention_warning_bytes: 16 << 20,
        wal_rate_window: window,
        ..Default::default()
    })
    .await;
    steady(&s).await;
    lab.fault("forgotten-slot", None).await;
    // A steady writer: ~0.5 MiB of rows every 250 ms, straight to the leader.
    let stop = Arc::new(AtomicBool::new(false));
    let writing = {
        let (stop, n) = (stop.clone(), leader.parse::<u8>().expect("a node number"));
        tokio::spawn(async move {
            let c = connect(Target::Node(n), Role::Superuser, Duration::from_secs(5))
                .await
                .expect("connect to the leader");
            c.batch_execute("create table if not exists lab_fill (filler text)")
                .await
                .expect("table");
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                c.batch_execute(
                    "insert into lab_fill select repeat(md5(random()::text), 32) from generate_series(1, 500)",
                )
                .await
                .expect("insert");
            }
        })
    };
    let mut timer = Timer::fault("a forgotten slot filling a small WAL volume", interval());
    // The collector's rate is measured over its window: judged once the window holds only the
    // writer's steady rate (its first half minute writes twice as much WAL: full-page images of
    // the pages first touched after PostgreSQL's restart).
    let started = Instant::now();
    let doc = s
        .wait_demo("an estimate of time to full", CLUSTER_CHANGE, |d| {
            started.elapsed() >= window * 2 + interval() * 2
                && finding_message(d, "WAL_RETENTION", &node)
                    .is_some_and(|m| m.contains("pg_wal is full in ~"))
        })
        .await;
    timer.detected();
    let message = finding_message(&doc, "WAL_RETENTION", &node).unwrap_or_default();
    let estimate = time_to_full_s(&message).unwrap_or_else(|| panic!("no estimate: {message}"));
    assert_eq!(verdict(&doc), "critical", "{message}");
    let (t0, free0) = (Instant::now(), free_bytes(&walfs).await);
    let lsn0 = leader_lsn(&leader).await;
    // The truth: the volume's own free space as it fills, until three quarters of it is used,
    // extrapolated to empty at the rate it went.
    let deadline = t0 + Duration::from_secs_f64(estimate * 3.0 + 60.0);
    let mut free = free0;
    while free > free0 / 4 {
        assert!(
            Instant::now() < deadline,
            "the volume filled far slower than estimated ({estimate:.0}s): {free} of {free0} bytes still free"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        free = free_bytes(&walfs).await;
    }
    let took = t0.elapsed().as_secs_f64();
    let truth = took * free0 as f64 / (free0 - free) as f64;
    let wal_rate = (leader_lsn(&leader).await - lsn0) as f64 / took;
    stop.store(true, Ordering::Relaxed);
    writing.await.expect("the writer");
    let ratio = estimate / truth;
    let note = format!(
        "estimate {estimate:.0}s, truth {truth:.0}s (x{ratio:.2}); WAL meanwhile {:.1} MiB/s, the volume filling at {:.1} MiB/s: {message}",
        wal_rate / 1_048_576.0,
        (free0 - free) as f64 / took / 1_048_576.0
    );
    eprintln!("s28: {note}");
    assert!((0.5..=2.0).contains(&ratio), "{note}");
    timer.note(note);
    timer.repair();
    lab.fault("drop-forgotten-slot", None).await;
    lab.script_ok(&["fault", "restore-wal-fs", &leader]).await;
    s.wait_demo("healthy once the slot is dropped", CLUSTER_CHANGE, healthy)
        .await;
    timer.recovered();
    timer.record();
    s.stop().await;
}
