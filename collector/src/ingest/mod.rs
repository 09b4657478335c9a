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
use crate::limits::CappedInfo;
use crate::state::Command;
use tonic::transport::server::TlsConnectInfo;

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
/// Added to three intervals of silence before a stream is cut as idle.
const IDLE_SLACK: Duration = Duration::from_secs(5);
/// How long a cut stream's status may wait behind unread acks.
const CUT_WAIT: Duration = Duration::from_secs(5);
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

/// Checks that the leaf certificate is valid for `node` of `cluster`: the DNS name
/// `<node>.<cluster>` in its subjectAltName (what `deploy/certs.sh` issues), so that a node's
/// certificate can neither speak for another node nor join another cluster.
fn cert_matches(
    certs: &[tonic::transport::CertificateDer<'static>],
    node: &str,
    cluster: &str,
) -> Result<(), String> {
    let leaf = certs.first().ok_or("no client certificate")?;
    let cert = webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| format!("unreadable client certificate: {e}"))?;
    let qualified = format!("{node}.{cluster}");
    let name = rustls_pki_types::ServerName::try_from(qualified.clone())
        .map_err(|e| format!("`{qualified}` is not a DNS name: {e}"))?;
    cert.verify_is_valid_for_subject_name(&name).map_err(|_| {
        format!(
            "the client certificate is not valid for node `{node}` of cluster `{cluster}` (subjectAltName DNS:{qualified})"
        )
    })
}

/// The agent's cycle interval the collector accepts: its staleness limits are multiples of it.
pub const INTERVAL_MS: std::ops::RangeInclusive<u32> = 1_000..=60_000;
/// At most this many components, each a short word.
const MAX_COMPONENTS: usize = 8;
const MAX_WORD: usize = 64;

/// Whether a `Hello` may be admitted: names, interval, sizes (public for the fuzz target).
pub fn validate_hello(h: &vigie_proto::v1::Hello) -> Result<(), Status> {
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

/// Tells the state task that a stream ended, when dropped.
struct Closer {
    state: mpsc::Sender<Command>,
    stream: u64,
    cluster: String,
    node: String,
}

impl Drop for Closer {
    fn drop(&mut self) {
        let cmd = Command::Closed {
            stream: self.stream,
            cluster: std::mem::take(&mut self.cluster),
            node: std::mem::take(&mut self.node),
            at: Now::read(),
        };
        if let Err(mpsc::error::TrySendError::Full(cmd)) = self.state.try_send(cmd)
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let state = self.state.clone();
            rt.spawn(async move {
                let _ = state.send(cmd).await;
            });
        }
    }
}

#[tonic::async_trait]
impl Ingest for IngestService {
    type StreamStream = ReceiverStream<Result<CollectorMessage, Status>>;

    async fn stream(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        // tonic's `peer_certs` only knows its own connection type: behind the caps, the
        // certificates are in `TlsConnectInfo<CappedInfo>`.
        let certs = request
            .extensions()
            .get::<TlsConnectInfo<CappedInfo>>()
            .and_then(TlsConnectInfo::peer_certs)
            .or_else(|| request.peer_certs());
        // Behind the port's cap (always, but in tests of the service alone): the connection's
        // stream count, which keeps it from being closed as idle while this stream lives.
        let conn = request
            .extensions()
            .get::<CappedInfo>()
            .or_else(|| {
                request
                    .extensions()
                    .get::<TlsConnectInfo<CappedInfo>>()
                    .map(TlsConnectInfo::get_ref)
            })
            .cloned();
        let peer = conn
            .as_ref()
            .and_then(|c| c.tcp.remote_addr())
            .or_else(|| request.remote_addr());
        let activity = conn.map(|c| c.activity);
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
            if let Err(why) = cert_matches(&certs, &hello.node, &hello.cluster) {
                tracing::warn!(node = %hello.node, cluster = %hello.cluster, reason = %why, "Agent refused");
                return Err(self.refuse(Reason::Certificate, Status::permission_denied(why)));
            }
        }
        let stream = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let (cluster, node) = (hello.cluster.clone(), hello.node.clone());
        // Silent for three intervals: the agent is gone or hung, whatever TCP says.
        let idle = Duration::from_millis(3 * u64::from(hello.interval_ms)) + IDLE_SLACK;
        tracing::info!(%cluster, %node, version = %hello.agent_version, stream, "Agent connected");
        let (tx, rx) = mpsc::channel(16);
        let (admitted, admission) = tokio::sync::oneshot::channel();
        let (speaks, mut replaced) = tokio::sync::oneshot::channel();
        // From here on the state task hears of this stream's end, even if the agent goes away
        // while this handler still waits for its admission (the handler is then dropped).
        let closer = Closer {
            state: self.state.clone(),
            stream,
            cluster: cluster.clone(),
            node: node.clone(),
        };
        self.state
            .send(Command::Hello {
                stream,
                hello,
                peer,
                at: Now::read(),
                to_agent: tx.clone(),
                admitted,
                speaks,
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

        // Counted once admitted: a stream that never says a valid Hello does not keep its
        // connection from being closed as idle.
        let open_stream = activity.map(|a| a.stream());
        let state = self.state.clone();
        let refused = self.refused.clone();
        tokio::spawn(async move {
            let _held = (closer, open_stream);
            // Ends the stream with `status`, counted as `reason`. Waits for room behind the acks
            // (a bounded while: a reader that takes nothing loses the status, never the task).
            let cut = |reason: Reason, status: Status| {
                refused.count(reason);
                tracing::warn!(%cluster, %node, reason = reason.as_str(), status = %status.message(), "Agent stream cut");
                let tx = tx.clone();
                async move {
                    let _ = tokio::time::timeout(CUT_WAIT, tx.send(Err(status))).await;
                }
            };
            let mut first = true;
            let (mut window, mut in_window) = (tokio::time::Instant::now(), 0u32);
            loop {
                let next = tokio::select! {
                    next = tokio::time::timeout(idle, inbound.message()) => next,
                    _ = &mut replaced => {
                        tracing::info!(%cluster, %node, stream, "Agent stream replaced by a newer one");
                        break;
                    }
                };
                let msg = match next {
                    Ok(Ok(Some(m))) => m,
                    Ok(Ok(None)) => break,
                    Ok(Err(e))
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
                        )
                        .await;
                        break;
                    }
                    Ok(Err(e)) => {
                        tracing::info!(%cluster, %node, error = %e, "Agent stream ended");
                        break;
                    }
                    Err(_) => {
                        cut(
                            Reason::Idle,
                            Status::deadline_exceeded(format!(
                                "nothing received for {}s (three intervals)",
                                idle.as_secs()
                            )),
                        )
                        .await;
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
                        )
                        .await;
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
                        refused.drop_for_rate();
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
                        )
                        .await;
                        break;
                    }
                    Some(Msg::Journal(j)) if j.transitions.len() > MAX_JOURNAL => {
                        cut(
                            Reason::Limits,
                            Status::invalid_argument(format!(
                                "a journal of {} transitions (at most {MAX_JOURNAL})",
                                j.transitions.len()
                            )),
                        )
                        .await;
                        break;
                    }
                    Some(Msg::Journal(journal)) => Command::Journal {
                        stream,
                        cluster: cluster.clone(),
                        node: node.clone(),
                        journal: batch::journal_from_wire(journal),
                        at,
                    },
                    Some(Msg::Hello(_)) | None => {
                        cut(
                            Reason::Hello,
                            Status::invalid_argument("Hello is only allowed first"),
                        )
                        .await;
                        break;
                    }
                };
                if state.send(cmd).await.is_err() {
                    break;
                }
            }
            tracing::info!(%cluster, %node, stream, "Agent disconnected");
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
