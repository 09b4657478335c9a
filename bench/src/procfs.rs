//! What the kernel says about processes, for measuring them: CPU time (on top of the agent's
//! `/proc` readers), memory, fork counts, and the CPU of our own reaped children (getrusage).

use std::path::Path;
use std::time::Duration;

use vigie_agent::procfs::{all_pids, read_proc_text, read_stat};

/// Clock ticks per second of /proc/<pid>/stat times (USER_HZ, 100 on Linux).
const TICKS_PER_S: f64 = 100.0;

/// CPU seconds a process has used, its own threads only (10 ms resolution).
pub fn cpu_s(pid: u32) -> Option<f64> {
    read_stat(pid).map(|s| s.cpu_ticks as f64 / TICKS_PER_S)
}

/// CPU seconds of a process, of its live children, and of the children it already reaped: the
/// whole cost of a daemon that forks workers (PostgreSQL's postmaster and its backends).
pub fn tree_cpu_s(pid: u32) -> Option<f64> {
    let s = read_stat(pid)?;
    let children: f64 = all_pids()
        .into_iter()
        .filter_map(read_stat)
        .filter(|c| c.ppid == pid)
        .map(|c| c.cpu_ticks as f64 / TICKS_PER_S)
        .sum();
    Some((s.cpu_ticks + s.reaped_children_ticks) as f64 / TICKS_PER_S + children)
}

/// CPU time of every thread of a live process, in nanoseconds (/proc/<pid>/task/*/schedstat),
/// with the number of threads it summed. Precise, but a thread that exits takes its time along.
pub fn threads_cpu_ns(pid: u32) -> Option<(u64, usize)> {
    let threads = thread_cpu_ns(pid)?;
    Some((threads.values().sum(), threads.len()))
}

/// CPU time of each thread of a live process by thread id, in nanoseconds.
pub fn thread_cpu_ns(pid: u32) -> Option<std::collections::BTreeMap<u32, u64>> {
    let mut threads = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let entry = entry.ok()?;
        let tid = entry.file_name().to_str()?.parse().ok()?;
        let text = std::fs::read_to_string(entry.path().join("schedstat")).ok()?;
        threads.insert(tid, text.split(' ').next()?.parse::<u64>().ok()?);
    }
    Some(threads)
}

/// A field of /proc/<pid>/status in KiB (`VmRSS`, `VmHWM`).
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = read_proc_text(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Processes created on the whole machine since boot (/proc/stat `processes`).
pub fn forks_since_boot() -> u64 {
    read_proc_text("/proc/stat")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("processes "))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// A pid written in a file (pid files, PostgreSQL's postmaster.pid first line).
pub fn pid_in(file: &Path) -> Option<u32> {
    std::fs::read_to_string(file)
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// CPU time and peak RSS of our reaped children so far.
#[derive(Debug, Clone, Copy)]
pub struct ChildUsage {
    pub cpu: Duration,
    pub max_rss_kib: u64,
}

pub fn children_usage() -> ChildUsage {
    use nix::sys::resource::{UsageWho, getrusage};
    match getrusage(UsageWho::RUSAGE_CHILDREN) {
        Ok(u) => {
            let tv = |t: nix::sys::time::TimeVal| {
                Duration::from_secs(t.tv_sec().max(0) as u64)
                    + Duration::from_micros(t.tv_usec().max(0) as u64)
            };
            ChildUsage {
                cpu: tv(u.user_time()) + tv(u.system_time()),
                max_rss_kib: u.max_rss().max(0) as u64,
            }
        }
        Err(_) => ChildUsage {
            cpu: Duration::ZERO,
            max_rss_kib: 0,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_process() {
        let me = std::process::id();
        assert!(status_kib(me, "VmRSS").is_some_and(|k| k > 0));
        let (ns, threads) = threads_cpu_ns(me).expect("schedstat");
        assert!(ns > 0 && threads >= 1);
        assert!(cpu_s(me).is_some());
        assert!(forks_since_boot() > 0);
    }

    #[test]
    fn children_usage_grows_after_a_child_ran() {
        let before = children_usage();
        let status = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done"])
            .status()
            .expect("sh runs");
        assert!(status.success());
        let after = children_usage();
        assert!(after.cpu > before.cpu);
        assert!(after.max_rss_kib > 0);
    }
}
