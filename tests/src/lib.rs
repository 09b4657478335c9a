//! Harness for tests that run against the real lab cluster (`deploy/lab/lab.sh`): one lab per
//! machine, shared by every test under a cross-process lock, brought up and repaired by the lab
//! script itself; helpers to query Patroni, etcd and PostgreSQL, and to wait for conditions.

pub mod scenario;
pub mod stack;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

/// Superuser password of the lab (throw-away, set by `lab.sh`).
pub const SUPERUSER_PASSWORD: &str = "lab-postgres";
/// The lab's monitoring role: `pg_monitor` only.
pub const MONITOR_USER: &str = "vigie_monitor";
/// HAProxy's address on the lab, with its RW and RO ports.
pub const HAPROXY_ADDR: &str = "127.0.0.10";
pub const RW_PORT: u16 = 5000;
pub const RO_PORT: u16 = 5001;
/// The lab's database nodes.
pub const NODES: [u8; 3] = [1, 2, 3];

/// Generous deadline for cluster-level changes (failover, rejoin), valid for both timing profiles.
pub const CLUSTER_CHANGE: Duration = Duration::from_secs(90);

/// Loopback address of lab node `n`.
pub fn node_ip(n: u8) -> String {
    format!("127.0.0.1{n}")
}

/// Repository root (the workspace), from this crate's manifest directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// State directory of the lab, as `lab.sh` computes it.
pub fn lab_dir() -> PathBuf {
    std::env::var_os("VIGIE_LAB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/vigie-lab"))
}

/// Whether the running lab is on the TLS profile (`VIGIE_LAB_TLS=1` at `lab.sh up`, recorded in
/// the lab directory).
pub fn lab_tls() -> bool {
    std::fs::read_to_string(lab_dir().join("transport")).is_ok_and(|t| t.trim() == "tls")
}

/// `https` on the TLS profile, else `http` (Patroni REST and etcd client URLs).
pub fn scheme() -> &'static str {
    if lab_tls() { "https" } else { "http" }
}

/// The lab's own TLS files on the TLS profile (its CA, the client certificate of the lab script).
pub fn lab_tls_files() -> vigie_proto::tls::TlsFiles {
    let certs = lab_dir().join("certs");
    vigie_proto::tls::TlsFiles {
        ca: Some(certs.join("ca.crt")),
        cert: Some(certs.join("lab.crt")),
        key: Some(certs.join("lab.key")),
    }
}

/// An HTTP client for the lab's endpoints: on the TLS profile it trusts the lab's CA and
/// presents the lab's client certificate (Patroni and etcd require one there).
pub fn lab_http(timeout: Duration) -> reqwest::Client {
    vigie_proto::tls::install_crypto_provider();
    let builder = reqwest::Client::builder().timeout(timeout);
    let builder = if lab_tls() {
        let tls = vigie_proto::tls::client_config(&lab_tls_files(), vigie_proto::tls::Verify::Full)
            .unwrap_or_else(|e| panic!("the lab's TLS files: {e}"));
        builder.tls_backend_preconfigured(tls)
    } else {
        builder
    };
    builder.build().expect("http client")
}

/// Exclusive use of the running lab. Holding it serialises every test that touches the lab, in
/// this process and in others (each test binary, or nextest's process per test).
#[derive(Debug)]
pub struct Lab {
    _lock: std::fs::File,
    http: reqwest::Client,
    /// The transport this test wants: the TLS profile, or plain.
    tls: bool,
}

/// Output of one `lab.sh` call.
#[derive(Debug)]
pub struct ScriptOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Lab {
    /// Takes the lab lock, then brings the lab up (fast profile unless `VIGIE_LAB_PROFILE` says
    /// otherwise) and repairs whatever an earlier test left broken.
    pub async fn acquire() -> Lab {
        let tls = std::env::var("VIGIE_LAB_TLS").is_ok_and(|v| v == "1");
        Lab::acquire_transport(tls).await
    }

    /// [`Lab::acquire`] on the TLS profile: the same lock (one lab per machine); a lab running
    /// plain is taken down and brought up on TLS (and back by the next plain `acquire`).
    pub async fn acquire_tls() -> Lab {
        Lab::acquire_transport(true).await
    }

    async fn acquire_transport(tls: bool) -> Lab {
        vigie_proto::tls::install_crypto_provider();
        let lock_path = PathBuf::from(format!("{}.lock", lab_dir().display()));
        let lock = tokio::task::spawn_blocking(move || {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .unwrap_or_else(|e| panic!("open {}: {e}", lock_path.display()));
            f.lock()
                .unwrap_or_else(|e| panic!("lock {}: {e}", lock_path.display()));
            f
        })
        .await
        .expect("lock task");
        let mut lab = Lab {
            _lock: lock,
            http: lab_http(Duration::from_secs(3)),
            tls,
        };
        lab.ensure_ready().await;
        lab.http = lab_http(Duration::from_secs(3));
        lab
    }

    /// `lab.sh up` when there is no lab, then `lab.sh repair` (which brings up whatever is
    /// down): a ready cluster, whatever state an interrupted test left it in.
    pub async fn ensure_ready(&self) {
        if lab_dir().join("profile").exists() && lab_tls() != self.tls {
            self.script_ok(&["down"]).await;
        }
        if !lab_dir().join("profile").exists() {
            self.script_ok(&["up"]).await;
        }
        self.script_ok(&["repair"]).await;
    }

    /// Runs `deploy/lab/lab.sh ARGS…`.
    pub async fn script(&self, args: &[&str]) -> ScriptOutput {
        let mut cmd = tokio::process::Command::new(repo_root().join("deploy/lab/lab.sh"));
        // The lab's daemons keep the machine's real clock, whatever a test does to its own.
        cmd.args(args).kill_on_drop(true).env_remove("LD_PRELOAD");
        if std::env::var_os("VIGIE_LAB_PROFILE").is_none() {
            cmd.env("VIGIE_LAB_PROFILE", "fast");
        }
        cmd.env("VIGIE_LAB_TLS", if self.tls { "1" } else { "0" });
        let out = cmd.output().await.expect("run deploy/lab/lab.sh");
        ScriptOutput {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs `lab.sh ARGS…` and panics with its output if it fails.
    pub async fn script_ok(&self, args: &[&str]) -> String {
        let out = self.script(args).await;
        assert!(
            out.success,
            "lab.sh {} failed:\n{}{}",
            args.join(" "),
            out.stdout,
            out.stderr
        );
        out.stdout
    }

    /// `lab.sh fault NAME [NODE]`, which must succeed.
    pub async fn fault(&self, name: &str, node: Option<&str>) {
        let mut args = vec!["fault", name];
        args.extend(node);
        self.script_ok(&args).await;
    }

    /// GET a JSON document from a lab HTTP endpoint; `None` if it does not answer with JSON.
    pub async fn get_json(&self, url: &str) -> Option<Value> {
        let resp = self.http.get(url).send().await.ok()?;
        resp.json().await.ok()
    }

    /// POST a JSON body; the JSON answer of a 2xx response, else `None`.
    pub async fn post_json(&self, url: &str, body: &Value) -> Option<Value> {
        let resp = self.http.post(url).json(body).send().await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.json().await.ok()
    }

    /// Patroni's `/cluster`, from the first node that answers.
    pub async fn cluster(&self) -> Option<Value> {
        patroni_cluster(&self.http).await
    }

    /// The leader's node number according to Patroni.
    pub async fn leader(&self) -> Option<u8> {
        let cluster = self.cluster().await?;
        member_nodes(&cluster, |m| m["role"] == "leader")
            .first()
            .copied()
    }

    /// Nodes Patroni lists as replicas.
    pub async fn replicas(&self) -> Vec<u8> {
        match self.cluster().await {
            Some(c) => member_nodes(&c, |m| m["role"] == "replica"),
            None => Vec::new(),
        }
    }

    /// Nodes Patroni lists as synchronous standbys (`sync_standby`).
    pub async fn sync_standbys(&self) -> Vec<u8> {
        match self.cluster().await {
            Some(c) => member_nodes(&c, |m| m["role"] == "sync_standby"),
            None => Vec::new(),
        }
    }

    /// Whether etcd member `n` reports itself healthy.
    pub async fn etcd_healthy(&self, n: u8) -> bool {
        self.get_json(&format!("{}://{}:2379/health", scheme(), node_ip(n)))
            .await
            .is_some_and(|v| v["health"] == "true")
    }
}

/// Patroni's `/cluster`, from the first lab node that answers with JSON.
pub async fn patroni_cluster(http: &reqwest::Client) -> Option<Value> {
    for n in NODES {
        let url = format!("{}://{}:8008/cluster", scheme(), node_ip(n));
        if let Ok(resp) = http.get(&url).send().await
            && let Ok(v) = resp.json::<Value>().await
        {
            return Some(v);
        }
    }
    None
}

fn member_nodes(cluster: &Value, pred: impl Fn(&Value) -> bool) -> Vec<u8> {
    cluster["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| pred(m))
        .filter_map(|m| m["name"].as_str()?.strip_prefix("node")?.parse().ok())
        .collect()
}

/// Where a test connects to PostgreSQL.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    Node(u8),
    Rw,
    Ro,
}

impl Target {
    fn host_port(self) -> (String, u16) {
        match self {
            Target::Node(n) => (node_ip(n), 5432),
            Target::Rw => (HAPROXY_ADDR.to_string(), RW_PORT),
            Target::Ro => (HAPROXY_ADDR.to_string(), RO_PORT),
        }
    }
}

/// Who a test connects as.
#[derive(Debug, Clone, Copy)]
pub enum Role {
    Superuser,
    Monitor,
}

/// Opens a connection, failing after `timeout` (connection establishment included).
pub async fn connect(
    target: Target,
    role: Role,
    timeout: Duration,
) -> Result<tokio_postgres::Client, String> {
    let (host, port) = target.host_port();
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(&host)
        .port(port)
        .dbname("postgres")
        .connect_timeout(timeout);
    match role {
        Role::Superuser => cfg.user("postgres").password(SUPERUSER_PASSWORD),
        Role::Monitor => cfg.user(MONITOR_USER).password(monitor_password()),
    };
    // `prefer`, as libpq: TLS when the server offers it (the monitoring role needs it on the TLS
    // profile's hostssl-only line), plaintext otherwise.
    let (sslmode, tls) =
        vigie_agent::tls::connector(vigie_agent::config::SslMode::Prefer, &Default::default())
            .expect("a TLS connector without files");
    cfg.ssl_mode(sslmode);
    let connecting = cfg.connect(tls);
    let (client, conn) = match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => return Err(format!("connect to {host}:{port}: {e}")),
        Err(_) => {
            return Err(format!(
                "connect to {host}:{port}: timed out after {timeout:?}"
            ));
        }
    };
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// The monitoring role's password, from the file the lab writes.
pub fn monitor_password() -> String {
    let path = lab_dir().join("monitor.password");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_string()
}

/// Runs one query on a fresh connection and returns the first column of the first row as text;
/// any failure (including `timeout` expiring) is an `Err`.
pub async fn query_text(
    target: Target,
    role: Role,
    sql: &str,
    timeout: Duration,
) -> Result<String, String> {
    let client = connect(target, role, timeout).await?;
    query_one_text(&client, sql, timeout).await
}

/// Runs one query on an existing connection: first column of the first row, as text.
pub async fn query_one_text(
    client: &tokio_postgres::Client,
    sql: &str,
    timeout: Duration,
) -> Result<String, String> {
    let rows = match tokio::time::timeout(timeout, client.simple_query(sql)).await {
        Ok(Ok(rows)) => rows,
        Ok(Err(e)) => return Err(format!("{sql}: {e}")),
        Err(_) => return Err(format!("{sql}: timed out after {timeout:?}")),
    };
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("").to_string()),
            _ => None,
        })
        .ok_or_else(|| format!("{sql}: no row"))
}

/// Writes about 100 KiB of WAL through HAProxy's RW port as the superuser.
pub async fn write_through_rw() -> Result<(), String> {
    let timeout = Duration::from_secs(5);
    let c = connect(Target::Rw, Role::Superuser, timeout).await?;
    query_one_text(
        &c,
        "create table if not exists lab_writes (at timestamptz default now(), filler text); \
         insert into lab_writes (filler) select repeat('x', 200) from generate_series(1, 500); \
         select 'ok'",
        timeout,
    )
    .await
    .map(drop)
}

/// Loads the lab's agent configuration `deploy/lab/agent-NAME.toml` (on the TLS profile, the
/// one `lab.sh` wrote in the lab directory), pointed at this lab's state directory, with
/// `overrides` (`VIGIE_AGENT__…` variables) on top.
pub fn lab_agent_config(
    name: &str,
    overrides: &[(&str, String)],
) -> vigie_agent::config::AgentConfig {
    let generated = lab_dir().join(format!("agent-{name}.toml"));
    let path = if lab_tls() && generated.exists() {
        generated
    } else {
        repo_root().join(format!("deploy/lab/agent-{name}.toml"))
    };
    let mut env = std::collections::HashMap::new();
    if name.starts_with("node") {
        env.insert(
            "VIGIE_AGENT__POSTGRES__PASSWORD".to_string(),
            monitor_password(),
        );
    } else {
        env.insert(
            "VIGIE_AGENT__HAPROXY__STATS_SOCKET".to_string(),
            lab_dir().join("haproxy.sock").display().to_string(),
        );
    }
    for (k, v) in overrides {
        env.insert(k.to_string(), v.clone());
    }
    vigie_agent::config::load(&path, env).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The lab agent `NAME` as configured in `deploy/lab/`.
pub fn lab_agent(name: &str) -> vigie_agent::agent::Agent {
    vigie_agent::agent::Agent::new(lab_agent_config(name, &[]))
}

/// Parses a PostgreSQL LSN (`16/B374D848`) into a byte position.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.trim().split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// Polls `probe` every 200 ms until it yields `Some`, or panics after `timeout` naming `what`.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_lsn_reads_both_halves() {
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(parse_lsn("16/B374D848"), Some((0x16 << 32) | 0xB374_D848));
        assert_eq!(parse_lsn("garbage"), None);
    }

    #[test]
    fn member_nodes_picks_by_role() {
        let c: Value = serde_json::json!({"members": [
            {"name": "node1", "role": "replica"},
            {"name": "node2", "role": "leader"},
            {"name": "node3", "role": "replica"},
        ]});
        assert_eq!(member_nodes(&c, |m| m["role"] == "leader"), vec![2]);
        assert_eq!(member_nodes(&c, |m| m["role"] == "replica"), vec![1, 3]);
    }
}
