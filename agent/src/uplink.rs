//! The agent → collector stream. One bidirectional gRPC stream: `Hello`, then a batch per cycle;
//! reconnects with jittered exponential backoff (capped at the probe interval). While disconnected it keeps draining the cycles
//! (the agent never stops probing), journals the status transitions (bounded, overflow counted)
//! and sends the journal after the next `Hello`. Batches that cannot be queued are dropped and
//! counted, and the count travels in the next batch. A "probe now" from the collector wakes the
//! probe loop.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use vigie_proto::v1;

use crate::config::{AgentConfig, CollectorConfig};
use crate::result::{ProbeId, ProbeResult, Status, unix_ms};

/// One cycle, as the probe loop hands it over.
#[derive(Debug)]
pub struct CycleReport {
    pub results: Vec<ProbeResult>,
    pub transitions: Vec<Transition>,
}

/// A probe's status change.
#[derive(Debug, Clone)]
pub struct Transition {
    pub probe: ProbeId,
    pub from: Option<Status>,
    pub to: Status,
    pub message: String,
    pub at_ms: i64,
}

/// The probe loop's end of the uplink.
#[derive(Debug, Clone)]
pub struct Uplink {
    tx: mpsc::Sender<CycleReport>,
    /// Signalled when the collector asks for a cycle now.
    pub probe_now: Arc<Notify>,
}

impl Uplink {
    /// An uplink with no collector behind it: the cycles it is handed, for tests.
    #[cfg(test)]
    pub(crate) fn detached() -> (Uplink, mpsc::Receiver<CycleReport>) {
        let (tx, rx) = mpsc::channel(64);
        let up = Uplink {
            tx,
            probe_now: Arc::new(Notify::new()),
        };
        (up, rx)
    }

    /// Hands a cycle over without ever blocking the probe loop; `false` if it had to be dropped.
    pub fn offer(&self, report: CycleReport) -> bool {
        self.tx.try_send(report).is_ok()
    }
}

const FIRST_BACKOFF: Duration = Duration::from_millis(250);

fn wire_result(r: &ProbeResult) -> v1::ProbeResult {
    v1::ProbeResult {
        id: String::new(),
        probe: r.id as i32,
        status: r.status as i32,
        message: r.message.clone(),
        started_unix_ms: r.started_unix_ms,
        duration_us: r.duration_us,
        unanswered: r.unanswered,
        facts: r.facts.clone(),
    }
}

/// The transitions kept while disconnected, oldest dropped first: at most `capacity` of them
/// and [`JOURNAL_BYTES`] in all, so that the journal always fits the collector's message cap.
#[derive(Debug)]
struct Journal {
    kept: VecDeque<Transition>,
    bytes: usize,
    capacity: usize,
    dropped: u64,
}

/// The journal's size on the wire at most (the collector refuses messages over 4 MiB).
const JOURNAL_BYTES: usize = 2 * 1024 * 1024;
/// A journaled transition's message is cut to this many bytes.
const JOURNAL_MESSAGE: usize = 256;
/// A transition's encoding besides its message, at most (tags, enums, timestamp, length).
const TRANSITION_OVERHEAD: usize = 32;

impl Journal {
    fn new(capacity: usize) -> Journal {
        Journal {
            kept: VecDeque::new(),
            bytes: 0,
            capacity,
            dropped: 0,
        }
    }

    fn push(&mut self, mut t: Transition) {
        if t.message.len() > JOURNAL_MESSAGE {
            let mut end = JOURNAL_MESSAGE;
            while !t.message.is_char_boundary(end) {
                end -= 1;
            }
            t.message.truncate(end);
        }
        let size = t.message.len() + TRANSITION_OVERHEAD;
        while self.kept.len() >= self.capacity.max(1) || self.bytes + size > JOURNAL_BYTES {
            let Some(old) = self.kept.pop_front() else {
                break;
            };
            self.bytes -= old.message.len() + TRANSITION_OVERHEAD;
            self.dropped += 1;
        }
        self.bytes += size;
        self.kept.push_back(t);
    }
}

fn wire_transition(t: &Transition) -> v1::Transition {
    v1::Transition {
        probe_id: String::new(),
        probe: t.probe as i32,
        from: t.from.map_or(Status::Unspecified, |s| s) as i32,
        to: t.to as i32,
        message: t.message.clone(),
        at_unix_ms: t.at_ms,
    }
}

/// Builds the channel to the collector (TLS or plaintext, with keepalives).
fn endpoint(c: &CollectorConfig) -> Result<Endpoint, String> {
    let mut ep = Endpoint::from_shared(c.url.to_string())
        .map_err(|e| format!("collector.url: {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true)
        .tcp_keepalive(Some(Duration::from_secs(10)));
    if c.url.scheme() == "https" {
        let read =
            |p: &std::path::Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = &c.ca {
            tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        if let (Some(cert), Some(key)) = (&c.cert, &c.key) {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        let name = c
            .server_name
            .clone()
            .or_else(|| c.url.host_str().map(str::to_string));
        if let Some(name) = name {
            tls = tls.domain_name(name);
        }
        ep = ep
            .tls_config(tls)
            .map_err(|e| format!("collector TLS: {e}"))?;
    }
    Ok(ep)
}

/// Starts the uplink task for `cfg` (which must have a `[collector]` section).
pub fn spawn(cfg: &AgentConfig) -> Result<Uplink, String> {
    let c = cfg.collector.as_ref().ok_or("no [collector] section")?;
    let endpoint = endpoint(c)?;
    let hello = v1::Hello {
        node: cfg.node.clone(),
        cluster: cfg.cluster.clone(),
        components: crate::config::components(cfg)
            .into_iter()
            .map(str::to_string)
            .collect(),
        agent_version: crate::VERSION.to_string(),
        interval_ms: u32::try_from(cfg.interval.as_millis()).unwrap_or(u32::MAX),
    };
    let (tx, rx) = mpsc::channel(4);
    let probe_now = Arc::new(Notify::new());
    let task = Task {
        endpoint,
        hello,
        interval: cfg.interval,
        journal: Journal::new(c.journal_capacity),
        disconnected_since: None,
        dropped: 0,
        seq: 0,
        last: None,
        probe_now: probe_now.clone(),
        url: c.url.to_string(),
    };
    tokio::spawn(task.run(rx));
    Ok(Uplink { tx, probe_now })
}

struct Task {
    endpoint: Endpoint,
    hello: v1::Hello,
    interval: Duration,
    journal: Journal,
    disconnected_since: Option<i64>,
    /// Batches not delivered since the last delivered one.
    dropped: u64,
    seq: u64,
    /// The latest cycle and when it arrived: sent right after a reconnection if still recent.
    last: Option<(Instant, Vec<ProbeResult>)>,
    probe_now: Arc<Notify>,
    url: String,
}

impl Task {
    async fn run(mut self, mut rx: mpsc::Receiver<CycleReport>) {
        // Capped at one interval: a collector that comes back has every agent again within one
        // interval (the jitter spreads a fleet's reconnections over that interval).
        let max_backoff = self.interval.max(Duration::from_secs(1));
        let mut backoff = FIRST_BACKOFF;
        loop {
            match self.endpoint.connect().await {
                Ok(channel) => {
                    let connected_at = Instant::now();
                    match self.session(channel, &mut rx).await {
                        Ended::Shutdown => return,
                        Ended::Refused(why) => {
                            tracing::error!(collector = %self.url, reason = %why, "Collector refused this agent: fix its identity or certificate");
                        }
                        Ended::Lost(why) => {
                            tracing::warn!(collector = %self.url, reason = %why, "Collector stream lost, reconnecting");
                        }
                    }
                    if connected_at.elapsed() > Duration::from_secs(30) {
                        backoff = FIRST_BACKOFF;
                    }
                }
                Err(e) => {
                    tracing::warn!(collector = %self.url, error = %e, "Cannot reach the collector");
                }
            }
            self.disconnected_since
                .get_or_insert_with(|| unix_ms(std::time::SystemTime::now()));
            // Keep draining cycles into the journal while waiting to retry.
            let jitter = rand::rng().random_range(0.5..1.0);
            let deadline = Instant::now() + backoff.mul_f64(jitter);
            loop {
                tokio::select! {
                    report = rx.recv() => match report {
                        Some(r) => self.keep(r),
                        None => return,
                    },
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
            backoff = (backoff * 2).min(max_backoff);
        }
    }

    /// Journals a cycle's transitions while disconnected.
    fn keep(&mut self, report: CycleReport) {
        for t in report.transitions {
            self.journal.push(t);
        }
        self.last = Some((Instant::now(), report.results));
    }

    fn batch(&mut self, results: &[ProbeResult]) -> v1::AgentMessage {
        self.seq += 1;
        let dropped = std::mem::take(&mut self.dropped);
        v1::AgentMessage {
            msg: Some(v1::agent_message::Msg::Batch(v1::ResultBatch {
                seq: self.seq,
                results: results.iter().map(wire_result).collect(),
                dropped,
            })),
        }
    }

    async fn session(&mut self, channel: Channel, rx: &mut mpsc::Receiver<CycleReport>) -> Ended {
        let (out, out_rx) = mpsc::channel::<v1::AgentMessage>(8);
        let hello = v1::AgentMessage {
            msg: Some(v1::agent_message::Msg::Hello(self.hello.clone())),
        };
        if out.try_send(hello).is_err() {
            return Ended::Lost("outbound queue".into());
        }
        if !self.journal.kept.is_empty() || self.journal.dropped > 0 {
            let journal = v1::Journal {
                transitions: self.journal.kept.iter().map(wire_transition).collect(),
                dropped: self.journal.dropped,
                disconnected_since_unix_ms: self.disconnected_since.unwrap_or(0),
            };
            let _ = out.try_send(v1::AgentMessage {
                msg: Some(v1::agent_message::Msg::Journal(journal)),
            });
        }
        if let Some((at, results)) = self.last.take()
            && at.elapsed() < self.interval
        {
            let b = self.batch(&results);
            let _ = out.try_send(b);
        }
        let mut client = v1::ingest_client::IngestClient::new(channel);
        let response = match client.stream(ReceiverStream::new(out_rx)).await {
            Ok(r) => r,
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::PermissionDenied
                        | tonic::Code::Unauthenticated
                        | tonic::Code::InvalidArgument
                        | tonic::Code::AlreadyExists
                ) =>
            {
                return Ended::Refused(s.message().to_string());
            }
            Err(s) => return Ended::Lost(s.to_string()),
        };
        // The collector took the Hello: the journal is delivered.
        self.journal = Journal::new(self.journal.capacity);
        self.disconnected_since = None;
        tracing::info!(collector = %self.url, "Connected to the collector");
        let mut inbound = response.into_inner();
        loop {
            tokio::select! {
                report = rx.recv() => {
                    let Some(report) = report else { return Ended::Shutdown };
                    let b = self.batch(&report.results);
                    if out.try_send(b).is_err() {
                        self.dropped += 1;
                    }
                }
                msg = inbound.message() => match msg {
                    Ok(Some(v1::CollectorMessage { msg: Some(v1::collector_message::Msg::ProbeNow(_)) })) => {
                        self.probe_now.notify_one();
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => return Ended::Lost("the collector closed the stream".into()),
                    Err(s) if matches!(s.code(), tonic::Code::PermissionDenied | tonic::Code::Unauthenticated | tonic::Code::InvalidArgument | tonic::Code::AlreadyExists) => {
                        return Ended::Refused(s.message().to_string());
                    }
                    Err(s) => return Ended::Lost(s.to_string()),
                }
            }
        }
    }
}

enum Ended {
    Shutdown,
    Refused(String),
    Lost(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn transition(message: String) -> Transition {
        Transition {
            probe: ProbeId::HaproxyBackends,
            from: Some(Status::Ok),
            to: Status::Critical,
            message,
            at_ms: 1_796_000_000_000,
        }
    }

    #[test]
    fn the_journal_keeps_the_newest_within_its_count_and_its_size() {
        let mut j = Journal::new(3);
        for i in 0..5 {
            j.push(transition(format!("t{i}")));
        }
        let kept: Vec<_> = j.kept.iter().map(|t| t.message.as_str()).collect();
        assert_eq!(kept, ["t2", "t3", "t4"]);
        assert_eq!(j.dropped, 2);

        // The largest journal the config allows, of messages as long as a target can make them,
        // still fits the collector's cap once encoded.
        let mut j = Journal::new(10_000);
        for _ in 0..20_000 {
            j.push(transition("é".repeat(10_000)));
        }
        let wire = v1::Journal {
            transitions: j.kept.iter().map(wire_transition).collect(),
            dropped: j.dropped,
            disconnected_since_unix_ms: 1_796_000_000_000,
        };
        let bytes = v1::AgentMessage {
            msg: Some(v1::agent_message::Msg::Journal(wire)),
        }
        .encoded_len();
        assert!(bytes <= JOURNAL_BYTES + 64, "{bytes} bytes");
        assert!(bytes < 4 * 1024 * 1024);
        assert_eq!(j.kept.len() as u64 + j.dropped, 20_000);
        assert!(j.kept.iter().all(|t| t.message.len() <= JOURNAL_MESSAGE));
    }
}
