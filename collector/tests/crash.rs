//! The collector killed with SIGKILL mid-stream: every event it had committed (what the API
//! served from the log) is there after a restart on the same database, with the same ids.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{Collector, free_port, get};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use vigie_proto::v1;

/// A HAProxy agent's batch, its process `status`: flipping it opens and resolves findings.
fn batch(seq: u64, status: v1::Status) -> v1::AgentMessage {
    let probe = |id: &str, status: v1::Status| v1::ProbeResult {
        probe: vigie_proto::ProbeId::from_name(id).expect("probe") as i32,
        status: status as i32,
        message: "scripted".into(),
        started_unix_ms: vigie_collector::state::now_ms(),
        duration_us: 10,
        ..Default::default()
    };
    v1::AgentMessage {
        msg: Some(v1::agent_message::Msg::Batch(v1::ResultBatch {
            seq,
            results: vec![
                probe("haproxy.process", status),
                probe("haproxy.rw_port", v1::Status::Ok),
            ],
            dropped: 0,
        })),
    }
}

fn ids(doc: &Value) -> Vec<i64> {
    doc["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["id"].as_i64())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_loses_no_committed_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (grpc, http) = (free_port(), free_port());
    let config = support::config(dir.path(), grpc, http);
    let mut collector = Collector::start(&config, grpc, http, &[]).await;
    let client = support::client();

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let (tx, rx) = mpsc::channel(64);
    tx.send(support::hello("lb1")).await.expect("queue");
    let _inbound = v1::ingest_client::IngestClient::new(channel)
        .stream(ReceiverStream::new(rx))
        .await
        .expect("admitted");
    // Findings opened and resolved, over and over, while the log is read back.
    let mut committed = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut seq = 0;
    while committed.len() < 12 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "too few events: {committed:?}"
        );
        seq += 1;
        let status = if seq % 2 == 0 {
            v1::Status::Ok
        } else {
            v1::Status::Critical
        };
        tx.send(batch(seq, status)).await.expect("send");
        tokio::time::sleep(Duration::from_millis(300)).await; // the agent's pace
        committed = get(&client, http, "/api/v1/events?cluster=demo&limit=1000")
            .await
            .map(|d| ids(&d))
            .unwrap_or_default();
    }
    // Mid-stream, with batches still coming: SIGKILL, no shutdown at all.
    for _ in 0..5 {
        seq += 1;
        let _ = tx.try_send(batch(seq, v1::Status::Critical));
    }
    collector.child.kill().expect("SIGKILL");
    let _ = collector.child.wait();
    drop((tx, collector));

    let collector = Collector::start(&config, grpc, http, &[]).await;
    let after = get(&client, http, "/api/v1/events?cluster=demo&limit=1000")
        .await
        .map(|d| ids(&d))
        .unwrap_or_default();
    let lost: Vec<i64> = committed
        .iter()
        .filter(|i| !after.contains(i))
        .copied()
        .collect();
    println!(
        "kill -9: {} events committed before, {} after the restart, lost {:?}",
        committed.len(),
        after.len(),
        lost
    );
    assert!(lost.is_empty(), "events lost by kill -9: {lost:?}");
    assert!(
        after.windows(2).all(|w| w[0] < w[1]),
        "an id twice, or out of order: {after:?}"
    );
    drop(collector);
}
