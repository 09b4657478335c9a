//! A collector and the lab's four agents, run in this test process on the real code paths
//! (`server::run`, `run::run_observed` with the uplink), on loopback ports picked by the kernel.
//! Agents can be killed and the collector restarted on the same ports.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use vigie_agent::result::ProbeResult;
use vigie_collector::config::{CollectorConfig, TlsConfig, VerdictConfig};

use crate::{lab_agent_config, wait_until};

/// The lab's agents.
pub const AGENTS: [&str; 4] = ["node1", "node2", "node3", "haproxy"];

/// A running collector.
#[derive(Debug)]
pub struct Collector {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Collector {
    /// Starts a collector on `grpc`/`http` (port 0: any free port).
    pub async fn start(grpc: SocketAddr, http: SocketAddr, tls: Option<TlsConfig>) -> Collector {
        Collector::start_with(grpc, http, tls, None, VerdictConfig::default()).await
    }

    /// [`Collector::start`], pushing findings to an Alertmanager.
    pub async fn start_with(
        grpc: SocketAddr,
        http: SocketAddr,
        tls: Option<TlsConfig>,
        alertmanager: Option<vigie_collector::config::AlertmanagerConfig>,
        verdict: VerdictConfig,
    ) -> Collector {
        vigie_proto::tls::install_crypto_provider();
        let grpc_l = bind_retrying(grpc).await;
        let http_l = bind_retrying(http).await;
        let (grpc, http) = (
            grpc_l.local_addr().expect("addr"),
            http_l.local_addr().expect("addr"),
        );
        let cfg = CollectorConfig {
            grpc_listen: grpc,
            http_listen: http,
            plaintext: tls.is_none(),
            allow_unauthenticated_agents: false,
            tls,
            evaluate_every: Duration::from_millis(250),
            events: vigie_collector::config::EventsConfig {
                path: ":memory:".into(),
                retention: Duration::from_secs(3600),
            },
            verdict,
            api: Default::default(),
            alertmanager,
            webhooks: Vec::new(),
            notify: Default::default(),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(e) = vigie_collector::server::run(cfg, grpc_l, http_l, shutdown).await {
                panic!("collector failed: {e}");
            }
        });
        Collector {
            grpc,
            http,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops it and waits until its listeners are closed.
    pub async fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }

    pub fn api(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }
}

async fn bind_retrying(addr: SocketAddr) -> tokio::net::TcpListener {
    // A port just released by a stopped collector can take a moment to be free again.
    wait_until(
        &format!("binding {addr}"),
        Duration::from_secs(10),
        || async { tokio::net::TcpListener::bind(addr).await.ok() },
    )
    .await
}

/// One in-process agent.
#[derive(Debug)]
struct AgentTask {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

/// The collector and the lab's agents.
#[derive(Debug)]
pub struct Stack {
    pub collector: Collector,
    pub interval: Duration,
    agents: HashMap<String, AgentTask>,
    http: reqwest::Client,
    /// Every cycle's results, by agent.
    pub cycles: mpsc::UnboundedReceiver<(String, Vec<ProbeResult>)>,
    cycles_tx: mpsc::UnboundedSender<(String, Vec<ProbeResult>)>,
}

impl Stack {
    /// A collector on free ports and the four lab agents streaming to it every `interval`.
    pub async fn start(interval: Duration) -> Stack {
        Stack::start_with(interval, None).await
    }

    /// [`Stack::start`] with only the agents `names` (the others' hosts go unwatched).
    pub async fn start_only(interval: Duration, names: &[&str]) -> Stack {
        Stack::start_agents(interval, None, names, VerdictConfig::default()).await
    }

    /// [`Stack::start`] with the collector's verdict thresholds `verdict`.
    pub async fn start_judging(interval: Duration, verdict: VerdictConfig) -> Stack {
        Stack::start_agents(interval, None, &AGENTS, verdict).await
    }

    /// [`Stack::start`], the collector pushing to an Alertmanager.
    pub async fn start_with(
        interval: Duration,
        alertmanager: Option<vigie_collector::config::AlertmanagerConfig>,
    ) -> Stack {
        Stack::start_agents(interval, alertmanager, &AGENTS, VerdictConfig::default()).await
    }

    async fn start_agents(
        interval: Duration,
        alertmanager: Option<vigie_collector::config::AlertmanagerConfig>,
        names: &[&str],
        verdict: VerdictConfig,
    ) -> Stack {
        let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let collector = Collector::start_with(any, any, None, alertmanager, verdict).await;
        let (cycles_tx, cycles) = mpsc::unbounded_channel();
        let mut stack = Stack {
            collector,
            interval,
            agents: HashMap::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("client"),
            cycles,
            cycles_tx,
        };
        for name in names {
            stack.start_agent(name);
        }
        stack
    }

    /// Starts (or restarts) the lab agent `name`.
    pub fn start_agent(&mut self, name: &str) {
        let interval = humantime::format_duration(self.interval).to_string();
        let timeout = humantime::format_duration(self.interval.mul_f64(0.8)).to_string();
        let statement = humantime::format_duration(self.interval.mul_f64(0.5)).to_string();
        let mut overrides = vec![
            ("VIGIE_AGENT__INTERVAL", interval),
            ("VIGIE_AGENT__TIMEOUT", timeout),
            (
                "VIGIE_AGENT__COLLECTOR__URL",
                format!("http://{}", self.collector.grpc),
            ),
        ];
        if name.starts_with("node") {
            overrides.push(("VIGIE_AGENT__POSTGRES__STATEMENT_TIMEOUT", statement));
        }
        let cfg = lab_agent_config(name, &overrides);
        let uplink = vigie_agent::uplink::spawn(&cfg).expect("uplink");
        let agent = vigie_agent::agent::Agent::new(cfg);
        let (stop, stopped) = oneshot::channel::<()>();
        let tx = self.cycles_tx.clone();
        let label = name.to_string();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            vigie_agent::run::run_observed(agent, Some(uplink), shutdown, |results| {
                let _ = tx.send((label.clone(), results.to_vec()));
            })
            .await;
        });
        self.agents.insert(
            name.to_string(),
            AgentTask {
                stop: Some(stop),
                task,
            },
        );
    }

    /// Kills an agent at once (its task is aborted: no goodbye to the collector).
    pub fn kill_agent(&mut self, name: &str) {
        if let Some(mut a) = self.agents.remove(name) {
            a.stop.take();
            a.task.abort();
        }
    }

    /// `GET` a collector API path as JSON (`None` on any error or non-2xx).
    pub async fn get(&self, path: &str) -> Option<Value> {
        let resp = self.http.get(self.collector.api(path)).send().await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.json().await.ok()
    }

    /// `GET /api/v1/clusters/demo`.
    pub async fn demo(&self) -> Option<Value> {
        self.get("/api/v1/clusters/demo").await
    }

    /// Polls the demo cluster until `accept` holds; returns that document. On timeout, the
    /// panic shows the last document's verdict, findings and blind spots.
    pub async fn wait_demo(
        &self,
        what: &str,
        timeout: Duration,
        accept: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Some(d) = self.demo().await {
                if accept(&d) {
                    return d;
                }
                last = Some(d);
            }
            if tokio::time::Instant::now() >= deadline {
                let shown = last.as_ref().map_or("no answer".to_string(), |d| {
                    format!(
                        "{} {:?} blind {} transition {}",
                        d["verdict"],
                        finding_messages(d),
                        d["blind_spots"],
                        d["transition"]
                    )
                });
                panic!("timed out after {timeout:?} waiting for {what}; last: {shown}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until agent `name` has run a cycle whose results satisfy `accept`.
    pub async fn wait_cycle(
        &mut self,
        name: &str,
        timeout: Duration,
        accept: impl Fn(&[ProbeResult]) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.cycles.recv()).await {
                Ok(Some((n, results))) if n == name && accept(&results) => return,
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    panic!("timed out after {timeout:?} waiting for a cycle of {name}")
                }
            }
        }
    }

    /// Stops every agent, then the collector.
    pub async fn stop(mut self) {
        for (_, mut a) in self.agents.drain() {
            if let Some(s) = a.stop.take() {
                let _ = s.send(());
            }
            let _ = tokio::time::timeout(Duration::from_secs(5), a.task).await;
        }
        self.collector.stop().await;
    }
}

/// Whether a cluster document has a finding `code` naming `node`.
pub fn has_finding(doc: &Value, code: &str, node: &str) -> bool {
    doc["findings"].as_array().into_iter().flatten().any(|f| {
        f["code"] == code
            && f["nodes"]
                .as_array()
                .is_some_and(|n| n.iter().any(|x| x == node))
    })
}

/// Each finding of a cluster document as `CODE: message`.
pub fn finding_messages(doc: &Value) -> Vec<String> {
    doc["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            format!(
                "{}: {}",
                f["code"].as_str().unwrap_or("?"),
                f["message"].as_str().unwrap_or("")
            )
        })
        .collect()
}

/// The codes of a cluster document's findings.
pub fn finding_codes(doc: &Value) -> Vec<String> {
    doc["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| {
            let nodes: Vec<&str> = f["nodes"]
                .as_array()?
                .iter()
                .filter_map(Value::as_str)
                .collect();
            Some(format!("{} {}", f["code"].as_str()?, nodes.join(",")))
        })
        .collect()
}
