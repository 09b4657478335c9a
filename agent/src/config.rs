//! Agent configuration: a TOML file plus `VIGIE_AGENT__SECTION__KEY` environment overrides, typed
//! and strict (unknown keys are errors), validated before anything runs. Every error names the
//! field it is about.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
pub use vigie_config::ConfigError;
pub use vigie_proto::tls::TlsFiles;

/// Environment variables starting with this prefix override the file (`__` separates levels):
/// `VIGIE_AGENT__POSTGRES__PASSWORD` sets `postgres.password`.
pub const ENV_PREFIX: &str = "VIGIE_AGENT";

/// A secret (a password): never printed, never serialised.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The whole agent configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// This host's node name: the Patroni member name on a DB host, any stable name elsewhere.
    pub node: String,
    /// Cluster scope (Patroni `scope`) the host belongs to.
    pub cluster: String,
    /// Time between two probe cycles (1s to 1h; default 5s).
    #[serde(default = "default_interval", deserialize_with = "duration")]
    pub interval: Duration,
    /// Default timeout of every probe (default: half the interval, at most 2s; less than
    /// `interval`).
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    pub patroni: Option<PatroniConfig>,
    pub postgres: Option<PostgresConfig>,
    pub etcd: Option<EtcdConfig>,
    pub haproxy: Option<HaproxyConfig>,
    #[serde(default)]
    pub system: SystemConfig,
    /// Where to stream results; without it the agent only logs them.
    #[serde(default)]
    pub collector: Option<CollectorConfig>,
}

/// The collector this agent streams to.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorConfig {
    /// `https://host:port` (TLS), or `http://host:port` with `plaintext = true`.
    #[serde(deserialize_with = "url")]
    pub url: reqwest::Url,
    /// Accept an unencrypted connection: must be said explicitly.
    #[serde(default, deserialize_with = "vigie_config::strict_bool")]
    pub plaintext: bool,
    /// CA certificate (PEM) that signed the collector's certificate.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// This node's client certificate and key (PEM), for mTLS: the certificate must be valid
    /// for `node`.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// Name to verify the collector's certificate against (default: the URL's host).
    #[serde(default)]
    pub server_name: Option<String>,
    /// Status transitions kept while the collector is unreachable (default 1000).
    #[serde(default = "default_journal_capacity")]
    pub journal_capacity: usize,
}

fn default_journal_capacity() -> usize {
    1000
}

/// Matches a process on its command line (readable for every user, unlike `/proc/PID/exe`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessMatch {
    /// The executable: a full path (`/usr/sbin/haproxy`) is compared with `argv[0]`, a bare name
    /// (`patroni`) with the base name of `argv[0]` or, for interpreted programs, of `argv[1]`.
    pub executable: String,
    /// Optional text the command line must contain (tells apart several instances on one host).
    #[serde(default)]
    pub cmdline_contains: Option<String>,
}

/// Patroni on this host.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatroniConfig {
    /// Patroni REST API base URL (default `http://127.0.0.1:8008`).
    #[serde(default = "default_patroni_url", deserialize_with = "url")]
    pub url: reqwest::Url,
    /// How to recognise the Patroni daemon (default: a program named `patroni`, usually run by
    /// python).
    #[serde(default = "default_patroni_process")]
    pub process: ProcessMatch,
    /// With an `https://` URL: the CA (PEM) that signed the server's certificate (default: the
    /// system's trusted roots).
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for servers that require one; goes with `key`.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[serde(default)]
    pub key: Option<PathBuf>,
}

/// PostgreSQL on this host, reached with a least-privilege (`pg_monitor`) role.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// Address PostgreSQL listens on (default `127.0.0.1`).
    #[serde(default = "default_pg_host")]
    pub host: String,
    #[serde(default = "default_pg_port")]
    pub port: u16,
    /// Monitoring role (member of `pg_monitor`; no superuser needed).
    pub user: String,
    #[serde(default = "default_pg_dbname")]
    pub dbname: String,
    /// The password (prefer `password_file` or `VIGIE_AGENT__POSTGRES__PASSWORD`).
    #[serde(default)]
    pub password: Option<Secret>,
    /// A file holding the password (first line).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Limit on establishing the connection (default: the probe timeout).
    #[serde(default, deserialize_with = "opt_duration")]
    pub connect_timeout: Option<Duration>,
    /// Server-side `statement_timeout` of the agent's session (default: the probe timeout, at
    /// most 1s).
    #[serde(default = "default_statement_timeout", deserialize_with = "duration")]
    pub statement_timeout: Duration,
    /// Replicas the primary should stream to (default: the other members Patroni lists).
    #[serde(default)]
    pub expected_replicas: Option<u32>,
    /// How often to check that the server accepts new connections with a real handshake
    /// (default 60s; the postmaster's process state is checked every cycle at no cost).
    #[serde(
        default = "default_accept_check_interval",
        deserialize_with = "duration"
    )]
    pub accept_check_interval: Duration,
    /// Replication lag thresholds, on the standby (bytes received but not replayed).
    #[serde(default = "default_lag_warning_bytes")]
    pub lag_warning_bytes: u64,
    #[serde(default = "default_lag_critical_bytes")]
    pub lag_critical_bytes: u64,
    /// Replication lag thresholds in time (replay behind the last received transaction).
    #[serde(default = "default_lag_warning", deserialize_with = "duration")]
    pub lag_warning: Duration,
    #[serde(default = "default_lag_critical", deserialize_with = "duration")]
    pub lag_critical: Duration,
    /// A session waiting on a lock for longer than this is a warning (default 30s)…
    #[serde(default = "default_lock_wait_warning", deserialize_with = "duration")]
    pub lock_wait_warning: Duration,
    /// …and for longer than this, critical (default 5m).
    #[serde(default = "default_lock_wait_critical", deserialize_with = "duration")]
    pub lock_wait_critical: Duration,
    /// TLS to PostgreSQL, as libpq's `sslmode` (default `prefer`).
    #[serde(default)]
    pub sslmode: SslMode,
    /// CA (PEM) that signed the server's certificate, for `verify-ca`/`verify-full` (default: the
    /// system's trusted roots); with `require` it makes the chain checked, as in libpq.
    #[serde(default)]
    pub sslrootcert: Option<PathBuf>,
    /// Client certificate (PEM), for `hostssl … cert` lines or `clientcert=verify-*`; goes with
    /// `sslkey`.
    #[serde(default)]
    pub sslcert: Option<PathBuf>,
    #[serde(default)]
    pub sslkey: Option<PathBuf>,
}

/// libpq's `sslmode` values the agent supports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// Plaintext only.
    Disable,
    /// TLS when the server offers it, plaintext otherwise; nothing verified.
    #[default]
    Prefer,
    /// TLS or fail; the certificate is not verified (unless `sslrootcert` is set).
    Require,
    /// TLS, certificate chain checked, not the host name.
    VerifyCa,
    /// TLS, chain and host name checked.
    VerifyFull,
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

impl PostgresConfig {
    /// This section's key for one of the TLS files.
    pub fn tls_key(file: vigie_proto::tls::TlsFile) -> &'static str {
        match file {
            vigie_proto::tls::TlsFile::Ca => "sslrootcert",
            vigie_proto::tls::TlsFile::Cert => "sslcert",
            vigie_proto::tls::TlsFile::Key => "sslkey",
        }
    }

    /// The TLS files, with the configuration's names mapped to [`TlsFiles`].
    pub fn tls_files(&self) -> TlsFiles {
        TlsFiles {
            ca: self.sslrootcert.clone(),
            cert: self.sslcert.clone(),
            key: self.sslkey.clone(),
        }
    }
}

/// etcd member on this host.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdConfig {
    /// Client URL of the local member (default `http://127.0.0.1:2379`).
    #[serde(default = "default_etcd_url", deserialize_with = "url")]
    pub client_url: reqwest::Url,
    /// Peer address of the local member (default: the client URL's host, port 2380).
    #[serde(default)]
    pub peer_address: Option<String>,
    /// How to recognise the etcd daemon (default `/usr/bin/etcd`).
    #[serde(default = "default_etcd_process")]
    pub process: ProcessMatch,
    /// With an `https://` URL: the CA (PEM) that signed the server's certificate (default: the
    /// system's trusted roots).
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for servers that require one; goes with `key`.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[serde(default)]
    pub key: Option<PathBuf>,
}

impl PatroniConfig {
    pub fn tls_files(&self) -> TlsFiles {
        TlsFiles {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }
}

impl EtcdConfig {
    pub fn tls_files(&self) -> TlsFiles {
        TlsFiles {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }

    /// `host:port` of the client URL.
    pub fn client_address(&self) -> String {
        url_address(&self.client_url)
    }

    /// `host:port` of the peer port.
    pub fn peer(&self) -> String {
        self.peer_address.clone().unwrap_or_else(|| {
            format!("{}:2380", self.client_url.host_str().unwrap_or("127.0.0.1"))
        })
    }
}

/// HAProxy on this host.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaproxyConfig {
    /// The stats socket (`stats socket … level` any); preferred over `stats_url`.
    #[serde(default)]
    pub stats_socket: Option<PathBuf>,
    /// The stats page's CSV URL (`http://host:port/;csv`).
    #[serde(default, deserialize_with = "opt_url")]
    pub stats_url: Option<reqwest::Url>,
    /// How to recognise the HAProxy daemon (default `/usr/sbin/haproxy`).
    #[serde(default = "default_haproxy_process")]
    pub process: ProcessMatch,
    /// How the RW/RO port probes check a port: `listen` (default) looks for the listening socket
    /// in the kernel (sock_diag, or `/proc/net/tcp*`) — cheap, and no PostgreSQL backend is forked; `connect` opens a TCP
    /// connection as `check_tcp` does (HAProxy passes it through to PostgreSQL).
    #[serde(default)]
    pub port_check: PortCheck,
    /// The applications HAProxy serves, one RW (and usually one RO) port each.
    #[serde(default)]
    pub applications: Vec<HaproxyApplication>,
    /// With an `https://` `stats_url`: the CA (PEM) that signed the server's certificate (default: the
    /// system's trusted roots).
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for servers that require one; goes with `key`.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[serde(default)]
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortCheck {
    #[default]
    Listen,
    Connect,
}

/// One application behind HAProxy.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaproxyApplication {
    pub name: String,
    /// Read-write address (`ip:port`).
    pub rw: SocketAddr,
    /// Read-only address (`ip:port`).
    #[serde(default)]
    pub ro: Option<SocketAddr>,
    /// Name of the RW proxy in HAProxy's stats (default `NAME_rw`).
    #[serde(default)]
    pub rw_backend: Option<String>,
    /// Name of the RO proxy in HAProxy's stats (default `NAME_ro`).
    #[serde(default)]
    pub ro_backend: Option<String>,
}

impl HaproxyConfig {
    pub fn tls_files(&self) -> TlsFiles {
        TlsFiles {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }
}

impl HaproxyApplication {
    pub fn rw_backend(&self) -> String {
        self.rw_backend
            .clone()
            .unwrap_or_else(|| format!("{}_rw", self.name))
    }

    pub fn ro_backend(&self) -> String {
        self.ro_backend
            .clone()
            .unwrap_or_else(|| format!("{}_ro", self.name))
    }
}

/// Host resource thresholds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemConfig {
    /// Turn the `system.*` probes off (default on).
    #[serde(default = "yes", deserialize_with = "vigie_config::strict_bool")]
    pub enabled: bool,
    #[serde(default = "default_cpu_warning")]
    pub cpu_warning_percent: f64,
    #[serde(default = "default_cpu_critical")]
    pub cpu_critical_percent: f64,
    #[serde(default = "default_memory_warning")]
    pub memory_warning_percent: f64,
    #[serde(default = "default_memory_critical")]
    pub memory_critical_percent: f64,
    #[serde(default = "default_disk_warning")]
    pub disk_warning_percent: f64,
    #[serde(default = "default_disk_critical")]
    pub disk_critical_percent: f64,
    /// Filesystems to watch, by a path on them (default: PostgreSQL's data directory and its
    /// `pg_wal`, shown once when they share a filesystem; else `/`).
    #[serde(default)]
    pub disk_paths: Vec<PathBuf>,
}

impl Default for SystemConfig {
    fn default() -> Self {
        SystemConfig {
            enabled: true,
            cpu_warning_percent: default_cpu_warning(),
            cpu_critical_percent: default_cpu_critical(),
            memory_warning_percent: default_memory_warning(),
            memory_critical_percent: default_memory_critical(),
            disk_warning_percent: default_disk_warning(),
            disk_critical_percent: default_disk_critical(),
            disk_paths: Vec::new(),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_statement_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_accept_check_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_patroni_url() -> reqwest::Url {
    reqwest::Url::parse("http://127.0.0.1:8008").expect("static URL")
}
fn default_etcd_url() -> reqwest::Url {
    reqwest::Url::parse("http://127.0.0.1:2379").expect("static URL")
}
fn default_pg_host() -> String {
    "127.0.0.1".to_string()
}
fn default_pg_port() -> u16 {
    5432
}
fn default_pg_dbname() -> String {
    "postgres".to_string()
}
fn default_lag_warning_bytes() -> u64 {
    16 * 1024 * 1024
}
fn default_lag_critical_bytes() -> u64 {
    256 * 1024 * 1024
}
fn default_lag_warning() -> Duration {
    Duration::from_secs(30)
}
fn default_lag_critical() -> Duration {
    Duration::from_secs(300)
}
fn default_lock_wait_warning() -> Duration {
    Duration::from_secs(30)
}
fn default_lock_wait_critical() -> Duration {
    Duration::from_secs(300)
}
fn default_cpu_warning() -> f64 {
    90.0
}
fn default_cpu_critical() -> f64 {
    98.0
}
fn default_memory_warning() -> f64 {
    90.0
}
fn default_memory_critical() -> f64 {
    95.0
}
fn default_disk_warning() -> f64 {
    85.0
}
fn default_disk_critical() -> f64 {
    95.0
}
fn default_patroni_process() -> ProcessMatch {
    ProcessMatch {
        executable: "patroni".to_string(),
        cmdline_contains: None,
    }
}
fn default_etcd_process() -> ProcessMatch {
    ProcessMatch {
        executable: "/usr/bin/etcd".to_string(),
        cmdline_contains: None,
    }
}
fn default_haproxy_process() -> ProcessMatch {
    ProcessMatch {
        executable: "/usr/sbin/haproxy".to_string(),
        cmdline_contains: None,
    }
}

/// `host:port` of a URL (port defaulted from the scheme).
pub fn url_address(url: &reqwest::Url) -> String {
    format!(
        "{}:{}",
        url.host_str().unwrap_or("127.0.0.1"),
        url.port_or_known_default().unwrap_or(80)
    )
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "`{text}` is not a duration ({e}); write e.g. \"5s\" or \"500ms\""
        ))
    })
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

fn url<'de, D: Deserializer<'de>>(d: D) -> Result<reqwest::Url, D::Error> {
    let text = String::deserialize(d)?;
    reqwest::Url::parse(&text)
        .map_err(|e| serde::de::Error::custom(format!("`{text}` is not a URL ({e})")))
}

fn opt_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<reqwest::Url>, D::Error> {
    url(d).map(Some)
}

/// Loads the configuration from `path`, with overrides from `env` (the process environment in
/// production; tests pass their own map), then validates it.
pub fn load(path: &Path, env: HashMap<String, String>) -> Result<AgentConfig, ConfigError> {
    let source = vigie_config::Source::read(path, ENV_PREFIX, env)?;
    // Defaults that follow other fields: only where the file and the environment are silent.
    let timeout_set = source.is_set("timeout");
    let statement_timeout_set = source.is_set("postgres.statement_timeout");
    let mut cfg: AgentConfig = source.deserialize()?;
    derive_defaults(&mut cfg, timeout_set, statement_timeout_set);
    resolve_secrets(&mut cfg)?;
    validate(&cfg)?;
    Ok(cfg)
}

/// The probe timeout defaults to half the interval, at most 2s; the session's
/// `statement_timeout` to the probe timeout, at most 1s. (A fixed 2s default made a 2s interval
/// invalid until `timeout` was set.)
fn derive_defaults(cfg: &mut AgentConfig, timeout_set: bool, statement_timeout_set: bool) {
    if !timeout_set {
        cfg.timeout = default_timeout().min(cfg.interval / 2);
    }
    if let Some(pg) = cfg.postgres.as_mut()
        && !statement_timeout_set
    {
        pg.statement_timeout = default_statement_timeout().min(cfg.timeout);
    }
}

fn resolve_secrets(cfg: &mut AgentConfig) -> Result<(), ConfigError> {
    if let Some(pg) = cfg.postgres.as_mut()
        && pg.password.is_none()
        && let Some(file) = &pg.password_file
    {
        let text = std::fs::read_to_string(file).map_err(|e| {
            ConfigError::new(
                "postgres.password_file",
                format!("cannot read {}: {e}", file.display()),
            )
        })?;
        let first = text.lines().next().unwrap_or("").to_string();
        if first.is_empty() {
            return Err(ConfigError::new(
                "postgres.password_file",
                format!("{} is empty", file.display()),
            ));
        }
        pg.password = Some(Secret(first));
    }
    Ok(())
}

/// Checks what types alone cannot: ranges, consistency between fields, required companions.
pub fn validate(cfg: &AgentConfig) -> Result<(), ConfigError> {
    // As the collector checks them at Hello: it refuses any other name.
    let name_ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 253
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    if cfg.node.trim().is_empty() {
        return Err(ConfigError::new("node", "must not be empty"));
    }
    if !name_ok(&cfg.node) {
        return Err(ConfigError::new(
            "node",
            "must be at most 253 characters of [A-Za-z0-9._-] (the collector refuses others)",
        ));
    }
    if cfg.cluster.trim().is_empty() {
        return Err(ConfigError::new("cluster", "must not be empty"));
    }
    if !name_ok(&cfg.cluster) {
        return Err(ConfigError::new(
            "cluster",
            "must be at most 253 characters of [A-Za-z0-9._-] (the collector refuses others)",
        ));
    }
    if cfg.interval < Duration::from_secs(1) || cfg.interval > Duration::from_secs(60) {
        return Err(ConfigError::new(
            "interval",
            "must be between 1s and 60s (the collector refuses other intervals at Hello)",
        ));
    }
    if cfg.timeout.is_zero() || cfg.timeout >= cfg.interval {
        return Err(ConfigError::new(
            "timeout",
            format!(
                "must be above 0 and below interval ({})",
                humantime::format_duration(cfg.interval)
            ),
        ));
    }
    if cfg.patroni.is_none()
        && cfg.postgres.is_none()
        && cfg.etcd.is_none()
        && cfg.haproxy.is_none()
    {
        return Err(ConfigError::new(
            "(file)",
            "no component configured: add at least one of [patroni], [postgres], [etcd], [haproxy]",
        ));
    }
    if let Some(pg) = &cfg.postgres {
        if cfg.patroni.is_none() {
            return Err(ConfigError::new(
                "postgres",
                "needs a [patroni] section: the SQL probes judge against the role Patroni gives the node",
            ));
        }
        if pg.user.trim().is_empty() {
            return Err(ConfigError::new("postgres.user", "must not be empty"));
        }
        if pg.statement_timeout.is_zero() || pg.statement_timeout > cfg.timeout {
            return Err(ConfigError::new(
                "postgres.statement_timeout",
                "must be above 0 and at most the probe timeout",
            ));
        }
        if let Some(t) = pg.connect_timeout
            && (t.is_zero() || t > cfg.timeout)
        {
            return Err(ConfigError::new(
                "postgres.connect_timeout",
                "must be above 0 and at most the probe timeout",
            ));
        }
        if pg.lag_warning_bytes > pg.lag_critical_bytes {
            return Err(ConfigError::new(
                "postgres.lag_warning_bytes",
                "must not exceed lag_critical_bytes",
            ));
        }
        if pg.lag_warning > pg.lag_critical {
            return Err(ConfigError::new(
                "postgres.lag_warning",
                "must not exceed lag_critical",
            ));
        }
        if pg.lock_wait_warning > pg.lock_wait_critical {
            return Err(ConfigError::new(
                "postgres.lock_wait_warning",
                "must not exceed lock_wait_critical",
            ));
        }
    }
    if let Some(h) = &cfg.haproxy {
        if h.stats_socket.is_none() && h.stats_url.is_none() {
            return Err(ConfigError::new(
                "haproxy.stats_socket",
                "set stats_socket or stats_url: the backend probe reads HAProxy's stats",
            ));
        }
        if h.applications.is_empty() {
            return Err(ConfigError::new(
                "haproxy.applications",
                "list at least one application with its rw (and ro) address",
            ));
        }
        for (i, app) in h.applications.iter().enumerate() {
            if app.name.trim().is_empty() {
                return Err(ConfigError::new(
                    format!("haproxy.applications[{i}].name"),
                    "must not be empty",
                ));
            }
        }
    }
    if let Some(p) = &cfg.patroni {
        validate_tls(
            "patroni",
            ["ca", "cert", "key"],
            Some(&p.url),
            &p.tls_files(),
        )?;
    }
    if let Some(e) = &cfg.etcd {
        validate_tls(
            "etcd",
            ["ca", "cert", "key"],
            Some(&e.client_url),
            &e.tls_files(),
        )?;
    }
    if let Some(h) = &cfg.haproxy {
        validate_tls(
            "haproxy",
            ["ca", "cert", "key"],
            h.stats_url.as_ref(),
            &h.tls_files(),
        )?;
    }
    if let Some(pg) = &cfg.postgres {
        let files = pg.tls_files();
        if pg.sslmode == SslMode::Disable
            && let Some((field, _)) = [
                ("sslrootcert", &files.ca),
                ("sslcert", &files.cert),
                ("sslkey", &files.key),
            ]
            .into_iter()
            .find(|(_, f)| f.is_some())
        {
            return Err(ConfigError::new(
                format!("postgres.{field}"),
                "sslmode = \"disable\" uses no TLS: remove it or choose another sslmode",
            ));
        }
        validate_tls(
            "postgres",
            ["sslrootcert", "sslcert", "sslkey"],
            None,
            &files,
        )?;
    }
    if let Some(c) = &cfg.collector {
        match (c.url.scheme(), c.plaintext) {
            ("http", false) => {
                return Err(ConfigError::new(
                    "collector.plaintext",
                    "an http:// collector URL needs plaintext = true (or use https:// with ca)",
                ));
            }
            ("https", true) => {
                return Err(ConfigError::new(
                    "collector.plaintext",
                    "cannot be true with an https:// URL",
                ));
            }
            ("https", false) if c.ca.is_none() => {
                return Err(ConfigError::new(
                    "collector.ca",
                    "an https:// collector needs the CA that signed its certificate",
                ));
            }
            ("http" | "https", _) => {}
            (other, _) => {
                return Err(ConfigError::new(
                    "collector.url",
                    format!("scheme `{other}`: use https:// or http://"),
                ));
            }
        }
        if c.cert.is_some() != c.key.is_some() {
            return Err(ConfigError::new(
                "collector.cert",
                "cert and key go together",
            ));
        }
        for (field, path) in [
            ("collector.ca", &c.ca),
            ("collector.cert", &c.cert),
            ("collector.key", &c.key),
        ] {
            if let Some(p) = path
                && let Err(e) = std::fs::metadata(p)
            {
                return Err(ConfigError::new(field, format!("{}: {e}", p.display())));
            }
        }
        if c.journal_capacity == 0 || c.journal_capacity > 10_000 {
            return Err(ConfigError::new(
                "collector.journal_capacity",
                "must be 1 to 10000 (the collector refuses longer journals)",
            ));
        }
    }
    let s = &cfg.system;
    for (field, warn, crit) in [
        (
            "system.cpu_warning_percent",
            s.cpu_warning_percent,
            s.cpu_critical_percent,
        ),
        (
            "system.memory_warning_percent",
            s.memory_warning_percent,
            s.memory_critical_percent,
        ),
        (
            "system.disk_warning_percent",
            s.disk_warning_percent,
            s.disk_critical_percent,
        ),
    ] {
        if !(0.0..=100.0).contains(&warn) || !(0.0..=100.0).contains(&crit) || warn > crit {
            return Err(ConfigError::new(
                field,
                "warning and critical must be percentages with warning <= critical",
            ));
        }
    }
    Ok(())
}

/// One endpoint's TLS files: `cert` and `key` together, each file readable and parseable (the
/// key matching the certificate), and only with an `https://` URL when the endpoint has one.
/// `names` are the section's keys for the CA, the certificate and the key.
fn validate_tls(
    section: &str,
    names: [&str; 3],
    url: Option<&reqwest::Url>,
    files: &TlsFiles,
) -> Result<(), ConfigError> {
    let [ca, cert, key] = names;
    let field = |name: &str| format!("{section}.{name}");
    match (&files.cert, &files.key) {
        (Some(_), None) => {
            return Err(ConfigError::new(
                field(key),
                format!(
                    "missing: {} needs its private key in {}",
                    field(cert),
                    field(key)
                ),
            ));
        }
        (None, Some(_)) => {
            return Err(ConfigError::new(
                field(cert),
                format!(
                    "missing: {} needs its certificate in {}",
                    field(key),
                    field(cert)
                ),
            ));
        }
        _ => {}
    }
    if files == &TlsFiles::default() {
        return Ok(());
    }
    if let Some(url) = url
        && url.scheme() != "https"
    {
        let name = if files.ca.is_some() { ca } else { cert };
        return Err(ConfigError::new(
            field(name),
            format!("TLS files need an https:// URL, not {url}"),
        ));
    }
    vigie_proto::tls::check(files).map_err(|e| {
        let name = match e.file {
            vigie_proto::tls::TlsFile::Ca => ca,
            vigie_proto::tls::TlsFile::Cert => cert,
            vigie_proto::tls::TlsFile::Key => key,
        };
        ConfigError::new(field(name), e.message)
    })
}

/// The components configured on this host, in a stable order.
pub fn components(cfg: &AgentConfig) -> Vec<&'static str> {
    let mut out = Vec::new();
    if cfg.patroni.is_some() {
        out.push("patroni");
    }
    if cfg.postgres.is_some() {
        out.push("postgres");
    }
    if cfg.etcd.is_some() {
        out.push("etcd");
    }
    if cfg.haproxy.is_some() {
        out.push("haproxy");
    }
    if cfg.system.enabled {
        out.push("system");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(toml: &str, env: &[(&str, &str)]) -> Result<AgentConfig, ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, toml).expect("write");
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        load(&path, env)
    }

    const MINIMAL: &str = r#"
        node = "node1"
        cluster = "demo"
        [patroni]
        url = "http://127.0.0.11:8008"
    "#;

    #[test]
    fn names_and_intervals_the_collector_would_refuse_are_refused_here() {
        for (toml, field) in [
            ("node = \"node 1\"\ncluster = \"demo\"", "node"),
            ("node = \"node1|x\"\ncluster = \"demo\"", "node"),
            ("node = \"node1\"\ncluster = \"de\\nmo\"", "cluster"),
            (
                "node = \"node1\"\ncluster = \"demo\"\ninterval = \"2m\"",
                "interval",
            ),
        ] {
            let e = load_str(
                &format!("{toml}\n[patroni]\nurl = \"http://127.0.0.11:8008\""),
                &[],
            )
            .expect_err(toml);
            assert!(e.to_string().contains(field), "{toml}: {e}");
        }
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let cfg = load_str(MINIMAL, &[]).expect("valid");
        assert_eq!(cfg.interval, Duration::from_secs(5));
        assert_eq!(cfg.timeout, Duration::from_secs(2));
        assert_eq!(components(&cfg), vec!["patroni", "system"]);
    }

    #[test]
    fn unknown_key_is_named() {
        let e = load_str(&format!("{MINIMAL}\nintervall = \"5s\""), &[]).expect_err("invalid");
        assert!(e.to_string().contains("intervall"), "{e}");
    }

    #[test]
    fn unknown_nested_key_is_named() {
        let e = load_str(&format!("{MINIMAL}\nport = 1"), &[]).expect_err("invalid");
        assert!(e.to_string().contains("port"), "{e}");
    }

    #[test]
    fn bad_duration_names_the_field() {
        let e = load_str(&format!("interval = \"soon\"\n{MINIMAL}"), &[]).expect_err("invalid");
        assert_eq!(e.field, "interval", "{e}");
        assert!(e.message.contains("soon"), "{e}");
    }

    #[test]
    fn missing_node_is_named() {
        let e = load_str("cluster = \"demo\"\n[patroni]\n", &[]).expect_err("invalid");
        assert!(e.to_string().contains("node"), "{e}");
    }

    #[test]
    fn timeouts_follow_the_interval_unless_set() {
        let pg = "[postgres]\nuser = \"vigie\"\n";
        for (head, timeout, statement) in [
            ("interval = \"2s\"\n", 1_000, 1_000),
            ("interval = \"1s\"\n", 500, 500),
            ("interval = \"10s\"\n", 2_000, 1_000),
            ("interval = \"2s\"\ntimeout = \"1500ms\"\n", 1_500, 1_000),
            ("interval = \"1s\"\ntimeout = \"300ms\"\n", 300, 300),
        ] {
            let cfg = load_str(&format!("{head}{MINIMAL}{pg}"), &[]).expect(head);
            assert_eq!(cfg.timeout, Duration::from_millis(timeout), "{head}");
            let pg = cfg.postgres.as_ref().expect("postgres");
            assert_eq!(
                pg.statement_timeout,
                Duration::from_millis(statement),
                "{head}"
            );
        }
        // Set by the environment counts as set.
        let cfg = load_str(
            &format!("interval = \"2s\"\n{MINIMAL}"),
            &[("VIGIE_AGENT__TIMEOUT", "1200ms")],
        )
        .expect("valid");
        assert_eq!(cfg.timeout, Duration::from_millis(1_200));
        // An explicit statement_timeout above the derived probe timeout is still an error.
        let e = load_str(
            &format!("interval = \"1s\"\n{MINIMAL}{pg}statement_timeout = \"900ms\"\n"),
            &[],
        )
        .expect_err("invalid");
        assert_eq!(e.field, "postgres.statement_timeout");
    }

    #[test]
    fn timeout_must_be_below_interval() {
        let e = load_str(
            &format!("interval = \"2s\"\ntimeout = \"3s\"\n{MINIMAL}"),
            &[],
        )
        .expect_err("invalid");
        assert_eq!(e.field, "timeout");
    }

    #[test]
    fn environment_overrides_the_file() {
        let cfg = load_str(MINIMAL, &[("VIGIE_AGENT__INTERVAL", "10s")]).expect("valid");
        assert_eq!(cfg.interval, Duration::from_secs(10));
    }

    #[test]
    fn password_comes_from_file_and_never_shows_in_debug() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\n").expect("write");
        let toml = format!(
            "{MINIMAL}\n[postgres]\nuser = \"vigie\"\npassword_file = \"{}\"\n",
            pw.display()
        );
        let cfg = load_str(&toml, &[]).expect("valid");
        let pg = cfg.postgres.as_ref().expect("postgres");
        assert_eq!(pg.password.as_ref().expect("password").expose(), "s3cret");
        assert!(!format!("{cfg:?}").contains("s3cret"));
    }

    #[test]
    fn password_from_environment() {
        let toml = format!("{MINIMAL}\n[postgres]\nuser = \"vigie\"\n");
        let cfg = load_str(&toml, &[("VIGIE_AGENT__POSTGRES__PASSWORD", "envpw")]).expect("valid");
        let pg = cfg.postgres.as_ref().expect("postgres");
        assert_eq!(pg.password.as_ref().expect("password").expose(), "envpw");
    }

    #[test]
    fn unreadable_password_file_names_the_field() {
        let toml = format!(
            "{MINIMAL}\n[postgres]\nuser = \"vigie\"\npassword_file = \"/nonexistent/pw\"\n"
        );
        let e = load_str(&toml, &[]).expect_err("invalid");
        assert_eq!(e.field, "postgres.password_file");
    }

    #[test]
    fn postgres_needs_patroni() {
        let e = load_str(
            "node = \"n\"\ncluster = \"c\"\n[postgres]\nuser = \"vigie\"\n",
            &[],
        )
        .expect_err("invalid");
        assert_eq!(e.field, "postgres");
    }

    #[test]
    fn haproxy_needs_stats_and_applications() {
        let base = "node = \"h\"\ncluster = \"c\"\n";
        let e = load_str(&format!("{base}[haproxy]\n"), &[]).expect_err("invalid");
        assert_eq!(e.field, "haproxy.stats_socket");
        let e = load_str(&format!("{base}[haproxy]\nstats_socket = \"/x\"\n"), &[])
            .expect_err("invalid");
        assert_eq!(e.field, "haproxy.applications");
    }

    #[test]
    fn fields_in_lists_and_missing_fields_are_named() {
        let e = load_str(
            "node = \"h\"\ncluster = \"c\"\n[haproxy]\nstats_socket = \"/x\"\n[[haproxy.applications]]\nname = \"a\"\nrw = \"nope\"\n",
            &[],
        )
        .expect_err("invalid");
        assert_eq!(e.field, "haproxy.applications[0].rw");
        let e = load_str(
            "node = \"n\"\ncluster = \"c\"\n[patroni]\n[postgres]\nport = 1\n",
            &[],
        )
        .expect_err("invalid");
        assert_eq!(e.field, "postgres.user");
        let e = load_str(&format!("{MINIMAL}\nport = 1"), &[]).expect_err("invalid");
        assert_eq!(e.field, "patroni.port");
    }

    #[test]
    fn wrong_types_unknown_and_missing_keys_name_the_full_path() {
        let app = "node = \"h\"\ncluster = \"c\"\n[haproxy]\nstats_socket = \"/x\"\n\
                   [[haproxy.applications]]\nname = \"a\"\nrw = \"127.0.0.1:5000\"\n";
        let pg = format!("{MINIMAL}[postgres]\nuser = \"v\"\n");
        for (text, field) in [
            (format!("{pg}port = \"fivefour\"\n"), "postgres.port"),
            (format!("{pg}lag_warning = 30\n"), "postgres.lag_warning"),
            (format!("{pg}sslmode = \"always\"\n"), "postgres.sslmode"),
            (
                format!("{MINIMAL}[system]\ndisk_paths = \"/\"\n"),
                "system.disk_paths",
            ),
            (format!("{app}rww = \"x\"\n"), "haproxy.applications[0].rww"),
            (
                format!("{app}[[haproxy.applications]]\nname = \"b\"\nrw = [1]\n"),
                "haproxy.applications[1].rw",
            ),
            (
                format!("{app}[[haproxy.applications]]\nname = \"b\"\n"),
                "haproxy.applications[1].rw",
            ),
            (
                format!("{app}[haproxy.process]\nexecutable = \"haproxy\"\nexe = \"x\"\n"),
                "haproxy.process.exe",
            ),
        ] {
            let e = load_str(&text, &[]).expect_err(&text);
            assert_eq!(e.field, field, "{e}");
        }
        let e = load_str(&pg, &[("VIGIE_AGENT__POSTGRES__PORT", "x")]).expect_err("invalid");
        assert_eq!(e.field, "postgres.port", "{e}");
    }

    #[test]
    fn collector_transport_must_be_explicit() {
        let e = load_str(
            &format!("{MINIMAL}\n[collector]\nurl = \"http://127.0.0.1:9701\"\n"),
            &[],
        )
        .expect_err("invalid");
        assert_eq!(e.field, "collector.plaintext");
        let e = load_str(
            &format!("{MINIMAL}\n[collector]\nurl = \"https://c:9701\"\n"),
            &[],
        )
        .expect_err("invalid");
        assert_eq!(e.field, "collector.ca");
        let ok = load_str(
            &format!("{MINIMAL}\n[collector]\nurl = \"http://127.0.0.1:9701\"\nplaintext = true\n"),
            &[],
        );
        assert!(ok.is_ok());
    }

    #[test]
    fn tls_files_come_in_pairs_and_need_https() {
        let e = load_str(&format!("{MINIMAL}cert = \"/x.crt\"\n"), &[]).expect_err("invalid");
        assert_eq!(e.field, "patroni.key", "{e}");
        let e = load_str(&format!("{MINIMAL}key = \"/x.key\"\n"), &[]).expect_err("invalid");
        assert_eq!(e.field, "patroni.cert", "{e}");
        // MINIMAL's URL is http://: a CA there would be silently unused.
        let e = load_str(&format!("{MINIMAL}ca = \"/x.crt\"\n"), &[]).expect_err("invalid");
        assert_eq!(e.field, "patroni.ca", "{e}");
        assert!(e.message.contains("https://"), "{e}");
    }

    #[test]
    fn https_without_ca_uses_the_system_roots() {
        let cfg = load_str(
            "node = \"n\"\ncluster = \"c\"\n[patroni]\nurl = \"https://127.0.0.11:8008\"\n",
            &[],
        )
        .expect("valid");
        assert!(cfg.patroni.expect("patroni").ca.is_none());
    }

    #[test]
    fn sslmode_defaults_to_prefer_and_disable_takes_no_files() {
        let cfg = load_str(&format!("{MINIMAL}\n[postgres]\nuser = \"v\"\n"), &[]).expect("valid");
        assert_eq!(cfg.postgres.expect("pg").sslmode, SslMode::Prefer);
        let e = load_str(
            &format!(
                "{MINIMAL}\n[postgres]\nuser = \"v\"\nsslmode = \"disable\"\nsslrootcert = \"/x\"\n"
            ),
            &[],
        )
        .expect_err("invalid");
        assert_eq!(e.field, "postgres.sslrootcert", "{e}");
        let e = load_str(
            &format!("{MINIMAL}\n[postgres]\nuser = \"v\"\nsslkey = \"/x\"\n"),
            &[],
        )
        .expect_err("invalid");
        assert_eq!(e.field, "postgres.sslcert", "{e}");
    }

    #[test]
    fn bad_url_names_the_field() {
        let e = load_str(
            "node = \"n\"\ncluster = \"c\"\n[patroni]\nurl = \"not a url\"\n",
            &[],
        )
        .expect_err("invalid");
        assert!(e.to_string().contains("patroni.url"), "{e}");
    }
}
