//! Continuous mode: a probe cycle every `interval` (or at once when the collector asks) until
//! shutdown. Each cycle goes to the collector through the uplink when one is configured; every
//! status change is logged either way.

use std::collections::HashMap;
use std::future::Future;
use std::time::SystemTime;

use tokio::time::MissedTickBehavior;

use crate::agent::Agent;
use crate::result::{Status, overall, unix_ms};
use crate::uplink::{CycleReport, Transition, Uplink};

/// Runs cycles until `shutdown` resolves; a cycle in progress is abandoned at shutdown.
pub async fn run(agent: Agent, uplink: Option<Uplink>, shutdown: impl Future<Output = ()>) {
    run_observed(agent, uplink, shutdown, |_| {}).await;
}

/// [`run`], calling `on_cycle` with each cycle's results (for tests and embedding).
pub async fn run_observed(
    mut agent: Agent,
    uplink: Option<Uplink>,
    shutdown: impl Future<Output = ()>,
    mut on_cycle: impl FnMut(&[crate::result::ProbeResult]),
) {
    let mut ticker = tokio::time::interval(agent.config().interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last: HashMap<crate::result::ProbeId, Status> = HashMap::new();
    let mut dropped: u64 = 0;
    let probe_now = uplink.as_ref().map(|u| u.probe_now.clone());
    tokio::pin!(shutdown);
    tracing::info!(
        node = %agent.config().node,
        cluster = %agent.config().cluster,
        interval = %humantime::format_duration(agent.config().interval),
        collector = uplink.is_some(),
        "Agent started"
    );
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = ticker.tick() => {}
            _ = async { match &probe_now { Some(n) => n.notified().await, None => std::future::pending().await } } => {
                ticker.reset();
            }
        }
        let results = tokio::select! {
            _ = &mut shutdown => break,
            r = agent.cycle() => r,
        };
        let at_ms = unix_ms(SystemTime::now());
        let mut transitions = Vec::new();
        for r in &results {
            let previous = last.insert(r.id, r.status);
            if previous != Some(r.status) {
                let from = previous.map_or("none", Status::as_str);
                match r.status {
                    Status::Ok => {
                        tracing::info!(probe = r.id.name(), from, to = "ok", message = %r.message, "Probe status changed")
                    }
                    _ => {
                        tracing::warn!(probe = r.id.name(), from, to = r.status.as_str(), message = %r.message, "Probe status changed")
                    }
                }
                transitions.push(Transition {
                    probe: r.id,
                    from: previous,
                    to: r.status,
                    message: r.message.clone(),
                    at_ms,
                });
            }
        }
        on_cycle(&results);
        tracing::debug!(
            probes = results.len(),
            status = overall(&results).as_str(),
            pg_connections_opened = agent.pg_connections_opened(),
            "Cycle done"
        );
        if let Some(u) = &uplink
            && !u.offer(CycleReport {
                results,
                transitions,
            })
        {
            dropped += 1;
            tracing::warn!(dropped, "Uplink queue full: cycle dropped");
        }
    }
    tracing::info!("Agent stopped");
}
