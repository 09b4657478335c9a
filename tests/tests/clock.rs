//! The verdict across a wall-clock step of the collector's host (NTP, an operator's `date`):
//! freshness and grace are measured on the monotonic clock, so a step forward does not make every
//! agent stale, and a step back does not keep a dead agent fresh. The step is real: the test runs
//! itself again under libfaketime (Debian's `faketime`), whose offset file moves the process's
//! wall clock (`CLOCK_REALTIME`) while leaving the monotonic clock alone. The lab's daemons keep
//! the real clock (the harness strips `LD_PRELOAD` from `lab.sh`).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use vigie_tests::stack::{AGENTS, Stack, finding_codes, has_finding};
use vigie_tests::{CLUSTER_CHANGE, Lab, wait_until};

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";
/// Set in the re-run child: the offset file libfaketime reads.
const CHILD: &str = "VIGIE_FAKETIME_OFFSET_FILE";

/// Sets the process's wall-clock offset from real time, in seconds.
fn step_to(file: &Path, offset_s: i64) {
    std::fs::write(file, format!("{offset_s:+}\n")).expect("write the faketime offset");
}

#[tokio::test]
async fn a_wall_clock_step_neither_blinds_the_verdict_nor_keeps_a_dead_agent_fresh() {
    let Some(file) = std::env::var_os(CHILD).map(PathBuf::from) else {
        // The parent: run this very test again under libfaketime.
        assert!(
            Path::new(LIBFAKETIME).exists(),
            "{LIBFAKETIME} is missing: install Debian's faketime (deploy/install-deps.sh does)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("offset");
        step_to(&file, 0);
        let status = tokio::process::Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "a_wall_clock_step_neither_blinds_the_verdict_nor_keeps_a_dead_agent_fresh",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("LD_PRELOAD", LIBFAKETIME)
            .env("FAKETIME_TIMESTAMP_FILE", &file)
            // Re-read once a second: cheap, and the step shows within a second.
            .env("FAKETIME_CACHE_DURATION", "1")
            .env("DONT_FAKE_MONOTONIC", "1")
            .env(CHILD, &file)
            .status()
            .await
            .expect("run the test under libfaketime");
        assert!(
            status.success(),
            "the run under libfaketime failed: {status}"
        );
        return;
    };
    let _lab = Lab::acquire().await;
    let interval = Duration::from_secs(1);
    let mut s = Stack::start(interval).await;
    s.wait_demo(
        "a first verdict that sees every node",
        CLUSTER_CHANGE,
        |d| d["verdict"] != "unknown" && d["blind_spots"].as_array().is_some_and(Vec::is_empty),
    )
    .await;

    // 15 s forward: every agent's last batch is 15 s old by the wall clock, not by the other.
    let before = SystemTime::now();
    let started = Instant::now();
    step_to(&file, 15);
    wait_until("the wall clock to step", Duration::from_secs(5), || async {
        let wall = SystemTime::now().duration_since(before).unwrap_or_default();
        (wall >= started.elapsed() + Duration::from_secs(14)).then_some(())
    })
    .await;
    // The agents share this process's clock: judged here is what the collector makes of it.
    // (Host findings such as CPU pressure from a loaded machine are beside the point.)
    let until = Instant::now() + interval * 4;
    while Instant::now() < until {
        let d = s.demo().await.expect("the API answers");
        let stale = AGENTS.iter().any(|n| has_finding(&d, "AGENT_STALE", n));
        assert!(
            !stale
                && d["verdict"] != "unknown"
                && d["blind_spots"].as_array().is_some_and(Vec::is_empty),
            "after a 15 s step forward: {} {:?} {}",
            d["verdict"],
            finding_codes(&d),
            d["blind_spots"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // 15 s back, then an agent dies: stale after its 3 intervals (5 s at least), not 15 s later.
    let before = SystemTime::now();
    step_to(&file, 0);
    wait_until(
        "the wall clock to step back",
        Duration::from_secs(5),
        || async { (SystemTime::now() < before).then_some(()) },
    )
    .await;
    s.kill_agent("node3");
    let killed = Instant::now();
    s.wait_demo("AGENT_STALE node3", Duration::from_secs(5 + 4), |d| {
        has_finding(d, "AGENT_STALE", "node3")
    })
    .await;
    println!(
        "AGENT_STALE after {:.1}s with the wall clock stepped back 15 s",
        killed.elapsed().as_secs_f64()
    );
    s.stop().await;
}
