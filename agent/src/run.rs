//! Continuous mode: a probe cycle every `interval` (or at once when the collector asks) until
//! shutdown. Each cycle goes to the collector through the uplink when one is configured; every
//! status change is logged either way.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, SystemTime};

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
    // "Probe now" runs a cycle at most this often, however often the collector asks.
    let debounce = (agent.config().interval / 5).max(Duration::from_secs(1));
    let mut started: Option<tokio::time::Instant> = None;
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
                // Too soon after the last cycle: run at the end of the debounce, not never (the
                // API said the request was taken).
                if let Some(at) = started
                    .map(|s| s + debounce)
                    .filter(|at| *at > tokio::time::Instant::now())
                {
                    tracing::debug!("Probe now postponed to the end of the debounce");
                    tokio::select! {
                        _ = &mut shutdown => break,
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                ticker.reset();
            }
        }
        started = Some(tokio::time::Instant::now());
        // Requests that came before this cycle starts are served by it (a stored permit would
        // otherwise run one more).
        if let Some(n) = &probe_now {
            let _ = tokio::time::timeout(Duration::ZERO, n.notified()).await;
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn probe_now_runs_a_cycle_at_most_once_per_debounce() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.toml");
        // A 10 s interval: the debounce is 2 s; the ticker alone would not run a second cycle.
        let toml = "node = \"node1\"\ncluster = \"demo\"\ninterval = \"10s\"\ntimeout = \"200ms\"\n\
                    [patroni]\nurl = \"http://127.0.0.1:1\"\n";
        std::fs::write(&path, toml).expect("write");
        let agent = Agent::new(crate::config::load(&path, HashMap::new()).expect("valid"));
        let (uplink, _cycles) = Uplink::detached();
        let probe_now = uplink.probe_now.clone();
        let count = Arc::new(AtomicUsize::new(0));
        let counted = count.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run_observed(
            agent,
            Some(uplink),
            async {
                let _ = stopped.await;
            },
            move |_| {
                counted.fetch_add(1, Ordering::SeqCst);
            },
        ));
        let wait_for = |n: usize| {
            let count = count.clone();
            async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                while count.load(Ordering::SeqCst) < n {
                    assert!(tokio::time::Instant::now() < deadline, "never {n} cycles");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        wait_for(1).await;
        let first = tokio::time::Instant::now();
        // A burst of requests right after a cycle: none runs one.
        for _ in 0..20 {
            probe_now.notify_one();
            tokio::task::yield_now().await;
        }
        while first.elapsed() < Duration::from_millis(1500) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            count.load(Ordering::SeqCst),
            1,
            "a request inside the debounce ran a cycle"
        );
        // The burst is one cycle, postponed to the end of the debounce (well before the ticker).
        wait_for(2).await;
        assert!(
            first.elapsed() < Duration::from_secs(9),
            "ran by the ticker, not by the request"
        );
        // Past the debounce, a request runs one at once.
        let second = tokio::time::Instant::now();
        while second.elapsed() < Duration::from_millis(2500) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            count.load(Ordering::SeqCst),
            2,
            "one cycle for the whole burst"
        );
        probe_now.notify_one();
        wait_for(3).await;
        assert!(
            second.elapsed() < Duration::from_secs(9),
            "ran by the ticker, not by the request"
        );
        let _ = stop.send(());
        let _ = task.await;
    }
}
