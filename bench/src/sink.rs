//! A bare tonic server of vigie's ingest protocol: it acknowledges every batch and counts them per
//! node, nothing else. It is the transport ceiling the collector is compared with, and the
//! receiving end that counts the agent's cycles in the agent-cost benchmark.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use vigie_proto::v1::agent_message::Msg;
use vigie_proto::v1::ingest_server::{Ingest, IngestServer};
use vigie_proto::v1::{Ack, AgentMessage, CollectorMessage, collector_message};

/// What one node sent.
#[derive(Debug, Clone, Copy, Default)]
pub struct NodeStats {
    pub batches: u64,
    /// Sum over batches of the slowest probe of the batch (the cycle's wall time), µs.
    pub cycle_wall_us: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Sink {
    counts: Arc<Mutex<HashMap<String, NodeStats>>>,
}

impl Sink {
    pub fn stats(&self, node: &str) -> NodeStats {
        self.counts
            .lock()
            .map(|c| c.get(node).copied().unwrap_or_default())
            .unwrap_or_default()
    }
}

#[tonic::async_trait]
impl Ingest for Sink {
    type StreamStream = ReceiverStream<Result<CollectorMessage, Status>>;

    async fn stream(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let counts = self.counts.clone();
        tokio::spawn(async move {
            let mut node = String::new();
            while let Ok(Some(msg)) = inbound.message().await {
                match msg.msg {
                    Some(Msg::Hello(h)) => node = h.node,
                    Some(Msg::Batch(b)) => {
                        let wall = b.results.iter().map(|r| r.duration_us).max().unwrap_or(0);
                        if let Ok(mut c) = counts.lock() {
                            let s = c.entry(node.clone()).or_default();
                            s.batches += 1;
                            s.cycle_wall_us += wall;
                        }
                        let ack = CollectorMessage {
                            msg: Some(collector_message::Msg::Ack(Ack { seq: b.seq })),
                        };
                        if tx.send(Ok(ack)).await.is_err() {
                            break;
                        }
                    }
                    _ => {}
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    sink: Sink,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(IngestServer::new(sink))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown,
        )
        .await
}

/// Binds `addr` and serves in the background; returns the sink to read counts from.
pub async fn spawn(addr: SocketAddr) -> std::io::Result<Sink> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let sink = Sink::default();
    let s = sink.clone();
    tokio::spawn(async move {
        if let Err(e) = serve(s, listener, std::future::pending()).await {
            eprintln!("sink: {e}");
        }
    });
    Ok(sink)
}
