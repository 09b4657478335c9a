//! The collector's verdict on the real lab, fed by the real agents over gRPC: healthy when it
//! is, the right findings naming the right node when a replica's PostgreSQL stops, a killed agent
//! called stale, the verdict and the missed transitions back after a collector restart, and an
//! agent refused when its certificate names another node.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use vigie_agent::probe::ProbeId;
use vigie_agent::result::Status;
use vigie_collector::config::TlsConfig;
use vigie_tests::stack::{AGENTS, Collector, Stack, finding_codes, has_finding};
use vigie_tests::{CLUSTER_CHANGE, Lab, NODES, wait_until};

const INTERVAL: Duration = Duration::from_secs(1);

fn verdict(d: &Value) -> &str {
    d["verdict"].as_str().unwrap_or("")
}

#[tokio::test]
async fn healthy_lab_is_healthy_names_the_leader_and_shows_every_node_fresh() {
    let lab = Lab::acquire().await;
    let stack = Stack::start(INTERVAL).await;
    let leader = lab.leader().await.expect("a leader");
    let doc = stack
        .wait_demo("a healthy verdict", CLUSTER_CHANGE, |d| {
            verdict(d) == "healthy"
        })
        .await;
    assert_eq!(doc["leader"], format!("node{leader}").as_str());
    assert!(
        doc["findings"].as_array().is_some_and(Vec::is_empty),
        "{:?}",
        finding_codes(&doc)
    );
    let nodes = doc["nodes"].as_array().expect("nodes");
    let names: Vec<&str> = nodes.iter().filter_map(|n| n["name"].as_str()).collect();
    assert_eq!(names, ["haproxy", "node1", "node2", "node3"]);
    for n in nodes {
        assert_eq!(n["connected"], true, "{}", n["name"]);
        assert!(
            n["age_s"].as_f64().is_some_and(|a| a < 5.0),
            "{}: {}",
            n["name"],
            n["age_s"]
        );
        assert!(
            n["results"].as_object().is_some_and(|r| r.len() >= 7),
            "{}",
            n["name"]
        );
    }
    let list = stack.get("/api/v1/clusters").await.expect("list");
    assert_eq!(list["clusters"][0]["cluster"], "demo");
    assert_eq!(list["clusters"][0]["verdict"], "healthy");
    assert!(stack.get("/api/v1/clusters/nope").await.is_none());
    stack.stop().await;
}

#[tokio::test]
async fn unknown_cluster_is_a_json_404() {
    let _lab = Lab::acquire().await;
    let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let mut c = Collector::start(any, any, None).await;
    let resp = reqwest::get(c.api("/api/v1/clusters/nope"))
        .await
        .expect("answer");
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"], "unknown cluster `nope`");
    let health: Value = reqwest::get(c.api("/healthz"))
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    assert_eq!(health["status"], "ok");
    c.stop().await;
}

#[tokio::test]
async fn stop_pg_on_a_replica_is_degraded_naming_that_node() {
    let lab = Lab::acquire().await;
    let stack = Stack::start(INTERVAL).await;
    stack
        .wait_demo("healthy", CLUSTER_CHANGE, |d| verdict(d) == "healthy")
        .await;
    let r = *lab.replicas().await.first().expect("a replica");
    let node = format!("node{r}");
    lab.fault("stop-pg", Some(&r.to_string())).await;
    let doc = stack
        .wait_demo(
            "degraded with POSTGRES_DOWN and REPLICA_NOT_STREAMING",
            CLUSTER_CHANGE,
            |d| {
                verdict(d) == "degraded"
                    && has_finding(d, "POSTGRES_DOWN", &node)
                    && has_finding(d, "REPLICA_NOT_STREAMING", &node)
            },
        )
        .await;
    assert!(
        has_finding(&doc, "REPLICA_COUNT_MISMATCH", &node),
        "{:?}",
        finding_codes(&doc)
    );
    let f = doc["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["code"] == "POSTGRES_DOWN")
        .expect("finding");
    assert!(f["evidence"].as_array().is_some_and(|e| !e.is_empty()));
    assert!(f["since_ms"].as_i64().is_some());
    lab.fault("start-pg", Some(&r.to_string())).await;
    stack
        .wait_demo("healthy again", CLUSTER_CHANGE, |d| verdict(d) == "healthy")
        .await;
    stack.stop().await;
}

#[tokio::test]
async fn a_killed_agent_is_agent_stale_within_a_few_intervals() {
    let lab = Lab::acquire().await;
    let mut stack = Stack::start(INTERVAL).await;
    stack
        .wait_demo("healthy", CLUSTER_CHANGE, |d| verdict(d) == "healthy")
        .await;
    let r = *lab.replicas().await.first().expect("a replica");
    let node = format!("node{r}");
    stack.kill_agent(&node);
    // Stale after 3 intervals, and never sooner than 5 s: well within 10 s.
    let doc = stack
        .wait_demo("AGENT_STALE", Duration::from_secs(10), |d| {
            has_finding(d, "AGENT_STALE", &node)
        })
        .await;
    assert_eq!(verdict(&doc), "degraded", "{:?}", finding_codes(&doc));
    let f = doc["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["code"] == "AGENT_STALE")
        .expect("finding");
    // The others still see the node: a silent agent, not a dead host.
    assert!(
        f["message"]
            .as_str()
            .is_some_and(|m| m.contains("still lists it as running replica")),
        "{f}"
    );

    // The leader's agent killed too: the last replica (its Patroni, its WAL stream) and HAProxy
    // still vouch for the leader.
    let leader = format!("node{}", lab.leader().await.expect("a leader"));
    stack.kill_agent(&leader);
    let doc = stack
        .wait_demo("AGENT_STALE on the leader", Duration::from_secs(10), |d| {
            has_finding(d, "AGENT_STALE", &leader)
        })
        .await;
    assert_eq!(
        verdict(&doc),
        "degraded",
        "{:?} {}",
        finding_codes(&doc),
        doc["blind_spots"]
    );
    // And the last replica's: only HAProxy sees the leader now, one observer: blind.
    let last = NODES
        .iter()
        .map(|n| format!("node{n}"))
        .find(|n| *n != node && *n != leader)
        .expect("a third node");
    stack.kill_agent(&last);
    let doc = stack
        .wait_demo("unknown", Duration::from_secs(10), |d| {
            verdict(d) == "unknown"
        })
        .await;
    assert!(doc["blind_spots"].as_array().is_some_and(|b| !b.is_empty()));
    stack.stop().await;
}

#[tokio::test]
async fn collector_restart_gets_the_verdict_back_and_the_transitions_it_missed() {
    let lab = Lab::acquire().await;
    let mut stack = Stack::start(INTERVAL).await;
    stack
        .wait_demo("healthy", CLUSTER_CHANGE, |d| verdict(d) == "healthy")
        .await;
    let r = *lab.replicas().await.first().expect("a replica");
    let node = format!("node{r}");

    let (grpc, http) = (stack.collector.grpc, stack.collector.http);
    stack.collector.stop().await;
    lab.fault("stop-pg", Some(&r.to_string())).await;
    // The agent sees the outage while the collector is away.
    stack
        .wait_cycle(&node, CLUSTER_CHANGE, |results| {
            results
                .iter()
                .any(|x| x.id == ProbeId::PostgresRecovery && x.status == Status::Critical)
        })
        .await;

    stack.collector = Collector::start(grpc, http, None).await;
    let restarted = tokio::time::Instant::now();
    let doc = stack
        .wait_demo(
            "the verdict back",
            INTERVAL * 2 + Duration::from_secs(3),
            |d| verdict(d) == "degraded" && has_finding(d, "POSTGRES_DOWN", &node),
        )
        .await;
    let took = restarted.elapsed();
    let events = stack
        .get("/api/v1/events?cluster=demo")
        .await
        .expect("events");
    let journaled: Vec<&Value> = events["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["journaled"] == true && e["node"] == node.as_str())
        .collect();
    assert!(
        journaled
            .iter()
            .any(|e| e["probe"] == "postgres.recovery" && e["to"] == "critical"),
        "no journaled transition for {node}: {events}"
    );
    eprintln!(
        "verdict back {took:?} after the collector restarted: {:?}",
        finding_codes(&doc)
    );

    lab.fault("start-pg", Some(&r.to_string())).await;
    stack
        .wait_demo("healthy again", CLUSTER_CHANGE, |d| verdict(d) == "healthy")
        .await;
    stack.stop().await;
}

#[tokio::test]
async fn an_agent_with_another_nodes_certificate_is_refused() {
    let lab = Lab::acquire().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path();
    let out = tokio::process::Command::new(vigie_tests::repo_root().join("deploy/certs.sh"))
        .arg(certs)
        .args(AGENTS)
        .output()
        .await
        .expect("certs.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let tls = TlsConfig {
        cert: certs.join("collector.crt"),
        key: certs.join("collector.key"),
        client_ca: Some(certs.join("ca.crt")),
    };
    let mut collector = Collector::start(any, any, Some(tls)).await;
    let http = reqwest::Client::new();
    let get = |path: &'static str| {
        let url = collector.api(path);
        let http = http.clone();
        async move { http.get(url).send().await.ok()?.json::<Value>().await.ok() }
    };

    let agent = |cert_of: &str, cluster: &str| {
        let c = |f: &str| certs.join(f).display().to_string();
        vigie_tests::lab_agent_config(
            "node2",
            &[
                ("VIGIE_AGENT__CLUSTER", cluster.to_string()),
                (
                    "VIGIE_AGENT__COLLECTOR__URL",
                    format!("https://{}", collector.grpc),
                ),
                ("VIGIE_AGENT__COLLECTOR__PLAINTEXT", "false".to_string()),
                ("VIGIE_AGENT__COLLECTOR__CA", c("ca.crt")),
                ("VIGIE_AGENT__COLLECTOR__CERT", c(&format!("{cert_of}.crt"))),
                ("VIGIE_AGENT__COLLECTOR__KEY", c(&format!("{cert_of}.key"))),
                (
                    "VIGIE_AGENT__COLLECTOR__SERVER_NAME",
                    "localhost".to_string(),
                ),
                ("VIGIE_AGENT__INTERVAL", "1s".to_string()),
                ("VIGIE_AGENT__TIMEOUT", "800ms".to_string()),
                (
                    "VIGIE_AGENT__POSTGRES__STATEMENT_TIMEOUT",
                    "500ms".to_string(),
                ),
            ],
        )
    };
    let run = |cfg: vigie_agent::config::AgentConfig| {
        let uplink = vigie_agent::uplink::spawn(&cfg).expect("uplink");
        tokio::spawn(vigie_agent::run::run(
            vigie_agent::agent::Agent::new(cfg),
            Some(uplink),
            std::future::pending(),
        ))
    };

    // node2 presenting node3's certificate: refused at the stream, never in the state.
    let impostor = run(agent("node3", "demo"));
    wait_until("the impostor refused", CLUSTER_CHANGE, || async {
        let h = get("/healthz").await?;
        (h["agents_refused"].as_u64()? >= 1).then_some(())
    })
    .await;
    assert!(
        get("/api/v1/clusters/demo")
            .await
            .is_none_or(|d| d["error"].is_string())
    );
    impostor.abort();

    // node2's own certificate naming another cluster: the certificate binds the cluster too.
    let elsewhere = run(agent("node2", "other"));
    wait_until(
        "node2 refused in another cluster",
        CLUSTER_CHANGE,
        || async {
            let h = get("/healthz").await?;
            (h["agents_refused_by_reason"]["certificate"].as_u64()? >= 2).then_some(())
        },
    )
    .await;
    assert!(
        get("/api/v1/clusters/other")
            .await
            .is_none_or(|d| d["error"].is_string())
    );
    elsewhere.abort();

    // With its own certificate, node2 is accepted.
    let honest = run(agent("node2", "demo"));
    let doc = wait_until("node2 accepted over mTLS", CLUSTER_CHANGE, || async {
        let d = get("/api/v1/clusters/demo").await?;
        d["nodes"]
            .as_array()?
            .iter()
            .any(|n| n["name"] == "node2" && n["connected"] == true)
            .then_some(d)
    })
    .await;
    assert_eq!(doc["nodes"].as_array().map(Vec::len), Some(1));
    honest.abort();
    collector.stop().await;
    drop(lab);
}

/// Starts one of Debian's Prometheus daemons (installed by `deploy/install-deps.sh`) with
/// `config` in a temporary directory, its storage there too, on a free loopback port; killed when
/// the child is dropped.
fn daemon(
    program: &str,
    config_name: &str,
    config: &str,
    storage_flag: &str,
    extra: &[&str],
) -> (tokio::process::Child, u16, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(config_name);
    std::fs::write(&path, config).expect("write config");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let child = tokio::process::Command::new(program)
        .arg(format!("--config.file={}", path.display()))
        .arg(format!(
            "{storage_flag}={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("start {program} (deploy/install-deps.sh installs it): {e}"));
    (child, port, dir)
}

#[tokio::test]
async fn prometheus_scrapes_metrics_and_promql_returns_the_verdict() {
    let _lab = Lab::acquire().await;
    let stack = Stack::start(INTERVAL).await;
    stack
        .wait_demo("healthy", CLUSTER_CHANGE, |d| verdict(d) == "healthy")
        .await;
    let scrape = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: vigie\n    static_configs:\n      - targets: ['{}']\n",
        stack.collector.http
    );
    let (mut prometheus, port, _dir) = daemon(
        "/usr/bin/prometheus",
        "prometheus.yml",
        &scrape,
        "--storage.tsdb.path",
        &[],
    );
    let query = "vigie_cluster_verdict{cluster=\"demo\",verdict=\"healthy\"}";
    let url = format!("http://127.0.0.1:{port}/api/v1/query");
    let http = reqwest::Client::new();
    let value = wait_until(
        "Prometheus to have scraped the verdict",
        CLUSTER_CHANGE,
        || async {
            let v: Value = http
                .get(&url)
                .query(&[("query", query)])
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            v["data"]["result"][0]["value"][1]
                .as_str()
                .map(str::to_string)
        },
    )
    .await;
    assert_eq!(value, "1");
    let up: Value = http
        .get(&url)
        .query(&[("query", "up{job=\"vigie\"}")])
        .send()
        .await
        .expect("query")
        .json()
        .await
        .expect("json");
    assert_eq!(up["data"]["result"][0]["value"][1], "1");
    let _ = prometheus.kill().await;
    stack.stop().await;
}

#[tokio::test]
async fn kill_primary_pg_fires_one_alert_group_in_alertmanager_that_resolves() {
    let lab = Lab::acquire().await;
    let routes = "route:\n  receiver: 'null'\n  group_by: ['cluster']\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: 'null'\n";
    // No gossip port: Alertmanager stays on loopback.
    let (mut am, port, _dir) = daemon(
        "/usr/bin/prometheus-alertmanager",
        "alertmanager.yml",
        routes,
        "--storage.path",
        &["--cluster.listen-address="],
    );
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    wait_until("Alertmanager ready", CLUSTER_CHANGE, || async {
        http.get(format!("{base}/-/ready"))
            .send()
            .await
            .ok()?
            .status()
            .is_success()
            .then_some(())
    })
    .await;
    let am_cfg = vigie_collector::config::AlertmanagerConfig {
        url: base.parse().expect("url"),
        resend: Duration::from_secs(2),
        ca: None,
        cert: None,
        key: None,
    };
    let stack = Stack::start_with(INTERVAL, Some(am_cfg)).await;
    stack
        .wait_demo("healthy", CLUSTER_CHANGE, |d| verdict(d) == "healthy")
        .await;
    let groups = || async {
        let v: Value = http
            .get(format!("{base}/api/v2/alerts/groups"))
            .query(&[("filter", "cluster=\"demo\""), ("active", "true")])
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        v.as_array().cloned()
    };
    let leader = format!("node{}", lab.leader().await.expect("a leader"));
    lab.fault("kill-primary-pg", None).await;
    // `vigie check demo` says CRITICAL (exit 2) during the outage…
    let during = stack
        .wait_demo("critical", CLUSTER_CHANGE, |d| verdict(d) == "critical")
        .await;
    let (line, code) = vigie_collector::cli::check::check_line(&during);
    assert_eq!(code, 2, "{line}");
    assert!(line.starts_with("VIGIE CRITICAL - demo critical"), "{line}");
    let firing = wait_until(
        "an alert group firing in Alertmanager",
        CLUSTER_CHANGE,
        || async {
            let g = groups().await?;
            g.iter()
                .any(|x| x["alerts"].as_array().is_some_and(|a| !a.is_empty()))
                .then_some(g)
        },
    )
    .await;
    assert_eq!(firing.len(), 1, "one incident, one group: {firing:?}");

    let alerts = firing[0]["alerts"].as_array().expect("alerts");
    assert!(alerts.iter().all(|a| a["labels"]["cluster"] == "demo"));
    assert!(
        alerts
            .iter()
            .any(|a| a["labels"]["code"] == "POSTGRES_DOWN"
                && a["labels"]["node"] == leader.as_str()),
        "{alerts:?}"
    );
    stack
        .wait_demo("healthy after Patroni's restart", CLUSTER_CHANGE, |d| {
            verdict(d) == "healthy"
        })
        .await;
    wait_until(
        "the alerts resolved in Alertmanager",
        CLUSTER_CHANGE,
        || async {
            let g = groups().await?;
            g.iter()
                .all(|x| x["alerts"].as_array().is_none_or(|a| a.is_empty()))
                .then_some(())
        },
    )
    .await;
    let _ = am.kill().await;
    stack.stop().await;
}
