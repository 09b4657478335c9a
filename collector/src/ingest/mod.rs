//! The gRPC ingest service: one bidirectional stream per agent. The first message must be
//! `Hello`; with mTLS, the client certificate must be valid for the node `Hello` names (an agent
//! cannot speak for another node). Then batches and journals flow to the state task, and each
//! batch is acknowledged. Handlers are thin: they validate, convert and forward.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use vigie_proto::v1::agent_message::Msg;
use vigie_proto::v1::ingest_server::Ingest;
use vigie_proto::v1::{Ack, AgentMessage, CollectorMessage, collector_message};

use crate::clock::Now;
use crate::state::Command;

pub mod batch;

/// How long an agent may take to say `Hello` after opening its stream.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct IngestService {
    state: mpsc::Sender<Command>,
    next_stream: Arc<AtomicU64>,
    /// Whether client certificates are required (and checked against `Hello`).
    require_client_cert: bool,
    refused: Arc<AtomicU64>,
}

impl IngestService {
    pub fn new(
        state: mpsc::Sender<Command>,
        require_client_cert: bool,
        refused: Arc<AtomicU64>,
    ) -> Self {
        IngestService {
            state,
            next_stream: Arc::new(AtomicU64::new(1)),
            require_client_cert,
            refused,
        }
    }

    fn refuse(&self, status: Status) -> Status {
        self.refused.fetch_add(1, Ordering::Relaxed);
        status
    }
}

/// Checks that the leaf certificate is valid for `node` (a DNS name in its subjectAltName).
fn cert_matches(
    certs: &[tonic::transport::CertificateDer<'static>],
    node: &str,
) -> Result<(), String> {
    let leaf = certs.first().ok_or("no client certificate")?;
    let cert = webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| format!("unreadable client certificate: {e}"))?;
    let name = rustls_pki_types::ServerName::try_from(node.to_string())
        .map_err(|e| format!("node name `{node}` is not a DNS name: {e}"))?;
    cert.verify_is_valid_for_subject_name(&name)
        .map_err(|_| format!("the client certificate is not valid for node `{node}`"))
}

fn validate_hello(h: &vigie_proto::v1::Hello) -> Result<(), Status> {
    let ok_name = |s: &str| {
        !s.is_empty()
            && s.len() <= 253
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    if !ok_name(&h.node) {
        return Err(Status::invalid_argument(format!(
            "Hello.node `{}` is not a valid node name",
            h.node
        )));
    }
    if !ok_name(&h.cluster) {
        return Err(Status::invalid_argument(format!(
            "Hello.cluster `{}` is not a valid cluster scope",
            h.cluster
        )));
    }
    Ok(())
}

#[tonic::async_trait]
impl Ingest for IngestService {
    type StreamStream = ReceiverStream<Result<CollectorMessage, Status>>;

    async fn stream(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let certs = request.peer_certs();
        let mut inbound = request.into_inner();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(AgentMessage {
                msg: Some(Msg::Hello(h)),
            }))) => h,
            Ok(Ok(_)) => return Err(Status::invalid_argument("the first message must be Hello")),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(Status::deadline_exceeded("no Hello within 10s")),
        };
        validate_hello(&hello).map_err(|s| self.refuse(s))?;
        if self.require_client_cert {
            let certs = certs.ok_or_else(|| {
                self.refuse(Status::unauthenticated("a client certificate is required"))
            })?;
            if let Err(why) = cert_matches(&certs, &hello.node) {
                tracing::warn!(node = %hello.node, cluster = %hello.cluster, reason = %why, "Agent refused");
                return Err(self.refuse(Status::permission_denied(why)));
            }
        }
        let stream = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let (cluster, node) = (hello.cluster.clone(), hello.node.clone());
        tracing::info!(%cluster, %node, version = %hello.agent_version, stream, "Agent connected");
        let (tx, rx) = mpsc::channel(16);
        self.state
            .send(Command::Hello {
                stream,
                hello,
                at: Now::read(),
                to_agent: tx.clone(),
            })
            .await
            .map_err(|_| Status::unavailable("collector shutting down"))?;

        let state = self.state.clone();
        tokio::spawn(async move {
            loop {
                let msg = match inbound.message().await {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::info!(%cluster, %node, error = %e, "Agent stream ended");
                        break;
                    }
                };
                let at = Now::read();
                let cmd = match msg.msg {
                    Some(Msg::Batch(batch)) => {
                        let seq = batch.seq;
                        // Acks are best effort: a slow reader loses acks, never data.
                        let _ = tx.try_send(Ok(CollectorMessage {
                            msg: Some(collector_message::Msg::Ack(Ack { seq })),
                        }));
                        Command::Batch {
                            stream,
                            cluster: cluster.clone(),
                            node: node.clone(),
                            batch: batch::Batch::from_wire(batch, at),
                            at,
                        }
                    }
                    Some(Msg::Journal(journal)) => Command::Journal {
                        stream,
                        cluster: cluster.clone(),
                        node: node.clone(),
                        journal,
                        at,
                    },
                    Some(Msg::Hello(_)) | None => {
                        let _ = tx
                            .send(Err(Status::invalid_argument("Hello is only allowed first")))
                            .await;
                        break;
                    }
                };
                if state.send(cmd).await.is_err() {
                    break;
                }
            }
            tracing::info!(%cluster, %node, stream, "Agent disconnected");
            let _ = state
                .send(Command::Closed {
                    stream,
                    cluster,
                    node,
                    at: Now::read(),
                })
                .await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
