//! Cost of one supervision cycle of a DB node + the HAProxy host, side by side on the running lab:
//! vigie-agent (steady state at 1 s and 5 s, and cold `--once` runs), the procedure as Nagios
//! plugins (`bench/procedure/plugins.sh`), and check_patroni for the Patroni part
//! (`bench/procedure/check_patroni.sh`). For each: CPU and wall time per cycle, peak memory, the
//! CPU the monitored daemons spent answering (minus what they spend idle), the PostgreSQL sessions
//! opened and the processes forked per cycle.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vigie_tests::{Lab, NODES, Role, Target, lab_dir, repo_root};

use crate::report::{Table, publish};
use crate::sink;
use crate::{child, procfs};

#[derive(Debug, Clone)]
pub struct Options {
    pub agent_bin: PathBuf,
    pub check_patroni: PathBuf,
    /// Length of each steady-state window of the agent (and of the idle baseline).
    pub window: Duration,
    /// Cycles of the plugin procedures and cold agent runs.
    pub cycles: u32,
    pub sink_addr: std::net::SocketAddr,
}

/// The monitored daemons, by kind.
#[derive(Debug)]
struct Daemons {
    pids: Vec<(&'static str, u32)>,
}

impl Daemons {
    fn find() -> Daemons {
        let run = lab_dir().join("run");
        let mut pids = Vec::new();
        for n in NODES {
            let files = [
                ("etcd", run.join(format!("etcd{n}.pid"))),
                ("patroni", run.join(format!("patroni{n}.pid"))),
                (
                    "postgres",
                    lab_dir().join(format!("node{n}/data/postmaster.pid")),
                ),
            ];
            for (kind, f) in files {
                if let Some(p) = procfs::pid_in(&f) {
                    pids.push((kind, p));
                }
            }
        }
        if let Some(p) = procfs::pid_in(&run.join("haproxy.pid")) {
            pids.push(("haproxy", p));
        }
        Daemons { pids }
    }

    /// CPU seconds so far per kind (postmaster and Patroni with their children).
    fn cpu(&self) -> BTreeMap<&'static str, f64> {
        let mut out = BTreeMap::new();
        for (kind, pid) in &self.pids {
            let s = match *kind {
                "postgres" | "patroni" => procfs::tree_cpu_s(*pid),
                _ => procfs::cpu_s(*pid),
            };
            *out.entry(*kind).or_default() += s.unwrap_or(0.0);
        }
        out
    }
}

/// Counters over the whole lab at one instant.
#[derive(Debug, Clone)]
struct Snapshot {
    at: Instant,
    daemons: BTreeMap<&'static str, f64>,
    forks: u64,
    sessions: i64,
}

/// One superuser connection per node, opened once (so the bench itself opens no session while
/// measuring), reading `pg_stat_database.sessions`.
struct Sessions {
    clients: Vec<tokio_postgres::Client>,
}

impl Sessions {
    async fn open() -> Result<Sessions, String> {
        let mut clients = Vec::new();
        for n in NODES {
            clients.push(
                vigie_tests::connect(Target::Node(n), Role::Superuser, Duration::from_secs(5))
                    .await?,
            );
        }
        Ok(Sessions { clients })
    }

    /// CPU (ns) of the monitoring role's backends on node `n`: the agent's one session.
    async fn monitor_backends_ns(&self, n: u8) -> u64 {
        let Some(c) = self.clients.get(usize::from(n) - 1) else {
            return 0;
        };
        let Ok(rows) = c
            .query(
                "select pid from pg_stat_activity where usename = $1",
                &[&vigie_tests::MONITOR_USER],
            )
            .await
        else {
            return 0;
        };
        rows.iter()
            .filter_map(|r| u32::try_from(r.get::<_, i32>(0)).ok())
            .filter_map(|pid| procfs::threads_cpu_ns(pid).map(|(ns, _)| ns))
            .sum()
    }

    async fn total(&self) -> i64 {
        let mut total = 0;
        for c in &self.clients {
            let _ = c.simple_query("select pg_stat_clear_snapshot()").await;
            if let Ok(row) = c
                .query_one(
                    "select coalesce(sum(sessions), 0)::bigint from pg_stat_database",
                    &[],
                )
                .await
            {
                total += row.get::<_, i64>(0);
            }
        }
        total
    }
}

struct Probe<'a> {
    daemons: &'a Daemons,
    sessions: &'a Sessions,
}

impl Probe<'_> {
    async fn snapshot(&self) -> Snapshot {
        let sessions = self.sessions.total().await;
        Snapshot {
            at: Instant::now(),
            daemons: self.daemons.cpu(),
            forks: procfs::forks_since_boot(),
            sessions,
        }
    }
}

/// What a window cost the daemons beyond their idle rate, and what it opened and forked.
#[derive(Debug, Default, Clone)]
struct Extra {
    daemons: BTreeMap<&'static str, f64>,
    forks: f64,
    sessions: f64,
}

#[derive(Debug, Clone)]
struct IdleRate {
    secs: f64,
    daemons: BTreeMap<&'static str, f64>,
    forks: f64,
    sessions: f64,
}

fn extra(a: &Snapshot, b: &Snapshot, idle: &IdleRate) -> Extra {
    let secs = b.at.duration_since(a.at).as_secs_f64();
    let daemons = b
        .daemons
        .iter()
        .map(|(k, v)| {
            let used = v - a.daemons.get(k).copied().unwrap_or(0.0);
            let idle_rate = idle.daemons.get(k).copied().unwrap_or(0.0) / idle.secs;
            (*k, used - idle_rate * secs)
        })
        .collect();
    Extra {
        daemons,
        forks: (b.forks - a.forks) as f64 - idle.forks / idle.secs * secs,
        sessions: (b.sessions - a.sessions) as f64 - idle.sessions / idle.secs * secs,
    }
}

/// One row of the comparison.
#[derive(Debug, Clone)]
struct Row {
    method: String,
    cycles: f64,
    cpu_per_cycle: Duration,
    wall_per_cycle: Duration,
    peak_rss_kib: u64,
    extra: Extra,
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// A running vigie-agent.
struct AgentProc {
    child: Child,
    node: String,
}

impl AgentProc {
    /// Starts the agent of `config` at `interval`, with the timeouts the scenario suite uses
    /// (probe timeout 0.8 × interval, statement timeout 0.5 × interval on DB nodes).
    fn start(opts: &Options, config: &Path, node: &str, interval: Duration) -> AgentProc {
        let fmt = |d: Duration| humantime::format_duration(d).to_string();
        let mut cmd = Command::new(&opts.agent_bin);
        if node != "haproxy" {
            cmd.env(
                "VIGIE_AGENT__POSTGRES__STATEMENT_TIMEOUT",
                fmt(interval.mul_f64(0.5)),
            );
        }
        cmd.arg("--config")
            .arg(config)
            .env("VIGIE_AGENT__INTERVAL", fmt(interval))
            .env("VIGIE_AGENT__TIMEOUT", fmt(interval.mul_f64(0.8)))
            .env(
                "VIGIE_AGENT__COLLECTOR__URL",
                format!("http://{}", opts.sink_addr),
            );
        let child = child::spawn(&mut cmd, &opts.agent_bin.display().to_string());
        AgentProc {
            child,
            node: node.to_string(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU so far: each thread's precise time, and the tick-based total.
    fn cpu(&self) -> (Option<std::collections::BTreeMap<u32, u64>>, Option<f64>) {
        (procfs::thread_cpu_ns(self.pid()), procfs::cpu_s(self.pid()))
    }

    fn stop(self) {
        child::stop(self.child);
    }
}

/// CPU between two readings: nanosecond thread sums when every thread of the first is still
/// there (threads started between the two have all their time inside), ticks otherwise.
fn cpu_between(
    a: (Option<std::collections::BTreeMap<u32, u64>>, Option<f64>),
    b: (Option<std::collections::BTreeMap<u32, u64>>, Option<f64>),
) -> Duration {
    match (a.0, b.0) {
        (Some(ta), Some(tb))
            if ta
                .iter()
                .all(|(tid, ns)| tb.get(tid).is_some_and(|n| n >= ns)) =>
        {
            Duration::from_nanos(tb.values().sum::<u64>() - ta.values().sum::<u64>())
        }
        _ => {
            eprintln!("agent-cost: a thread exited during the window: CPU from clock ticks");
            Duration::from_secs_f64((b.1.unwrap_or(0.0) - a.1.unwrap_or(0.0)).max(0.0))
        }
    }
}

async fn wait_batches(sink: &sink::Sink, node: &str, at_least: u64, deadline: Duration) {
    let end = Instant::now() + deadline;
    while sink.stats(node).batches < at_least {
        assert!(
            Instant::now() < end,
            "agent {node} sent {} batches, waited for {at_least}",
            sink.stats(node).batches
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Steady state of the two agents (DB node + HAProxy host) at `interval` over `window`.
struct Steady {
    row: Row,
    interval: &'static str,
    window: Duration,
    cpu_pct: Vec<(String, f64)>,
    rss_kib: Vec<(String, u64, u64)>,
    /// CPU of the agent's PostgreSQL session (its backend) per cycle.
    backend_per_cycle: Duration,
}

async fn steady(
    opts: &Options,
    sink: &sink::Sink,
    probe: &Probe<'_>,
    idle: &IdleRate,
    node: u8,
    interval: &'static str,
) -> Steady {
    let interval_d = humantime::parse_duration(interval).unwrap_or(Duration::from_secs(1));
    let deploy = repo_root().join("deploy/lab");
    let agents = [
        AgentProc::start(
            opts,
            &deploy.join(format!("agent-node{node}.toml")),
            &format!("node{node}"),
            interval_d,
        ),
        AgentProc::start(
            opts,
            &deploy.join("agent-haproxy.toml"),
            "haproxy",
            interval_d,
        ),
    ];
    // Warm up: connections made, first cycles (and the first accept handshake) done.
    for a in &agents {
        let seen = sink.stats(&a.node).batches;
        wait_batches(
            sink,
            &a.node,
            seen + 3,
            interval_d * 6 + Duration::from_secs(20),
        )
        .await;
    }
    let before: Vec<_> = agents
        .iter()
        .map(|a| (a.cpu(), sink.stats(&a.node)))
        .collect();
    let b0 = probe.sessions.monitor_backends_ns(node).await;
    let s0 = probe.snapshot().await;
    let started = Instant::now();
    tokio::time::sleep(opts.window).await;
    let s1 = probe.snapshot().await;
    let b1 = probe.sessions.monitor_backends_ns(node).await;
    let secs = started.elapsed().as_secs_f64();
    let after: Vec<_> = agents
        .iter()
        .map(|a| (a.cpu(), sink.stats(&a.node)))
        .collect();
    let mut cpu_total = Duration::ZERO;
    let mut cycles = f64::INFINITY;
    let mut wall_us = 0.0;
    let mut cpu_pct = Vec::new();
    let mut rss_kib = Vec::new();
    for (i, a) in agents.iter().enumerate() {
        let cpu = cpu_between(before[i].0.clone(), after[i].0.clone());
        cpu_total += cpu;
        let n = (after[i].1.batches - before[i].1.batches) as f64;
        cycles = cycles.min(n);
        let w = (after[i].1.cycle_wall_us - before[i].1.cycle_wall_us) as f64 / n.max(1.0);
        wall_us = f64::max(wall_us, w);
        cpu_pct.push((a.node.clone(), cpu.as_secs_f64() / secs * 100.0));
        rss_kib.push((
            a.node.clone(),
            procfs::status_kib(a.pid(), "VmRSS").unwrap_or(0),
            procfs::status_kib(a.pid(), "VmHWM").unwrap_or(0),
        ));
    }
    for a in agents {
        a.stop();
    }
    let peak = rss_kib.iter().map(|r| r.2).max().unwrap_or(0);
    let backend_per_cycle = Duration::from_nanos(b1.saturating_sub(b0)).div_f64(cycles.max(1.0));
    Steady {
        row: Row {
            method: format!("vigie-agent, steady state at {interval} (node + HAProxy agents)"),
            cycles,
            cpu_per_cycle: cpu_total.div_f64(cycles.max(1.0)),
            wall_per_cycle: Duration::from_micros(wall_us as u64),
            peak_rss_kib: peak,
            extra: scale_extra(extra(&s0, &s1, idle), cycles),
        },
        interval,
        window: Duration::from_secs_f64(secs),
        cpu_pct,
        rss_kib,
        backend_per_cycle,
    }
}

fn scale_extra(e: Extra, cycles: f64) -> Extra {
    let c = cycles.max(1.0);
    Extra {
        daemons: e.daemons.into_iter().map(|(k, v)| (k, v / c)).collect(),
        forks: e.forks / c,
        sessions: e.sessions / c,
    }
}

/// Runs `cycle` `n` times, one per second (as a scheduler would); each cycle reports the CPU and
/// peak RSS of what it ran.
async fn repeated(
    probe: &Probe<'_>,
    idle: &IdleRate,
    method: String,
    n: u32,
    mut cycle: impl FnMut() -> Option<procfs::ChildUsage>,
) -> Row {
    let s0 = probe.snapshot().await;
    let mut wall = Duration::ZERO;
    let mut cpu = Duration::ZERO;
    let mut peak = 0;
    let mut failed = 0;
    for _ in 0..n {
        let t = Instant::now();
        match cycle() {
            Some(u) => {
                cpu += u.cpu;
                peak = peak.max(u.max_rss_kib);
            }
            None => failed += 1,
        }
        let took = t.elapsed();
        wall += took;
        if let Some(rest) = Duration::from_secs(1).checked_sub(took) {
            tokio::time::sleep(rest).await;
        }
    }
    let s1 = probe.snapshot().await;
    if failed > 0 {
        eprintln!("agent-cost: {method}: {failed} of {n} cycles did not run");
    }
    let cycles = f64::from(n);
    Row {
        method,
        cycles,
        cpu_per_cycle: cpu.div_f64(cycles),
        wall_per_cycle: wall.div_f64(cycles),
        peak_rss_kib: peak,
        extra: scale_extra(extra(&s0, &s1, idle), cycles),
    }
}

/// Runs `command` under `vigie-bench rusage`, which reports the CPU and peak RSS of that command
/// alone (its own `RUSAGE_CHILDREN`).
fn measured(command: &[&OsStr]) -> Option<procfs::ChildUsage> {
    let out = Command::new(std::env::current_exe().ok()?)
        .arg("rusage")
        .arg("--")
        .args(command)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().ok());
    Some(procfs::ChildUsage {
        cpu: Duration::from_micros(fields.next()??),
        max_rss_kib: fields.next()??,
    })
}

/// The CPU of several commands run one after the other, and the largest peak among them.
fn measured_all(commands: &[&[&OsStr]]) -> Option<procfs::ChildUsage> {
    let mut total = procfs::ChildUsage {
        cpu: Duration::ZERO,
        max_rss_kib: 0,
    };
    for c in commands {
        let u = measured(c)?;
        total.cpu += u.cpu;
        total.max_rss_kib = total.max_rss_kib.max(u.max_rss_kib);
    }
    Some(total)
}

pub async fn run(opts: Options) {
    let lab = Lab::acquire().await;
    let node = lab.leader().await.expect("the lab has a leader");
    let daemons = Daemons::find();
    let sessions = Sessions::open().await.expect("superuser connections");
    let probe = Probe {
        daemons: &daemons,
        sessions: &sessions,
    };
    let sink = sink::spawn(opts.sink_addr).await.expect("bind the sink");
    eprintln!(
        "agent-cost: leader node{node}; idle baseline {}s",
        opts.window.as_secs()
    );

    let i0 = probe.snapshot().await;
    tokio::time::sleep(opts.window).await;
    let i1 = probe.snapshot().await;
    let idle = IdleRate {
        secs: i1.at.duration_since(i0.at).as_secs_f64(),
        daemons: i1
            .daemons
            .iter()
            .map(|(k, v)| (*k, v - i0.daemons.get(k).copied().unwrap_or(0.0)))
            .collect(),
        forks: (i1.forks - i0.forks) as f64,
        sessions: (i1.sessions - i0.sessions) as f64,
    };

    let mut rows = Vec::new();
    let mut steadies = Vec::new();
    for interval in ["1s", "5s"] {
        eprintln!(
            "agent-cost: vigie-agent at {interval} for {:?}",
            opts.window
        );
        let s = steady(&opts, &sink, &probe, &idle, node, interval).await;
        rows.push(s.row.clone());
        steadies.push(s);
    }

    let deploy = repo_root().join("deploy/lab");
    let node_cfg = deploy.join(format!("agent-node{node}.toml"));
    let haproxy_cfg = deploy.join("agent-haproxy.toml");
    let agent = opts.agent_bin.as_os_str();
    let once = |cfg: &Path| -> Vec<OsString> {
        vec![agent.into(), "--once".into(), "--config".into(), cfg.into()]
    };
    let (node_once, haproxy_once) = (once(&node_cfg), once(&haproxy_cfg));
    let node_arg = OsString::from(node.to_string());
    let procedure = repo_root().join("bench/procedure");
    let plugins = procedure.join("plugins.sh");
    let check_patroni = procedure.join("check_patroni.sh");
    let methods: [(&str, Vec<Vec<&OsStr>>); 3] = [
        (
            "vigie-agent --once (cold start each cycle, node + HAProxy)",
            vec![
                node_once.iter().map(OsString::as_os_str).collect(),
                haproxy_once.iter().map(OsString::as_os_str).collect(),
            ],
        ),
        (
            "the procedure as Nagios plugins (17 processes)",
            vec![vec!["bash".as_ref(), plugins.as_os_str(), &node_arg]],
        ),
        (
            "check_patroni, Patroni part only (6 services)",
            vec![vec![
                "bash".as_ref(),
                check_patroni.as_os_str(),
                &node_arg,
                opts.check_patroni.as_os_str(),
            ]],
        ),
    ];
    for (method, commands) in methods {
        eprintln!("agent-cost: {method} × {}", opts.cycles);
        let commands: Vec<&[&OsStr]> = commands.iter().map(Vec::as_slice).collect();
        rows.push(
            repeated(&probe, &idle, method.into(), opts.cycles, || {
                measured_all(&commands)
            })
            .await,
        );
    }
    drop(lab);

    let base = rows[0].cpu_per_cycle.as_secs_f64().max(1e-9);
    let mut t = Table::new(&[
        "method",
        "cycles",
        "CPU / cycle",
        "× vigie",
        "wall / cycle",
        "peak RSS",
        "daemons' CPU / cycle (pg, patroni, etcd, haproxy)",
        "PG sessions / cycle",
        "processes forked / cycle",
    ]);
    for r in &rows {
        let d = |k: &str| r.extra.daemons.get(k).copied().unwrap_or(0.0) * 1e3;
        t.row(&[
            r.method.clone(),
            format!("{:.0}", r.cycles),
            ms(r.cpu_per_cycle),
            format!("{:.1}", r.cpu_per_cycle.as_secs_f64() / base),
            ms(r.wall_per_cycle),
            mib(r.peak_rss_kib),
            format!(
                "{:.2} ms ({:.2}, {:.2}, {:.2}, {:.2})",
                d("postgres") + d("patroni") + d("etcd") + d("haproxy"),
                d("postgres"),
                d("patroni"),
                d("etcd"),
                d("haproxy")
            ),
            format!("{:.2}", r.extra.sessions),
            format!("{:.2}", r.extra.forks),
        ]);
    }
    let mut s = Table::new(&[
        "interval",
        "window",
        "cycles",
        "CPU % of one core (node agent, HAProxy agent)",
        "RSS now / peak (node agent)",
        "RSS now / peak (HAProxy agent)",
        "its PostgreSQL session's CPU / cycle",
    ]);
    for st in &steadies {
        let rss = |i: usize| {
            st.rss_kib
                .get(i)
                .map(|r| format!("{} / {}", mib(r.1), mib(r.2)))
                .unwrap_or_default()
        };
        s.row(&[
            st.interval.to_string(),
            format!("{:.0} s", st.window.as_secs_f64()),
            format!("{:.0}", st.row.cycles),
            st.cpu_pct
                .iter()
                .map(|(_, p)| format!("{p:.3} %"))
                .collect::<Vec<_>>()
                .join(", "),
            rss(0),
            rss(1),
            format!("{:.0} µs", st.backend_per_cycle.as_secs_f64() * 1e6),
        ]);
    }
    let idle_cpu: f64 = idle.daemons.values().sum();
    let body = format!(
        "{}\n\nvigie-agent in steady state:\n\n{}\n\n\
         Lab leader node{node} + the HAProxy host. Daemons' CPU is what PostgreSQL (postmaster, \
         backends, reaped children), Patroni, etcd and HAProxy used during the run minus their idle \
         rate over a {:.0} s baseline ({:.1} % of a core for all ten daemons), per cycle; PG \
         sessions are `pg_stat_database.sessions` on the three nodes; forks are the machine's \
         `processes` counter minus its idle rate (threads included). The agent's PostgreSQL \
         session is measured directly: its backend's CPU (`schedstat`) over the window. vigie's CPU per cycle sums both agents' threads \
         (`/proc/<pid>/task/*/schedstat`); the other rows run each cycle under `vigie-bench rusage` \
         (its `getrusage(RUSAGE_CHILDREN)`: CPU of the cycle's processes, and the largest peak RSS \
         among them).",
        t.render(),
        s.render(),
        idle.secs,
        idle_cpu / idle.secs * 100.0
    );
    publish(
        "agent-cost",
        "Agent cost per supervision cycle",
        "bench/agent-cost.sh",
        &body,
    );
}
