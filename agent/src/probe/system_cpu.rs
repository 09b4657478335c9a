//! `system.cpu`: host CPU use between two cycles (since boot on the first), from `/proc/stat`,
//! with the load average.

use super::ProbeId;
use crate::config::SystemConfig;
use crate::procfs::{self, CpuTimes};
use crate::result::ProbeResult;

/// Keeps the previous sample so that each cycle measures the time since the last one.
#[derive(Debug, Default)]
pub struct CpuProbe {
    previous: Option<CpuTimes>,
}

impl CpuProbe {
    pub fn probe(&mut self, cfg: &SystemConfig) -> ProbeResult {
        let id = ProbeId::SystemCpu;
        let Some(now) = procfs::read_cpu_times() else {
            return id.unknown("cannot read /proc/stat");
        };
        let since_boot = self.previous.is_none();
        let base = self.previous.replace(now).unwrap_or(CpuTimes {
            busy: 0,
            total: 0,
            iowait: 0,
        });
        let total = now.total.saturating_sub(base.total);
        let busy = now.busy.saturating_sub(base.busy);
        let iowait = now.iowait.saturating_sub(base.iowait);
        let (used, io) = if total == 0 {
            (0.0, 0.0)
        } else {
            (
                busy as f64 * 100.0 / total as f64,
                iowait as f64 * 100.0 / total as f64,
            )
        };
        let window = if since_boot { " since boot" } else { "" };
        let load = procfs::read_loadavg();
        let text = format!(
            "{used:.1}% busy{window}, {io:.1}% iowait, load {}",
            load.map_or("?".to_string(), |(l1, l5, l15)| format!(
                "{l1:.2} {l5:.2} {l15:.2}"
            ))
        );
        let result = judge(used, cfg, text);
        let mut result = result
            .fact("used_percent", round1(used))
            .fact("iowait_percent", round1(io))
            .fact("cpus", procfs::cpu_count())
            .fact("since_boot", since_boot);
        if let Some((l1, l5, l15)) = load {
            result = result.fact("load", vec![l1, l5, l15]);
        }
        result
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
    fn first_sample_is_since_boot_then_between_cycles() {
        let mut p = CpuProbe::default();
        let cfg = SystemConfig::default();
        assert_eq!(p.probe(&cfg).facts["since_boot"], true);
        assert_eq!(p.probe(&cfg).facts["since_boot"], false);
    }
}
