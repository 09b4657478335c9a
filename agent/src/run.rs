//! Continuous mode: a probe cycle every `interval` until shutdown. Until the collector uplink
//! exists, results go to the log: every status change, and a summary per cycle at debug level.

use std::collections::HashMap;
use std::future::Future;

use tokio::time::MissedTickBehavior;

use crate::agent::Agent;
use crate::result::{Status, overall};

/// Runs cycles until `shutdown` resolves; a cycle in progress is abandoned at shutdown.
pub async fn run(mut agent: Agent, shutdown: impl Future<Output = ()>) {
    let mut ticker = tokio::time::interval(agent.config().interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last: HashMap<&'static str, Status> = HashMap::new();
    tokio::pin!(shutdown);
    tracing::info!(
        node = %agent.config().node,
        cluster = %agent.config().cluster,
        interval = %humantime::format_duration(agent.config().interval),
        "Agent started"
    );
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = ticker.tick() => {}
        }
        let results = tokio::select! {
            _ = &mut shutdown => break,
            r = agent.cycle() => r,
        };
        for r in &results {
            let previous = last.insert(r.id, r.status);
            if previous != Some(r.status) {
                let from = previous.map_or("none", Status::as_str);
                match r.status {
                    Status::Ok => {
                        tracing::info!(probe = r.id, from, to = "ok", message = %r.message, "Probe status changed")
                    }
                    _ => {
                        tracing::warn!(probe = r.id, from, to = r.status.as_str(), message = %r.message, "Probe status changed")
                    }
                }
            }
        }
        tracing::debug!(
            probes = results.len(),
            status = overall(&results).as_str(),
            pg_connections_opened = agent.pg_connections_opened(),
            "Cycle done"
        );
    }
    tracing::info!("Agent stopped");
}
