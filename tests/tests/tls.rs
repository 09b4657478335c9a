//! The lab's TLS profile (`VIGIE_LAB_TLS=1 deploy/lab/lab.sh up`): Patroni REST and etcd client
//! URLs on https requiring client certificates, PostgreSQL with a hostssl-only line for the
//! monitoring role. The agents read all of it over TLS and the verdict is healthy with zero
//! findings; a stopped replica PostgreSQL and a stopped replica Patroni are seen, a switchover
//! ends healthy; a wrong CA and `sslmode = verify-full` against a name the certificate does not
//! carry are clear probe errors.
//!
//! `Lab::acquire_tls` takes the one lab lock and brings the lab up on the TLS profile (taking a
//! plain lab down first), so these tests serialise with every other lab test.

use std::time::Duration;

use serde_json::Value;
use vigie_agent::result::{ProbeResult, Status};
use vigie_tests::scenario::Timer;
use vigie_tests::stack::{Stack, finding_codes, has_finding};
use vigie_tests::{CLUSTER_CHANGE, Lab, NODES, Role, Target, lab_agent_config, query_text};

const INTERVAL: Duration = Duration::from_secs(1);

fn verdict(d: &Value) -> &str {
    d["verdict"].as_str().unwrap_or("")
}

fn healthy_and_quiet(d: &Value) -> bool {
    verdict(d) == "healthy" && d["findings"].as_array().is_some_and(|f| f.is_empty())
}

fn result<'a>(results: &'a [ProbeResult], id: &str) -> &'a ProbeResult {
    results
        .iter()
        .find(|r| r.id.name() == id)
        .unwrap_or_else(|| panic!("no {id} in {results:?}"))
}

/// A second CA, unknown to the lab: `deploy/certs.sh DIR`.
fn other_ca(dir: &std::path::Path) -> std::path::PathBuf {
    let out = std::process::Command::new(vigie_tests::repo_root().join("deploy/certs.sh"))
        .arg(dir)
        .output()
        .expect("certs.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join("ca.crt")
}

#[tokio::test]
async fn on_tls_the_agents_read_https_patroni_etcd_and_postgres_and_the_verdict_is_healthy() {
    let _lab = Lab::acquire_tls().await;
    for n in NODES {
        let name = format!("node{n}");
        let cfg = lab_agent_config(&name, &[]);
        assert_eq!(cfg.patroni.as_ref().expect("patroni").url.scheme(), "https");
        assert_eq!(
            cfg.etcd.as_ref().expect("etcd").client_url.scheme(),
            "https"
        );
        let mut agent = vigie_agent::agent::Agent::new(cfg);
        // Right after `up` a replica may still be catching up: poll cycles, with a deadline.
        let deadline = tokio::time::Instant::now() + CLUSTER_CHANGE;
        loop {
            let results = agent.cycle().await;
            let failing: Vec<String> = [
                "patroni.health",
                "patroni.node",
                "patroni.cluster",
                "etcd.health",
                "postgres.recovery",
                "postgres.replication",
            ]
            .into_iter()
            .map(|id| result(&results, id))
            .filter(|r| r.status != Status::Ok)
            .map(|r| format!("{} {:?}: {}", r.id, r.status, r.message))
            .collect();
            if failing.is_empty() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} over TLS: {failing:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let stack = Stack::start(INTERVAL).await;
    stack
        .wait_demo(
            "healthy with zero findings",
            CLUSTER_CHANGE,
            healthy_and_quiet,
        )
        .await;
    // Every agent session to PostgreSQL is encrypted (the hostssl-only line would refuse any
    // other, but look at the server's own view).
    for n in NODES {
        let seen = query_text(
            Target::Node(n),
            Role::Superuser,
            "select count(*) filter (where s.ssl)::text || '/' || count(*)::text \
             from pg_stat_activity a join pg_stat_ssl s using (pid) \
             where a.application_name = 'vigie-agent'",
            Duration::from_secs(5),
        )
        .await
        .expect("pg_stat_ssl");
        let (tls, all) = seen.split_once('/').expect("n/m");
        assert!(
            all != "0" && tls == all,
            "node{n}: {seen} agent sessions on TLS"
        );
    }
    stack.stop().await;
}

#[tokio::test]
async fn on_tls_a_stopped_replica_postgres_then_patroni_are_seen_and_healthy_again() {
    let lab = Lab::acquire_tls().await;
    let stack = Stack::start(INTERVAL).await;
    stack
        .wait_demo("healthy", CLUSTER_CHANGE, healthy_and_quiet)
        .await;
    let r = *lab.replicas().await.first().expect("a replica");
    let (arg, node) = (r.to_string(), format!("node{r}"));

    let mut timer = Timer::fault("stop-pg replica (TLS profile)", INTERVAL);
    lab.fault("stop-pg", Some(&arg)).await;
    stack
        .wait_demo("degraded with POSTGRES_DOWN", CLUSTER_CHANGE, |d| {
            verdict(d) == "degraded"
                && has_finding(d, "POSTGRES_DOWN", &node)
                && has_finding(d, "REPLICA_NOT_STREAMING", &node)
        })
        .await;
    timer.detected();
    timer.repair();
    lab.fault("start-pg", Some(&arg)).await;
    stack
        .wait_demo("healthy after start-pg", CLUSTER_CHANGE, healthy_and_quiet)
        .await;
    timer.recovered();
    timer.record();

    let mut timer = Timer::fault("stop-patroni replica (TLS profile)", INTERVAL);
    lab.fault("stop-patroni", Some(&arg)).await;
    let doc = stack
        .wait_demo("PATRONI_DOWN on the replica", CLUSTER_CHANGE, |d| {
            verdict(d) != "healthy" && has_finding(d, "PATRONI_DOWN", &node)
        })
        .await;
    timer.detected();
    assert_ne!(verdict(&doc), "critical", "{:?}", finding_codes(&doc));
    timer.repair();
    lab.fault("start-patroni", Some(&arg)).await;
    stack
        .wait_demo(
            "healthy after start-patroni",
            CLUSTER_CHANGE,
            healthy_and_quiet,
        )
        .await;
    timer.recovered();
    timer.record();
    stack.stop().await;
}

#[tokio::test]
async fn on_tls_a_switchover_is_never_critical_and_ends_healthy() {
    let lab = Lab::acquire_tls().await;
    let stack = Stack::start(INTERVAL).await;
    stack
        .wait_demo("healthy", CLUSTER_CHANGE, healthy_and_quiet)
        .await;
    let old = lab.leader().await.expect("a leader");
    let api = stack.collector.api("/api/v1/clusters/demo");
    let watch = tokio::spawn(async move {
        let mut criticals = Vec::new();
        let end = tokio::time::Instant::now() + Duration::from_secs(20);
        while tokio::time::Instant::now() < end {
            if let Ok(r) = reqwest::get(&api).await
                && let Ok(d) = r.json::<Value>().await
                && verdict(&d) == "critical"
            {
                criticals.push(finding_codes(&d));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        criticals
    });
    let mut timer = Timer::fault("switchover (TLS profile)", INTERVAL);
    lab.fault("switchover", None).await;
    let new = lab.leader().await.expect("a new leader");
    timer.detected();
    timer.note(format!("node{old} -> node{new}"));
    timer.repair();
    assert_ne!(new, old);
    stack
        .wait_demo("healthy under the new leader", CLUSTER_CHANGE, |d| {
            healthy_and_quiet(d) && d["leader"] == format!("node{new}").as_str()
        })
        .await;
    timer.recovered();
    timer.record();
    let criticals = watch.await.expect("watcher");
    assert!(
        criticals.is_empty(),
        "critical during a switchover: {criticals:?}"
    );
    stack.stop().await;
}

#[tokio::test]
async fn on_tls_a_wrong_ca_is_a_clear_critical_probe_error() {
    let _lab = Lab::acquire_tls().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let wrong = other_ca(dir.path()).display().to_string();
    let cfg = lab_agent_config(
        "node1",
        &[
            ("VIGIE_AGENT__PATRONI__CA", wrong.clone()),
            ("VIGIE_AGENT__ETCD__CA", wrong.clone()),
            ("VIGIE_AGENT__POSTGRES__SSLROOTCERT", wrong),
        ],
    );
    let mut agent = vigie_agent::agent::Agent::new(cfg);
    let results = agent.cycle().await;
    for id in [
        "patroni.health",
        "patroni.cluster",
        "etcd.health",
        "postgres.recovery",
    ] {
        let r = result(&results, id);
        assert_eq!(r.status, Status::Critical, "{id}: {}", r.message);
        // The other CA has the same name as the lab's: rustls says `BadSignature` (an unrelated
        // CA would be `UnknownIssuer`); either way the message names the certificate.
        assert!(
            r.message.contains("invalid peer certificate"),
            "{id} does not say the server's certificate is refused: {}",
            r.message
        );
    }
}

#[tokio::test]
async fn on_tls_verify_full_against_a_name_the_certificate_lacks_fails_clearly_and_verify_ca_passes()
 {
    let _lab = Lab::acquire_tls().await;
    // HAProxy's RW port passes TCP through to the leader, whose certificate names the leader's
    // address, not HAProxy's.
    let through_haproxy = |mode: &str| {
        lab_agent_config(
            "node1",
            &[
                (
                    "VIGIE_AGENT__POSTGRES__HOST",
                    vigie_tests::HAPROXY_ADDR.to_string(),
                ),
                (
                    "VIGIE_AGENT__POSTGRES__PORT",
                    vigie_tests::RW_PORT.to_string(),
                ),
                ("VIGIE_AGENT__POSTGRES__SSLMODE", mode.to_string()),
            ],
        )
    };
    let snapshot = |mode: &str| {
        let cfg = through_haproxy(mode);
        async move {
            let pg = cfg.postgres.as_ref().expect("postgres");
            let mut session = vigie_agent::probe::postgres_session::PgSession::new(pg, cfg.timeout)
                .expect("session");
            session.snapshot().await
        }
    };
    let e = snapshot("verify-full").await.expect_err("wrong name");
    assert!(
        e.contains("NotValidForName") || e.contains("not valid for name"),
        "verify-full through {}: {e}",
        vigie_tests::HAPROXY_ADDR
    );
    assert!(e.contains(vigie_tests::HAPROXY_ADDR), "{e}");
    let ok = snapshot("verify-ca")
        .await
        .expect("verify-ca checks the chain, not the name");
    assert!(!ok.in_recovery, "RW reached a replica");
}
