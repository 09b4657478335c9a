//! One host's agent: the long-lived resources (HTTP clients, the PostgreSQL session, remembered
//! pids, previous samples) and the probe cycle. A cycle gathers first, then judges: all I/O runs
//! concurrently, each probe under its own timeout and the blocking reads (`/proc`, `statvfs`) off
//! the runtime's thread, so one hung target or filesystem never delays or silences the rest; the
//! reads that need this cycle's SQL snapshot follow it (a cycle takes at most two timeouts). The
//! judgement of what was gathered does no I/O.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::config::{AgentConfig, SystemConfig};
use crate::probe::blocking::OffThread;
use crate::probe::haproxy_port::Port;
use crate::probe::patroni_cluster::ClusterView;
use crate::probe::patroni_node::NodeView;
use crate::probe::postgres_accept::AcceptProbe;
use crate::probe::postgres_replication_lag::LagTracker;
use crate::probe::postgres_session::{PgContext, PgSession, PgSnapshot};
use crate::probe::process::ProcessProbe;
use crate::probe::system_cpu::CpuProbe;
use crate::probe::system_disk::FsUsageReader;
use crate::probe::{
    Outcome, ProbeId, etcd_health, fmt_duration, haproxy_backends, haproxy_port, patroni_cluster,
    patroni_config, patroni_health, patroni_node, postgres_accept, postgres_connections,
    postgres_locks, postgres_recovery, postgres_replication, postgres_wal_receiver,
    postgres_wal_retention, postgres_xmin_horizon, system_disk, system_memory, tcp, timed,
};
use crate::procfs::ProcStat;
use crate::result::{ProbeResult, unix_ms};

/// The agent of one host.
#[derive(Debug)]
pub struct Agent {
    cfg: AgentConfig,
    http: HttpClients,
    haproxy_process: Option<OffThread<ProcessProbe>>,
    etcd_process: Option<OffThread<ProcessProbe>>,
    patroni_process: Option<OffThread<ProcessProbe>>,
    /// `/proc/stat` and `/proc/meminfo` are kernel counters that wait on no process's lock:
    /// read on the runtime's thread (a hop to the blocking pool and back cost more than the read).
    cpu: CpuProbe,
    disk: OffThread<FsUsageReader>,
    pg: Option<PgState>,
    /// Shared with the blocking reads: a cycle hands them a reference count, not a copy.
    system: Arc<SystemConfig>,
    disk_paths: Arc<system_disk::DiskPaths>,
}

/// The postmaster's pid and state, when it runs on this host.
type Postmaster = Option<(u32, ProcStat)>;

#[derive(Debug)]
struct PgState {
    session: PgSession,
    accept: AcceptProbe,
    postmaster: OffThread<postgres_accept::PostmasterSeen, Postmaster>,
    lag: LagTracker,
    sync_waits: postgres_replication::SyncWaits,
    last_failed: bool,
    /// The last snapshot showed (almost) no free connection slot.
    slots_tight: bool,
}

/// One HTTP client per endpoint, each with that endpoint's TLS files (reqwest clients are
/// cheap handles: components without a section share the plain one).
#[derive(Debug)]
struct HttpClients {
    patroni: reqwest::Client,
    etcd: reqwest::Client,
    haproxy: reqwest::Client,
}

impl HttpClients {
    fn new(cfg: &AgentConfig) -> Result<HttpClients, crate::config::ConfigError> {
        let build = |section: &str, files: crate::config::TlsFiles| {
            crate::tls::http_client(cfg.timeout, &files).map_err(|e| crate::config::ConfigError {
                field: format!("{section}.{}", e.file.key()),
                message: e.message,
            })
        };
        let plain = build("(file)", Default::default())?;
        let or_plain = |section: &str, files: Option<crate::config::TlsFiles>| match files {
            Some(f) if f != crate::config::TlsFiles::default() => build(section, f),
            _ => Ok(plain.clone()),
        };
        Ok(HttpClients {
            patroni: or_plain("patroni", cfg.patroni.as_ref().map(|p| p.tls_files()))?,
            etcd: or_plain("etcd", cfg.etcd.as_ref().map(|e| e.tls_files()))?,
            haproxy: or_plain("haproxy", cfg.haproxy.as_ref().map(|h| h.tls_files()))?,
        })
    }
}

/// The SQL snapshot of one cycle, with when it started and how long it took.
type Timed<T> = (T, SystemTime, Duration);

impl Agent {
    /// The agent for a validated configuration.
    ///
    /// # Panics
    /// When a TLS file that `config::validate` checked can no longer be used (use
    /// [`Agent::try_new`] to get the error instead).
    pub fn new(cfg: AgentConfig) -> Agent {
        Agent::try_new(cfg).unwrap_or_else(|e| panic!("vigie-agent: {e}"))
    }

    /// The agent, or the configuration error of a TLS file that cannot be used.
    pub fn try_new(cfg: AgentConfig) -> Result<Agent, crate::config::ConfigError> {
        vigie_proto::tls::install_crypto_provider();
        let http = HttpClients::new(&cfg)?;
        let process = |id, matcher: &crate::config::ProcessMatch| {
            OffThread::new(id, ProcessProbe::new(id, matcher.clone()))
        };
        let pg =
            match &cfg.postgres {
                Some(p) => Some(PgSession::new(p, cfg.timeout).map_err(|e| {
                    crate::config::ConfigError {
                        field: format!(
                            "postgres.{}",
                            crate::config::PostgresConfig::tls_key(e.file)
                        ),
                        message: e.message,
                    }
                })?),
                None => None,
            };
        let pg = cfg.postgres.as_ref().zip(pg).map(|(p, session)| {
            let accept = AcceptProbe::new(
                session.login_config(),
                session.address().to_string(),
                p.accept_check_interval,
                cfg.timeout,
            );
            PgState {
                session,
                accept,
                postmaster: OffThread::new(ProbeId::PostgresAccept, None),
                lag: LagTracker::default(),
                sync_waits: Default::default(),
                last_failed: false,
                slots_tight: false,
            }
        });
        let disk_paths = Arc::new(system_disk::DiskPaths::configured(
            cfg.system.disk_paths.clone(),
        ));
        let system = Arc::new(cfg.system.clone());
        Ok(Agent {
            haproxy_process: cfg
                .haproxy
                .as_ref()
                .map(|h| process(ProbeId::HaproxyProcess, &h.process)),
            etcd_process: cfg
                .etcd
                .as_ref()
                .map(|e| process(ProbeId::EtcdProcess, &e.process)),
            patroni_process: cfg
                .patroni
                .as_ref()
                .map(|p| process(ProbeId::PatroniProcess, &p.process)),
            cfg,
            http,
            cpu: CpuProbe::default(),
            disk: OffThread::new(ProbeId::SystemDisk, FsUsageReader::default()),
            pg,
            system,
            disk_paths,
        })
    }

    /// The agent, reading filesystem usage with `read` instead of `statvfs`.
    #[cfg(test)]
    fn with_fs_usage(mut self, read: FsUsageReader) -> Agent {
        self.disk = OffThread::new(ProbeId::SystemDisk, read);
        self
    }

    pub fn config(&self) -> &AgentConfig {
        &self.cfg
    }

    /// PostgreSQL connections opened so far (one in steady state).
    pub fn pg_connections_opened(&self) -> u64 {
        self.pg.as_ref().map_or(0, |p| p.session.connections_opened)
    }

    /// Runs every configured probe once; results in catalogue order.
    pub async fn cycle(&mut self) -> Vec<ProbeResult> {
        let Agent {
            cfg,
            http,
            haproxy_process,
            etcd_process,
            patroni_process,
            cpu,
            disk,
            pg,
            system: system_cfg,
            disk_paths,
        } = self;
        let t = cfg.timeout;

        // Gather, stage 1: every probe at once.
        let system = async {
            if !cfg.system.enabled {
                return Vec::new();
            }
            let inline = |read: &mut dyn FnMut() -> ProbeResult| {
                let (started, t0) = (SystemTime::now(), Instant::now());
                read().timed(started, t0.elapsed())
            };
            vec![
                inline(&mut || cpu.probe(system_cfg)),
                inline(&mut || system_memory::probe(system_cfg)),
            ]
        };
        let haproxy = async {
            let (Some(h), Some(process)) = (&cfg.haproxy, haproxy_process) else {
                return Vec::new();
            };
            let (rw, ro, backends, process) = tokio::join!(
                timed(ProbeId::HaproxyRwPort, t, haproxy_port::probe(h, Port::Rw)),
                timed(ProbeId::HaproxyRoPort, t, haproxy_port::probe(h, Port::Ro)),
                timed(
                    ProbeId::HaproxyBackends,
                    t,
                    haproxy_backends::probe(&http.haproxy, h)
                ),
                process.probe_fast_first(t, ProcessProbe::known, ProcessProbe::probe),
            );
            vec![rw, ro, backends, process]
        };
        let etcd = async {
            let (Some(e), Some(process)) = (&cfg.etcd, etcd_process) else {
                return Vec::new();
            };
            let (client, peer) = (e.client_address(), e.peer());
            let (c, p, h, process) = tokio::join!(
                timed(
                    ProbeId::EtcdClientPort,
                    t,
                    tcp::probe(ProbeId::EtcdClientPort, &client)
                ),
                timed(
                    ProbeId::EtcdPeerPort,
                    t,
                    tcp::probe(ProbeId::EtcdPeerPort, &peer)
                ),
                timed(
                    ProbeId::EtcdHealth,
                    t,
                    etcd_health::probe(&http.etcd, &e.client_url)
                ),
                process.probe_fast_first(t, ProcessProbe::known, ProcessProbe::probe),
            );
            vec![c, p, h, process]
        };
        let patroni = async {
            let (Some(p), Some(process)) = (&cfg.patroni, patroni_process) else {
                return (Vec::new(), None, None);
            };
            let api = crate::config::url_address(&p.url);
            let lag_warning = cfg
                .postgres
                .as_ref()
                .map_or(16 * 1024 * 1024, |pg| pg.lag_warning_bytes);
            let now = unix_ms(SystemTime::now()) / 1000;
            // `/patroni` answers both patroni.node and patroni.health (see patroni_health).
            let node = async {
                let started = SystemTime::now();
                let t0 = Instant::now();
                let fetched = tokio::time::timeout(t, patroni_node::fetch(&http.patroni, &p.url))
                    .await
                    .unwrap_or_else(|_| Err(format!("timed out after {}", fmt_duration(t))));
                let took = t0.elapsed();
                let (node, view) = patroni_node::judge_fetched(&fetched, now);
                (
                    patroni_health::judge(&fetched).timed(started, took),
                    node.timed(started, took),
                    view,
                )
            };
            let (port, (health, node, view), cluster, config, process) = tokio::join!(
                timed(
                    ProbeId::PatroniApiPort,
                    t,
                    tcp::probe(ProbeId::PatroniApiPort, &api)
                ),
                node,
                timed_view(
                    ProbeId::PatroniCluster,
                    t,
                    patroni_cluster::probe(&http.patroni, &p.url, &cfg.node, lag_warning)
                ),
                timed(
                    ProbeId::PatroniConfig,
                    t,
                    patroni_config::probe(&http.patroni, &p.url)
                ),
                process.probe_fast_first(t, ProcessProbe::known, ProcessProbe::probe),
            );
            (
                vec![port, health, node, cluster.0, config, process],
                view,
                cluster.1,
            )
        };
        let postgres = async {
            let state = pg.as_mut()?;
            let started = SystemTime::now();
            let t0 = Instant::now();
            let (snapshot, ()) = tokio::join!(
                tokio::time::timeout(t, state.session.snapshot()),
                state
                    .accept
                    .login_if_due(state.last_failed || state.slots_tight),
            );
            let snapshot =
                snapshot.unwrap_or_else(|_| Err(format!("timed out after {}", fmt_duration(t))));
            state.last_failed = snapshot.is_err();
            // Nearly out of connection slots: check a real login every cycle until it eases.
            state.slots_tight = snapshot
                .as_ref()
                .is_ok_and(|s| s.connections.free() <= (s.connections.usable() / 10).max(1));
            Some((snapshot, started, t0.elapsed()))
        };
        let (system, h, e, (p, node, cluster), snapshot) =
            tokio::join!(system, haproxy, etcd, patroni, postgres);

        // Gather, stage 2: the reads that need the snapshot (the data directory, the backend's pid).
        let snap = snapshot.as_ref().and_then(|(s, _, _)| s.as_ref().ok());
        if let Some(dir) = snap.and_then(|s| s.data_directory.as_ref())
            && !disk_paths.configured
            && !disk_paths.from_data_directory
        {
            Arc::make_mut(disk_paths).follow_data_directory(dir);
        }
        if cfg.system.enabled && disk_paths.paths.is_empty() {
            Arc::make_mut(disk_paths).paths.push(PathBuf::from("/"));
        }
        let disk = async {
            if !cfg.system.enabled {
                return None;
            }
            let (sys, paths) = (system_cfg.clone(), disk_paths.clone());
            Some(
                disk.probe(t, move |read| system_disk::probe(&sys, &paths, read))
                    .await,
            )
        };
        let backend = snap.map(|s| s.backend_pid);
        let postmaster = async {
            let (Some(state), Some(backend)) = (pg.as_mut(), backend) else {
                return None;
            };
            if let Some(known) = state
                .postmaster
                .inline(|seen| postgres_accept::postmaster_known(seen, backend))
            {
                return known;
            }
            // Unread, the postmaster is judged like one in another pid namespace: by the login.
            state
                .postmaster
                .call(t, move |seen| postgres_accept::postmaster_of(seen, backend))
                .await
                .unwrap_or_else(|r| {
                    tracing::debug!(message = %r.message, "Postmaster state unread");
                    None
                })
        };
        // Side by side: the stage takes one timeout at most, whichever of the two hangs.
        let (postmaster, disk) = tokio::join!(postmaster, disk);

        // Judge.
        let mut results = Vec::with_capacity(ProbeId::ALL.len());
        results.extend(system);
        results.extend(h);
        results.extend(e);
        results.extend(p);
        if let (Some(pg_cfg), Some(state), Some(snapshot)) = (&cfg.postgres, pg.as_mut(), snapshot)
        {
            let ctx = SqlInputs {
                node: &cfg.node,
                cfg: pg_cfg,
                role: node.as_ref(),
                cluster: cluster.as_ref(),
                postmaster,
            };
            results.extend(sql_results(state, &ctx, snapshot));
        }
        results.extend(disk);
        results.sort_by_key(|r| ProbeId::ALL.iter().position(|id| *id == r.id));
        results
    }
}

/// What the SQL probes need besides the snapshot.
struct SqlInputs<'a> {
    node: &'a str,
    cfg: &'a crate::config::PostgresConfig,
    role: Option<&'a NodeView>,
    cluster: Option<&'a ClusterView>,
    postmaster: Postmaster,
}

/// The SQL-derived probes of one cycle: all judged from one snapshot, or all failed with its
/// error.
fn sql_results(
    state: &mut PgState,
    inputs: &SqlInputs<'_>,
    snapshot: Timed<Result<PgSnapshot, String>>,
) -> Vec<ProbeResult> {
    let (mut snapshot, started, took) = snapshot;
    if let Ok(snap) = &mut snapshot {
        state.sync_waits.observe(&mut snap.sync, snap.now);
    }
    let sql_ids = [
        ProbeId::PostgresLocks,
        ProbeId::PostgresConnections,
        ProbeId::PostgresWalReceiver,
        ProbeId::PostgresRecovery,
        ProbeId::PostgresReplication,
        ProbeId::PostgresReplicationLag,
        ProbeId::PostgresWalRetention,
        ProbeId::PostgresXminHorizon,
    ];
    let mut out: Vec<ProbeResult> = match &snapshot {
        Ok(snap) => {
            let ctx = PgContext {
                snapshot: snap,
                role: inputs.role.map(|n| &n.role),
                cluster: inputs.cluster,
                node: inputs.node,
                cfg: inputs.cfg,
            };
            vec![
                postgres_locks::judge(&ctx),
                postgres_connections::judge(&ctx),
                postgres_wal_receiver::judge(&ctx),
                postgres_recovery::judge(&ctx),
                postgres_replication::judge(&ctx),
                state.lag.judge(&ctx),
                postgres_wal_retention::judge(&ctx),
                postgres_xmin_horizon::judge(&ctx),
            ]
        }
        Err(e) => sql_ids
            .iter()
            .map(|id| id.critical(format!("PostgreSQL query failed: {e}")))
            .collect(),
    };
    out.push(
        state
            .accept
            .judge(snapshot.as_ref().ok(), inputs.postmaster),
    );
    out.into_iter().map(|r| r.timed(started, took)).collect()
}

/// [`timed`] for probes that also hand a view of what they saw to other probes.
async fn timed_view<T, F>(id: ProbeId, timeout: Duration, probe: F) -> (ProbeResult, Option<T>)
where
    F: std::future::Future<Output = (ProbeResult, Option<T>)>,
{
    let mut view = None;
    let result = timed(id, timeout, async {
        let (r, v) = probe.await;
        view = v;
        r
    })
    .await;
    (result, view)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::probe::blocking::Gate;
    use crate::procfs::FsUsage;
    use crate::result::Status;

    /// Patroni on a closed loopback port, 200 ms timeout, system probes on.
    fn agent() -> Agent {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.toml");
        let toml = "node = \"node1\"\ncluster = \"demo\"\ninterval = \"2s\"\ntimeout = \"200ms\"\n\
                    [patroni]\nurl = \"http://127.0.0.1:1\"\n";
        std::fs::write(&path, toml).expect("write");
        Agent::new(crate::config::load(&path, HashMap::new()).expect("valid"))
    }

    fn find(results: &[ProbeResult], id: ProbeId) -> &ProbeResult {
        results
            .iter()
            .find(|r| r.id == id)
            .unwrap_or_else(|| panic!("no {id} result"))
    }

    #[tokio::test]
    async fn a_hung_statvfs_makes_system_disk_critical_on_time_while_the_others_report() {
        let (gate, reads) = (Arc::new(Gate::default()), Arc::new(AtomicUsize::new(0)));
        let (g, n) = (gate.clone(), reads.clone());
        let mut agent = agent().with_fs_usage(FsUsageReader::new(move |_| {
            n.fetch_add(1, Ordering::SeqCst);
            g.wait();
            Ok(FsUsage {
                device: 1,
                total_bytes: 100 << 30,
                available_bytes: 90 << 30,
                used_percent: 10.0,
                inodes_used_percent: 1.0,
            })
        }));
        let timeout = agent.config().timeout;

        let t0 = Instant::now();
        let results = agent.cycle().await;
        assert!(
            t0.elapsed() < 2 * timeout + Duration::from_secs(1),
            "{:?}",
            t0.elapsed()
        );
        let disk = find(&results, ProbeId::SystemDisk);
        assert_eq!(disk.status, Status::Critical);
        assert!(disk.unanswered);
        assert_eq!(disk.message, "timed out after 200ms");
        for id in [
            ProbeId::SystemCpu,
            ProbeId::SystemMemory,
            ProbeId::PatroniProcess,
            ProbeId::PatroniApiPort,
        ] {
            let r = find(&results, id);
            assert!(!r.unanswered, "{id}: {}", r.message);
        }
        assert!(
            find(&results, ProbeId::SystemMemory)
                .message
                .contains("used")
        );

        // Still hung: answered at once, and no second statvfs is started.
        let t0 = Instant::now();
        let results = agent.cycle().await;
        assert!(t0.elapsed() < timeout + Duration::from_secs(1));
        let disk = find(&results, ProbeId::SystemDisk);
        assert!(disk.unanswered && disk.message.starts_with("still blocked for"));
        assert!(!find(&results, ProbeId::SystemCpu).unanswered);
        assert_eq!(reads.load(Ordering::SeqCst), 1);

        gate.open();
        let deadline = Instant::now() + Duration::from_secs(5);
        let disk = loop {
            let results = agent.cycle().await;
            let disk = find(&results, ProbeId::SystemDisk).clone();
            if !disk.unanswered {
                break disk;
            }
            assert!(Instant::now() < deadline, "{}", disk.message);
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(disk.status, Status::Ok, "{}", disk.message);
        assert_eq!(disk.message, "/: 10.0% used, 90.0 GiB free");
        assert_eq!(reads.load(Ordering::SeqCst), 2);
    }
}
