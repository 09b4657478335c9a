//! The agent's one PostgreSQL connection: opened with `connect_timeout` and a server-side
//! `statement_timeout`, reused across cycles, dropped on any error and reopened at the next cycle
//! (never more than one at a time). Each cycle runs one prepared query that gathers everything
//! the SQL probes judge — a single round trip.

use serde::Deserialize;
use tokio_postgres::{Client, Statement};

use crate::config::PostgresConfig;
use crate::tls::PgTls;

/// A WAL position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Parses PostgreSQL's `16/B374D848` form.
    pub fn parse(text: &str) -> Option<Lsn> {
        let (hi, lo) = text.trim().split_once('/')?;
        Some(Lsn(
            (u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?
        ))
    }
}

impl std::fmt::Display for Lsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// `pg_stat_wal_receiver` (present only while a receiver runs).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct WalReceiver {
    pub status: String,
    pub sender_host: Option<String>,
    pub sender_port: Option<i64>,
    pub received_tli: Option<i64>,
    pub flushed_lsn: Option<String>,
    pub latest_end_lsn: Option<String>,
    /// When the last message from the sender arrived (server clock, Unix seconds).
    pub last_msg_receipt: Option<f64>,
    pub slot_name: Option<String>,
}

/// One `pg_stat_replication` row (a walsender on this server).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct WalSender {
    pub application_name: Option<String>,
    pub client_addr: Option<String>,
    pub state: Option<String>,
    pub sync_state: Option<String>,
    pub sent_lsn: Option<String>,
    pub flush_lsn: Option<String>,
    pub replay_lsn: Option<String>,
    pub replay_lag_s: Option<f64>,
}

/// Everything one cycle's query returns.
#[derive(Debug, Clone, PartialEq)]
pub struct PgSnapshot {
    pub in_recovery: bool,
    /// Primary only.
    pub current_lsn: Option<Lsn>,
    /// Primary only: from the current WAL file name.
    pub timeline: Option<u32>,
    /// Standby only.
    pub receive_lsn: Option<Lsn>,
    pub replay_lsn: Option<Lsn>,
    /// Commit time of the last replayed transaction (server clock, Unix seconds).
    pub replay_timestamp: Option<f64>,
    /// The server's clock when the query ran (Unix seconds).
    pub now: f64,
    pub backend_pid: i32,
    pub data_directory: Option<String>,
    pub server_version_num: i32,
    pub wal_receiver: Option<WalReceiver>,
    pub replication: Vec<WalSender>,
    /// Connection slots: client backends now, and the settings that bound them.
    pub connections: Connections,
    pub waiting_sessions: i64,
    /// Longest current lock wait, in seconds.
    pub longest_lock_wait: Option<f64>,
    pub retention: Retention,
    pub horizon: Horizon,
    pub sync: SyncRep,
}

/// Synchronous replication as this server runs it: whom commits wait for, and who waits now.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SyncRep {
    pub standby_names: String,
    pub commit: String,
    /// Sessions waiting for a synchronous standby to confirm their commit.
    pub waiters: i64,
    /// Some of them (the query's limit): which session, committing which transaction.
    pub waiting: Vec<SyncWaiter>,
    /// How long the longest-waiting of those commits has been seen waiting, across cycles
    /// (seconds; see `postgres_replication::SyncWaits`): not in the query, filled before judging.
    pub longest_wait_s: Option<f64>,
}

/// A session waiting on `SyncRep`: its pid and the transaction it commits.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Hash)]
pub struct SyncWaiter {
    pub pid: i64,
    pub xid: Option<String>,
}

/// One `pg_replication_slots` row; LSNs as text, retained bytes counted by the server.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Slot {
    pub name: String,
    pub slot_type: String,
    pub database: Option<String>,
    pub active: bool,
    pub active_pid: Option<i64>,
    pub wal_status: Option<String>,
    pub safe_wal_size: Option<i64>,
    pub restart_lsn: Option<String>,
    pub retained_bytes: Option<i64>,
    pub xmin_age: Option<i64>,
    pub catalog_xmin_age: Option<i64>,
}

/// `pg_stat_archiver`, with the segments waiting for it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ArchiverRow {
    pub archived_count: i64,
    pub failed_count: i64,
    pub last_archived_wal: Option<String>,
    pub last_archived_age_s: Option<f64>,
    pub last_failed_wal: Option<String>,
    pub last_failed_age_s: Option<f64>,
    pub failing: bool,
}

/// What keeps WAL on the server.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Retention {
    pub slots: Vec<Slot>,
    pub archive_mode: String,
    /// Unless `archive_mode` is off.
    pub archiver: Option<ArchiverRow>,
    pub archive_ready: Option<i64>,
    pub wal_dir_bytes: Option<i64>,
    pub wal_dir_files: Option<i64>,
    pub max_wal_bytes: i64,
    /// `-1`: unlimited.
    pub max_slot_wal_keep_bytes: i64,
}

/// The oldest session holding a snapshot or a transaction id.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct OldestSession {
    pub pid: i64,
    pub user: Option<String>,
    pub application_name: Option<String>,
    pub client_addr: Option<String>,
    pub state: Option<String>,
    pub xact_age_s: Option<f64>,
    pub xid_age: Option<i64>,
}

/// The oldest prepared (two-phase) transaction.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct OldestPrepared {
    pub gid: String,
    pub owner: Option<String>,
    pub database: Option<String>,
    pub age_s: Option<f64>,
    pub xid_age: Option<i64>,
}

/// The walsender whose standby's feedback holds the oldest xmin.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Feedback {
    pub application_name: Option<String>,
    pub xid_age: Option<i64>,
}

/// The oldest database's frozen XID age.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Frozen {
    pub datname: String,
    pub xid_age: i64,
}

/// Who holds the xmin horizon, and how far the oldest database is from wraparound.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Horizon {
    pub oldest_session: Option<OldestSession>,
    pub oldest_prepared: Option<OldestPrepared>,
    pub oldest_feedback: Option<Feedback>,
    pub frozen: Option<Frozen>,
    pub autovacuum_freeze_max_age: i64,
}

/// Connection slots as the server counts them: `max_connections` slots, of which the last
/// `superuser_reserved_connections` (and, on PostgreSQL 16+, `reserved_connections`) are kept for
/// privileged roles. Walsenders and background workers have slots of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connections {
    pub client_backends: i64,
    pub max_connections: i64,
    pub superuser_reserved: i64,
    /// `reserved_connections` (PostgreSQL 16+; 0 before).
    pub reserved: i64,
}

impl Connections {
    /// Slots an ordinary role (an application, the monitoring role) may use.
    pub fn usable(&self) -> i64 {
        (self.max_connections - self.superuser_reserved - self.reserved).max(0)
    }

    /// Slots an ordinary role could still take; at 0 new logins are refused (SQLSTATE 53300).
    pub fn free(&self) -> i64 {
        (self.usable() - self.client_backends).max(0)
    }

    /// Share of the usable slots in use, in percent (may pass 100: privileged sessions).
    pub fn used_percent(&self) -> f64 {
        if self.usable() == 0 {
            return 100.0;
        }
        self.client_backends as f64 * 100.0 / self.usable() as f64
    }
}

/// What the SQL probes judge: the cycle's snapshot and what Patroni says of this node and its
/// cluster (either may be missing when Patroni does not answer).
#[derive(Debug, Clone, Copy)]
pub struct PgContext<'a> {
    pub snapshot: &'a PgSnapshot,
    pub role: Option<&'a crate::probe::patroni_node::Role>,
    pub cluster: Option<&'a crate::probe::patroni_cluster::ClusterView>,
    pub node: &'a str,
    pub cfg: &'a PostgresConfig,
}

/// The one query (PostgreSQL 14+: `pg_locks.waitstart`). Functions that fail in recovery are
/// guarded by `CASE`; everything readable with `pg_monitor`.
const SNAPSHOT_SQL: &str = "
SELECT
  pg_is_in_recovery() AS in_recovery,
  CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END AS current_lsn,
  CASE WHEN pg_is_in_recovery() THEN NULL
       ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int8 END AS timeline,
  pg_last_wal_receive_lsn()::text AS receive_lsn,
  pg_last_wal_replay_lsn()::text AS replay_lsn,
  extract(epoch FROM pg_last_xact_replay_timestamp())::float8 AS replay_timestamp,
  extract(epoch FROM now())::float8 AS now,
  pg_backend_pid() AS backend_pid,
  current_setting('data_directory', true) AS data_directory,
  current_setting('server_version_num')::int AS server_version_num,
  (SELECT row_to_json(w)::text FROM (
     SELECT status, sender_host, sender_port, received_tli::int8 AS received_tli,
            flushed_lsn::text AS flushed_lsn, latest_end_lsn::text AS latest_end_lsn,
            extract(epoch FROM last_msg_receipt_time)::float8 AS last_msg_receipt, slot_name
     FROM pg_stat_wal_receiver) w) AS wal_receiver,
  (SELECT coalesce(json_agg(r), '[]')::text FROM (
     SELECT application_name, host(client_addr) AS client_addr, state, sync_state,
            sent_lsn::text AS sent_lsn, flush_lsn::text AS flush_lsn,
            replay_lsn::text AS replay_lsn, extract(epoch FROM replay_lag)::float8 AS replay_lag_s
     FROM pg_stat_replication) r) AS replication,
  (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'
     AND application_name IS DISTINCT FROM 'vigie-agent-login') AS client_backends,
  current_setting('max_connections')::int AS max_connections,
  current_setting('superuser_reserved_connections')::int AS superuser_reserved_connections,
  coalesce(current_setting('reserved_connections', true), '0')::int AS reserved_connections,
  (SELECT count(DISTINCT pid) FROM pg_locks WHERE NOT granted) AS waiting_sessions,
  (SELECT extract(epoch FROM max(now() - waitstart))::float8 FROM pg_locks WHERE NOT granted)
     AS longest_lock_wait,
  (SELECT coalesce(json_agg(s), '[]')::text FROM (
     SELECT slot_name AS name, slot_type, database, active, active_pid, wal_status::text,
            safe_wal_size::int8 AS safe_wal_size, restart_lsn::text AS restart_lsn,
            pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                                 ELSE pg_current_wal_lsn() END, restart_lsn)::int8 AS retained_bytes,
            age(xmin)::int8 AS xmin_age, age(catalog_xmin)::int8 AS catalog_xmin_age
     FROM pg_replication_slots ORDER BY slot_name) s) AS slots,
  current_setting('archive_mode') AS archive_mode,
  CASE WHEN current_setting('archive_mode') <> 'off' THEN (SELECT row_to_json(a)::text FROM (
     SELECT archived_count, failed_count, last_archived_wal,
            extract(epoch FROM now() - last_archived_time)::float8 AS last_archived_age_s,
            last_failed_wal, extract(epoch FROM now() - last_failed_time)::float8 AS last_failed_age_s,
            coalesce(last_failed_time > last_archived_time, last_failed_time IS NOT NULL) AS failing
     FROM pg_stat_archiver) a) END AS archiver,
  CASE WHEN current_setting('archive_mode') <> 'off' THEN
     (SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready') END AS archive_ready,
  (SELECT row_to_json(d)::text FROM (
     SELECT coalesce(sum(size), 0)::int8 AS bytes, count(*) AS files FROM pg_ls_waldir()) d) AS wal_dir,
  (SELECT setting::int8 * 1048576 FROM pg_settings WHERE name = 'max_wal_size') AS max_wal_bytes,
  (SELECT CASE WHEN setting::int8 < 0 THEN -1 ELSE setting::int8 * 1048576 END
     FROM pg_settings WHERE name = 'max_slot_wal_keep_size') AS max_slot_wal_keep_bytes,
  (SELECT row_to_json(x)::text FROM (
     SELECT pid, usename AS user, application_name, host(client_addr) AS client_addr, state,
            extract(epoch FROM now() - xact_start)::float8 AS xact_age_s,
            greatest(age(backend_xmin), age(backend_xid))::int8 AS xid_age
     FROM pg_stat_activity
     WHERE (backend_xmin IS NOT NULL OR backend_xid IS NOT NULL) AND pid <> pg_backend_pid()
       AND backend_type <> 'walsender'
     ORDER BY greatest(age(backend_xmin), age(backend_xid)) DESC, xact_start LIMIT 1) x) AS oldest_session,
  (SELECT row_to_json(p)::text FROM (
     SELECT gid, owner::text, database::text, extract(epoch FROM now() - prepared)::float8 AS age_s,
            age(transaction)::int8 AS xid_age
     FROM pg_prepared_xacts ORDER BY prepared LIMIT 1) p) AS oldest_prepared,
  (SELECT row_to_json(f)::text FROM (
     SELECT application_name, age(backend_xmin)::int8 AS xid_age FROM pg_stat_replication
     WHERE backend_xmin IS NOT NULL ORDER BY age(backend_xmin) DESC LIMIT 1) f) AS oldest_feedback,
  (SELECT row_to_json(d)::text FROM (
     SELECT datname::text, age(datfrozenxid)::int8 AS xid_age FROM pg_database
     ORDER BY age(datfrozenxid) DESC LIMIT 1) d) AS frozen,
  current_setting('autovacuum_freeze_max_age')::int8 AS autovacuum_freeze_max_age,
  current_setting('synchronous_standby_names') AS synchronous_standby_names,
  current_setting('synchronous_commit') AS synchronous_commit,
  (SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep') AS sync_waiters,
  (SELECT coalesce(json_agg(w), '[]')::text FROM (
     SELECT pid, backend_xid::text AS xid FROM pg_stat_activity WHERE wait_event = 'SyncRep'
     ORDER BY pid LIMIT 64) w) AS sync_waiting
";

/// The long-lived session.
#[derive(Debug)]
pub struct PgSession {
    config: tokio_postgres::Config,
    tls: PgTls,
    address: String,
    conn: Option<(Client, Statement)>,
    /// Connections opened so far (one at start, one per recovery from an error).
    pub connections_opened: u64,
}

impl PgSession {
    /// The session (not connected yet), or the TLS file that cannot be used.
    pub fn new(
        cfg: &PostgresConfig,
        probe_timeout: std::time::Duration,
    ) -> Result<Self, vigie_proto::tls::TlsError> {
        let (sslmode, tls) = crate::tls::postgres_connector(cfg)?;
        let mut config = tokio_postgres::Config::new();
        config
            .ssl_mode(sslmode)
            .host(&cfg.host)
            .port(cfg.port)
            .user(&cfg.user)
            .dbname(&cfg.dbname)
            .application_name("vigie-agent")
            .connect_timeout(cfg.connect_timeout.unwrap_or(probe_timeout))
            .keepalives(true)
            .keepalives_idle(std::time::Duration::from_secs(30))
            .options(format!(
                "-c statement_timeout={} -c lock_timeout={} -c idle_in_transaction_session_timeout=60000",
                cfg.statement_timeout.as_millis(),
                cfg.statement_timeout.as_millis()
            ));
        if let Some(pw) = &cfg.password {
            config.password(pw.expose());
        }
        Ok(PgSession {
            config,
            tls,
            address: format!("{}:{}", cfg.host, cfg.port),
            conn: None,
            connections_opened: 0,
        })
    }

    /// `host:port` of the server.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Runs the cycle's query on the reused connection, connecting first if needed. On any error
    /// the connection is dropped; if the caller's timeout cancels this future, it is dropped too.
    pub async fn snapshot(&mut self) -> Result<PgSnapshot, String> {
        let (client, stmt) = match self.conn.take() {
            Some((c, s)) if !c.is_closed() => (c, s),
            _ => self.connect().await?,
        };
        let row = client
            .query_one(&stmt, &[])
            .await
            .map_err(|e| describe(&e))?;
        let snapshot = parse_row(&row)?;
        self.conn = Some((client, stmt));
        Ok(snapshot)
    }

    /// The settings of a fresh login as the monitoring role (the `postgres.accept` probe's),
    /// with the session's TLS.
    pub fn login_config(&self) -> PgLogin {
        let mut config = self.config.clone();
        config.application_name("vigie-agent-login");
        PgLogin {
            config,
            tls: self.tls.clone(),
        }
    }

    async fn connect(&mut self) -> Result<(Client, Statement), String> {
        self.connections_opened += 1;
        let client = open(&PgLogin {
            config: self.config.clone(),
            tls: self.tls.clone(),
        })
        .await
        .map_err(|e| format!("cannot connect to {}: {}", self.address, describe(&e)))?;
        let stmt = client
            .prepare(SNAPSHOT_SQL)
            .await
            .map_err(|e| describe(&e))?;
        Ok((client, stmt))
    }
}

/// Opens a connection (startup, authentication, up to the server's first `ReadyForQuery`) and
/// drives it in the background until the client is dropped.
/// How to log in: the settings and the TLS connector that follows `sslmode`.
#[derive(Debug, Clone)]
pub struct PgLogin {
    pub config: tokio_postgres::Config,
    pub tls: PgTls,
}

impl From<tokio_postgres::Config> for PgLogin {
    /// TLS as libpq's `prefer`: used when the server offers it, nothing verified.
    fn from(config: tokio_postgres::Config) -> Self {
        let (_, tls) = crate::tls::connector(crate::config::SslMode::Prefer, &Default::default())
            .expect("a TLS connector without files always builds");
        PgLogin { config, tls }
    }
}

pub async fn open(login: &PgLogin) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = login.config.connect(login.tls.clone()).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// The server's own message when there is one (e.g. `password authentication failed …`).
pub fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {}", db.severity(), db.message());
    }
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text = format!("{text}: {c}");
        cause = c.source();
    }
    text
}

fn parse_row(row: &tokio_postgres::Row) -> Result<PgSnapshot, String> {
    let col = |name: &str| -> Result<Option<String>, String> {
        row.try_get::<_, Option<String>>(name)
            .map_err(|e| format!("column {name}: {e}"))
    };
    let lsn = |name: &str| -> Result<Option<Lsn>, String> {
        Ok(col(name)?.as_deref().and_then(Lsn::parse))
    };
    let f64_col = |name: &str| -> Result<Option<f64>, String> {
        row.try_get::<_, Option<f64>>(name)
            .map_err(|e| format!("column {name}: {e}"))
    };
    let wal_receiver = match col("wal_receiver")? {
        Some(json) => {
            Some(serde_json::from_str(&json).map_err(|e| format!("pg_stat_wal_receiver: {e}"))?)
        }
        None => None,
    };
    let replication = match col("replication")? {
        Some(json) => {
            serde_json::from_str(&json).map_err(|e| format!("pg_stat_replication: {e}"))?
        }
        None => Vec::new(),
    };
    let get = |name: &str| format!("column {name}");
    let i64_col = |name: &str| -> Result<Option<i64>, String> {
        row.try_get::<_, Option<i64>>(name)
            .map_err(|e| format!("column {name}: {e}"))
    };
    fn json<T: serde::de::DeserializeOwned>(
        text: Option<String>,
        what: &str,
    ) -> Result<Option<T>, String> {
        text.map(|t| serde_json::from_str(&t).map_err(|e| format!("{what}: {e}")))
            .transpose()
    }
    /// `pg_wal`, listed once.
    #[derive(Deserialize)]
    struct WalDir {
        bytes: i64,
        files: i64,
    }
    let wal_dir: Option<WalDir> = json(col("wal_dir")?, "pg_ls_waldir")?;
    let retention = Retention {
        slots: json(col("slots")?, "pg_replication_slots")?.unwrap_or_default(),
        archive_mode: col("archive_mode")?.unwrap_or_default(),
        archiver: json(col("archiver")?, "pg_stat_archiver")?,
        archive_ready: i64_col("archive_ready")?,
        wal_dir_bytes: wal_dir.as_ref().map(|d| d.bytes),
        wal_dir_files: wal_dir.as_ref().map(|d| d.files),
        max_wal_bytes: i64_col("max_wal_bytes")?.unwrap_or_default(),
        max_slot_wal_keep_bytes: i64_col("max_slot_wal_keep_bytes")?.unwrap_or(-1),
    };
    let horizon = Horizon {
        oldest_session: json(col("oldest_session")?, "pg_stat_activity")?,
        oldest_prepared: json(col("oldest_prepared")?, "pg_prepared_xacts")?,
        oldest_feedback: json(col("oldest_feedback")?, "pg_stat_replication")?,
        frozen: json(col("frozen")?, "pg_database")?,
        autovacuum_freeze_max_age: i64_col("autovacuum_freeze_max_age")?.unwrap_or_default(),
    };
    Ok(PgSnapshot {
        in_recovery: row.try_get("in_recovery").map_err(|_| get("in_recovery"))?,
        current_lsn: lsn("current_lsn")?,
        timeline: row
            .try_get::<_, Option<i64>>("timeline")
            .map_err(|_| get("timeline"))?
            .and_then(|t| u32::try_from(t).ok()),
        receive_lsn: lsn("receive_lsn")?,
        replay_lsn: lsn("replay_lsn")?,
        replay_timestamp: f64_col("replay_timestamp")?,
        now: f64_col("now")?.unwrap_or_default(),
        backend_pid: row.try_get("backend_pid").map_err(|_| get("backend_pid"))?,
        data_directory: col("data_directory")?,
        server_version_num: row
            .try_get("server_version_num")
            .map_err(|_| get("server_version_num"))?,
        wal_receiver,
        replication,
        connections: Connections {
            client_backends: row
                .try_get("client_backends")
                .map_err(|_| get("client_backends"))?,
            max_connections: i64::from(
                row.try_get::<_, i32>("max_connections")
                    .map_err(|_| get("max_connections"))?,
            ),
            superuser_reserved: i64::from(
                row.try_get::<_, i32>("superuser_reserved_connections")
                    .map_err(|_| get("superuser_reserved_connections"))?,
            ),
            reserved: i64::from(
                row.try_get::<_, i32>("reserved_connections")
                    .map_err(|_| get("reserved_connections"))?,
            ),
        },
        waiting_sessions: row
            .try_get("waiting_sessions")
            .map_err(|_| get("waiting_sessions"))?,
        longest_lock_wait: f64_col("longest_lock_wait")?,
        retention,
        horizon,
        sync: SyncRep {
            standby_names: col("synchronous_standby_names")?.unwrap_or_default(),
            commit: col("synchronous_commit")?.unwrap_or_default(),
            waiters: i64_col("sync_waiters")?.unwrap_or_default(),
            waiting: json(col("sync_waiting")?, "pg_stat_activity")?.unwrap_or_default(),
            longest_wait_s: None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_round_trip() {
        let l = Lsn::parse("16/B374D848").expect("parses");
        assert_eq!(l.0, (0x16 << 32) | 0xB374_D848);
        assert_eq!(l.to_string(), "16/B374D848");
        assert_eq!(Lsn::parse("0/0"), Some(Lsn(0)));
        assert_eq!(Lsn::parse("zz"), None);
    }

    #[test]
    fn receiver_and_senders_parse_from_their_json() {
        let w: WalReceiver = serde_json::from_str(
            r#"{"status":"streaming","sender_host":"127.0.0.11","sender_port":5432,"received_tli":3,
                "flushed_lsn":"0/5000000","latest_end_lsn":"0/5000000","last_msg_receipt":1800000000.5,
                "slot_name":"node2"}"#,
        )
        .expect("receiver");
        assert_eq!(w.sender_host.as_deref(), Some("127.0.0.11"));
        let s: Vec<WalSender> = serde_json::from_str(
            r#"[{"application_name":"node2","client_addr":"127.0.0.1","state":"streaming",
                 "sync_state":"async","sent_lsn":"0/5000000","flush_lsn":null,"replay_lsn":"0/5000000",
                 "replay_lag_s":null}]"#,
        )
        .expect("senders");
        assert_eq!(s[0].state.as_deref(), Some("streaming"));
    }
}

/// Builders for the SQL probes' table tests.
#[cfg(test)]
pub mod tests_support {
    use super::*;

    pub fn cfg() -> PostgresConfig {
        serde_json::from_value(serde_json::json!({"user": "vigie"})).expect("config")
    }

    /// A healthy idle replica's snapshot; tests change what they need.
    pub fn snapshot() -> PgSnapshot {
        PgSnapshot {
            in_recovery: true,
            current_lsn: None,
            timeline: None,
            receive_lsn: Some(Lsn(0x500_0000)),
            replay_lsn: Some(Lsn(0x500_0000)),
            replay_timestamp: Some(1_800_000_000.0 - 3600.0),
            now: 1_800_000_000.0,
            backend_pid: 1,
            data_directory: None,
            server_version_num: 150_000,
            wal_receiver: Some(WalReceiver {
                status: "streaming".into(),
                sender_host: Some("127.0.0.11".into()),
                sender_port: Some(5432),
                received_tli: Some(3),
                flushed_lsn: Some("0/5000000".into()),
                latest_end_lsn: Some("0/5000000".into()),
                last_msg_receipt: Some(1_800_000_000.0 - 5.0),
                slot_name: Some("node2".into()),
            }),
            replication: Vec::new(),
            connections: Connections {
                client_backends: 5,
                max_connections: 100,
                superuser_reserved: 3,
                reserved: 0,
            },
            waiting_sessions: 0,
            longest_lock_wait: None,
            retention: Retention {
                archive_mode: "off".into(),
                max_wal_bytes: 1 << 30,
                max_slot_wal_keep_bytes: -1,
                ..Default::default()
            },
            horizon: Horizon {
                autovacuum_freeze_max_age: 200_000_000,
                ..Default::default()
            },
            sync: SyncRep {
                commit: "on".into(),
                ..Default::default()
            },
        }
    }

    pub fn sender(name: &str, state: &str) -> WalSender {
        WalSender {
            application_name: Some(name.into()),
            client_addr: Some("127.0.0.1".into()),
            state: Some(state.into()),
            sync_state: Some("async".into()),
            sent_lsn: Some("0/5000000".into()),
            flush_lsn: Some("0/5000000".into()),
            replay_lsn: Some("0/4000000".into()),
            replay_lag_s: None,
        }
    }
}
