//! One host's agent: the long-lived resources (HTTP clients, the PostgreSQL session, remembered
//! pids, previous samples) and the probe cycle. A cycle runs every configured probe, each under
//! its own timeout and concurrently with the others, so one hung target never delays the rest.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::config::AgentConfig;
use crate::probe::haproxy_port::Port;
use crate::probe::patroni_cluster::ClusterView;
use crate::probe::patroni_node::NodeView;
use crate::probe::postgres_accept::AcceptProbe;
use crate::probe::postgres_replication_lag::LagTracker;
use crate::probe::postgres_session::{PgContext, PgSession, PgSnapshot};
use crate::probe::process::ProcessProbe;
use crate::probe::system_cpu::CpuProbe;
use crate::probe::{
    Outcome, ProbeId, etcd_health, fmt_duration, haproxy_backends, haproxy_port, patroni_cluster,
    patroni_health, patroni_node, postgres_connections, postgres_locks, postgres_recovery,
    postgres_replication, postgres_wal_receiver, system_disk, system_memory, tcp, timed,
    timed_sync,
};
use crate::result::{ProbeResult, unix_ms};

/// The agent of one host.
#[derive(Debug)]
pub struct Agent {
    cfg: AgentConfig,
    http: HttpClients,
    processes: Vec<ProcessProbe>,
    cpu: CpuProbe,
    pg: Option<PgState>,
    disk_paths: Vec<PathBuf>,
}

#[derive(Debug)]
struct PgState {
    session: PgSession,
    accept: AcceptProbe,
    lag: LagTracker,
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
        let mut processes = Vec::new();
        if let Some(h) = &cfg.haproxy {
            processes.push(ProcessProbe::new(
                ProbeId::HaproxyProcess,
                h.process.clone(),
            ));
        }
        if let Some(e) = &cfg.etcd {
            processes.push(ProcessProbe::new(ProbeId::EtcdProcess, e.process.clone()));
        }
        if let Some(p) = &cfg.patroni {
            processes.push(ProcessProbe::new(
                ProbeId::PatroniProcess,
                p.process.clone(),
            ));
        }
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
                lag: LagTracker::default(),
                last_failed: false,
                slots_tight: false,
            }
        });
        let disk_paths = cfg.system.disk_paths.clone();
        Ok(Agent {
            cfg,
            http,
            processes,
            cpu: CpuProbe::default(),
            pg,
            disk_paths,
        })
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
            processes,
            cpu,
            pg,
            disk_paths,
        } = self;
        let t = cfg.timeout;
        let mut results = Vec::with_capacity(ProbeId::ALL.len());

        // Cheap synchronous probes: a few /proc reads each.
        for p in processes.iter_mut() {
            results.push(timed_sync(|| p.probe()));
        }
        if cfg.system.enabled {
            results.push(timed_sync(|| cpu.probe(&cfg.system)));
            results.push(timed_sync(|| system_memory::probe(&cfg.system)));
        }

        let haproxy = async {
            let Some(h) = &cfg.haproxy else {
                return Vec::new();
            };
            let (rw, ro, backends) = tokio::join!(
                timed(ProbeId::HaproxyRwPort, t, haproxy_port::probe(h, Port::Rw)),
                timed(ProbeId::HaproxyRoPort, t, haproxy_port::probe(h, Port::Ro)),
                timed(
                    ProbeId::HaproxyBackends,
                    t,
                    haproxy_backends::probe(&http.haproxy, h)
                ),
            );
            vec![rw, ro, backends]
        };
        let etcd = async {
            let Some(e) = &cfg.etcd else {
                return Vec::new();
            };
            let (client, peer) = (e.client_address(), e.peer());
            let (c, p, h) = tokio::join!(
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
            );
            vec![c, p, h]
        };
        let patroni = async {
            let Some(p) = &cfg.patroni else {
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
            let (port, (health, node, view), cluster) = tokio::join!(
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
            );
            (vec![port, health, node, cluster.0], view, cluster.1)
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

        let (h, e, (p, node, cluster), snapshot) = tokio::join!(haproxy, etcd, patroni, postgres);
        results.extend(h);
        results.extend(e);
        results.extend(p);

        if let (Some(pg_cfg), Some(state), Some(snapshot)) = (&cfg.postgres, pg.as_mut(), snapshot)
        {
            if let Ok(snap) = &snapshot.0
                && disk_paths.is_empty()
                && let Some(dir) = &snap.data_directory
            {
                disk_paths.push(PathBuf::from(dir));
            }
            let ctx = SqlInputs {
                node: &cfg.node,
                cfg: pg_cfg,
                role: node.as_ref(),
                cluster: cluster.as_ref(),
            };
            results.extend(sql_results(state, &ctx, snapshot));
        }
        if cfg.system.enabled {
            if disk_paths.is_empty() {
                disk_paths.push(PathBuf::from("/"));
            }
            results.push(timed_sync(|| system_disk::probe(&cfg.system, disk_paths)));
        }

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
}

/// The SQL-derived probes of one cycle: all judged from one snapshot, or all failed with its
/// error.
fn sql_results(
    state: &mut PgState,
    inputs: &SqlInputs<'_>,
    snapshot: Timed<Result<PgSnapshot, String>>,
) -> Vec<ProbeResult> {
    let (snapshot, started, took) = snapshot;
    let sql_ids = [
        ProbeId::PostgresLocks,
        ProbeId::PostgresConnections,
        ProbeId::PostgresWalReceiver,
        ProbeId::PostgresRecovery,
        ProbeId::PostgresReplication,
        ProbeId::PostgresReplicationLag,
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
            ]
        }
        Err(e) => sql_ids
            .iter()
            .map(|id| id.critical(format!("PostgreSQL query failed: {e}")))
            .collect(),
    };
    out.push(state.accept.judge(snapshot.as_ref().ok()));
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
