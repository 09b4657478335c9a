//! Process probes (`haproxy.process`, `etcd.process`, `patroni.process`): is the daemon running,
//! and is it able to run (not stopped by a signal)? The matching pid is remembered and checked
//! with one `/proc/PID/stat` read per cycle; the process table is scanned again only when it
//! is gone.

use std::path::Path;

use vigie_proto::Facts;
use vigie_proto::v1::ProcessFacts;

use super::{Outcome, ProbeId};
use crate::config::ProcessMatch;
use crate::procfs::{self, ProcStat};

/// Remembers the process a probe found last time.
#[derive(Debug)]
pub struct ProcessProbe {
    id: ProbeId,
    matcher: ProcessMatch,
    own_pid: u32,
    /// (pid, start time) of the last match: a recycled pid has another start time.
    known: Option<(u32, u64)>,
}

impl ProcessProbe {
    pub fn new(id: ProbeId, matcher: ProcessMatch) -> Self {
        ProcessProbe {
            id,
            matcher,
            own_pid: std::process::id(),
            known: None,
        }
    }

    /// The whole probe: the remembered process, or a scan of the process table (whose
    /// `/proc/PID/cmdline` reads wait on each process's memory lock: run it off the runtime's
    /// thread).
    pub fn probe(&mut self) -> crate::result::ProbeResult {
        let found = self.known_stat().or_else(|| self.scan());
        self.judge(found)
    }

    /// The probe from the remembered process alone, if it still runs: one `/proc/PID/stat`
    /// read, which takes no lock the process can hold (unlike `cmdline`), so it is safe on the
    /// runtime's thread. `None`: a scan is needed ([`ProcessProbe::probe`]).
    pub fn known(&mut self) -> Option<crate::result::ProbeResult> {
        let found = self.known_stat()?;
        Some(self.judge(Some(found)))
    }

    fn judge(&self, found: Option<(u32, ProcStat)>) -> crate::result::ProbeResult {
        let what = describe(&self.matcher);
        match found {
            None => self.id.critical(format!("no process {what} is running")),
            Some((pid, stat)) => {
                let facts = Facts::Process(ProcessFacts {
                    pid,
                    state: stat.state.to_string(),
                    rss_bytes: stat.rss_pages.saturating_mul(4096),
                    cpu_ticks: stat.cpu_ticks,
                });
                let result = if stat.stopped() {
                    self.id.critical(format!(
                        "{what} (pid {pid}) is stopped (state {}): it does no work until continued",
                        stat.state
                    ))
                } else {
                    self.id.ok(format!("{what} running (pid {pid})"))
                };
                result.with(facts)
            }
        }
    }

    fn known_stat(&mut self) -> Option<(u32, ProcStat)> {
        let (pid, start) = self.known?;
        match procfs::read_stat(pid) {
            Some(stat) if stat.exists() && stat.start_ticks == start => Some((pid, stat)),
            _ => {
                self.known = None;
                None
            }
        }
    }

    fn scan(&mut self) -> Option<(u32, ProcStat)> {
        let mut pids = procfs::all_pids();
        pids.sort_unstable();
        for pid in pids {
            if pid == self.own_pid {
                continue;
            }
            let Some(argv) = procfs::read_cmdline(pid) else {
                continue;
            };
            if !matches(&self.matcher, &argv) {
                continue;
            }
            let Some(stat) = procfs::read_stat(pid) else {
                continue;
            };
            if !stat.exists() {
                continue;
            }
            // With several matches (HAProxy master and worker), keep the oldest: the parent.
            self.known = Some((pid, stat.start_ticks));
            return Some((pid, stat));
        }
        None
    }
}

fn describe(m: &ProcessMatch) -> String {
    match &m.cmdline_contains {
        Some(text) => format!("{} [{text}]", m.executable),
        None => m.executable.clone(),
    }
}

/// Whether a command line matches: see [`ProcessMatch`].
pub fn matches(m: &ProcessMatch, argv: &[String]) -> bool {
    let Some(argv0) = argv.first() else {
        return false;
    };
    let executable_matches = if m.executable.contains('/') {
        *argv0 == m.executable
    } else {
        let base = |s: &String| {
            Path::new(s)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
        };
        base(argv0).as_deref() == Some(m.executable.as_str())
            || argv.get(1).and_then(base).as_deref() == Some(m.executable.as_str())
    };
    executable_matches
        && m.cmdline_contains
            .as_ref()
            .is_none_or(|text| argv.join(" ").contains(text.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_string).collect()
    }

    fn m(exe: &str, contains: Option<&str>) -> ProcessMatch {
        ProcessMatch {
            executable: exe.to_string(),
            cmdline_contains: contains.map(str::to_string),
        }
    }

    #[test]
    fn matching_rules() {
        let patroni = argv("/usr/bin/python3 /usr/bin/patroni /etc/patroni/node1.yml");
        let haproxy = argv("/usr/sbin/haproxy -db -f /tmp/vigie-lab/haproxy.cfg");
        let editor = argv("vim /etc/patroni/node1.yml");
        let table = [
            (m("patroni", None), &patroni, true),
            (m("patroni", Some("node1.yml")), &patroni, true),
            (m("patroni", Some("node2.yml")), &patroni, false),
            (m("python3", None), &patroni, true),
            (m("patroni", None), &editor, false),
            (m("/usr/sbin/haproxy", None), &haproxy, true),
            (m("/usr/bin/haproxy", None), &haproxy, false),
            (m("/usr/sbin/haproxy", Some("vigie-lab")), &haproxy, true),
        ];
        for (matcher, cmd, expected) in table {
            assert_eq!(matches(&matcher, cmd), expected, "{matcher:?} on {cmd:?}");
        }
        assert!(!matches(&m("patroni", None), &[]));
    }

    #[test]
    fn a_found_process_is_then_read_from_its_pid_alone_until_it_is_gone() {
        let marker = format!("{}.5", 3000 + std::process::id() % 1000);
        let mut child = std::process::Command::new("sleep")
            .arg(&marker)
            .spawn()
            .expect("sleep");
        let mut p = ProcessProbe::new(ProbeId::EtcdProcess, m("sleep", Some(&marker)));
        assert!(p.known().is_none(), "nothing remembered before a scan");
        // Until the child has exec'd, its command line is still this test's: poll the scan.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let scanned = loop {
            let r = p.probe();
            if r.status == crate::result::Status::Ok {
                break r;
            }
            assert!(std::time::Instant::now() < deadline, "{}", r.message);
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let fast = p.known().expect("the remembered pid answers");
        assert_eq!(fast.message, scanned.message);
        assert!(
            fast.message.contains(&child.id().to_string()),
            "{}",
            fast.message
        );
        child.kill().expect("kill");
        child.wait().expect("reaped");
        assert!(p.known().is_none(), "a gone process needs a scan");
        let r = p.probe();
        assert_eq!(r.status, crate::result::Status::Critical, "{}", r.message);
    }

    #[test]
    fn own_process_is_never_matched_and_absence_is_critical() {
        let mut p = ProcessProbe::new(
            ProbeId::EtcdProcess,
            m("/nonexistent/vigie-test-daemon", None),
        );
        let r = p.probe();
        assert_eq!(r.status, crate::result::Status::Critical);
        assert!(r.message.contains("no process"));
    }
}
