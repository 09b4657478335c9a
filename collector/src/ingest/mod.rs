//! The gRPC ingest service: one bidirectional stream per agent. The first message must be
//! `Hello`; with mTLS, the client certificate must be valid for the node `Hello` names (an agent
//! cannot speak for another node). Then batches and journals flow to the state task, and each
//! batch is acknowledged. Handlers are thin: they validate, convert and forward.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use refusals::{Reason, Refusals};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use vigie_proto::v1::agent_message::Msg;
use vigie_proto::v1::ingest_server::Ingest;
use vigie_proto::v1::{Ack, AgentMessage, CollectorMessage, collector_message};

use crate::clock::Now;
use crate::state::Command;

pub mod batch;
mod refusals;

/// How long an agent may take to say `Hello` after opening its stream.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest message ingest decodes (a batch is ~1 KiB, a full journal 1–3 MiB).
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// Results in one batch: a few times the catalogue, whatever a newer agent adds.
const MAX_RESULTS: usize = 4 * vigie_proto::ProbeId::ALL.len();
/// Transitions in the one journal an agent may send, right after `Hello`.
pub const MAX_JOURNAL: usize = 10_000;
/// Batches per stream per second beyond which they are dropped (an agent sends one per
/// interval, at least a second; "probe now" and reconnections add a few).
const MAX_BATCHES_PER_S: u32 = 10;

#[derive(Debug, Clone)]
pub struct IngestService {
    state: mpsc::Sender<Command>,
    next_stream: Arc<AtomicU64>,
    /// Whether client certificates are required (and checked against `Hello`).
    require_client_cert: bool,
    refused: Arc<Refusals>,
}

impl IngestService {
    pub fn new(
        state: mpsc::Sender<Command>,
        require_client_cert: bool,
        refused: Arc<Refusals>,
    ) -> Self {
        IngestService {
            state,
            next_stream: Arc::new(AtomicU64::new(1)),
            require_client_cert,
            refused,
        }
    }

    fn refuse(&self, reason: Reason, status: Status) -> Status {
        self.refused.count(reason);
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

/// The agent's cycle interval the collector accepts: its staleness limits are multiples of it.
pub const INTERVAL_MS: std::ops::RangeInclusive<u32> = 1_000..=60_000;
/// At most this many components, each a short word.
const MAX_COMPONENTS: usize = 8;
const MAX_WORD: usize = 64;

fn validate_hello(h: &vigie_proto::v1::Hello) -> Result<(), Status> {
    let ok_name = |s: &str| {
        !s.is_empty()
            && s.len() <= 253
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    let ok_word = |s: &str| {
        s.len() <= MAX_WORD
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.+~".contains(c))
    };
    if !ok_name(&h.node) {
        return Err(Status::invalid_argument(format!(
            "Hello.node `{}` is not a valid node name",
            h.node.escape_debug()
        )));
    }
    if !ok_name(&h.cluster) {
        return Err(Status::invalid_argument(format!(
            "Hello.cluster `{}` is not a valid cluster scope",
            h.cluster.escape_debug()
        )));
    }
    if !INTERVAL_MS.contains(&h.interval_ms) {
        return Err(Status::invalid_argument(format!(
            "Hello.interval_ms {} is outside {}..={} (1 s to 60 s)",
            h.interval_ms,
            INTERVAL_MS.start(),
            INTERVAL_MS.end()
        )));
    }
    if !ok_word(&h.agent_version) {
        return Err(Status::invalid_argument(
            "Hello.agent_version is not a version (at most 64 characters of [A-Za-z0-9._+~-])",
        ));
    }
    if h.components.len() > MAX_COMPONENTS
        || h.components.iter().any(|c| c.is_empty() || !ok_word(c))
    {
        return Err(Status::invalid_argument(format!(
            "Hello.components: at most {MAX_COMPONENTS} words of [A-Za-z0-9._+~-]"
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
        let peer = request
            .remote_addr()
            .map_or_else(|| "an unknown address".to_string(), |a| a.to_string());
        let mut inbound = request.into_inner();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(AgentMessage {
                msg: Some(Msg::Hello(h)),
            }))) => h,
            Ok(Ok(_)) => {
                return Err(self.refuse(
                    Reason::Hello,
                    Status::invalid_argument("the first message must be Hello"),
                ));
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(self.refuse(
                    Reason::Hello,
                    Status::deadline_exceeded("no Hello within 10s"),
                ));
            }
        };
        validate_hello(&hello).map_err(|s| self.refuse(Reason::Hello, s))?;
        if self.require_client_cert {
            let certs = certs.ok_or_else(|| {
                self.refuse(
                    Reason::Certificate,
                    Status::unauthenticated("a client certificate is required"),
                )
            })?;
            if let Err(why) = cert_matches(&certs, &hello.node) {
                tracing::warn!(node = %hello.node, cluster = %hello.cluster, reason = %why, "Agent refused");
                return Err(self.refuse(Reason::Certificate, Status::permission_denied(why)));
            }
        }
        let stream = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let (cluster, node) = (hello.cluster.clone(), hello.node.clone());
        tracing::info!(%cluster, %node, version = %hello.agent_version, stream, "Agent connected");
        let (tx, rx) = mpsc::channel(16);
        let (admitted, admission) = tokio::sync::oneshot::channel();
        self.state
            .send(Command::Hello {
                stream,
                hello,
                peer,
                at: Now::read(),
                to_agent: tx.clone(),
                admitted,
            })
            .await
            .map_err(|_| Status::unavailable("collector shutting down"))?;
        match admission.await {
            Ok(Ok(())) => {}
            Ok(Err(why)) => {
                tracing::warn!(%cluster, %node, reason = %why, "Agent refused");
                return Err(self.refuse(Reason::Duplicate, Status::already_exists(why)));
            }
            Err(_) => return Err(Status::unavailable("collector shutting down")),
        }

        let state = self.state.clone();
        let refused = self.refused.clone();
        tokio::spawn(async move {
            // Ends the stream with `status`, counted as `reason`.
            let cut = |reason: Reason, status: Status| {
                refused.count(reason);
                tracing::warn!(%cluster, %node, reason = reason.as_str(), status = %status.message(), "Agent stream cut");
                let _ = tx.try_send(Err(status));
            };
            let mut first = true;
            let (mut window, mut in_window) = (tokio::time::Instant::now(), 0u32);
            loop {
                let msg = match inbound.message().await {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(e)
                        if matches!(
                            e.code(),
                            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
                        ) =>
                    {
                        cut(
                            Reason::Limits,
                            Status::resource_exhausted(format!(
                                "a message over {MAX_MESSAGE_BYTES} bytes: {}",
                                e.message()
                            )),
                        );
                        break;
                    }
                    Err(e) => {
                        tracing::info!(%cluster, %node, error = %e, "Agent stream ended");
                        break;
                    }
                };
                let at = Now::read();
                let journal_allowed = std::mem::take(&mut first);
                let cmd = match msg.msg {
                    Some(Msg::Batch(batch)) if batch.results.len() > MAX_RESULTS => {
                        cut(
                            Reason::Limits,
                            Status::invalid_argument(format!(
                                "a batch of {} results (at most {MAX_RESULTS})",
                                batch.results.len()
                            )),
                        );
                        break;
                    }
                    Some(Msg::Batch(_))
                        if {
                            if window.elapsed() >= Duration::from_secs(1) {
                                (window, in_window) = (tokio::time::Instant::now(), 0);
                            }
                            in_window += 1;
                            in_window > MAX_BATCHES_PER_S
                        } =>
                    {
                        refused.count(Reason::Rate);
                        continue;
                    }
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
                    Some(Msg::Journal(_)) if !journal_allowed => {
                        cut(
                            Reason::Limits,
                            Status::invalid_argument("a journal is only allowed right after Hello"),
                        );
                        break;
                    }
                    Some(Msg::Journal(j)) if j.transitions.len() > MAX_JOURNAL => {
                        cut(
                            Reason::Limits,
                            Status::invalid_argument(format!(
                                "a journal of {} transitions (at most {MAX_JOURNAL})",
                                j.transitions.len()
                            )),
                        );
                        break;
                    }
                    Some(Msg::Journal(journal)) => Command::Journal {
                        stream,
                        cluster: cluster.clone(),
                        node: node.clone(),
                        journal,
                        at,
                    },
                    Some(Msg::Hello(_)) | None => {
                        cut(
                            Reason::Hello,
                            Status::invalid_argument("Hello is only allowed first"),
                        );
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
