//! `system.memory`: host memory in use (total − available) and swap, from `/proc/meminfo`.

use vigie_proto::Facts;
use vigie_proto::v1::SystemMemoryFacts;

use super::system_cpu::round1;
use super::{Outcome, ProbeId};
use crate::config::SystemConfig;
use crate::procfs;
use crate::result::{ProbeResult, human_bytes};

pub fn probe(cfg: &SystemConfig) -> ProbeResult {
    let id = ProbeId::SystemMemory;
    let Some(m) = procfs::read_meminfo() else {
        return id.unknown("cannot read /proc/meminfo");
    };
    let used = m.total.saturating_sub(m.available);
    let percent = if m.total == 0 {
        0.0
    } else {
        used as f64 * 100.0 / m.total as f64
    };
    let swap_used = m.swap_total.saturating_sub(m.swap_free);
    let text = format!(
        "{percent:.1}% used ({} of {}), swap {} used",
        human_bytes(used),
        human_bytes(m.total),
        human_bytes(swap_used)
    );
    let result = if percent >= cfg.memory_critical_percent {
        id.critical(text)
    } else if percent >= cfg.memory_warning_percent {
        id.warning(text)
    } else {
        id.ok(text)
    };
    result.with(Facts::SystemMemory(SystemMemoryFacts {
        used_percent: round1(percent),
        total_bytes: m.total,
        available_bytes: m.available,
        swap_used_bytes: swap_used,
    }))
}
