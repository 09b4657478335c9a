//! The collector binary run as a process by a test: its config written to a temporary directory
//! (plaintext agents, open API, the event log in the directory), on free loopback ports; killed
//! by its own pid when dropped.

#![allow(dead_code)] // each test file uses its part

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use vigie_proto::v1;

pub struct Collector {
    pub child: Child,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// Writes the config into `dir` (the event log at `dir/events.db`) and returns its path.
pub fn config(dir: &Path, grpc: SocketAddr, http: SocketAddr) -> PathBuf {
    let path = dir.join("collector.toml");
    std::fs::write(
        &path,
        format!(
            "grpc_listen = \"{grpc}\"\nhttp_listen = \"{http}\"\nplaintext = true\n\
             evaluate_every = \"100ms\"\n[api]\nauth = \"none\"\n[events]\npath = \"{}\"\n",
            dir.join("events.db").display()
        ),
    )
    .expect("write config");
    path
}

impl Collector {
    /// Starts the collector with `config`, through `wrapper` (e.g. `prlimit --nofile=…`) if
    /// given, and waits for `/healthz`.
    pub async fn start(
        config: &Path,
        grpc: SocketAddr,
        http: SocketAddr,
        wrapper: &[&str],
    ) -> Collector {
        let bin = env!("CARGO_BIN_EXE_vigie-collector");
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let child = cmd
            .arg("--config")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the collector");
        let c = Collector { child, grpc, http };
        let client = client();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while healthz(&client, http).await.is_none() {
            assert!(tokio::time::Instant::now() < deadline, "collector never up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        c
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

pub fn client() -> reqwest::Client {
    vigie_proto::tls::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

pub async fn healthz(client: &reqwest::Client, http: SocketAddr) -> Option<Value> {
    get(client, http, "/healthz").await
}

pub async fn get(client: &reqwest::Client, http: SocketAddr, path: &str) -> Option<Value> {
    client
        .get(format!("http://{http}{path}"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// The `Hello` of a HAProxy agent named `node` of cluster `demo`, at a 1 s interval.
pub fn hello(node: &str) -> v1::AgentMessage {
    v1::AgentMessage {
        msg: Some(v1::agent_message::Msg::Hello(v1::Hello {
            node: node.into(),
            cluster: "demo".into(),
            components: vec!["haproxy".into()],
            agent_version: "test".into(),
            interval_ms: 1000,
        })),
    }
}
