//! Collector scale: N simulated agents (clusters of three DB nodes and an HAProxy host, replaying
//! batches recorded on the lab, `bench/fixtures/lab-batches.json`), each on its own HTTP/2
//! connection, one batch per second over real gRPC on loopback. For each N, against the real
//! `vigie-collector` and against the bare tonic server (`vigie-bench sink`): batches acknowledged,
//! server CPU and memory; for the collector also the verdict refresh delay (from a batch being
//! sent to the API showing it, traced on random nodes) and the API's latency under that load.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::{Mutex, Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use vigie_collector::state::now_ms;
use vigie_proto::ProbeId;
use vigie_proto::v1::ingest_client::IngestClient;
use vigie_proto::v1::{self, AgentMessage, agent_message::Msg, collector_message};

use crate::report::{Table, commit, machine, publish_at, quantile, repo_root};
use crate::{child, procfs};

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// The collector to measure (default: `vigie-collector` beside this binary; a relative path is
    /// taken from the repository's root).
    #[arg(long)]
    collector: Option<PathBuf>,
    /// Fleet sizes to try, in order; stops after the first the collector does not sustain.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1000,2500,5000,7500,10000"
    )]
    agents: Vec<usize>,
    /// Measurement window per fleet size (after every agent is connected and a warm-up).
    #[arg(long, default_value = "45s", value_parser = humantime::parse_duration)]
    window: Duration,
    #[arg(long, default_value = "bench/fixtures/lab-batches.json")]
    fixture: PathBuf,
    #[arg(long, default_value = "127.0.0.1:9711")]
    grpc: SocketAddr,
    #[arg(long, default_value = "127.0.0.1:9710")]
    http: SocketAddr,
    /// Concurrent tracers measuring the refresh delay (each polls the API every 50 ms).
    #[arg(long, default_value_t = 8)]
    tracers: usize,
    /// Profile the collector with `perf record` into this file (for development).
    #[arg(long)]
    perf: Option<PathBuf>,
    /// Also write the figures as JSON to this file (what `vigie-bench collector-compare` reads).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Node roles of a simulated cluster, in fixture names.
const ROLES: [&str; 4] = ["node1", "node2", "node3", "haproxy"];

/// Recorded batches per role, as wire results.
struct Fixture {
    results: Vec<Arc<Vec<v1::ProbeResult>>>,
    components: Vec<Vec<String>>,
}

impl Fixture {
    fn load(path: &Path) -> Fixture {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let doc: Value = serde_json::from_str(&text).expect("fixture is JSON");
        let mut results = Vec::new();
        let mut components = Vec::new();
        for role in ROLES {
            let list = doc["results"][role].as_array().cloned().unwrap_or_default();
            assert!(!list.is_empty(), "fixture has no results for {role}");
            results.push(Arc::new(
                list.iter()
                    .map(|r| {
                        let name = r["id"].as_str().unwrap_or_default();
                        let probe = ProbeId::from_name(name)
                            .unwrap_or_else(|| panic!("fixture: no probe {name}"));
                        v1::ProbeResult {
                            probe: probe as i32,
                            status: serde_json::from_value::<v1::Status>(r["status"].clone())
                                .unwrap_or(v1::Status::Unknown)
                                as i32,
                            message: r["message"].as_str().unwrap_or_default().to_string(),
                            started_unix_ms: 0,
                            duration_us: r["duration_us"].as_u64().unwrap_or(0),
                            facts: probe
                                .facts_from_json(r["facts"].clone())
                                .unwrap_or_else(|e| panic!("fixture: {name} facts: {e}")),
                            ..Default::default()
                        }
                    })
                    .collect(),
            ));
            components.push(
                doc["components"][role]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c.as_str().map(String::from))
                    .collect(),
            );
        }
        Fixture {
            results,
            components,
        }
    }
}

fn cluster_of(i: usize) -> String {
    format!("bench-{:05}", i / ROLES.len())
}

#[derive(Debug, Default)]
struct FleetStats {
    connected: AtomicUsize,
    connect_failures: AtomicU64,
    sent: AtomicU64,
    acked: AtomicU64,
    queue_full: AtomicU64,
}

/// N simulated agents.
struct Fleet {
    stats: Arc<FleetStats>,
    /// When each agent last sent a batch (unix ms; the batch's `started_unix_ms`).
    last_sent: Arc<Vec<AtomicI64>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Fleet {
    fn start(n: usize, url: String, fixture: &Fixture) -> Fleet {
        let stats = Arc::new(FleetStats::default());
        let last_sent: Arc<Vec<AtomicI64>> = Arc::new((0..n).map(|_| AtomicI64::new(0)).collect());
        let stop = Arc::new(AtomicBool::new(false));
        let connecting = Arc::new(Semaphore::new(128));
        let mut tasks = Vec::with_capacity(n);
        for i in 0..n {
            let role = i % ROLES.len();
            let hello = v1::Hello {
                node: ROLES[role].to_string(),
                cluster: cluster_of(i),
                components: fixture.components[role].clone(),
                agent_version: "bench".into(),
                interval_ms: 1000,
            };
            tasks.push(tokio::spawn(agent(
                i,
                url.clone(),
                hello,
                fixture.results[role].clone(),
                stats.clone(),
                last_sent.clone(),
                stop.clone(),
                connecting.clone(),
            )));
        }
        Fleet {
            stats,
            last_sent,
            stop,
            tasks,
        }
    }

    async fn wait_connected(&self, n: usize, deadline: Duration) -> bool {
        let end = Instant::now() + deadline;
        while self.stats.connected.load(Ordering::Relaxed) < n {
            if Instant::now() > end {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        true
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn agent(
    i: usize,
    url: String,
    hello: v1::Hello,
    results: Arc<Vec<v1::ProbeResult>>,
    stats: Arc<FleetStats>,
    last_sent: Arc<Vec<AtomicI64>>,
    stop: Arc<AtomicBool>,
    connecting: Arc<Semaphore>,
) {
    let permit = connecting.acquire().await;
    let mut attempt = 0;
    let channel = loop {
        let endpoint = match tonic::transport::Endpoint::from_shared(url.clone()) {
            Ok(e) => e
                .http2_keep_alive_interval(Duration::from_secs(5))
                .keep_alive_timeout(Duration::from_secs(5))
                .keep_alive_while_idle(true)
                .tcp_nodelay(true),
            Err(_) => return,
        };
        match endpoint.connect().await {
            Ok(c) => break c,
            Err(_) if attempt < 5 => {
                attempt += 1;
                stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(_) => return,
        }
    };
    let (tx, rx) = mpsc::channel::<AgentMessage>(4);
    let _ = tx
        .send(AgentMessage {
            msg: Some(Msg::Hello(hello)),
        })
        .await;
    let mut client = IngestClient::new(channel);
    let Ok(response) = client.stream(ReceiverStream::new(rx)).await else {
        stats.connect_failures.fetch_add(1, Ordering::Relaxed);
        return;
    };
    drop(permit);
    stats.connected.fetch_add(1, Ordering::Relaxed);
    let mut inbound = response.into_inner();
    let acks = stats.clone();
    let reader = tokio::spawn(async move {
        while let Ok(Some(m)) = inbound.message().await {
            if let Some(collector_message::Msg::Ack(_)) = m.msg {
                acks.acked.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    // Agents start their cycles at random phases, as real ones do.
    let phase = Duration::from_millis(rand::rng().random_range(0..1000));
    tokio::time::sleep(phase).await;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        seq += 1;
        let at = now_ms();
        let mut batch = v1::ResultBatch {
            seq,
            results: results.as_ref().clone(),
            dropped: 0,
        };
        for r in &mut batch.results {
            r.started_unix_ms = at;
        }
        last_sent[i].store(at, Ordering::Relaxed);
        stats.sent.fetch_add(1, Ordering::Relaxed);
        if tx
            .try_send(AgentMessage {
                msg: Some(Msg::Batch(batch)),
            })
            .is_err()
        {
            stats.queue_full.fetch_add(1, Ordering::Relaxed);
        }
    }
    reader.abort();
}

/// A server process under test.
struct Server {
    child: Child,
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    fn collector(opts: &Options) -> Server {
        let bin = opts
            .collector
            .as_deref()
            .expect("the collector's path is resolved in run");
        let tmp = tempfile::tempdir().expect("a temporary directory");
        let dir = tmp.path();
        let config = dir.join("collector.toml");
        std::fs::write(
            &config,
            format!(
                "grpc_listen = \"{}\"\nhttp_listen = \"{}\"\nplaintext = true\n\n[api]\nauth = \"none\"\n\n[events]\npath = \"{}\"\n",
                opts.grpc,
                opts.http,
                dir.join("events.db").display()
            ),
        )
        .expect("write the collector config");
        let mut cmd = match &opts.perf {
            Some(out) => {
                let mut c = Command::new("perf");
                c.args(["record", "-F", "999", "-g", "-o"])
                    .arg(out)
                    .arg("--")
                    .arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let child = child::spawn(cmd.arg("--config").arg(&config), &bin.display().to_string());
        Server {
            child,
            _dir: Some(tmp),
        }
    }

    fn bare(opts: &Options) -> Server {
        let me = std::env::current_exe().expect("our own path");
        let child = child::spawn(
            Command::new(me).args(["sink", "--listen", &opts.grpc.to_string()]),
            "the bare server",
        );
        Server { child, _dir: None }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn wait_listening(&self, addr: SocketAddr) {
        let end = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(Instant::now() < end, "nothing listens on {addr}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn stop(self) {
        child::stop(self.child);
    }
}

/// Latency samples, seconds.
#[derive(Debug, Default)]
struct Samples {
    refresh: Vec<f64>,
    refresh_timeouts: usize,
    api_cluster: Vec<f64>,
    api_list: Vec<f64>,
    api_errors: usize,
}

/// Follows random agents: waits for their next batch, then polls the cluster's API document
/// until the node shows it. The delay is from the batch leaving the agent to the API showing it.
async fn tracer(
    http: reqwest::Client,
    base: String,
    n: usize,
    last_sent: Arc<Vec<AtomicI64>>,
    until: Instant,
    samples: Arc<Mutex<Samples>>,
) {
    while Instant::now() < until {
        let i = rand::rng().random_range(0..n);
        let before = last_sent[i].load(Ordering::Relaxed);
        while last_sent[i].load(Ordering::Relaxed) == before {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let sent = last_sent[i].load(Ordering::Relaxed);
        let url = format!("{base}/api/v1/clusters/{}", cluster_of(i));
        let node = ROLES[i % ROLES.len()];
        let give_up = Instant::now() + Duration::from_secs(10);
        loop {
            let t = Instant::now();
            let doc = match http.get(&url).send().await {
                Ok(r) if r.status().is_success() => r.json::<Value>().await.ok(),
                _ => None,
            };
            let took = t.elapsed().as_secs_f64();
            let mut s = samples.lock().await;
            match doc {
                Some(doc) => {
                    s.api_cluster.push(took);
                    let shown = doc["nodes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|x| x["name"] == node)
                        .and_then(|x| x["results"]["system.memory"]["started_ms"].as_i64())
                        .unwrap_or(0);
                    if shown >= sent {
                        s.refresh.push((now_ms() - sent) as f64 / 1000.0);
                        break;
                    }
                }
                None => s.api_errors += 1,
            }
            if Instant::now() > give_up {
                s.refresh_timeouts += 1;
                break;
            }
            drop(s);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Reads the whole cluster list once a second.
async fn lister(http: reqwest::Client, base: String, until: Instant, samples: Arc<Mutex<Samples>>) {
    while Instant::now() < until {
        let t = Instant::now();
        let ok = match http.get(format!("{base}/api/v1/clusters")).send().await {
            Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
            _ => false,
        };
        let took = t.elapsed().as_secs_f64();
        {
            let mut s = samples.lock().await;
            if ok {
                s.api_list.push(took);
            } else {
                s.api_errors += 1;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// What one fleet size did to one server.
#[derive(Debug)]
struct Step {
    agents: usize,
    connected: usize,
    /// Batches sent during the window.
    sent: u64,
    /// Acknowledgements received during the window.
    acked: u64,
    /// Batches sent since the start and never acknowledged, a second after the window.
    backlog: u64,
    queue_full: u64,
    server_cpu_pct: f64,
    server_rss_kib: u64,
    server_idle_rss_kib: u64,
    generator_cpu_pct: f64,
    samples: Option<Samples>,
}

impl Step {
    /// Keeping up: every agent connected, and less than a second of batches left unacknowledged.
    fn sustained(&self) -> bool {
        let acked = self.connected == self.agents && self.backlog < self.agents as u64;
        match &self.samples {
            Some(s) => {
                acked
                    && s.refresh_timeouts == 0
                    && quantile(&s.refresh, 0.99).is_some_and(|p| p < 1.0)
            }
            None => acked,
        }
    }

    fn cpu_per_batch_us(&self, window: Duration) -> f64 {
        self.server_cpu_pct / 100.0 * window.as_secs_f64() * 1e6 / (self.acked.max(1)) as f64
    }
}

async fn step(opts: &Options, fixture: &Fixture, n: usize, collector: bool) -> Step {
    let server = if collector {
        Server::collector(opts)
    } else {
        Server::bare(opts)
    };
    server.wait_listening(opts.grpc).await;
    let idle_rss = procfs::status_kib(server.pid(), "VmRSS").unwrap_or(0);
    let fleet = Fleet::start(n, format!("http://{}", opts.grpc), fixture);
    let all = fleet
        .wait_connected(
            n,
            Duration::from_secs(60) + Duration::from_millis(n as u64 * 20),
        )
        .await;
    if !all {
        eprintln!(
            "collector-scale: only {} of {n} agents connected",
            fleet.stats.connected.load(Ordering::Relaxed)
        );
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let me = std::process::id();
    let (c0, g0) = (
        procfs::cpu_s(server.pid()).unwrap_or(0.0),
        procfs::cpu_s(me).unwrap_or(0.0),
    );
    let (sent0, acked0) = (
        fleet.stats.sent.load(Ordering::Relaxed),
        fleet.stats.acked.load(Ordering::Relaxed),
    );
    let full0 = fleet.stats.queue_full.load(Ordering::Relaxed);
    let t0 = Instant::now();
    let until = t0 + opts.window;
    let samples = if collector {
        let samples = Arc::new(Mutex::new(Samples::default()));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("client");
        let base = format!("http://{}", opts.http);
        let mut tasks = Vec::new();
        for _ in 0..opts.tracers {
            tasks.push(tokio::spawn(tracer(
                http.clone(),
                base.clone(),
                n,
                fleet.last_sent.clone(),
                until,
                samples.clone(),
            )));
        }
        tasks.push(tokio::spawn(lister(
            http.clone(),
            base,
            until,
            samples.clone(),
        )));
        for t in tasks {
            let _ = t.await;
        }
        Some(std::mem::take(&mut *samples.lock().await))
    } else {
        tokio::time::sleep_until(until.into()).await;
        None
    };
    let sent1 = fleet.stats.sent.load(Ordering::Relaxed);
    let acked1 = fleet.stats.acked.load(Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    let (c1, g1) = (
        procfs::cpu_s(server.pid()).unwrap_or(0.0),
        procfs::cpu_s(me).unwrap_or(0.0),
    );
    // Batches sent in the last second may still be in flight: the backlog is read a second later.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let acked_late = fleet.stats.acked.load(Ordering::Relaxed);
    let backlog = fleet
        .stats
        .sent
        .load(Ordering::Relaxed)
        .saturating_sub(acked_late + fleet.stats.queue_full.load(Ordering::Relaxed));
    let rss = procfs::status_kib(server.pid(), "VmRSS").unwrap_or(0);
    let connected = fleet.stats.connected.load(Ordering::Relaxed);
    let full1 = fleet.stats.queue_full.load(Ordering::Relaxed);
    fleet.stop().await;
    server.stop();
    Step {
        agents: n,
        connected,
        sent: sent1 - sent0,
        acked: acked1 - acked0,
        backlog,
        queue_full: full1 - full0,
        server_cpu_pct: (c1 - c0) / secs * 100.0,
        server_rss_kib: rss,
        server_idle_rss_kib: idle_rss,
        generator_cpu_pct: (g1 - g0) / secs * 100.0,
        samples,
    }
}

fn q_ms(v: &[f64], q: f64) -> String {
    quantile(v, q).map_or("-".into(), |x| format!("{:.0} ms", x * 1e3))
}

pub async fn run(mut opts: Options) {
    let root = repo_root();
    // Before `publish` rewrites the doc (which would make the tree dirty).
    let measured = commit();
    let collector = opts.collector.take().unwrap_or_else(|| {
        let me = std::env::current_exe().expect("our own path");
        me.with_file_name("vigie-collector")
    });
    opts.collector = Some(collector);
    for p in opts.collector.iter_mut().chain([&mut opts.fixture]) {
        if p.is_relative() {
            *p = root.join(&*p);
        }
    }
    let fixture = Fixture::load(&opts.fixture);
    let mut collector_steps = Vec::new();
    let mut bare_steps = Vec::new();
    for &n in &opts.agents {
        eprintln!("collector-scale: {n} agents → vigie-collector");
        let c = step(&opts, &fixture, n, true).await;
        eprintln!("collector-scale: {n} agents → bare tonic server");
        let b = step(&opts, &fixture, n, false).await;
        let ok = c.sustained();
        eprintln!(
            "collector-scale: {n}: collector {} ({:.0} % CPU, backlog {}), bare {:.0} % CPU",
            if ok { "sustained" } else { "NOT sustained" },
            c.server_cpu_pct,
            c.backlog,
            b.server_cpu_pct
        );
        collector_steps.push(c);
        bare_steps.push(b);
        if !ok {
            break;
        }
    }
    let largest = collector_steps
        .iter()
        .filter(|s| s.sustained())
        .map(|s| s.agents)
        .max();
    let mut t = Table::new(&[
        "agents",
        "sustained",
        "batches sent / acked (backlog)",
        "refresh delay p50 / p99 / max",
        "collector CPU (% of a core)",
        "bare tonic CPU",
        "CPU / batch collector vs bare",
        "collector RSS (per agent)",
        "bare RSS",
        "API cluster p50 / p99",
        "API list p50 / p99",
        "load generator CPU",
    ]);
    for (c, b) in collector_steps.iter().zip(&bare_steps) {
        let s = c.samples.as_ref();
        let refresh = s.map(|s| s.refresh.as_slice()).unwrap_or_default();
        let cpu_c = c.cpu_per_batch_us(opts.window);
        let cpu_b = b.cpu_per_batch_us(opts.window);
        t.row(&[
            c.agents.to_string(),
            if c.sustained() { "yes" } else { "**no**" }.to_string(),
            format!("{} / {} ({})", c.sent, c.acked, c.backlog + c.queue_full),
            format!(
                "{} / {} / {} ({} samples, {} timeouts)",
                q_ms(refresh, 0.5),
                q_ms(refresh, 0.99),
                q_ms(refresh, 1.0),
                refresh.len(),
                s.map_or(0, |s| s.refresh_timeouts)
            ),
            format!("{:.0} %", c.server_cpu_pct),
            format!("{:.0} %", b.server_cpu_pct),
            format!(
                "{cpu_c:.0} µs vs {cpu_b:.0} µs (× {:.1})",
                cpu_c / cpu_b.max(1e-9)
            ),
            format!(
                "{:.0} MiB ({:.1} KiB)",
                c.server_rss_kib as f64 / 1024.0,
                c.server_rss_kib.saturating_sub(c.server_idle_rss_kib) as f64
                    / c.agents.max(1) as f64
            ),
            format!("{:.0} MiB", b.server_rss_kib as f64 / 1024.0),
            s.map_or("-".into(), |s| {
                format!(
                    "{} / {}",
                    q_ms(&s.api_cluster, 0.5),
                    q_ms(&s.api_cluster, 0.99)
                )
            }),
            s.map_or("-".into(), |s| {
                format!("{} / {}", q_ms(&s.api_list, 0.5), q_ms(&s.api_list, 0.99))
            }),
            format!("{:.0} %", c.generator_cpu_pct),
        ]);
    }
    let body = format!(
        "{}\n\nLargest fleet sustained: **{}** agents at one batch per second (all connected, less than \
         a second of batches left unacknowledged, refresh delay p99 under 1 s). Each simulated agent has its own \
         HTTP/2 connection and replays a batch recorded on the lab (18 probes on DB nodes, 7 on the \
         HAProxy host, ~{} KiB per batch on the wire), clusters of 3 DB nodes + 1 HAProxy host. Refresh delay: \
         from a batch leaving a random agent to the collector's API showing it ({} tracers polling \
         `/api/v1/clusters/{{scope}}` every 50 ms); API list: `/api/v1/clusters` once a second. \
         Window {:.0} s per step. The load generator runs on the same 2 cores: its CPU is taken from \
         the servers'.",
        t.render(),
        largest.map_or("none".to_string(), |n| n.to_string()),
        fixture
            .results
            .iter()
            .map(|r| r.iter().map(prost::Message::encoded_len).sum::<usize>())
            .max()
            .unwrap_or(0)
            / 1024,
        opts.tracers,
        opts.window.as_secs_f64()
    );
    publish_at(
        "collector-scale",
        "Collector scale",
        "bench/collector-scale.sh",
        &measured,
        &body,
    );
    if let Some(out) = &opts.out {
        let doc = figures_json(&measured, opts.window, &collector_steps, &bare_steps);
        let text = serde_json::to_string_pretty(&doc).expect("JSON of numbers and strings");
        std::fs::write(out, text + "\n").unwrap_or_else(|e| panic!("write {}: {e}", out.display()));
        eprintln!("collector-scale: wrote {}", out.display());
    }
}

/// The figures of a run as JSON, for `--out`: what `vigie-bench collector-compare` reads
/// (`commit`, `window_s`, and per step `agents`, `sustained`, `collector` / `bare`
/// `cpu_per_batch_us`), and the rest of the table for whoever else wants it.
fn figures_json(commit: &str, window: Duration, collector: &[Step], bare: &[Step]) -> Value {
    let quantiles = |v: &[f64]| json!({"p50": quantile(v, 0.5), "p99": quantile(v, 0.99), "max": quantile(v, 1.0)});
    let steps: Vec<Value> = collector
        .iter()
        .zip(bare)
        .map(|(c, b)| {
            let s = c.samples.as_ref();
            let refresh = s.map(|s| s.refresh.as_slice()).unwrap_or_default();
            json!({
                "agents": c.agents,
                "sustained": c.sustained(),
                "connected": c.connected,
                "sent": c.sent,
                "acked": c.acked,
                "backlog": c.backlog + c.queue_full,
                "refresh_s": quantiles(refresh),
                "refresh_samples": refresh.len(),
                "refresh_timeouts": s.map_or(0, |s| s.refresh_timeouts),
                "api_cluster_s": quantiles(s.map(|s| s.api_cluster.as_slice()).unwrap_or_default()),
                "api_list_s": quantiles(s.map(|s| s.api_list.as_slice()).unwrap_or_default()),
                "generator_cpu_pct": c.generator_cpu_pct,
                "collector": {
                    "cpu_pct": c.server_cpu_pct,
                    "cpu_per_batch_us": c.cpu_per_batch_us(window),
                    "rss_kib": c.server_rss_kib,
                    "idle_rss_kib": c.server_idle_rss_kib,
                },
                "bare": {
                    "cpu_pct": b.server_cpu_pct,
                    "cpu_per_batch_us": b.cpu_per_batch_us(window),
                    "acked": b.acked,
                    "rss_kib": b.server_rss_kib,
                },
            })
        })
        .collect();
    json!({
        "benchmark": "collector-scale",
        "commit": commit,
        "machine": machine(),
        "window_s": window.as_secs_f64(),
        "largest_sustained": collector.iter().filter(|s| s.sustained()).map(|s| s.agents).max(),
        "steps": steps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(cpu_pct: f64, samples: Option<Samples>) -> Step {
        Step {
            agents: 40,
            connected: 40,
            sent: 200,
            acked: 200,
            backlog: 0,
            queue_full: 0,
            server_cpu_pct: cpu_pct,
            server_rss_kib: 4096,
            server_idle_rss_kib: 2048,
            generator_cpu_pct: 3.0,
            samples,
        }
    }

    #[test]
    fn the_json_of_out_is_what_collector_compare_reads() {
        let samples = Samples {
            refresh: vec![0.2, 0.4],
            ..Samples::default()
        };
        let (c, b) = (step(50.0, Some(samples)), step(25.0, None));
        let doc = figures_json("abc", Duration::from_secs(5), &[c], &[b]);
        let run = crate::compare::Run::from_json(&doc.to_string()).expect("the JSON is read");
        assert_eq!(run.commit, "abc");
        assert_eq!(run.window_s, Some(5.0));
        // Half a core over 5 s is 2.5 s of CPU, over 200 batches.
        assert_eq!(
            run.steps,
            vec![crate::compare::StepFigures {
                agents: 40,
                sustained: true,
                collector_us: 12500.0,
                bare_us: 6250.0,
            }]
        );
        assert_eq!(doc["largest_sustained"], 40);
    }
}
