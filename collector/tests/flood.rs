//! A flood of idle connections against the real collector binary, run with 1,024 file
//! descriptors (`prlimit`): 1,100 connections held open on each port. The collector must stay
//! within its descriptors, keep answering `/healthz` and admit a new agent during the flood,
//! count what it refused or closed, and close the idle ones. Its RSS is printed.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::{Collector, free_port, healthz};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use vigie_proto::v1;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Opens `n` connections to `addr` and holds them without a byte sent.
async fn hold(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        // The kernel accepts into the backlog even when the collector closes at once.
        if let Ok(Ok(c)) =
            tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await
        {
            held.push(c);
        }
    }
    held
}

/// An admitted agent's stream: its sender, the collector's messages, and the first of them.
type Admitted = (
    mpsc::Sender<v1::AgentMessage>,
    tonic::Streaming<v1::CollectorMessage>,
    Option<v1::collector_message::Msg>,
);

/// One agent's try: connects to `grpc`, says hello, sends an empty batch; the collector's reply.
async fn admit(grpc: SocketAddr) -> Result<Admitted, String> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
        .expect("url")
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (tx, rx) = mpsc::channel(4);
    tx.send(support::hello("lb1")).await.expect("queue");
    tx.send(v1::AgentMessage {
        msg: Some(v1::agent_message::Msg::Batch(v1::ResultBatch {
            seq: 1,
            results: vec![],
            dropped: 0,
        })),
    })
    .await
    .expect("queue");
    let mut inbound = v1::ingest_client::IngestClient::new(channel)
        .stream(ReceiverStream::new(rx))
        .await
        .map_err(|e| format!("stream: {e}"))?
        .into_inner();
    let reply = tokio::time::timeout(Duration::from_secs(10), inbound.message())
        .await
        .map_err(|_| "no reply in 10 s".to_string())?
        .map_err(|e| format!("reply: {e}"))?;
    Ok((tx, inbound, reply.and_then(|m| m.msg)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eleven_hundred_idle_connections_on_each_port_with_1024_descriptors() {
    vigie_proto::tls::install_crypto_provider();
    // This process holds 2,200 client sockets: raise its own limit (the collector's is set below).
    vigie_collector::limits::raise_fd_limit();
    let dir = tempfile::tempdir().expect("tempdir");
    let (grpc, http) = (free_port(), free_port());
    let config = support::config(dir.path(), grpc, http);
    let collector = Collector::start(&config, grpc, http, &["prlimit", "--nofile=1024:1024"]).await;
    let pid = collector.pid(); // prlimit execs the collector: same pid
    let client = support::client();
    let before = healthz(&client, http).await.expect("up");
    assert_eq!(before["connections"]["fd_limit"], 1024, "{before}");
    let (grpc_cap, http_cap) = (
        before["connections"]["grpc"]["cap"].as_u64().expect("cap"),
        before["connections"]["http"]["cap"].as_u64().expect("cap"),
    );
    assert!(grpc_cap + http_cap < 1024, "{before}");
    let rss_before = rss_kib(pid);

    // The flood: 1,100 idle connections on each port, never a byte sent.
    let held_grpc = hold(grpc, 1_100).await;
    let held_http = hold(http, 1_100).await;
    assert_eq!(
        (held_grpc.len(), held_http.len()),
        (1_100, 1_100),
        "the flood was not opened"
    );

    // During the flood: /healthz answers (on a connection of its own, the API's cap has room
    // once the idle ones over it are refused), and a new agent is admitted and acked.
    let fresh = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let during = loop {
        if let Some(h) = healthz(&fresh, http).await {
            break h;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/healthz never answered during the flood"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // A new agent arriving within the eviction grace of the flood finds every held connection
    // too young to evict and is refused; like the real agent, it reconnects after a backoff.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut attempts = 0;
    let (tx, _inbound, ack) = loop {
        attempts += 1;
        match admit(grpc).await {
            Ok(ack) => break ack,
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "no new agent admitted during the flood after {attempts} attempts: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        matches!(
            ack,
            Some(v1::collector_message::Msg::Ack(v1::Ack { seq: 1 }))
        ),
        "{ack:?}"
    );
    let rss_during = rss_kib(pid);
    println!(
        "flood: {} + {} connections held; a new agent admitted at attempt {attempts}; collector RSS {} KiB before, {} KiB during; /healthz during: {}",
        held_grpc.len(),
        held_http.len(),
        rss_before,
        rss_during,
        during["connections"]
    );
    // Over the caps: refused and counted; the agents' port made room by closing idle ones.
    let c = &during["connections"];
    assert!(c["http"]["refused"].as_u64() > Some(0), "{c}");
    assert!(
        ["refused", "idle_closed", "evicted"]
            .iter()
            .map(|k| c["grpc"][k].as_u64().expect("counted"))
            .sum::<u64>()
            > 0,
        "{c}"
    );
    assert!(c["grpc"]["open"].as_u64().expect("open") <= grpc_cap, "{c}");

    // The idle connections on the agents' port are closed within 20 s + a margin; the agent,
    // streaming a batch every half second, is kept.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut seq = 1;
    loop {
        seq += 1;
        tx.send(v1::AgentMessage {
            msg: Some(v1::agent_message::Msg::Batch(v1::ResultBatch {
                seq,
                results: vec![],
                dropped: 0,
            })),
        })
        .await
        .expect("the agent's stream is kept");
        let h = healthz(&fresh, http).await.unwrap_or_default();
        let open = h["connections"]["grpc"]["open"]
            .as_u64()
            .unwrap_or(u64::MAX);
        if open == 1 {
            assert_eq!(h["agents_connected"], 1, "{h}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "idle gRPC connections never closed: {h}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop((held_grpc, held_http, tx));
}

/// Slowloris: a client sends a request line, then one header line a second and never the blank
/// line that ends them. The collector closes it once the header-read timeout (10 s) is over,
/// counts it, and answers others meanwhile.
#[tokio::test]
async fn a_client_trickling_its_request_headers_is_cut_after_the_header_read_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().expect("tempdir");
    let (grpc, http) = (free_port(), free_port());
    let config = support::config(dir.path(), grpc, http);
    let _collector = Collector::start(&config, grpc, http, &[]).await;
    let client = support::client();

    let mut slow = TcpStream::connect(http).await.expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: vigie\r\n")
        .await
        .expect("request line");
    let started = tokio::time::Instant::now();
    let deadline = started + Duration::from_secs(30);
    let mut sent = 0;
    let closed_after = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a client trickling its headers was still served after 30 s ({sent} header lines)"
        );
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_secs(1), slow.read(&mut buf)).await {
            // Closed (with or without a 408 first) or reset.
            Ok(Ok(0) | Err(_)) => break started.elapsed(),
            Ok(Ok(n)) => {
                let answer = String::from_utf8_lossy(&buf[..n]).to_string();
                assert!(
                    !answer.contains(" 200 "),
                    "answered before its headers ended: {answer}"
                );
            }
            Err(_) => {
                if slow
                    .write_all(format!("X-Trickle-{sent}: a\r\n").as_bytes())
                    .await
                    .is_err()
                {
                    break started.elapsed();
                }
                sent += 1;
                // Others are served meanwhile.
                assert!(
                    healthz(&client, http).await.is_some(),
                    "/healthz during the trickle"
                );
            }
        }
    };
    println!(
        "slowloris: closed after {:.1}s and {sent} header lines",
        closed_after.as_secs_f64()
    );
    assert!(
        sent >= 5,
        "closed before it could trickle: after {sent} lines"
    );
    assert!(
        closed_after >= Duration::from_secs(9),
        "closed after {closed_after:?}: before the 10 s header-read timeout"
    );
    let h = healthz(&client, http).await.expect("up");
    assert!(
        h["connections"]["http"]["slow_headers"].as_u64() >= Some(1),
        "not counted: {}",
        h["connections"]
    );
}
