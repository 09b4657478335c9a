//! Collector configuration: TOML plus `VIGIE_COLLECTOR__SECTION__KEY` overrides, strict, validated
//! before any port is bound. Errors name the field.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
pub use vigie_config::ConfigError;

use crate::verdict::Policy;

pub const ENV_PREFIX: &str = "VIGIE_COLLECTOR";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorConfig {
    /// Where agents stream to (gRPC).
    pub grpc_listen: SocketAddr,
    /// The HTTP API.
    pub http_listen: SocketAddr,
    /// TLS for the gRPC listener. With `client_ca`, agents must present a certificate valid for
    /// the node they claim to be (mTLS).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Accept agents without TLS: must be said explicitly.
    #[serde(default, deserialize_with = "vigie_config::strict_bool")]
    pub plaintext: bool,
    /// TLS without `tls.client_ca` lets any client speak for any node: must be said explicitly.
    #[serde(default, deserialize_with = "vigie_config::strict_bool")]
    pub allow_unauthenticated_agents: bool,
    /// How often verdicts are re-evaluated (besides on every new batch), default 500ms.
    #[serde(default = "default_evaluate_every", deserialize_with = "duration")]
    pub evaluate_every: Duration,
    #[serde(default)]
    pub events: EventsConfig,
    #[serde(default)]
    pub verdict: VerdictConfig,
    #[serde(default)]
    pub api: ApiConfig,
    /// Push open findings to Alertmanager.
    #[serde(default)]
    pub alertmanager: Option<AlertmanagerConfig>,
    /// POST signed notifications to these URLs.
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
    #[serde(default)]
    pub notify: NotifyConfig,
}

/// When findings notify (Alertmanager and webhooks alike).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Hold time per finding code before it notifies, e.g. `{ REPLICATION_LAG = "2m" }`
    /// (defaults: critical 0s, warnings 30s, lag/stale/skew 1m, resources/locks 5m).
    #[serde(default)]
    pub hold: HashMap<String, String>,
}

impl NotifyConfig {
    /// The hold overrides, by code (validated at load).
    pub fn holds(&self) -> HashMap<crate::verdict::Code, Duration> {
        self.hold
            .iter()
            .filter_map(|(k, v)| {
                let code = crate::verdict::Code::ALL.iter().find(|c| c.as_str() == k)?;
                Some((*code, humantime::parse_duration(v).ok()?))
            })
            .collect()
    }
}

/// A webhook receiver.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    #[serde(deserialize_with = "url")]
    pub url: reqwest::Url,
    /// File holding the HMAC-SHA256 secret (first line).
    pub secret_file: PathBuf,
    /// With an `https://` URL: the CA (PEM) that signed the receiver's certificate (default:
    /// the system's trusted roots).
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Client certificate and key (PEM), for a receiver that requires one.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
}

impl WebhookConfig {
    pub fn tls_files(&self) -> vigie_proto::tls::TlsFiles {
        vigie_proto::tls::TlsFiles {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }
}

/// Alertmanager (v2 API) to push findings to.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// Base URL, e.g. `http://127.0.0.1:9093`.
    #[serde(deserialize_with = "url")]
    pub url: reqwest::Url,
    /// How often firing alerts are re-sent (default 30s; `endsAt` is 4 of these ahead).
    #[serde(default = "default_resend", deserialize_with = "duration")]
    pub resend: Duration,
    /// With an `https://` URL: the CA (PEM) that signed the receiver's certificate (default:
    /// the system's trusted roots).
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Client certificate and key (PEM), for a receiver that requires one.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
}

impl AlertmanagerConfig {
    pub fn tls_files(&self) -> vigie_proto::tls::TlsFiles {
        vigie_proto::tls::TlsFiles {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }
}

/// An HTTP client for a notification receiver: TLS with `files` for https URLs.
pub fn http_client(
    timeout: Duration,
    files: &vigie_proto::tls::TlsFiles,
) -> Result<reqwest::Client, vigie_proto::tls::TlsError> {
    let tls = vigie_proto::tls::client_config(files, vigie_proto::tls::Verify::Full)?;
    reqwest::Client::builder()
        .timeout(timeout)
        .tls_backend_preconfigured(tls)
        .build()
        .map_err(|e| vigie_proto::tls::TlsError {
            file: vigie_proto::tls::TlsFile::Ca,
            message: format!("HTTP client: {e}"),
        })
}

/// A receiver's TLS files: `cert` and `key` together, readable and parseable, and only with an
/// `https://` URL.
fn validate_receiver_tls(
    section: &str,
    url: &reqwest::Url,
    files: &vigie_proto::tls::TlsFiles,
) -> Result<(), ConfigError> {
    let field = |k: &str| format!("{section}.{k}");
    match (&files.cert, &files.key) {
        (Some(_), None) => {
            return Err(ConfigError::new(
                field("key"),
                format!("missing: {} needs its private key", field("cert")),
            ));
        }
        (None, Some(_)) => {
            return Err(ConfigError::new(
                field("cert"),
                format!("missing: {} needs its certificate", field("key")),
            ));
        }
        _ => {}
    }
    if files == &vigie_proto::tls::TlsFiles::default() {
        return Ok(());
    }
    if url.scheme() != "https" {
        let k = if files.ca.is_some() { "ca" } else { "cert" };
        return Err(ConfigError::new(
            field(k),
            format!("TLS files need an https:// URL, not {url}"),
        ));
    }
    vigie_proto::tls::check(files).map_err(|e| ConfigError::new(field(e.file.key()), e.message))
}

fn default_resend() -> Duration {
    Duration::from_secs(30)
}

fn url<'de, D: Deserializer<'de>>(d: D) -> Result<reqwest::Url, D::Error> {
    let text = String::deserialize(d)?;
    reqwest::Url::parse(&text)
        .map_err(|e| serde::de::Error::custom(format!("`{text}` is not a URL ({e})")))
}

/// Who may use the HTTP API.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// `tokens`: every request needs `Authorization: Bearer TOKEN`; `none`: the API is open
    /// (keep it on loopback then).
    #[serde(default)]
    pub auth: ApiAuth,
    /// Serve `/healthz` without a token (default true).
    #[serde(default = "yes", deserialize_with = "vigie_config::strict_bool")]
    pub open_healthz: bool,
    /// Serve `/metrics` without a token (default true).
    #[serde(default = "yes", deserialize_with = "vigie_config::strict_bool")]
    pub open_metrics: bool,
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            auth: ApiAuth::None,
            open_healthz: true,
            open_metrics: true,
            tokens: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiAuth {
    #[default]
    None,
    Tokens,
}

/// One bearer token, read from a file (its first line).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub name: String,
    pub scope: TokenScope,
    pub file: PathBuf,
}

/// `read`: every GET; `admin`: also the actions (POST).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenScope {
    Read,
    Admin,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA that signs the agents' certificates: makes client certificates mandatory.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// Verdict thresholds (see `verdict::Policy`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerdictConfig {
    /// An agent silent for this many of its intervals is stale (default 3).
    #[serde(default = "default_stale_intervals")]
    pub stale_intervals: u32,
    /// A node with no agent stream and silent this long is forgotten, with an event; a cluster
    /// left with no node disappears (default 7d; `DELETE /api/v1/clusters/{scope}/nodes/{node}`
    /// forgets one at once).
    #[serde(default = "default_forget_after", deserialize_with = "duration")]
    pub forget_after: Duration,
    /// How long a finding a failover or switchover produces briefly (no leader, RW endpoint
    /// down or misrouted, leader not writable) waits — only while a transition is visible
    /// (default 6s).
    #[serde(default = "default_transition_grace", deserialize_with = "duration")]
    pub transition_grace: Duration,
    /// The same for two writable primaries (default 3s).
    #[serde(default = "default_split_brain_grace", deserialize_with = "duration")]
    pub split_brain_grace: Duration,
    /// How long after a leader change the cluster counts as in transition (default 30s,
    /// Patroni's default `ttl`).
    #[serde(default = "default_transition_window", deserialize_with = "duration")]
    pub transition_window: Duration,
    /// A WAL stream is stalled when the leader passed what the replica received this long ago
    /// with no message since — or half the replica's interval, if longer (default 500ms).
    #[serde(default = "default_stream_stall", deserialize_with = "duration")]
    pub stream_stall: Duration,
    #[serde(default = "default_lag_warning_bytes")]
    pub lag_warning_bytes: u64,
    #[serde(default = "default_lag_critical_bytes")]
    pub lag_critical_bytes: u64,
    #[serde(default = "default_lag_warning", deserialize_with = "duration")]
    pub lag_warning: Duration,
    #[serde(default = "default_lag_critical", deserialize_with = "duration")]
    pub lag_critical: Duration,
    #[serde(default = "default_clock_skew", deserialize_with = "duration")]
    pub clock_skew: Duration,
    /// Share of the connection slots ordinary roles may use, in use, above which
    /// CONNECTIONS_SATURATED warns (default 90; at 100 new logins are refused).
    #[serde(default = "default_connections_warning_percent")]
    pub connections_warning_percent: f64,
    /// WAL_RETENTION warns when an inactive replication slot retains this many bytes of WAL
    /// (default 1 GiB)…
    #[serde(default = "default_wal_retention_warning_bytes")]
    pub wal_retention_warning_bytes: u64,
    /// …and is critical when the disk is full within this long at the WAL rate seen (default 1h).
    #[serde(default = "default_wal_full_critical", deserialize_with = "duration")]
    pub wal_full_critical: Duration,
    /// The window the WAL rate is measured over (default 5m).
    #[serde(default = "default_wal_rate_window", deserialize_with = "duration")]
    pub wal_rate_window: Duration,
    /// XMIN_HORIZON_HELD warns on a transaction open this long that holds the xmin horizon
    /// (default 30m)…
    #[serde(default = "default_xmin_hold_warning", deserialize_with = "duration")]
    pub xmin_hold_warning: Duration,
    /// …or on any holder this many transactions old (default 100000000).
    #[serde(default = "default_xmin_age_warning")]
    pub xmin_age_warning: u64,
    /// WRITES_BLOCKED_SYNCREP: a commit has waited this long for a synchronous standby's
    /// confirmation (default 5s; a healthy one confirms within milliseconds).
    #[serde(
        default = "default_syncrep_wait_critical",
        deserialize_with = "duration"
    )]
    pub syncrep_wait_critical: Duration,
}

impl Default for VerdictConfig {
    fn default() -> Self {
        VerdictConfig {
            stale_intervals: default_stale_intervals(),
            forget_after: default_forget_after(),
            transition_grace: default_transition_grace(),
            split_brain_grace: default_split_brain_grace(),
            transition_window: default_transition_window(),
            stream_stall: default_stream_stall(),
            lag_warning_bytes: default_lag_warning_bytes(),
            lag_critical_bytes: default_lag_critical_bytes(),
            lag_warning: default_lag_warning(),
            lag_critical: default_lag_critical(),
            clock_skew: default_clock_skew(),
            connections_warning_percent: default_connections_warning_percent(),
            wal_retention_warning_bytes: default_wal_retention_warning_bytes(),
            wal_full_critical: default_wal_full_critical(),
            wal_rate_window: default_wal_rate_window(),
            xmin_hold_warning: default_xmin_hold_warning(),
            xmin_age_warning: default_xmin_age_warning(),
            syncrep_wait_critical: default_syncrep_wait_critical(),
        }
    }
}

impl VerdictConfig {
    pub fn policy(&self) -> Policy {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Policy {
            stale_intervals: self.stale_intervals,
            lag_warning_bytes: self.lag_warning_bytes,
            lag_critical_bytes: self.lag_critical_bytes,
            lag_warning_s: self.lag_warning.as_secs_f64(),
            lag_critical_s: self.lag_critical.as_secs_f64(),
            clock_skew_ms: ms(self.clock_skew),
            transition_grace_ms: ms(self.transition_grace),
            split_brain_grace_ms: ms(self.split_brain_grace),
            transition_window_ms: ms(self.transition_window),
            stall_min_ms: ms(self.stream_stall),
            connections_warning_percent: self.connections_warning_percent,
            forget_after_ms: ms(self.forget_after),
            wal_retention_warning_bytes: self.wal_retention_warning_bytes,
            wal_full_critical_ms: ms(self.wal_full_critical),
            wal_rate_window_ms: ms(self.wal_rate_window),
            xmin_hold_warning_s: self.xmin_hold_warning.as_secs_f64(),
            xmin_age_warning: self.xmin_age_warning,
            syncrep_wait_critical_s: self.syncrep_wait_critical.as_secs_f64(),
            ..Policy::default()
        }
    }
}

fn default_forget_after() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

fn default_evaluate_every() -> Duration {
    Duration::from_millis(500)
}
/// The event log's SQLite database.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// Database file (created with its directory; `:memory:` keeps nothing across restarts).
    #[serde(default = "default_events_path")]
    pub path: PathBuf,
    /// How long events are kept (default 30 days).
    #[serde(default = "default_retention", deserialize_with = "duration")]
    pub retention: Duration,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            path: default_events_path(),
            retention: default_retention(),
        }
    }
}

fn default_events_path() -> PathBuf {
    PathBuf::from("/var/lib/vigie/events.db")
}
fn default_retention() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}
fn default_wal_retention_warning_bytes() -> u64 {
    1 << 30
}
fn default_wal_full_critical() -> Duration {
    Duration::from_secs(3600)
}
fn default_wal_rate_window() -> Duration {
    Duration::from_secs(300)
}
fn default_xmin_hold_warning() -> Duration {
    Duration::from_secs(1800)
}
fn default_xmin_age_warning() -> u64 {
    100_000_000
}
fn default_syncrep_wait_critical() -> Duration {
    Duration::from_secs(5)
}
fn default_connections_warning_percent() -> f64 {
    90.0
}
fn default_stale_intervals() -> u32 {
    3
}
fn default_transition_grace() -> Duration {
    Duration::from_secs(6)
}
fn default_split_brain_grace() -> Duration {
    Duration::from_secs(3)
}
fn default_transition_window() -> Duration {
    Duration::from_secs(30)
}
fn default_stream_stall() -> Duration {
    Duration::from_millis(500)
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
fn default_clock_skew() -> Duration {
    Duration::from_secs(2)
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "`{text}` is not a duration ({e}); write e.g. \"5s\""
        ))
    })
}

/// Loads and validates the configuration; `env` overrides the file.
pub fn load(path: &Path, env: HashMap<String, String>) -> Result<CollectorConfig, ConfigError> {
    let cfg: CollectorConfig = vigie_config::Source::read(path, ENV_PREFIX, env)?.deserialize()?;
    validate(&cfg)?;
    Ok(cfg)
}

/// Whether the event log can be written at `path`: the file if it exists, and the directory
/// it is (or will be) in, where SQLite also creates its `-wal` and `-shm` files; the nearest
/// existing directory when it does not exist yet (start-up creates the missing ones).
/// `:memory:` always can.
fn writable(path: &Path) -> Result<(), String> {
    if path == Path::new(":memory:") {
        return Ok(());
    }
    if path.exists() {
        std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map(drop)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let mut dir = path.parent();
    while let Some(d) = dir {
        if d.as_os_str().is_empty() {
            dir = Some(Path::new("."));
            continue;
        }
        if d.exists() && !d.is_dir() {
            return Err(format!(
                "{}: {} is not a directory",
                path.display(),
                d.display()
            ));
        }
        if d.is_dir() {
            // A new file of our own (never through a symbolic link someone left there).
            // Unique per call too: two checks at once (threads) must not meet on one name.
            static CHECKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = CHECKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let probe = d.join(format!(".vigie-write-check-{}-{n}", std::process::id()));
            return std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&probe)
                .and_then(|_| std::fs::remove_file(&probe))
                .map_err(|e| {
                    format!(
                        "{}: cannot create files in {}: {e}",
                        path.display(),
                        d.display()
                    )
                });
        }
        dir = d.parent();
    }
    Err(format!("{}: no directory above it exists", path.display()))
}

/// The permission bits of a secret file that let its group or others read or change it.
pub fn shared_bits(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    Some(mode & 0o077).filter(|bits| *bits != 0)
}

/// Warns (at start and with `--check-config`) when a secret file is open to its group or
/// others: anyone who can read it can call the API as its token, or forge notifications.
fn warn_if_shared(field: &str, path: &Path) {
    if let Some(bits) = shared_bits(path) {
        tracing::warn!(
            field,
            path = %path.display(),
            mode = format!("{bits:03o}"),
            "A secret file is readable or writable by its group or others: chmod 600 it"
        );
    }
}

pub fn validate(cfg: &CollectorConfig) -> Result<(), ConfigError> {
    match (&cfg.tls, cfg.plaintext) {
        (None, false) => {
            return Err(ConfigError::new(
                "tls",
                "configure [tls] (cert, key, client_ca for mTLS), or set plaintext = true explicitly",
            ));
        }
        (Some(_), true) => {
            return Err(ConfigError::new(
                "plaintext",
                "cannot be true together with [tls]",
            ));
        }
        (Some(tls), false) if tls.client_ca.is_none() && !cfg.allow_unauthenticated_agents => {
            return Err(ConfigError::new(
                "tls.client_ca",
                "without it any client can speak for any node: set it (mTLS, certificates from deploy/certs.sh), or write allow_unauthenticated_agents = true",
            ));
        }
        _ => {}
    }
    if let Some(tls) = &cfg.tls {
        for (field, path) in [
            ("tls.cert", Some(&tls.cert)),
            ("tls.key", Some(&tls.key)),
            ("tls.client_ca", tls.client_ca.as_ref()),
        ] {
            if let Some(p) = path
                && let Err(e) = std::fs::metadata(p)
            {
                return Err(ConfigError::new(field, format!("{}: {e}", p.display())));
            }
        }
        // What start-up would refuse: unreadable PEM, a key that is not the certificate's, a
        // key (or nothing usable) given as the client CA.
        let files = vigie_proto::tls::TlsFiles {
            ca: tls.client_ca.clone(),
            cert: Some(tls.cert.clone()),
            key: Some(tls.key.clone()),
        };
        vigie_proto::tls::check(&files).map_err(|e| {
            let field = match e.file {
                vigie_proto::tls::TlsFile::Ca => "tls.client_ca",
                vigie_proto::tls::TlsFile::Cert => "tls.cert",
                vigie_proto::tls::TlsFile::Key => "tls.key",
            };
            ConfigError::new(field, e.message)
        })?;
    }
    writable(&cfg.events.path).map_err(|why| ConfigError::new("events.path", why))?;
    if cfg.grpc_listen == cfg.http_listen {
        return Err(ConfigError::new(
            "http_listen",
            "must differ from grpc_listen",
        ));
    }
    if cfg.evaluate_every < Duration::from_millis(50)
        || cfg.evaluate_every > Duration::from_secs(60)
    {
        return Err(ConfigError::new(
            "evaluate_every",
            "must be between 50ms and 60s",
        ));
    }
    // Forgetting a silent node also forgets that it is silent: never within an outage.
    if cfg.verdict.forget_after < Duration::from_secs(3600) {
        return Err(ConfigError::new(
            "verdict.forget_after",
            "must be at least 1h (a forgotten node no longer counts as missing)",
        ));
    }
    if cfg.api.auth == ApiAuth::Tokens && cfg.api.tokens.is_empty() {
        return Err(ConfigError::new(
            "api.tokens",
            "auth = \"tokens\" needs at least one [[api.tokens]]",
        ));
    }
    for (i, t) in cfg.api.tokens.iter().enumerate() {
        warn_if_shared(&format!("api.tokens[{i}].file"), &t.file);
        match std::fs::read_to_string(&t.file) {
            Ok(text) if text.lines().next().is_some_and(|l| l.trim().len() >= 16) => {}
            Ok(_) => {
                return Err(ConfigError::new(
                    format!("api.tokens[{i}].file"),
                    format!(
                        "{}: the token (first line) must be at least 16 characters",
                        t.file.display()
                    ),
                ));
            }
            Err(e) => {
                return Err(ConfigError::new(
                    format!("api.tokens[{i}].file"),
                    format!("{}: {e}", t.file.display()),
                ));
            }
        }
    }
    for (code, hold) in &cfg.notify.hold {
        if !crate::verdict::Code::ALL.iter().any(|c| c.as_str() == code) {
            return Err(ConfigError::new(
                format!("notify.hold.{code}"),
                "not a finding code",
            ));
        }
        if humantime::parse_duration(hold).is_err() {
            return Err(ConfigError::new(
                format!("notify.hold.{code}"),
                format!("`{hold}` is not a duration"),
            ));
        }
    }
    for (i, w) in cfg.webhooks.iter().enumerate() {
        validate_receiver_tls(&format!("webhooks[{i}]"), &w.url, &w.tls_files())?;
        warn_if_shared(&format!("webhooks[{i}].secret_file"), &w.secret_file);
        match std::fs::read_to_string(&w.secret_file) {
            Ok(t) if t.lines().next().is_some_and(|l| !l.trim().is_empty()) => {}
            Ok(_) => {
                return Err(ConfigError::new(
                    format!("webhooks[{i}].secret_file"),
                    "is empty",
                ));
            }
            Err(e) => {
                return Err(ConfigError::new(
                    format!("webhooks[{i}].secret_file"),
                    format!("{}: {e}", w.secret_file.display()),
                ));
            }
        }
    }
    if let Some(am) = &cfg.alertmanager {
        validate_receiver_tls("alertmanager", &am.url, &am.tls_files())?;
    }
    if let Some(am) = &cfg.alertmanager
        && am.resend < Duration::from_secs(1)
    {
        return Err(ConfigError::new(
            "alertmanager.resend",
            "must be at least 1s",
        ));
    }
    if cfg.events.retention < Duration::from_secs(60) {
        return Err(ConfigError::new("events.retention", "must be at least 1m"));
    }
    let pct = cfg.verdict.connections_warning_percent;
    if !(pct > 0.0 && pct <= 100.0) {
        return Err(ConfigError::new(
            "verdict.connections_warning_percent",
            "must be above 0 and at most 100",
        ));
    }
    if cfg.verdict.wal_rate_window < Duration::from_secs(30) {
        return Err(ConfigError::new(
            "verdict.wal_rate_window",
            "must be at least 30s",
        ));
    }
    if cfg.verdict.syncrep_wait_critical < Duration::from_secs(1) {
        return Err(ConfigError::new(
            "verdict.syncrep_wait_critical",
            "must be at least 1s (a healthy standby confirms a commit in milliseconds)",
        ));
    }
    if cfg.verdict.stale_intervals < 2 {
        return Err(ConfigError::new(
            "verdict.stale_intervals",
            "must be at least 2",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str) -> Result<CollectorConfig, ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).expect("write");
        load(&path, HashMap::new())
    }

    const BASE: &str = "grpc_listen = \"127.0.0.1:9701\"\nhttp_listen = \"127.0.0.1:9700\"\n";

    #[test]
    fn plaintext_must_be_explicit() {
        assert_eq!(load_str(BASE).expect_err("invalid").field, "tls");
        assert!(load_str(&format!("{BASE}plaintext = true\n")).is_ok());
    }

    #[test]
    fn notify_hold_names_a_known_code() {
        let am = "[alertmanager]\nurl = \"http://127.0.0.1:9093\"\n";
        assert!(
            load_str(&format!(
                "{BASE}plaintext = true\n{am}[notify.hold]\nREPLICATION_LAG = \"2m\"\n"
            ))
            .is_ok()
        );
        let e = load_str(&format!(
            "{BASE}plaintext = true\n{am}[notify.hold]\nNOPE = \"2m\"\n"
        ))
        .expect_err("invalid");
        assert_eq!(e.field, "notify.hold.NOPE");
    }

    #[test]
    fn secret_files_open_to_others_are_seen() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret");
        std::fs::write(&path, "x").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert_eq!(shared_bits(&path), Some(0o044));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(shared_bits(&path), None);
    }

    #[test]
    fn tokens_need_readable_long_enough_files() {
        let e = load_str(&format!(
            "{BASE}plaintext = true\n[api]\nauth = \"tokens\"\n"
        ))
        .expect_err("invalid");
        assert_eq!(e.field, "api.tokens");
        let e = load_str(&format!(
            "{BASE}plaintext = true\n[api]\nauth = \"tokens\"\n[[api.tokens]]\nname = \"x\"\nscope = \"read\"\nfile = \"/nonexistent\"\n"
        ))
        .expect_err("invalid");
        assert_eq!(e.field, "api.tokens[0].file");
    }

    #[test]
    fn wrong_types_unknown_and_missing_keys_name_the_full_path() {
        let base = format!("{BASE}plaintext = true\n");
        let token = "[[api.tokens]]\nname = \"x\"\nfile = \"/x\"\n";
        for (text, field) in [
            (
                "[verdict]\nstale_intervals = \"three\"\n".to_string(),
                "verdict.stale_intervals",
            ),
            ("[events]\nretention = 30\n".to_string(), "events.retention"),
            ("[api]\nauth = \"maybe\"\n".to_string(), "api.auth"),
            ("[api]\nopen_healthz = []\n".to_string(), "api.open_healthz"),
            (format!("{token}scope = \"root\"\n"), "api.tokens[0].scope"),
            (token.to_string(), "api.tokens[0].scope"),
            (
                format!("{token}scope = \"read\"\nfiel = \"y\"\n"),
                "api.tokens[0].fiel",
            ),
            (
                "[[webhooks]]\nurl = \"http://127.0.0.1:1/h\"\nsecret_file = \"/x\"\n\
                 [[webhooks]]\nurl = \"not a url\"\nsecret_file = \"/x\"\n"
                    .to_string(),
                "webhooks[1].url",
            ),
            ("[verdcit]\nstale_intervals = 3\n".to_string(), "verdcit"),
        ] {
            let e = load_str(&format!("{base}{text}")).expect_err(&text);
            assert_eq!(e.field, field, "{e}");
        }
    }

    #[test]
    fn errors_name_the_field() {
        let e = load_str(&format!(
            "{BASE}plaintext = true\n[verdict]\nstale_intervals = 1\n"
        ))
        .expect_err("invalid");
        assert_eq!(e.field, "verdict.stale_intervals");
        let e = load_str(&format!(
            "{BASE}plaintext = true\n[verdict]\nconnections_warning_percent = 120\n"
        ))
        .expect_err("above 100");
        assert_eq!(e.field, "verdict.connections_warning_percent");
        let e = load_str(&format!(
            "{BASE}plaintext = true\n[verdict]\nsyncrep_wait_critical = \"0s\"\n"
        ))
        .expect_err("every commit in flight");
        assert_eq!(e.field, "verdict.syncrep_wait_critical");
        let e = load_str(
            "grpc_listen = \"nowhere\"\nhttp_listen = \"127.0.0.1:1\"\nplaintext = true\n",
        )
        .expect_err("invalid");
        assert_eq!(e.field, "grpc_listen", "{e}");
        let e = load_str(&format!("{BASE}plaintext = true\nbogus = 1\n")).expect_err("invalid");
        assert_eq!(e.field, "bogus", "{e}");
        let e = load_str(&format!(
            "{BASE}allow_unauthenticated_agents = true\n[tls]\ncert = \"/nonexistent\"\nkey = \"/nonexistent\"\n"
        ))
        .expect_err("invalid");
        assert_eq!(e.field, "tls.cert");
        let e = load_str(&format!(
            "{BASE}[tls]\ncert = \"/nonexistent\"\nkey = \"/nonexistent\"\n"
        ))
        .expect_err("invalid");
        assert_eq!(
            e.field, "tls.client_ca",
            "TLS without client certificates: {e}"
        );
    }
}
