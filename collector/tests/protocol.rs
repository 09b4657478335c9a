//! The collector's contracts with its peers, with a scripted agent speaking the real gRPC
//! protocol to a real collector on loopback: `Hello` first (anything else is refused), acks,
//! "probe now" through the API, JSON errors, and the `vigie` CLI's table and exit code.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use vigie_collector::config::{CollectorConfig, VerdictConfig};
use vigie_proto::v1;

struct Running {
    grpc: SocketAddr,
    http: SocketAddr,
    stop: oneshot::Sender<()>,
}

async fn collector() -> Running {
    collector_with(Default::default()).await
}

async fn collector_with(api: vigie_collector::config::ApiConfig) -> Running {
    collector_full(api, ":memory:".into()).await
}

async fn collector_full(
    api: vigie_collector::config::ApiConfig,
    events: std::path::PathBuf,
) -> Running {
    collector_cfg(api, events, Vec::new()).await
}

async fn collector_cfg(
    api: vigie_collector::config::ApiConfig,
    events: std::path::PathBuf,
    webhooks: Vec<vigie_collector::config::WebhookConfig>,
) -> Running {
    // reqwest's rustls backend needs the process-wide provider (vigie's programs install it).
    vigie_proto::tls::install_crypto_provider();
    let grpc_l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let http_l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let (grpc, http) = (
        grpc_l.local_addr().expect("addr"),
        http_l.local_addr().expect("addr"),
    );
    let cfg = CollectorConfig {
        grpc_listen: grpc,
        http_listen: http,
        tls: None,
        plaintext: true,
        allow_unauthenticated_agents: false,
        evaluate_every: Duration::from_millis(100),
        events: vigie_collector::config::EventsConfig {
            path: events,
            retention: Duration::from_secs(3600),
        },
        verdict: VerdictConfig::default(),
        api,
        alertmanager: None,
        webhooks,
        notify: Default::default(),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(vigie_collector::server::run(cfg, grpc_l, http_l, async {
        let _ = stopped.await;
    }));
    Running { grpc, http, stop }
}

fn hello(node: &str) -> v1::AgentMessage {
    v1::AgentMessage {
        msg: Some(v1::agent_message::Msg::Hello(v1::Hello {
            node: node.to_string(),
            cluster: "demo".to_string(),
            components: vec!["haproxy".to_string()],
            agent_version: "test".to_string(),
            interval_ms: 1000,
        })),
    }
}

fn batch(seq: u64) -> v1::AgentMessage {
    let result = |id: &str, facts: Value| {
        let probe = vigie_proto::ProbeId::from_name(id).expect("probe");
        v1::ProbeResult {
            probe: probe as i32,
            status: v1::Status::Ok as i32,
            message: "fine".to_string(),
            started_unix_ms: vigie_collector::state::now_ms(),
            duration_us: 10,
            facts: probe.facts_from_json(facts).expect("facts"),
            ..Default::default()
        }
    };
    v1::AgentMessage {
        msg: Some(v1::agent_message::Msg::Batch(v1::ResultBatch {
            seq,
            results: vec![
                result("haproxy.process", Value::Null),
                result("haproxy.rw_port", Value::Null),
                result(
                    "haproxy.backends",
                    json!({"proxies": [{"proxy": "demo_rw", "kind": "rw", "up": ["node1"]}]}),
                ),
            ],
            dropped: 0,
        })),
    }
}

async fn open(
    grpc: SocketAddr,
    first: v1::AgentMessage,
) -> (
    mpsc::Sender<v1::AgentMessage>,
    Result<tonic::Streaming<v1::CollectorMessage>, tonic::Status>,
) {
    open_from(grpc, first, None).await
}

/// [`open`] from another host: a connection whose source is `from` (any of 127.0.0.0/8).
async fn open_from(
    grpc: SocketAddr,
    first: v1::AgentMessage,
    from: Option<std::net::IpAddr>,
) -> (
    mpsc::Sender<v1::AgentMessage>,
    Result<tonic::Streaming<v1::CollectorMessage>, tonic::Status>,
) {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
        .expect("url")
        .local_address(from)
        .connect()
        .await
        .expect("connect");
    let mut client = v1::ingest_client::IngestClient::new(channel);
    let (tx, rx) = mpsc::channel(8);
    tx.send(first).await.expect("queue");
    let resp = client
        .stream(ReceiverStream::new(rx))
        .await
        .map(|r| r.into_inner());
    (tx, resp)
}

async fn get(http: SocketAddr, path: &str) -> (u16, Value) {
    let resp = reqwest::get(format!("http://{http}{path}"))
        .await
        .expect("answer");
    let code = resp.status().as_u16();
    (code, resp.json().await.expect("json"))
}

#[tokio::test]
async fn a_stream_must_start_with_hello_and_a_valid_name() {
    let c = collector().await;
    let (_tx, resp) = open(c.grpc, batch(1)).await;
    assert_eq!(
        resp.expect_err("refused").code(),
        tonic::Code::InvalidArgument
    );
    let (_tx, resp) = open(c.grpc, hello("bad name/../x")).await;
    let status = resp.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("not a valid node name"),
        "{}",
        status.message()
    );
    let (_, health) = get(c.http, "/healthz").await;
    assert_eq!(health["agents_refused"], 2);
    assert_eq!(health["agents_refused_by_reason"]["hello"], 2);
    let _ = c.stop.send(());
}

/// This process's resident memory (the collector of these tests runs in it).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Polls the API until `accept` holds, or fails after 10 s.
async fn wait_for(
    http: SocketAddr,
    path: &str,
    what: &str,
    accept: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, doc) = get(http, path).await;
        if accept(&doc) {
            return doc;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {doc}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn acked(inbound: &mut tonic::Streaming<v1::CollectorMessage>, seq: u64) {
    let msg = tokio::time::timeout(Duration::from_secs(5), inbound.message())
        .await
        .expect("an answer in time");
    assert!(
        matches!(
            msg.as_ref().ok().cloned().flatten().and_then(|m| m.msg),
            Some(v1::collector_message::Msg::Ack(v1::Ack { seq: s })) if s == seq
        ),
        "{msg:?}"
    );
}

/// The stream's end: the error the collector ended it with (none if it closed cleanly).
async fn ended(inbound: &mut tonic::Streaming<v1::CollectorMessage>) -> Option<tonic::Status> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match tokio::time::timeout_at(deadline, inbound.message())
            .await
            .expect("ended in time")
        {
            Ok(Some(_)) => continue,
            Ok(None) => return None,
            Err(s) => return Some(s),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_agent_naming_a_live_node_is_refused_reported_and_the_first_keeps_streaming() {
    let c = collector().await;
    let (tx, resp) = open(c.grpc, hello("lb1")).await;
    let mut first = resp.expect("accepted");
    tx.send(batch(1)).await.expect("send");
    acked(&mut first, 1).await;

    // Another host, retrying as an agent does (about once an interval) while the first streams.
    let elsewhere = Some("127.0.0.2".parse().expect("ip"));
    let mut seq = 1;
    for attempt in 1..=3 {
        // The first agent streams on (a batch acked just before each attempt).
        tokio::time::sleep(Duration::from_millis(1100)).await; // the impostor's retry pace
        seq += 1;
        tx.send(batch(seq)).await.expect("send");
        acked(&mut first, seq).await;
        let (_tx2, resp) = open_from(c.grpc, hello("lb1"), elsewhere).await;
        let status = resp.expect_err("the impostor is refused");
        assert_eq!(status.code(), tonic::Code::AlreadyExists);
        assert!(
            status.message().contains("same `node`"),
            "{}",
            status.message()
        );
        if attempt == 1 {
            // One refusal is not yet a finding (an agent whose address changed may do that).
            let (_, doc) = get(c.http, "/api/v1/clusters/demo").await;
            assert!(
                !doc["findings"].to_string().contains("DUPLICATE_AGENT"),
                "{doc}"
            );
        }
    }
    // The first agent is not muted.
    seq += 1;
    tx.send(batch(seq)).await.expect("send");
    acked(&mut first, seq).await;
    let doc = wait_for(
        c.http,
        "/api/v1/clusters/demo",
        "DUPLICATE_AGENT on lb1",
        |d| {
            d["findings"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|f| f["code"] == "DUPLICATE_AGENT" && f["nodes"][0] == "lb1")
        },
    )
    .await;
    assert_eq!(doc["nodes"][0]["connected"], true);
    let (_, health) = get(c.http, "/healthz").await;
    assert_eq!(health["agents_refused_by_reason"]["duplicate"], 3);
    let (_, metrics) = (
        0,
        reqwest::get(format!("http://{}/metrics", c.http))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text"),
    );
    assert!(
        metrics
            .lines()
            .any(|l| l == "vigie_collector_agents_refused_total{reason=\"duplicate\"} 3"),
        "{metrics}"
    );

    // Once the first agent is gone, a new stream for the node is admitted.
    drop((tx, first));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_tx3, resp) = open(c.grpc, hello("lb1")).await;
        if resp.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never admitted again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = c.stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_reconnecting_before_its_old_stream_is_seen_gone_replaces_it_and_a_silent_one_is_cut()
 {
    let c = collector().await;
    let (old_tx, resp) = open(c.grpc, hello("lb1")).await;
    let mut old = resp.expect("accepted");
    old_tx.send(batch(1)).await.expect("send");
    acked(&mut old, 1).await;
    // The same host opens a new stream while the old one is still open (as after a NAT drop).
    let (tx, resp) = open(c.grpc, hello("lb1")).await;
    let mut new = resp.expect("the same agent is admitted again");
    let status = ended(&mut old)
        .await
        .expect("the old stream is ended with a status");
    assert_eq!(status.code(), tonic::Code::Aborted, "{status:?}");
    tx.send(batch(2)).await.expect("send");
    acked(&mut new, 2).await;
    let (_, doc) = get(c.http, "/api/v1/clusters/demo").await;
    assert!(
        !doc["findings"].to_string().contains("DUPLICATE_AGENT"),
        "{doc}"
    );
    let (_, health) = get(c.http, "/healthz").await;
    assert_eq!(health["agents_refused"], 0, "{health}");

    // A stream that goes silent (a hung agent, a connection held open) is cut after three
    // intervals and counted; the node is then disconnected.
    let status = ended(&mut new).await;
    let status = match status {
        Some(s) => s,
        None => panic!("a silent stream must end with a status"),
    };
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    wait_for(c.http, "/healthz", "idle counted", |h| {
        h["agents_refused_by_reason"]["idle"] == 1
    })
    .await;
    wait_for(c.http, "/api/v1/clusters/demo", "lb1 disconnected", |d| {
        d["nodes"][0]["connected"] == false
    })
    .await;
    drop(tx);
    let _ = c.stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_forgets_a_node_whose_agent_is_gone_and_its_cluster_goes_with_it() {
    let c = collector().await;
    let url = format!("http://{}/api/v1/clusters/demo/nodes/lb1", c.http);
    let client = reqwest::Client::new();
    let (tx, resp) = open(c.grpc, hello("lb1")).await;
    let mut inbound = resp.expect("accepted");
    tx.send(batch(1)).await.expect("send");
    acked(&mut inbound, 1).await;
    let status = |r: &reqwest::Response| r.status().as_u16();
    let r = client.delete(&url).send().await.expect("delete");
    assert_eq!(status(&r), 409, "a connected node is not forgotten");
    drop((tx, inbound));
    wait_for(c.http, "/api/v1/clusters/demo", "lb1 disconnected", |d| {
        d["nodes"][0]["connected"] == false
    })
    .await;
    let r = client.delete(&url).send().await.expect("delete");
    assert_eq!(status(&r), 204);
    let (code, body) = get(c.http, "/api/v1/clusters/demo").await;
    assert_eq!(code, 404, "the cluster went with its last node: {body}");
    let r = client.delete(&url).send().await.expect("delete");
    assert_eq!(status(&r), 404);
    let body: Value = r.json().await.expect("a JSON error");
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("lb1")),
        "{body}"
    );
    let events = wait_for(
        c.http,
        "/api/v1/events?cluster=demo",
        "node_forgotten",
        |e| e.to_string().contains("node_forgotten"),
    )
    .await;
    assert!(
        events.to_string().contains("forgotten by an admin"),
        "{events}"
    );
    let _ = c.stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_hellos_oversized_batches_and_late_or_huge_journals_are_refused_and_counted() {
    let c = collector().await;
    // An interval the staleness limits cannot be built on.
    let mut huge = hello("lb1");
    if let Some(v1::agent_message::Msg::Hello(h)) = &mut huge.msg {
        h.interval_ms = u32::MAX;
    }
    let (_tx, resp) = open(c.grpc, huge).await;
    let status = resp.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("interval_ms"),
        "{}",
        status.message()
    );

    // A healthy agent beside the hostile ones keeps being acked and published.
    let (good, resp) = open(c.grpc, hello("lb2")).await;
    let mut good_in = resp.expect("accepted");
    let rss_before = rss_kib();
    // How old the verdicts served are, at its worst while the attacks run (sampled).
    let watcher = {
        let http = c.http;
        tokio::spawn(async move {
            let mut worst = 0i64;
            for _ in 0..200 {
                if let (200, h) = get(http, "/healthz").await {
                    let age =
                        vigie_collector::state::now_ms() - h["published_ms"].as_i64().unwrap_or(0);
                    worst = worst.max(age);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            worst
        })
    };

    // A 3 MB journal (under the caps): taken in, never freezing the verdicts.
    let (tx, resp) = open(c.grpc, hello("lb7")).await;
    let _inbound = resp.expect("accepted");
    let long = v1::Transition {
        probe: vigie_proto::ProbeId::HaproxyProcess as i32,
        to: v1::Status::Critical as i32,
        message: "m".repeat(340),
        at_unix_ms: vigie_collector::state::now_ms(),
        ..Default::default()
    };
    tx.send(v1::AgentMessage {
        msg: Some(v1::agent_message::Msg::Journal(v1::Journal {
            transitions: vec![long; 9_000],
            ..Default::default()
        })),
    })
    .await
    .expect("send");

    // A batch of 100,000 results.
    let (tx, resp) = open(c.grpc, hello("lb3")).await;
    let mut inbound = resp.expect("accepted");
    let mut big = batch(1);
    if let Some(v1::agent_message::Msg::Batch(b)) = &mut big.msg {
        let one = b.results[0].clone();
        b.results = vec![one; 100_000];
    }
    tx.send(big).await.expect("send");
    let status = ended(&mut inbound).await.expect("cut with a status");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("results"), "{}", status.message());

    // A journal that does not come right after Hello.
    let (tx, resp) = open(c.grpc, hello("lb4")).await;
    let mut inbound = resp.expect("accepted");
    tx.send(batch(1)).await.expect("send");
    acked(&mut inbound, 1).await;
    tx.send(v1::AgentMessage {
        msg: Some(v1::agent_message::Msg::Journal(v1::Journal::default())),
    })
    .await
    .expect("send");
    let status = ended(&mut inbound).await.expect("cut with a status");
    assert!(
        status.message().contains("right after Hello"),
        "{}",
        status.message()
    );

    // A journal of 20,000 transitions (over the cap, under the message size).
    let (tx, resp) = open(c.grpc, hello("lb5")).await;
    let mut inbound = resp.expect("accepted");
    let t = v1::Transition {
        probe: vigie_proto::ProbeId::HaproxyProcess as i32,
        to: v1::Status::Critical as i32,
        at_unix_ms: i64::MIN,
        ..Default::default()
    };
    tx.send(v1::AgentMessage {
        msg: Some(v1::agent_message::Msg::Journal(v1::Journal {
            transitions: vec![t; 20_000],
            ..Default::default()
        })),
    })
    .await
    .expect("send");
    let status = ended(&mut inbound).await.expect("cut with a status");
    assert!(
        status.message().contains("journal of 20000"),
        "{}",
        status.message()
    );

    let rss_mid = rss_kib();
    // A 64 MiB message: refused by the decoder's size cap.
    let (tx, resp) = open(c.grpc, hello("lb6")).await;
    let mut inbound = resp.expect("accepted");
    let mut fat = batch(1);
    if let Some(v1::agent_message::Msg::Batch(b)) = &mut fat.msg {
        b.results[0].message = "x".repeat(64 << 20);
    }
    tx.send(fat).await.expect("send");
    assert!(
        ended(&mut inbound).await.is_some(),
        "a 64 MiB message ends the stream with an error"
    );

    // Through all that, the healthy agent is acked and its results are published.
    good.send(batch(9)).await.expect("send");
    acked(&mut good_in, 9).await;
    wait_for(c.http, "/api/v1/clusters/demo", "lb2 published", |d| {
        d["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|n| n["name"] == "lb2" && n["results"]["haproxy.backends"]["status"] == "ok")
    })
    .await;
    let health = wait_for(c.http, "/healthz", "the cuts counted", |h| {
        h["agents_refused_by_reason"]["limits"].as_u64() >= Some(4)
    })
    .await;
    assert_eq!(health["agents_refused_by_reason"]["hello"], 1, "{health}");
    let worst_age_ms = watcher.await.expect("watcher");
    let rss_after = rss_kib();
    println!(
        "attacks: test process (collector in it) RSS {rss_before} KiB before, {rss_mid} KiB after \
         the 100k-result batch and the journals, {rss_after} KiB after the 64 MiB message (the \
         test builds it: 64 MiB of its own); verdicts served at worst {worst_age_ms} ms old"
    );
    // Fresh enough for `vigie check` (10 s timeout) all along: nothing froze the state task.
    assert!(
        worst_age_ms < 10_000,
        "verdicts {worst_age_ms} ms old during the attacks"
    );
    let _ = c.stop.send(());
}

// Multi-threaded: the test blocks on the CLI while the collector serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_acked_probe_now_reaches_the_agent_and_vigie_status_shows_it() {
    let c = collector().await;
    let (tx, resp) = open(c.grpc, hello("lb1")).await;
    let mut inbound = resp.expect("accepted");
    tx.send(batch(7)).await.expect("send");
    let ack = tokio::time::timeout(Duration::from_secs(5), inbound.message())
        .await
        .expect("in time");
    assert!(matches!(
        ack.expect("ok").and_then(|m| m.msg),
        Some(v1::collector_message::Msg::Ack(v1::Ack { seq: 7 }))
    ));

    // The verdict is published within an evaluation tick.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let doc = loop {
        let (code, doc) = get(c.http, "/api/v1/clusters/demo").await;
        if code == 200 && doc["nodes"][0]["results"]["haproxy.backends"].is_object() {
            break doc;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no cluster published"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(doc["nodes"][0]["name"], "lb1");
    assert_eq!(
        doc["nodes"][0]["results"]["haproxy.backends"]["status"],
        "ok"
    );

    let resp = reqwest::Client::new()
        .post(format!("http://{}/api/v1/clusters/demo/probe", c.http))
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status(), 202);
    let msg = tokio::time::timeout(Duration::from_secs(5), inbound.message())
        .await
        .expect("in time");
    assert!(matches!(
        msg.expect("ok").and_then(|m| m.msg),
        Some(v1::collector_message::Msg::ProbeNow(_))
    ));
    // Asked again at once: refused with when to retry, and nothing sent to the agent.
    let resp = reqwest::Client::new()
        .post(format!("http://{}/api/v1/clusters/demo/probe", c.http))
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status(), 429);
    assert_eq!(
        resp.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let body: Value = resp.json().await.expect("a JSON error");
    assert_eq!(body["status"], 429);
    let (code, body) = get(c.http, "/api/v1/clusters/nope").await;
    assert_eq!((code, body["status"].clone()), (404, json!(404)));
    // Errors axum itself answers are the documented JSON too.
    let (code, body) = get(c.http, "/api/v1/events?since=yesterday").await;
    assert_eq!((code, body["status"].clone()), (400, json!(400)), "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("since")),
        "{body}"
    );
    let resp = reqwest::Client::new()
        .put(format!("http://{}/api/v1/clusters", c.http))
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status(), 405);
    assert!(resp.headers().contains_key("allow"));
    let body: Value = resp.json().await.expect("a JSON error");
    assert_eq!(body["status"], 405);

    // The CLI: a table a person reads, and a Nagios-like exit code. With no database node
    // reporting, the cluster cannot be called healthy.
    let out = Command::new(env!("CARGO_BIN_EXE_vigie"))
        .args([
            "status",
            "demo",
            "--collector",
            &format!("http://{}", c.http),
        ])
        .output()
        .expect("run vigie");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Cluster demo:"), "{text}");
    assert!(text.contains("lb1"), "{text}");
    assert_ne!(out.status.code(), Some(0), "{text}");
    let out = Command::new(env!("CARGO_BIN_EXE_vigie"))
        .args([
            "status",
            "demo",
            "--format",
            "json",
            "--collector",
            &format!("http://{}", c.http),
        ])
        .output()
        .expect("run vigie");
    let doc: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(doc["cluster"], "demo");
    let out = Command::new(env!("CARGO_BIN_EXE_vigie"))
        .args([
            "status",
            "nope",
            "--collector",
            &format!("http://{}", c.http),
        ])
        .output()
        .expect("run vigie");
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown cluster `nope`"), "{stderr}");
    // Check mode: one line, perfdata after `|`, Nagios exit code (unknown: no DB node vouches).
    let out = Command::new(env!("CARGO_BIN_EXE_vigie"))
        .args([
            "check",
            "demo",
            "--collector",
            &format!("http://{}", c.http),
        ])
        .output()
        .expect("run vigie check");
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(line.starts_with("VIGIE UNKNOWN - demo unknown"), "{line}");
    assert!(line.contains("| agent_age_lb1="), "{line}");
    assert_eq!(line.lines().count(), 1);
    assert_eq!(out.status.code(), Some(3));
    // A usage error in check mode is the plugin's UNKNOWN too, never clap's exit 2 (CRITICAL).
    let out = Command::new(env!("CARGO_BIN_EXE_vigie"))
        .args(["check", "demo", "--no-such-flag"])
        .output()
        .expect("run vigie check");
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(line.starts_with("VIGIE UNKNOWN - vigie check: "), "{line}");
    assert!(line.contains("--no-such-flag"), "{line}");
    assert_eq!(line.lines().count(), 1);
    assert_eq!(out.status.code(), Some(3));

    // Prometheus text on /metrics.
    let resp = reqwest::get(format!("http://{}/metrics", c.http))
        .await
        .expect("answer");
    let ctype = resp.headers()["content-type"]
        .to_str()
        .unwrap_or("")
        .to_string();
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    let text = resp.text().await.expect("text");
    assert!(
        text.contains("vigie_cluster_verdict{cluster=\"demo\",verdict=\"unknown\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("vigie_collector_batches_received_total 1"),
        "{text}"
    );
    drop(tx);
    let _ = c.stop.send(());
}

#[test]
fn invalid_collector_config_exits_64_naming_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "grpc_listen = \"127.0.0.1:9701\"\nhttp_listen = \"127.0.0.1:9700\"\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_vigie-collector"))
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("tls"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A key in a list of tables is named by its full path, unknown keys and wrong types alike.
    for (text, field) in [
        (
            "[[api.tokens]]\nname = \"x\"\nscope = \"read\"\nfile = \"/x\"\nfiel = \"y\"\n",
            "api.tokens[0].fiel",
        ),
        (
            "[verdict]\nstale_intervals = \"three\"\n",
            "verdict.stale_intervals",
        ),
        ("[verdict]\nforget_after = \"5m\"\n", "verdict.forget_after"),
        (
            "[tls]\ncert = \"/x.crt\"\nkey = \"/x.key\"\n",
            "tls.client_ca",
        ),
    ] {
        // TLS and plaintext exclude each other.
        let transport = if text.starts_with("[tls]") {
            ""
        } else {
            "plaintext = true\n"
        };
        std::fs::write(
            &path,
            format!("grpc_listen = \"127.0.0.1:9701\"\nhttp_listen = \"127.0.0.1:9700\"\n{transport}{text}"),
        )
        .expect("write");
        let out = Command::new(env!("CARGO_BIN_EXE_vigie-collector"))
            .arg("--config")
            .arg(&path)
            .arg("--check-config")
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{stderr}");
        assert!(
            stderr.contains(&format!("invalid configuration: {field}: ")),
            "{field} not named in: {stderr}"
        );
    }
    let lab = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/lab/collector.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_vigie-collector"))
        .args(["--config", lab, "--check-config"])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_shipped_collector_config_is_valid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stand_in = |name: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, "stand-in-long-enough-for-a-token").expect("write");
        p.display().to_string()
    };
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    for file in [
        "deploy/lab/collector.toml",
        "deploy/examples/collector.toml",
    ] {
        let path = root.join(file);
        let text = std::fs::read_to_string(&path).expect("read");
        let mut env = std::collections::HashMap::new();
        if text.lines().any(|l| l.trim() == "[tls]") {
            // Real PEM files: they are parsed as start-up would.
            let certs = dir.path().join("certs");
            let out = Command::new(root.join("deploy/certs.sh"))
                .arg(&certs)
                .output()
                .expect("certs.sh");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            for (key, file) in [
                ("CERT", "collector.crt"),
                ("KEY", "collector.key"),
                ("CLIENT_CA", "ca.crt"),
            ] {
                env.insert(
                    format!("VIGIE_COLLECTOR__TLS__{key}"),
                    certs.join(file).display().to_string(),
                );
            }
        }
        // The event log where this test may write.
        env.insert(
            "VIGIE_COLLECTOR__EVENTS__PATH".to_string(),
            dir.path().join("events.db").display().to_string(),
        );
        // Token files exist on a real host only: rewrite their paths to stand-ins.
        let text = text.replace("/etc/vigie/tokens/read", &stand_in("read"));
        let text = text.replace("/etc/vigie/tokens/admin", &stand_in("admin"));
        let path = dir.path().join("collector.toml");
        std::fs::write(&path, text).expect("write");
        vigie_collector::config::load(&path, env).unwrap_or_else(|e| panic!("{file}: {e}"));
    }
}

// Multi-threaded: the test blocks on the CLI while the collector serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_tokens_401_without_403_read_only_on_actions() {
    use vigie_collector::config::{ApiAuth, ApiConfig, TokenConfig, TokenScope};
    let dir = tempfile::tempdir().expect("tempdir");
    let token = |name: &str, value: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, format!("{value}\n")).expect("write");
        p
    };
    let api = ApiConfig {
        auth: ApiAuth::Tokens,
        open_healthz: true,
        open_metrics: false,
        tokens: vec![
            TokenConfig {
                name: "grafana".into(),
                scope: TokenScope::Read,
                file: token("read", "read-token-0123456789abcdef"),
            },
            TokenConfig {
                name: "oncall".into(),
                scope: TokenScope::Admin,
                file: token("admin", "admin-token-0123456789abcdef"),
            },
        ],
    };
    let c = collector_with(api).await;
    let http = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str, bearer: Option<&str>| {
        let mut req = http.request(method, format!("http://{}{path}", c.http));
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        async move { req.send().await.expect("answer").status().as_u16() }
    };
    use reqwest::Method;
    assert_eq!(call(Method::GET, "/api/v1/clusters", None).await, 401);
    assert_eq!(
        call(
            Method::GET,
            "/api/v1/clusters",
            Some("wrong-token-0123456789abcdef")
        )
        .await,
        401
    );
    assert_eq!(
        call(
            Method::GET,
            "/api/v1/clusters",
            Some("read-token-0123456789abcdef")
        )
        .await,
        200
    );
    assert_eq!(call(Method::GET, "/metrics", None).await, 401);
    assert_eq!(
        call(Method::GET, "/metrics", Some("read-token-0123456789abcdef")).await,
        200
    );
    assert_eq!(call(Method::GET, "/healthz", None).await, 200);
    assert_eq!(
        call(
            Method::POST,
            "/api/v1/clusters/demo/probe",
            Some("read-token-0123456789abcdef")
        )
        .await,
        403
    );
    // Admin passes the gate (no agent connected: 404 from the handler itself).
    assert_eq!(
        call(
            Method::POST,
            "/api/v1/clusters/demo/probe",
            Some("admin-token-0123456789abcdef")
        )
        .await,
        404
    );

    // The CLI sends the token from --token-file.
    let vigie = |token: Option<&std::path::Path>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vigie"));
        cmd.args([
            "status",
            "demo",
            "--collector",
            &format!("http://{}", c.http),
        ]);
        if let Some(t) = token {
            cmd.arg("--token-file").arg(t);
        }
        let out = cmd.output().expect("run vigie");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(vigie(None).contains("a valid bearer token is required"));
    assert!(vigie(Some(&dir.path().join("read"))).contains("unknown cluster `demo`"));
    let _ = c.stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_survive_a_restart_stream_live_and_vigie_events_shows_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("events.db");
    let c = collector_full(Default::default(), db.clone()).await;
    // Live stream first, so the next event is seen as it is recorded.
    let mut sse = reqwest::get(format!(
        "http://{}/api/v1/events/stream?cluster=demo",
        c.http
    ))
    .await
    .expect("stream");
    assert!(
        sse.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("text/event-stream")
    );
    let (tx, resp) = open(c.grpc, hello("lb1")).await;
    let _inbound = resp.expect("accepted");
    tx.send(batch(1)).await.expect("send");
    let chunk = tokio::time::timeout(Duration::from_secs(5), sse.chunk())
        .await
        .expect("in time");
    let text = String::from_utf8_lossy(&chunk.expect("ok").expect("data")).into_owned();
    assert!(
        text.contains("event: vigie") && text.contains("\"cluster\":\"demo\""),
        "{text}"
    );
    let (_, before) = get(c.http, "/api/v1/events?cluster=demo").await;
    let ids: Vec<i64> = before["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["id"].as_i64())
        .collect();
    assert!(!ids.is_empty());
    drop(tx);
    drop(sse);
    let _ = c.stop.send(());

    // Restarted on the same database: the same events, the same ids.
    let c = collector_full(Default::default(), db.clone()).await;
    let (code, after) = get(c.http, "/api/v1/events?cluster=demo").await;
    assert_eq!(code, 200);
    let again: Vec<i64> = after["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["id"].as_i64())
        .collect();
    assert_eq!(again, ids);
    // A stream resumed where a client stopped (as EventSource reconnects) gets what it missed
    // from the log, in order, once each.
    let mut resumed = reqwest::Client::new()
        .get(format!(
            "http://{}/api/v1/events/stream?cluster=demo",
            c.http
        ))
        .header("Last-Event-ID", (ids[0] - 1).to_string())
        .send()
        .await
        .expect("stream");
    let mut seen: Vec<i64> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut text = String::new();
    while seen.len() < ids.len() {
        let chunk = tokio::time::timeout_at(deadline, resumed.chunk())
            .await
            .unwrap_or_else(|_| panic!("missed events never replayed: {seen:?} of {ids:?}"))
            .expect("ok")
            .expect("data");
        text.push_str(&String::from_utf8_lossy(&chunk));
        seen = text
            .lines()
            .filter_map(|l| l.strip_prefix("id: ").or_else(|| l.strip_prefix("id:")))
            .filter_map(|v| v.trim().parse().ok())
            .collect();
    }
    assert_eq!(seen, ids, "{text}");
    drop(resumed);
    let out = Command::new(env!("CARGO_BIN_EXE_vigie"))
        .args([
            "events",
            "demo",
            "--collector",
            &format!("http://{}", c.http),
        ])
        .output()
        .expect("run vigie events");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("verdict none -> unknown"), "{text}");
    assert!(text.lines().count() >= ids.len(), "{text}");
    let _ = c.stop.send(());
}

fn haproxy_batch(seq: u64, process: v1::Status) -> v1::AgentMessage {
    let mut m = batch(seq);
    if let Some(v1::agent_message::Msg::Batch(b)) = m.msg.as_mut() {
        for r in &mut b.results {
            if r.probe == vigie_proto::ProbeId::HaproxyProcess as i32 {
                r.status = process as i32;
            }
        }
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_and_their_ids_survive_a_collector_restart() {
    use std::sync::{Arc, Mutex};
    type Got = Arc<Mutex<Vec<(String, String, String)>>>;
    let got: Got = Arc::default();
    let receiver = {
        let got = got.clone();
        axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                let got = got.clone();
                async move {
                    let h = |k: &str| {
                        headers
                            .get(k)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string()
                    };
                    if let Ok(mut g) = got.lock() {
                        g.push((
                            h("x-vigie-delivery"),
                            format!("{} {}", h("x-vigie-timestamp"), h("x-vigie-signature")),
                            body,
                        ));
                    }
                    "ok"
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hook = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, receiver).await });

    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s3cret-for-tests\n").expect("write");
    let webhooks = || {
        vec![vigie_collector::config::WebhookConfig {
            url: hook.parse().expect("url"),
            secret_file: secret.clone(),
            ca: None,
            cert: None,
            key: None,
        }]
    };
    let db = dir.path().join("events.db");
    // Deliveries of HAPROXY_DOWN (RW_ENDPOINT_DOWN fires beside it).
    let wait_for = |state: &'static str, count: usize| {
        let got = got.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let n = got
                    .lock()
                    .map(|g| {
                        g.iter()
                            .filter(|(id, _, b)| {
                                id.contains(":HAPROXY_DOWN:")
                                    && b.contains(&format!("\"state\":\"{state}\""))
                            })
                            .count()
                    })
                    .unwrap_or(0);
                if n >= count {
                    return;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no HAPROXY_DOWN {state} delivery #{count}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };

    let c = collector_cfg(Default::default(), db.clone(), webhooks()).await;
    let (tx, resp) = open(c.grpc, hello("lb1")).await;
    let _inbound = resp.expect("accepted");
    tx.send(haproxy_batch(1, v1::Status::Critical))
        .await
        .expect("send");
    wait_for("firing", 1).await;
    let first = got
        .lock()
        .expect("lock")
        .iter()
        .find(|(id, _, _)| id.contains(":HAPROXY_DOWN:"))
        .cloned()
        .expect("a HAPROXY_DOWN delivery");
    assert!(first.0.starts_with("demo:HAPROXY_DOWN:lb1:"), "{}", first.0);
    // The receiver's side of the recipe: the timestamp is recent, the signature covers it.
    let (timestamp, sig) = first.1.split_once(' ').expect("timestamp and signature");
    let sent_s: i64 = timestamp.parse().expect("unix seconds");
    assert!(
        (vigie_collector::state::now_ms() / 1000 - sent_s).abs() < 300,
        "{timestamp}"
    );
    assert_eq!(
        sig,
        vigie_collector::notify::webhook::signature(
            b"s3cret-for-tests",
            timestamp,
            first.2.as_bytes()
        )
    );
    let body: Value = serde_json::from_str(&first.2).expect("json");
    assert_eq!(body["delivery_id"], first.0.as_str());
    assert_eq!(body["labels"]["code"], "HAPROXY_DOWN");
    drop(tx);
    let _ = c.stop.send(());

    // Restarted on the same database, the same finding is delivered with the same id.
    let c = collector_cfg(Default::default(), db.clone(), webhooks()).await;
    let (tx, resp) = open(c.grpc, hello("lb1")).await;
    let _inbound = resp.expect("accepted");
    tx.send(haproxy_batch(1, v1::Status::Critical))
        .await
        .expect("send");
    wait_for("firing", 2).await;
    let firing: Vec<String> = got
        .lock()
        .expect("lock")
        .iter()
        .filter(|(id, _, _)| id.contains(":HAPROXY_DOWN:") && id.ends_with(":firing"))
        .map(|(id, _, _)| id.clone())
        .collect();
    assert_eq!(
        firing[0],
        firing[firing.len() - 1],
        "the receiver can de-duplicate: {firing:?}"
    );
    // (Resolution deliveries are covered by the notifier's tests: this cluster, seen by no
    // database node, stays blind, and nothing is called resolved while blind.)
    drop(tx);
    let _ = c.stop.send(());
}
