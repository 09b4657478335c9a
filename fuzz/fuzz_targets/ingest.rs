//! What an agent (or anyone reaching the gRPC port) sends: an `AgentMessage` decoded as ingest
//! does, validated, converted at the boundary, and a batch judged by the verdict engine.
#![no_main]
use std::collections::BTreeMap;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use vigie_collector::clock::Now;
use vigie_collector::ingest::batch::{Batch, journal_from_wire};
use vigie_collector::model::{ClusterSnapshot, NodeState};
use vigie_collector::verdict::{Policy, evaluate};
use vigie_proto::v1::{AgentMessage, agent_message::Msg};

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = AgentMessage::decode(data) else {
        return;
    };
    let at = Now::same(1_796_000_000_000);
    match msg.msg {
        Some(Msg::Hello(h)) => {
            let _ = vigie_collector::ingest::validate_hello(&h);
        }
        Some(Msg::Journal(j)) => {
            let _ = journal_from_wire(j);
        }
        Some(Msg::Batch(b)) => {
            let batch = Batch::from_wire(b, at);
            let node = NodeState {
                name: "node1".into(),
                cluster: "demo".into(),
                components: vec![
                    "patroni".into(),
                    "postgres".into(),
                    "haproxy".into(),
                    "etcd".into(),
                ],
                agent_version: "fuzz".into(),
                interval_ms: 1_000,
                connected: true,
                last_seen_ms: at.wall_ms,
                last_seen_mono_ms: at.mono_ms,
                last_batch_mono_ms: Some(at.mono_ms),
                clock_offset_ms: batch.agent_end_ms.map(|e| at.wall_ms.saturating_sub(e)),
                dropped_batches: batch.dropped,
                untyped_facts: batch.untyped > 0,
                results: batch.results.into_iter().collect::<BTreeMap<_, _>>(),
                lsn_series: Default::default(),
                impostor: None,
            };
            let snapshot = ClusterSnapshot {
                scope: "demo".into(),
                nodes: vec![Arc::new(node)],
            };
            let _ = evaluate(&snapshot, at, &Policy::default());
        }
        None => {}
    }
});
