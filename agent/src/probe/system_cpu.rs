//! `system.cpu`: host CPU use from `/proc/stat`, judged over a sliding window (one minute by
//! default, since boot on the first cycle) so that one busy second does not page anyone; the
//! last cycle's figure and the load average are reported beside it.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use vigie_proto::Facts;
use vigie_proto::v1::SystemCpuFacts;

use super::{Outcome, ProbeId};
use crate::config::SystemConfig;
use crate::procfs::{self, CpuTimes};
use crate::result::ProbeResult;

/// The window the status is judged on.
pub const WINDOW: Duration = Duration::from_secs(60);

/// Keeps the samples of the last window.
#[derive(Debug, Default)]
pub struct CpuProbe {
    samples: VecDeque<(Instant, CpuTimes)>,
}

fn busy_percent(from: CpuTimes, to: CpuTimes) -> (f64, f64) {
    let total = to.total.saturating_sub(from.total);
    if total == 0 {
        return (0.0, 0.0);
    }
    let busy = to.busy.saturating_sub(from.busy) as f64 * 100.0 / total as f64;
    let io = to.iowait.saturating_sub(from.iowait) as f64 * 100.0 / total as f64;
    (busy, io)
}

impl CpuProbe {
    pub fn probe(&mut self, cfg: &SystemConfig) -> ProbeResult {
        let id = ProbeId::SystemCpu;
        let Some(now) = procfs::read_cpu_times() else {
            return id.unknown("cannot read /proc/stat");
        };
        let at = Instant::now();
        let since_boot = CpuTimes {
            busy: 0,
            total: 0,
            iowait: 0,
        };
        let last = self.samples.back().map_or(since_boot, |(_, s)| *s);
        // The oldest sample still inside the window (keep one just outside as its start).
        while self.samples.len() > 1 && self.samples.get(1).is_some_and(|(t, _)| at - *t >= WINDOW)
        {
            self.samples.pop_front();
        }
        let (window_start, window) = match self.samples.front() {
            Some((t, s)) => (*s, at - *t),
            None => (since_boot, Duration::ZERO),
        };
        self.samples.push_back((at, now));
        let (used, io) = busy_percent(window_start, now);
        let (last_used, _) = busy_percent(last, now);
        let over = if window.is_zero() {
            "since boot".to_string()
        } else {
            format!("over {}s", window.as_secs())
        };
        let load = procfs::read_loadavg();
        let text = format!(
            "{used:.1}% busy {over} ({last_used:.1}% last cycle), {io:.1}% iowait, load {}",
            load.map_or("?".to_string(), |(l1, l5, l15)| format!(
                "{l1:.2} {l5:.2} {l15:.2}"
            ))
        );
        judge(used, cfg, text).with(Facts::SystemCpu(SystemCpuFacts {
            used_percent: round1(used),
            window_s: window.as_secs(),
            last_cycle_percent: round1(last_used),
            iowait_percent: round1(io),
            cpus: procfs::cpu_count() as u32,
            load: load.map_or_else(Vec::new, |(l1, l5, l15)| vec![l1, l5, l15]),
        }))
    }
}

fn judge(used: f64, cfg: &SystemConfig, text: String) -> ProbeResult {
    let id = ProbeId::SystemCpu;
    if used >= cfg.cpu_critical_percent {
        id.critical(text)
    } else if used >= cfg.cpu_warning_percent {
        id.warning(text)
    } else {
        id.ok(text)
    }
}

pub(crate) fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::Status;

    #[test]
    fn thresholds() {
        let cfg = SystemConfig::default();
        assert_eq!(judge(10.0, &cfg, String::new()).status, Status::Ok);
        assert_eq!(judge(91.0, &cfg, String::new()).status, Status::Warning);
        assert_eq!(judge(99.0, &cfg, String::new()).status, Status::Critical);
    }

    #[test]
    fn one_busy_interval_is_diluted_by_the_window() {
        let quiet = |t: u64| CpuTimes {
            busy: t,
            total: t * 10,
            iowait: 0,
        };
        // 10% busy for 50 ticks of 10, then one fully busy step of 10 ticks.
        let (avg, _) = busy_percent(
            quiet(0),
            CpuTimes {
                busy: 50 + 10,
                total: 500 + 10,
                iowait: 0,
            },
        );
        assert!(avg < 20.0, "{avg}");
        let (last, _) = busy_percent(
            quiet(50),
            CpuTimes {
                busy: 60,
                total: 510,
                iowait: 0,
            },
        );
        assert!(last > 90.0, "{last}");
    }

    #[tokio::test(start_paused = true)]
    async fn first_sample_is_since_boot_then_over_a_window() {
        let mut p = CpuProbe::default();
        let cfg = SystemConfig::default();
        assert_eq!(p.probe(&cfg).json()["window_s"], 0);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(p.probe(&cfg).json()["window_s"], 5);
        tokio::time::advance(Duration::from_secs(120)).await;
        p.probe(&cfg);
        tokio::time::advance(Duration::from_secs(5)).await;
        let w = p.probe(&cfg).json()["window_s"].as_u64().expect("window");
        assert!((5..=125).contains(&w), "{w}");
    }
}
