//! The one task that owns what the collector knows: every node's latest results, each cluster's
//! finding history, the event log. Ingest sends it commands over a bounded channel; every
//! `evaluate_every` it evaluates every cluster (new results and silence alike) and publishes an
//! immutable snapshot that readers (the API) clone cheaply. Evaluating on a tick rather than on
//! each batch bounds the work at a fleet's size whatever the batch rate: readers only see
//! published snapshots anyway.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::events::{EventBody, EventLog, ProbeTransition, node_events};
use crate::ingest::batch::Batch;
use crate::store::{Reader, StoreHealth, WriteQueue};
use vigie_proto::v1;

use crate::model::{ClusterSnapshot, NodeState, ProbeId, Status};
use crate::verdict::history::{Change, FindingHistory};
use crate::verdict::{Policy, Verdict, evaluate};

use crate::clock::Now;
pub use crate::clock::now_ms;

/// What ingest tells the state task.
#[derive(Debug)]
pub enum Command {
    Hello {
        stream: u64,
        hello: v1::Hello,
        /// Where the stream comes from: the same host may replace its own stream at once.
        peer: Option<std::net::SocketAddr>,
        at: Now,
        /// The stream's way back to the agent (acks, "probe now").
        to_agent: StreamBack,
        /// Admitted, or why not: another live stream already speaks for this node.
        admitted: tokio::sync::oneshot::Sender<Result<(), String>>,
        /// Dropped once the stream no longer speaks for its node (replaced by a newer one).
        speaks: tokio::sync::oneshot::Sender<()>,
    },
    Batch {
        stream: u64,
        cluster: String,
        node: String,
        batch: Batch,
        at: Now,
    },
    Journal {
        stream: u64,
        cluster: String,
        node: String,
        journal: v1::Journal,
        at: Now,
    },
    Closed {
        stream: u64,
        cluster: String,
        node: String,
        at: Now,
    },
    /// Forget a node that has no live stream (an admin's `DELETE`): replies with why not if it
    /// cannot.
    Forget {
        cluster: String,
        node: String,
        reply: tokio::sync::oneshot::Sender<Result<(), Unforgettable>>,
    },
    /// Ask every connected agent of `cluster` for a cycle now; replies with how many were asked,
    /// or, when the cluster was asked less than [`PROBE_NOW_EVERY`] ago, how long to wait.
    ProbeNow {
        cluster: String,
        reply: tokio::sync::oneshot::Sender<Result<usize, Duration>>,
    },
}

/// One cluster as readers see it.
#[derive(Debug, Serialize)]
pub struct ClusterEntry {
    pub snapshot: ClusterSnapshot,
    pub verdict: Verdict,
}

/// Everything readers see, replaced as a whole on every publish.
#[derive(Debug, Default)]
pub struct Published {
    pub clusters: BTreeMap<String, Arc<ClusterEntry>>,
    pub agents_connected: usize,
    pub batches_received: u64,
    pub batches_dropped_by_agents: u64,
    pub published_ms: i64,
}

type StreamBack = mpsc::Sender<Result<v1::CollectorMessage, tonic::Status>>;

/// "Probe now" reaches a cluster's agents at most this often (each agent debounces too).
pub const PROBE_NOW_EVERY: Duration = Duration::from_secs(1);

/// Why a node cannot be forgotten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unforgettable {
    Unknown,
    /// Its agent is connected: it would be back with the next batch.
    Connected,
}

/// What [`Store::admit`] decides for a `Hello`.
enum Admission {
    New,
    Replaces(Live),
    Refused(String),
}

fn display(peer: Option<std::net::SocketAddr>) -> String {
    peer.map_or_else(|| "an unknown address".to_string(), |a| a.to_string())
}

/// The stream that speaks for a node.
#[derive(Debug)]
struct Live {
    id: u64,
    back: StreamBack,
    peer: Option<std::net::SocketAddr>,
    admitted_mono_ms: i64,
    /// Its handler's: dropped with this entry, which tells the handler to stop reading.
    _speaks: tokio::sync::oneshot::Sender<()>,
}

/// Handles for the API.
#[derive(Debug, Clone)]
pub struct Readers {
    pub published: watch::Receiver<Arc<Published>>,
    /// For requests that need the state task (e.g. "probe now"); closed once the task is gone.
    pub commands: mpsc::Sender<Command>,
    /// The event log's read-only connection.
    pub events: Reader,
    /// Live events, fed by the state task (weak: subscriptions end with the task).
    pub live: tokio::sync::broadcast::WeakSender<serde_json::Value>,
    /// The id of the last live event sent (read after subscribing: older ones are in the log).
    pub live_sent: Arc<std::sync::atomic::AtomicI64>,
    pub store: Arc<StoreHealth>,
    /// Streams refused at `Hello` or cut, by reason, counted by ingest.
    pub refused: Arc<crate::ingest::Refusals>,
    /// The ports' connection caps (none in tests that serve no port).
    pub ports: Option<Arc<crate::limits::Ports>>,
    /// The SSE streams open.
    pub sse: Arc<crate::http::sse::Clients>,
}

impl Readers {
    /// Whether the state task still runs (its command channel is open).
    pub fn state_running(&self) -> bool {
        !self.commands.is_closed()
    }
}

/// What the state task persists with, and what it restores at start.
#[derive(Debug)]
pub struct Persistence {
    pub queue: WriteQueue,
    pub reader: Reader,
    /// The store's next event id.
    pub next_id: i64,
    /// Findings open when the collector last stopped: (cluster, code, nodes, since).
    pub open: Vec<crate::store::OpenFinding>,
    pub retention: Duration,
}

/// The notifier's bookkeeping and its outlets: Alertmanager's latest alert set, the webhook queue.
#[derive(Debug)]
pub struct Notify {
    pub notifier: crate::notify::Notifier,
    pub alertmanager: Option<watch::Sender<Vec<crate::notify::Alert>>>,
    pub webhooks: Option<crate::notify::webhook::Queue>,
}

struct Store {
    notify: Option<Notify>,
    events: EventLog,
    queue: Option<WriteQueue>,
    /// Nodes by cluster, then by name (sorted, as snapshots list them). Shared with the
    /// published snapshot: a batch copies its node once if readers still hold the last one.
    nodes: HashMap<String, BTreeMap<String, Arc<NodeState>>>,
    /// The last non-null value of each watched fact (`probe/fact`) by cluster and node, to see
    /// changes across a gap (a PostgreSQL down for a cycle reports no start time).
    last_known: HashMap<(String, String), BTreeMap<String, serde_json::Value>>,
    /// The live stream of each node, and its way back to the agent.
    streams: HashMap<String, HashMap<String, Live>>,
    histories: HashMap<String, FindingHistory>,
    published: BTreeMap<String, Arc<ClusterEntry>>,
    batches_received: u64,
    policy: Policy,
    /// When silent nodes were last looked for (monotonic ms).
    swept_mono_ms: i64,
    /// Forgotten by an admin: published before the next tick, then answered (so that a read
    /// after the answer sees it).
    forgotten: Vec<tokio::sync::oneshot::Sender<Result<(), Unforgettable>>>,
    /// When each cluster's agents were last asked for a cycle now (monotonic ms).
    probed_mono_ms: HashMap<String, i64>,
}

/// Runs the state task until `shutdown`; returns the channel for ingest and the readers.
pub fn spawn(
    policy: Policy,
    evaluate_every: Duration,
    persistence: Persistence,
    notify: Option<Notify>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> (mpsc::Sender<Command>, Readers, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(4096);
    let (pub_tx, pub_rx) = watch::channel(Arc::new(Published::default()));
    let mut store = Store::new(
        policy,
        EventLog::new(persistence.next_id, persistence.retention),
    );
    let store_health = persistence.queue.health().clone();
    store.queue = Some(persistence.queue);
    store.notify = notify;
    // Findings open before a restart keep their `since`.
    let mut restored: HashMap<String, Vec<(crate::verdict::Code, Vec<String>, i64)>> =
        HashMap::new();
    for (cluster, code, nodes, since) in persistence.open {
        if let Some(c) = crate::verdict::Code::ALL
            .iter()
            .find(|c| c.as_str() == code)
        {
            restored
                .entry(cluster)
                .or_default()
                .push((*c, nodes, since));
        }
    }
    for (cluster, open) in restored {
        store
            .histories
            .insert(cluster, FindingHistory::restore(open, Now::read()));
    }
    let live = store.events.live().downgrade();
    let live_sent = store.events.sent();
    let handle = tokio::spawn(run(store, rx, pub_tx, evaluate_every, shutdown));
    (
        tx.clone(),
        Readers {
            published: pub_rx,
            commands: tx,
            events: persistence.reader,
            live,
            live_sent,
            store: store_health,
            refused: Default::default(),
            ports: None,
            sse: Default::default(),
        },
        handle,
    )
}

async fn run(
    mut store: Store,
    mut rx: mpsc::Receiver<Command>,
    publish: watch::Sender<Arc<Published>>,
    every: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    // Commands are taken by the hundred: one wake-up of this task for many batches.
    let mut cmds = Vec::with_capacity(256);
    loop {
        tokio::select! {
            _ = &mut shutdown => {
                // What ingest already took (and acked) is applied and written before the end.
                rx.close();
                while let Ok(cmd) = rx.try_recv() {
                    store.apply(cmd);
                }
                break;
            }
            n = rx.recv_many(&mut cmds, 256) => {
                if n == 0 {
                    break;
                }
                for cmd in cmds.drain(..) {
                    store.apply(cmd);
                }
                if !store.forgotten.is_empty() {
                    // Published as it is now (a cluster that keeps nodes judged without the
                    // forgotten one) before the admin's answer.
                    let now = Now::read();
                    store.evaluate_all(now);
                    publish.send_replace(Arc::new(store.published(now.wall_ms)));
                    for reply in store.forgotten.drain(..) {
                        let _ = reply.send(Ok(()));
                    }
                }
            }
            _ = tick.tick() => {
                // Every cluster, not only changed ones: silence is news too.
                let now = Now::read();
                store.evaluate_all(now);
                publish.send_replace(Arc::new(store.published(now.wall_ms)));
                // One transaction per tick, written by the store's own task.
                store.events.flush(store.queue.as_ref());
            }
        }
    }
    store.events.flush(store.queue.as_ref());
}

impl Store {
    fn new(policy: Policy, events: EventLog) -> Store {
        Store {
            notify: None,
            events,
            queue: None,
            nodes: HashMap::new(),
            last_known: HashMap::new(),
            streams: HashMap::new(),
            histories: HashMap::new(),
            published: BTreeMap::new(),
            batches_received: 0,
            policy,
            swept_mono_ms: 0,
            forgotten: Vec::new(),
            probed_mono_ms: HashMap::new(),
        }
    }

    fn apply(&mut self, cmd: Command) {
        match cmd {
            Command::Hello {
                stream,
                hello,
                peer,
                at,
                to_agent,
                admitted,
                speaks,
            } => {
                match self.admit(&hello, peer, at) {
                    Admission::Refused(why) => {
                        let _ = admitted.send(Err(why));
                        return;
                    }
                    Admission::Replaces(old) => {
                        if admitted.send(Ok(())).is_err() {
                            // The new stream is already gone: the old one stays.
                            self.streams
                                .entry(hello.cluster)
                                .or_default()
                                .insert(hello.node, old);
                            return;
                        }
                        tracing::info!(cluster = %hello.cluster, node = %hello.node, old = old.id, stream, "Agent stream replaced by a newer one of the same agent");
                        let _ = old.back.try_send(Err(tonic::Status::aborted(
                            "replaced by a newer stream for this node",
                        )));
                    }
                    Admission::New => {
                        if admitted.send(Ok(())).is_err() {
                            return; // the stream is already gone
                        }
                    }
                }
                self.streams
                    .entry(hello.cluster.clone())
                    .or_default()
                    .insert(
                        hello.node.clone(),
                        Live {
                            id: stream,
                            back: to_agent,
                            peer,
                            admitted_mono_ms: at.mono_ms,
                            _speaks: speaks,
                        },
                    );
                let node = self
                    .nodes
                    .entry(hello.cluster.clone())
                    .or_default()
                    .entry(hello.node.clone())
                    .or_insert_with(|| {
                        Arc::new(NodeState {
                            name: hello.node.clone(),
                            cluster: hello.cluster.clone(),
                            components: Vec::new(),
                            agent_version: String::new(),
                            interval_ms: 5_000,
                            connected: true,
                            last_seen_ms: at.wall_ms,
                            last_seen_mono_ms: at.mono_ms,
                            last_batch_mono_ms: None,
                            clock_offset_ms: None,
                            dropped_batches: 0,
                            untyped_facts: false,
                            results: BTreeMap::new(),
                            lsn_series: Default::default(),
                            impostor: None,
                        })
                    });
                let node = Arc::make_mut(node);
                node.components = hello.components;
                node.agent_version = hello.agent_version;
                node.interval_ms = u64::from(hello.interval_ms.max(1_000));
                node.connected = true;
                // Seen, but not vouched for: its results stay as old as they are until a batch.
                node.last_seen_ms = at.wall_ms;
                node.last_seen_mono_ms = at.mono_ms;
            }
            Command::Batch {
                stream,
                cluster,
                node,
                batch,
                at,
            } => {
                let at_ms = at.wall_ms;
                if !self.is_live(&cluster, &node, stream) {
                    return; // a superseded stream of the same node
                }
                let Some(state) = self.nodes.get_mut(&cluster).and_then(|c| c.get_mut(&node))
                else {
                    return;
                };
                let state = Arc::make_mut(state);
                self.batches_received += 1;
                state.last_seen_ms = at_ms;
                state.last_seen_mono_ms = at.mono_ms;
                state.last_batch_mono_ms = Some(at.mono_ms);
                state.connected = true;
                state.dropped_batches += batch.dropped;
                state.untyped_facts = batch.untyped > 0;
                state.results.extend(batch.results);
                // A primary's position from this batch (not a previous one kept in `results`).
                if let Some((observed, lsn)) = state
                    .results
                    .get(&ProbeId::PostgresReplicationLag)
                    .filter(|o| o.received_mono_ms == at.mono_ms)
                    .and_then(|o| {
                        Some((
                            o.observed_mono_ms,
                            o.facts.as_ref()?.postgres_replication_lag()?.current_lsn?,
                        ))
                    })
                {
                    Arc::make_mut(&mut state.lsn_series).record(observed, lsn);
                }
                // The agent's clock is untrusted: any value, never an overflow.
                state.clock_offset_ms = batch.agent_end_ms.map(|e| at_ms.saturating_sub(e));
                let last_known = self.last_known.entry((cluster.clone(), node)).or_default();
                for event in node_events(&state.name, &state.results, last_known) {
                    tracing::info!(%cluster, node = %state.name, event = event.kind, from = %event.from, to = %event.to, "Node event");
                    self.events
                        .push(at_ms, at_ms, &cluster, EventBody::Node(event));
                }
            }
            Command::Journal {
                stream,
                cluster,
                node,
                journal,
                at,
            } => {
                let at_ms = at.wall_ms;
                if !self.is_live(&cluster, &node, stream) {
                    return;
                }
                for t in journal.transitions {
                    // The agent's clock is untrusted: a time outside the last 30 days (the log's
                    // default retention) or more than 5 minutes ahead becomes the arrival time.
                    let plausible = (at_ms.saturating_sub(30 * 24 * 3600 * 1000))
                        ..=at_ms.saturating_add(5 * 60 * 1000);
                    let when = if plausible.contains(&t.at_unix_ms) {
                        t.at_unix_ms
                    } else {
                        at_ms
                    };
                    self.events.push(
                        at_ms,
                        when,
                        &cluster,
                        EventBody::Probe(ProbeTransition {
                            kind: "probe_transition",
                            node: node.clone(),
                            probe: match ProbeId::try_from(t.probe) {
                                Ok(ProbeId::Unspecified) | Err(_) => t.probe_id,
                                Ok(p) => p.name().to_string(),
                            },
                            from: Status::from_wire(t.from),
                            to: Status::from_wire(t.to),
                            message: t.message,
                            journaled: true,
                        }),
                    );
                }
                if journal.dropped > 0 {
                    tracing::warn!(%cluster, %node, dropped = journal.dropped, "Agent journal overflowed while disconnected");
                }
            }
            Command::Forget {
                cluster,
                node,
                reply,
            } => {
                let result = match self.nodes.get(&cluster).and_then(|c| c.get(&node)) {
                    None => Err(Unforgettable::Unknown),
                    Some(_)
                        if self
                            .streams
                            .get(&cluster)
                            .is_some_and(|s| s.contains_key(&node)) =>
                    {
                        Err(Unforgettable::Connected)
                    }
                    Some(_) => {
                        self.forget(&cluster, &node, "forgotten by an admin (API)", Now::read());
                        self.forgotten.push(reply);
                        return;
                    }
                };
                let _ = reply.send(result);
            }
            Command::ProbeNow { cluster, reply } => {
                let now = Now::read().mono_ms;
                let every = i64::try_from(PROBE_NOW_EVERY.as_millis()).unwrap_or(i64::MAX);
                if let Some(last) = self.probed_mono_ms.get(&cluster)
                    && now.saturating_sub(*last) < every
                {
                    let wait = every - now.saturating_sub(*last);
                    let _ =
                        reply.send(Err(Duration::from_millis(u64::try_from(wait).unwrap_or(0))));
                    return;
                }
                if !self.nodes.contains_key(&cluster) {
                    let _ = reply.send(Ok(0));
                    return;
                }
                self.probed_mono_ms.insert(cluster.clone(), now);
                let probe = v1::CollectorMessage {
                    msg: Some(v1::collector_message::Msg::ProbeNow(v1::ProbeNow {})),
                };
                let asked = self
                    .streams
                    .get(&cluster)
                    .into_iter()
                    .flat_map(HashMap::values)
                    .filter(|live| live.back.try_send(Ok(probe)).is_ok())
                    .count();
                let _ = reply.send(Ok(asked));
            }
            Command::Closed {
                stream,
                cluster,
                node,
                at,
            } => {
                let at_ms = at.wall_ms;
                if self.is_live(&cluster, &node, stream) {
                    if let Some(c) = self.streams.get_mut(&cluster) {
                        c.remove(&node);
                    }
                    if let Some(state) = self.nodes.get_mut(&cluster).and_then(|c| c.get_mut(&node))
                    {
                        let state = Arc::make_mut(state);
                        state.connected = false;
                        state.last_seen_ms = state.last_seen_ms.min(at_ms);
                    }
                }
            }
        }
    }

    fn is_live(&self, cluster: &str, node: &str, stream: u64) -> bool {
        self.streams
            .get(cluster)
            .and_then(|c| c.get(node))
            .is_some_and(|live| live.id == stream)
    }

    /// Whether `hello` may speak for its node, and the stream it replaces if any. A stream whose
    /// way back is closed is gone; one from the same host (an agent that reconnected before its
    /// old connection's end was seen, e.g. after a NAT or network drop), or one silent for three
    /// intervals, is replaced. Any other live stream keeps the node: the newcomer is
    /// refused and recorded, never the first agent muted.
    fn admit(
        &mut self,
        hello: &v1::Hello,
        peer: Option<std::net::SocketAddr>,
        at: Now,
    ) -> Admission {
        let ip = |p: Option<std::net::SocketAddr>| p.map(|a| a.ip());
        let state = self
            .nodes
            .get_mut(&hello.cluster)
            .and_then(|c| c.get_mut(&hello.node));
        let live = self
            .streams
            .get_mut(&hello.cluster)
            .and_then(|c| c.remove(&hello.node));
        let ip_of = |i: &crate::model::Impostor| ip(i.peer.parse().ok());
        let (state, live) = match (state, live) {
            (Some(state), Some(live)) => (state, live),
            (state, _) => {
                // Nobody speaks for the node: a host refused before now holds it alone.
                if let Some(state) = state
                    && ip(peer).is_some()
                    && state
                        .impostor
                        .as_ref()
                        .is_some_and(|i| ip_of(i) == ip(peer))
                {
                    Arc::make_mut(state).impostor = None;
                }
                return Admission::New;
            }
        };
        let interval = i64::try_from(state.interval_ms).unwrap_or(i64::MAX);
        let same_host = ip(peer).is_some() && ip(peer) == ip(live.peer);
        if live.back.is_closed() {
            // The refused "second agent" was this host: it now holds the node's stream alone.
            if ip(peer).is_some()
                && state
                    .impostor
                    .as_ref()
                    .is_some_and(|i| ip_of(i) == ip(peer))
            {
                Arc::make_mut(state).impostor = None;
            }
            return Admission::Replaces(live);
        }
        // Silent for three intervals: gone, whatever TCP says (a healthy agent's batches are at
        // most an interval and two probe timeouts apart). Another host taking over still counts
        // as an attempt (one alone raises nothing).
        let silent =
            at.mono_ms.saturating_sub(state.last_seen_mono_ms) > interval.saturating_mul(3);
        if silent {
            if !same_host {
                Arc::make_mut(state).record_impostor(display(peer), at.wall_ms, at.mono_ms);
            }
            return Admission::Replaces(live);
        }
        let state = Arc::make_mut(state);
        if same_host {
            // Two agents on one host, or behind one NAT, with the same `node`, would take turns:
            // a stream replaced within two intervals of its admission counts as an attempt.
            if at.mono_ms.saturating_sub(live.admitted_mono_ms) < interval.saturating_mul(2) {
                state.record_impostor(display(live.peer), at.wall_ms, at.mono_ms);
            }
            return Admission::Replaces(live);
        }
        state.record_impostor(display(peer), at.wall_ms, at.mono_ms);
        let why = format!(
            "another agent ({}) is already connected as node `{}` of cluster `{}`: two hosts configured with the same `node`?",
            display(live.peer),
            hello.node,
            hello.cluster
        );
        self.streams
            .entry(hello.cluster.clone())
            .or_default()
            .insert(hello.node.clone(), live);
        Admission::Refused(why)
    }

    /// Forgets the nodes with no stream silent for `forget_after`, once a minute.
    fn sweep(&mut self, at: Now) {
        if at.mono_ms.saturating_sub(self.swept_mono_ms) < 60_000 {
            return;
        }
        self.swept_mono_ms = at.mono_ms;
        let limit = self.policy.forget_after_ms;
        let silent: Vec<(String, String)> = self
            .nodes
            .iter()
            .flat_map(|(cluster, nodes)| {
                nodes
                    .values()
                    .filter(|n| at.mono_ms.saturating_sub(n.last_seen_mono_ms) > limit)
                    .map(move |n| (cluster.clone(), n.name.clone()))
            })
            .filter(|(c, n)| !self.streams.get(c).is_some_and(|s| s.contains_key(n)))
            .collect();
        for (cluster, node) in silent {
            let why = format!(
                "silent for over {} (verdict.forget_after)",
                humantime::format_duration(Duration::from_millis(
                    u64::try_from(limit).unwrap_or(0)
                ))
            );
            self.forget(&cluster, &node, &why, at);
        }
    }

    /// Forgets `node` of `cluster` (which has no stream), with an event; and the cluster with
    /// its findings, alerts and published verdict when no node is left.
    fn forget(&mut self, cluster: &str, node: &str, why: &str, at: Now) {
        let Some(nodes) = self.nodes.get_mut(cluster) else {
            return;
        };
        let Some(state) = nodes.remove(node) else {
            return;
        };
        self.last_known
            .remove(&(cluster.to_string(), node.to_string()));
        tracing::info!(%cluster, %node, reason = why, "Node forgotten");
        self.events.push(
            at.wall_ms,
            at.wall_ms,
            cluster,
            EventBody::Node(crate::events::NodeEvent {
                kind: "node_forgotten",
                node: node.to_string(),
                from: serde_json::json!(state.last_seen_ms),
                to: serde_json::Value::Null,
                message: format!("{node} forgotten: {why}"),
            }),
        );
        if !nodes.is_empty() {
            return;
        }
        self.nodes.remove(cluster);
        self.streams.remove(cluster);
        self.probed_mono_ms.remove(cluster);
        self.published.remove(cluster);
        if let Some(history) = self.histories.remove(cluster) {
            for (code, nodes) in history.open_keys() {
                self.events.remove_open(cluster, code.as_str(), &nodes);
            }
        }
        if let Some(n) = self.notify.as_mut() {
            if n.notifier.forget(cluster, at.wall_ms)
                && let Some(tx) = &n.alertmanager
            {
                tx.send_replace(n.notifier.alerts());
            }
            for d in n.notifier.take_deliveries() {
                if let Some(q) = &n.webhooks {
                    q.offer(d);
                }
            }
        }
        tracing::info!(%cluster, "Cluster forgotten: no node left");
    }

    fn evaluate_all(&mut self, at: Now) {
        self.sweep(at);
        let now = at.wall_ms;
        for (cluster, nodes) in &self.nodes {
            let nodes: Vec<Arc<NodeState>> = nodes.values().cloned().collect();
            let snapshot = ClusterSnapshot {
                scope: cluster.clone(),
                nodes,
            };
            let mut verdict = evaluate(&snapshot, at, &self.policy);
            let changes = self
                .histories
                .entry(cluster.clone())
                .or_default()
                .apply(&mut verdict, &self.policy);
            {
                let log = &mut self.events;
                for c in changes {
                    match &c {
                        Change::FindingOpened { finding } => log.save_open(
                            cluster,
                            finding.code.as_str(),
                            &finding.nodes,
                            finding.since_ms.unwrap_or(now),
                        ),
                        Change::FindingResolved { code, nodes, .. } => {
                            log.remove_open(cluster, code.as_str(), nodes)
                        }
                        _ => {}
                    }
                    if let Change::Verdict { from, to, .. } = &c {
                        tracing::info!(%cluster, from = from.map_or("none", |h| h.as_str()), to = to.as_str(), "Verdict changed");
                    }
                    log.push(now, now, cluster, EventBody::Change(c));
                }
            }
            if let Some(n) = self.notify.as_mut() {
                if n.notifier.update(&verdict)
                    && let Some(tx) = &n.alertmanager
                {
                    tx.send_replace(n.notifier.alerts());
                }
                for d in n.notifier.take_deliveries() {
                    if let Some(q) = &n.webhooks {
                        q.offer(d);
                    }
                }
            }
            self.published.insert(
                cluster.clone(),
                Arc::new(ClusterEntry { snapshot, verdict }),
            );
        }
    }

    fn all_nodes(&self) -> impl Iterator<Item = &NodeState> {
        self.nodes.values().flat_map(BTreeMap::values).map(|n| &**n)
    }

    fn published(&self, now: i64) -> Published {
        Published {
            clusters: self.published.clone(),
            agents_connected: self.all_nodes().filter(|n| n.connected).count(),
            batches_received: self.batches_received,
            batches_dropped_by_agents: self.all_nodes().map(|n| n.dropped_batches).sum(),
            published_ms: now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Facts;

    fn batch(start_time: &str, timeline: u64) -> Batch {
        Batch::from_wire(wire(start_time, timeline), Now::same(20))
    }

    fn wire(start_time: &str, timeline: u64) -> v1::ResultBatch {
        v1::ResultBatch {
            seq: 1,
            results: vec![v1::ProbeResult {
                probe: ProbeId::PatroniNode as i32,
                status: v1::Status::Ok as i32,
                message: "primary running".into(),
                started_unix_ms: 1,
                duration_us: 1,
                facts: Some(Facts::PatroniNode(v1::PatroniNodeFacts {
                    role: "primary".into(),
                    postmaster_start_time: Some(start_time.into()),
                    timeline: Some(timeline),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            dropped: 0,
        }
    }

    #[test]
    fn a_restart_between_two_cycles_is_an_event() {
        let mut store = Store::new(
            Policy::default(),
            EventLog::new(1, Duration::from_secs(3600)),
        );
        let mut live = store.events.live().subscribe();
        let (to_agent, _rx) = mpsc::channel(1);
        let hello = v1::Hello {
            node: "node1".into(),
            cluster: "demo".into(),
            components: vec!["patroni".into()],
            agent_version: "t".into(),
            interval_ms: 1000,
        };
        let (admitted, _admission) = tokio::sync::oneshot::channel();
        store.apply(Command::Hello {
            stream: 1,
            hello,
            peer: "127.0.0.1:1".parse().ok(),
            at: Now::same(10),
            to_agent,
            admitted,
            speaks: tokio::sync::oneshot::channel().0,
        });
        let b = |start: &str, tl| Command::Batch {
            stream: 1,
            cluster: "demo".into(),
            node: "node1".into(),
            batch: batch(start, tl),
            at: Now::same(20),
        };
        let mut kinds = move || -> Vec<String> {
            let mut out = Vec::new();
            while let Ok(e) = live.try_recv() {
                if e["node"].is_string() && e["probe"].is_null() {
                    out.extend(e["kind"].as_str().map(str::to_string));
                }
            }
            out
        };
        store.apply(b("2026-01-01 10:00:00", 3));
        store.apply(b("2026-01-01 10:00:00", 3));
        assert!(kinds().is_empty());
        // PostgreSQL down for a cycle: no start time, no timeline; then back, restarted.
        if let Some(n) = store.nodes.get_mut("demo").and_then(|c| c.get_mut("node1")) {
            Arc::make_mut(n).results.clear();
        }
        store.apply(Command::Batch {
            stream: 1,
            cluster: "demo".into(),
            node: "node1".into(),
            batch: Batch::from_wire(
                v1::ResultBatch {
                    seq: 2,
                    results: vec![],
                    dropped: 0,
                },
                Now::same(25),
            ),
            at: Now::same(25),
        });
        store.apply(b("2026-01-01 10:05:00", 3));
        store.apply(b("2026-01-01 10:05:00", 4));
        assert_eq!(kinds(), ["postgres_restarted", "timeline_changed"]);
        // A batch from a superseded stream is ignored.
        store.apply(Command::Batch {
            stream: 9,
            cluster: "demo".into(),
            node: "node1".into(),
            batch: batch("x", 9),
            at: Now::same(30),
        });
        assert!(kinds().is_empty());
    }

    /// A `Hello` for node1 from `peer` at mono `at_ms`, and its admission.
    fn hello_from(
        store: &mut Store,
        stream: u64,
        to_agent: StreamBack,
        peer: &str,
        at_ms: i64,
    ) -> Result<(), String> {
        let (admitted, mut admission) = tokio::sync::oneshot::channel();
        store.apply(Command::Hello {
            stream,
            hello: v1::Hello {
                node: "node1".into(),
                cluster: "demo".into(),
                components: vec!["patroni".into()],
                agent_version: "t".into(),
                interval_ms: 1000,
            },
            peer: peer.parse().ok(),
            at: Now::same(at_ms),
            to_agent,
            admitted,
            speaks: tokio::sync::oneshot::channel().0,
        });
        admission.try_recv().expect("answered at once")
    }

    fn empty_batch(store: &mut Store, stream: u64, at_ms: i64) {
        store.apply(Command::Batch {
            stream,
            cluster: "demo".into(),
            node: "node1".into(),
            batch: Batch::from_wire(v1::ResultBatch::default(), Now::same(at_ms)),
            at: Now::same(at_ms),
        });
    }

    fn store() -> Store {
        Store::new(
            Policy::default(),
            EventLog::new(1, Duration::from_secs(3600)),
        )
    }

    #[test]
    fn a_second_stream_from_another_host_is_refused_and_the_first_kept() {
        let mut store = store();
        let (first, first_rx) = mpsc::channel(1);
        assert_eq!(
            hello_from(&mut store, 1, first, "10.0.0.1:5000", 10),
            Ok(())
        );
        empty_batch(&mut store, 1, 500);
        let (second, _second_rx) = mpsc::channel(1);
        let why = hello_from(&mut store, 2, second, "10.0.0.2:6000", 900).expect_err("refused");
        assert!(why.contains("node `node1` of cluster `demo`"), "{why}");
        assert!(
            why.contains("10.0.0.1:5000"),
            "names the stream kept: {why}"
        );
        assert!(
            store.is_live("demo", "node1", 1),
            "the first stream is kept"
        );
        let impostor = store.nodes["demo"]["node1"]
            .impostor
            .clone()
            .expect("recorded");
        assert_eq!(
            (impostor.attempts, impostor.peer.as_str()),
            (1, "10.0.0.2:6000")
        );
        // The first agent gone (its way back closed) before its stream's end is seen: admitted,
        // and the record of that host's attempts is dropped (it holds the node alone now).
        drop(first_rx);
        let (third, _third_rx) = mpsc::channel(1);
        assert_eq!(
            hello_from(&mut store, 3, third, "10.0.0.2:6001", 1000),
            Ok(())
        );
        assert!(store.is_live("demo", "node1", 3));
        assert!(store.nodes["demo"]["node1"].impostor.is_none());
    }

    #[test]
    fn an_agent_reconnecting_before_its_old_stream_ends_replaces_it() {
        let mut store = store();
        let (first, mut first_rx) = mpsc::channel(1);
        assert_eq!(
            hello_from(&mut store, 1, first, "10.0.0.1:5000", 10),
            Ok(())
        );
        empty_batch(&mut store, 1, 10_000);
        // Same host, new port (a NAT or network drop the collector has not noticed yet).
        let (second, _second_rx) = mpsc::channel(1);
        assert_eq!(
            hello_from(&mut store, 2, second, "10.0.0.1:5001", 10_500),
            Ok(())
        );
        assert!(store.is_live("demo", "node1", 2));
        let told = first_rx.try_recv().expect("the old stream is told");
        assert_eq!(told.expect_err("an error").code(), tonic::Code::Aborted);
        assert!(
            store.nodes["demo"]["node1"].impostor.is_none(),
            "an ordinary reconnect"
        );
        // Another host, while the stream it replaced has been silent for three intervals: taken
        // over, and counted as one attempt (one alone raises nothing).
        let (third, _third_rx) = mpsc::channel(1);
        assert_eq!(
            hello_from(&mut store, 3, third, "10.0.0.9:7000", 14_000),
            Ok(())
        );
        assert!(store.is_live("demo", "node1", 3));
        // Two agents of one host taking turns count as attempts.
        empty_batch(&mut store, 3, 14_100);
        let (fourth, _fourth_rx) = mpsc::channel(1);
        assert_eq!(
            hello_from(&mut store, 4, fourth, "10.0.0.9:7001", 14_200),
            Ok(())
        );
        let impostor = store.nodes["demo"]["node1"]
            .impostor
            .clone()
            .expect("recorded");
        assert_eq!(impostor.attempts, 2);
    }

    #[test]
    fn a_superseded_streams_end_leaves_the_node_connected() {
        let mut store = store();
        let (first, _first_rx) = mpsc::channel(1);
        assert_eq!(
            hello_from(&mut store, 1, first, "10.0.0.1:5000", 10),
            Ok(())
        );
        let (second, _second_rx) = mpsc::channel(1);
        assert_eq!(
            hello_from(&mut store, 2, second, "10.0.0.1:5001", 20),
            Ok(())
        );
        store.apply(Command::Closed {
            stream: 1,
            cluster: "demo".into(),
            node: "node1".into(),
            at: Now::same(30),
        });
        assert!(store.nodes["demo"]["node1"].connected);
        store.apply(Command::Closed {
            stream: 2,
            cluster: "demo".into(),
            node: "node1".into(),
            at: Now::same(40),
        });
        assert!(!store.nodes["demo"]["node1"].connected);
    }
    #[test]
    fn a_node_silent_past_forget_after_is_forgotten_and_then_its_cluster() {
        let policy = Policy {
            forget_after_ms: 3_600_000,
            ..Policy::default()
        };
        let mut store = Store::new(policy, EventLog::new(1, Duration::from_secs(3600)));
        let mut live = store.events.live().subscribe();
        let (first, _first_rx) = mpsc::channel(1);
        assert_eq!(
            hello_from(&mut store, 1, first, "10.0.0.1:5000", 10),
            Ok(())
        );
        store.evaluate_all(Now::same(20));
        assert!(store.published.contains_key("demo"));
        // Connected: never forgotten, however old its last batch.
        store.evaluate_all(Now::same(10_000_000));
        assert!(store.nodes["demo"].contains_key("node1"));
        empty_batch(&mut store, 1, 10_000_000);
        store.apply(Command::Closed {
            stream: 1,
            cluster: "demo".into(),
            node: "node1".into(),
            at: Now::same(10_000_001),
        });
        // Gone, but not yet silent for an hour (looked for once a minute).
        store.evaluate_all(Now::same(10_000_000 + 3_600_000 - 1_000));
        assert!(store.nodes["demo"].contains_key("node1"));
        store.evaluate_all(Now::same(10_000_000 + 3_600_000 + 61_000));
        assert!(
            !store.nodes.contains_key("demo"),
            "the cluster goes with its last node"
        );
        assert!(!store.published.contains_key("demo"));
        let mut kinds = Vec::new();
        while let Ok(e) = live.try_recv() {
            kinds.extend(e["kind"].as_str().map(str::to_string));
        }
        assert!(kinds.iter().any(|k| k == "node_forgotten"), "{kinds:?}");
    }

    #[test]
    fn an_admin_forgets_only_a_node_without_a_stream() {
        let mut store = store();
        let forget = |store: &mut Store, node: &str| {
            let (reply, mut answer) = tokio::sync::oneshot::channel();
            store.apply(Command::Forget {
                cluster: "demo".into(),
                node: node.into(),
                reply,
            });
            // As the task's loop does, once it has published.
            for reply in store.forgotten.drain(..) {
                let _ = reply.send(Ok(()));
            }
            answer.try_recv().expect("answered at once")
        };
        let (first, _first_rx) = mpsc::channel(1);
        assert_eq!(
            hello_from(&mut store, 1, first, "10.0.0.1:5000", 10),
            Ok(())
        );
        assert_eq!(forget(&mut store, "node1"), Err(Unforgettable::Connected));
        assert_eq!(forget(&mut store, "node9"), Err(Unforgettable::Unknown));
        store.apply(Command::Closed {
            stream: 1,
            cluster: "demo".into(),
            node: "node1".into(),
            at: Now::same(20),
        });
        assert_eq!(forget(&mut store, "node1"), Ok(()));
        assert!(!store.nodes.contains_key("demo"));
    }
    #[test]
    fn a_journals_implausible_times_become_its_arrival_time() {
        let mut store = store();
        let mut live = store.events.live().subscribe();
        let (first, _first_rx) = mpsc::channel(1);
        assert_eq!(
            hello_from(&mut store, 1, first, "10.0.0.1:5000", 10),
            Ok(())
        );
        let arrival = 1_796_000_000_000;
        let transition = |at_unix_ms| v1::Transition {
            probe: v1::ProbeId::HaproxyProcess as i32,
            from: v1::Status::Ok as i32,
            to: v1::Status::Critical as i32,
            message: "x".into(),
            at_unix_ms,
            ..Default::default()
        };
        store.apply(Command::Journal {
            stream: 1,
            cluster: "demo".into(),
            node: "node1".into(),
            journal: v1::Journal {
                transitions: vec![
                    transition(i64::MAX),
                    transition(0),
                    transition(arrival - 60_000),
                ],
                ..Default::default()
            },
            at: Now::same(arrival),
        });
        let mut times = Vec::new();
        while let Ok(e) = live.try_recv() {
            if e["kind"] == "probe_transition" {
                times.extend(e["at_ms"].as_i64());
            }
        }
        assert_eq!(times, [arrival, arrival, arrival - 60_000]);
    }
}
