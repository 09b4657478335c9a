//! Small, allocation-light readers of Linux `/proc`: process state and command lines, listening
//! sockets, CPU and memory counters. Reading a remembered pid costs tens of microseconds, where a
//! full process-table refresh costs milliseconds.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::OnceLock;

/// Reads a `/proc` file in one go. `/proc` files report size 0, so `std::fs::read` starts with
/// a 32-byte read and doubles: seven system calls for `/proc/meminfo`, each one regenerating it.
pub fn read_proc(path: impl AsRef<Path>) -> std::io::Result<Vec<u8>> {
    let mut file = std::fs::File::open(path)?;
    let mut buf = Vec::with_capacity(8192);
    loop {
        let len = buf.len();
        buf.resize(len + 8192, 0);
        let n = file.read(&mut buf[len..])?;
        buf.truncate(len + n);
        if n == 0 {
            return Ok(buf);
        }
    }
}

/// [`read_proc`] as text.
pub fn read_proc_text(path: impl AsRef<Path>) -> std::io::Result<String> {
    read_proc(path).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// The fields of `/proc/PID/stat` the agent uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// `R`, `S`, `D`, `T` (stopped), `t`, `Z` (zombie), …
    pub state: char,
    pub ppid: u32,
    /// User + system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    /// User + system CPU time of the children it has reaped, in clock ticks.
    pub reaped_children_ticks: u64,
    /// Resident set size, in pages.
    pub rss_pages: u64,
    /// Start time after boot, in clock ticks (tells a recycled pid apart).
    pub start_ticks: u64,
}

impl ProcStat {
    /// A process that can do work: not a zombie, not dead.
    pub fn exists(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }

    /// Stopped by a signal (SIGSTOP) or a tracer: it does nothing until continued.
    pub fn stopped(&self) -> bool {
        matches!(self.state, 'T' | 't')
    }
}

/// Parses the text of `/proc/PID/stat`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    // The command name is in parentheses and may itself hold spaces or parentheses.
    let (_, rest) = text.rsplit_once(") ")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); field N is rest[N - 3].
    let field = |n: usize| fields.get(n - 3).copied();
    Some(ProcStat {
        state: field(3)?.chars().next()?,
        ppid: field(4)?.parse().ok()?,
        // Sums of kernel counters: a text that overflows them is no stat line.
        cpu_ticks: field(14)?
            .parse::<u64>()
            .ok()?
            .checked_add(field(15)?.parse::<u64>().ok()?)?,
        reaped_children_ticks: field(16)?
            .parse::<u64>()
            .ok()?
            .checked_add(field(17)?.parse::<u64>().ok()?)?,
        start_ticks: field(22)?.parse().ok()?,
        rss_pages: field(24)?.parse().ok()?,
    })
}

pub fn read_stat(pid: u32) -> Option<ProcStat> {
    parse_stat(&read_proc_text(format!("/proc/{pid}/stat")).ok()?)
}

/// `argv` of a process (empty for kernel threads).
pub fn read_cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = read_proc(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect(),
    )
}

/// Every pid in `/proc`.
pub fn all_pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Whether a socket listens on `addr` (or on the wildcard address of its family, same port):
/// asked to the kernel's sock_diag, or read from `/proc/net/tcp{,6}` where netlink is refused.
pub fn is_listening(addr: SocketAddr) -> std::io::Result<bool> {
    if let Ok(found) = crate::sockdiag::serves(addr) {
        return Ok(found);
    }
    let mut found = false;
    for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        let text = match read_proc_text(file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        found |= listening_in(&text, v6, addr);
    }
    Ok(found)
}

/// Looks for a LISTEN socket on `addr` in the text of a `/proc/net/tcp{,6}` table.
pub fn listening_in(table: &str, v6: bool, addr: SocketAddr) -> bool {
    const LISTEN: &str = "0A";
    table.lines().skip(1).any(|line| {
        let mut cols = line.split_whitespace();
        let (Some(local), Some(_remote), Some(state)) = (cols.nth(1), cols.next(), cols.next())
        else {
            return false;
        };
        if state != LISTEN {
            return false;
        }
        parse_proc_addr(local, v6).is_some_and(|(ip, port)| serves(SocketAddr::new(ip, port), addr))
    })
}

/// Whether a socket listening on `local` accepts connections to `addr`.
fn serves(local: SocketAddr, addr: SocketAddr) -> bool {
    let ip = local.ip();
    local.port() == addr.port()
        && (ip == addr.ip() || ip.is_unspecified() || v4_mapped(ip) == Some(addr.ip()))
}

fn v4_mapped(ip: IpAddr) -> Option<IpAddr> {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
        IpAddr::V4(_) => None,
    }
}

/// Parses `0100007F:1F90` (IPv4, little-endian words) or its 32-hex-digit IPv6 form.
fn parse_proc_addr(text: &str, v6: bool) -> Option<(IpAddr, u16)> {
    let (ip_hex, port_hex) = text.split_once(':')?;
    let port = u16::from_str_radix(port_hex, 16).ok()?;
    // Sliced by bytes below: hex digits only (a garbled table is not an address).
    if !ip_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let ip = if v6 {
        if ip_hex.len() != 32 {
            return None;
        }
        let mut bytes = [0u8; 16];
        for word in 0..4 {
            let w = u32::from_str_radix(&ip_hex[word * 8..word * 8 + 8], 16).ok()?;
            bytes[word * 4..word * 4 + 4].copy_from_slice(&w.to_le_bytes());
        }
        IpAddr::V6(Ipv6Addr::from(bytes))
    } else {
        let w = u32::from_str_radix(ip_hex, 16).ok()?;
        IpAddr::V4(Ipv4Addr::from(w.to_le_bytes()))
    };
    Some((ip, port))
}

/// Aggregate CPU counters from the first line of `/proc/stat`, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    pub busy: u64,
    pub total: u64,
    /// Time spent waiting for I/O.
    pub iowait: u64,
}

pub fn parse_cpu_times(proc_stat: &str) -> Option<CpuTimes> {
    let line = proc_stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let get = |i: usize| v.get(i).copied().unwrap_or(0);
    let idle = get(3).saturating_add(get(4));
    let total: u64 = (0..8).map(get).fold(0, u64::saturating_add);
    Some(CpuTimes {
        busy: total.saturating_sub(idle),
        total,
        iowait: get(4),
    })
}

pub fn read_cpu_times() -> Option<CpuTimes> {
    parse_cpu_times(&read_proc_text("/proc/stat").ok()?)
}

/// `/proc/meminfo` figures in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemInfo {
    pub total: u64,
    pub available: u64,
    pub swap_total: u64,
    pub swap_free: u64,
}

pub fn parse_meminfo(text: &str) -> Option<MemInfo> {
    let kib = |key: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(key))?;
        line[key.len()..]
            .split_whitespace()
            .next()?
            .parse::<u64>()
            .ok()?
            .checked_mul(1024)
    };
    Some(MemInfo {
        total: kib("MemTotal:")?,
        available: kib("MemAvailable:")?,
        swap_total: kib("SwapTotal:").unwrap_or(0),
        swap_free: kib("SwapFree:").unwrap_or(0),
    })
}

pub fn read_meminfo() -> Option<MemInfo> {
    parse_meminfo(&read_proc_text("/proc/meminfo").ok()?)
}

/// `(load1, load5, load15)` from `/proc/loadavg`.
pub fn read_loadavg() -> Option<(f64, f64, f64)> {
    let text = read_proc_text("/proc/loadavg").ok()?;
    let mut it = text.split_whitespace().map(|x| x.parse::<f64>().ok());
    Some((it.next()??, it.next()??, it.next()??))
}

/// Number of online CPUs.
pub fn cpu_count() -> usize {
    // std reads the cgroup files and the affinity mask on each call: once is enough.
    static COUNT: OnceLock<usize> = OnceLock::new();
    *COUNT.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Filesystem usage of the filesystem holding `path`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FsUsage {
    /// The device of the filesystem (`st_dev`): two paths on one filesystem share it.
    pub device: u64,
    pub total_bytes: u64,
    pub available_bytes: u64,
    pub used_percent: f64,
    pub inodes_used_percent: f64,
}

pub fn fs_usage(path: &Path) -> std::io::Result<FsUsage> {
    let s = rustix::fs::statvfs(path).map_err(std::io::Error::from)?;
    let total = s.f_blocks.saturating_mul(s.f_frsize);
    let free = s.f_bfree.saturating_mul(s.f_frsize);
    let avail = s.f_bavail.saturating_mul(s.f_frsize);
    // Like df: used / (used + available to unprivileged users).
    let used = total.saturating_sub(free);
    let denom = used + avail;
    let used_percent = if denom == 0 {
        0.0
    } else {
        used as f64 * 100.0 / denom as f64
    };
    let inodes_used_percent = if s.f_files == 0 {
        0.0
    } else {
        s.f_files.saturating_sub(s.f_ffree) as f64 * 100.0 / s.f_files as f64
    };
    Ok(FsUsage {
        device: rustix::fs::stat(path).map_err(std::io::Error::from)?.st_dev,
        total_bytes: total,
        available_bytes: avail,
        used_percent,
        inodes_used_percent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_and_parens_in_the_name() {
        let text = "1234 (postgres: demo (x)) T 99 1234 1234 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 1 0 4242 1000 250 18446744073709551615";
        let s = parse_stat(text).expect("parses");
        assert_eq!(s.state, 'T');
        assert!(s.stopped());
        assert_eq!(s.ppid, 99);
        assert_eq!(s.cpu_ticks, 12);
        assert_eq!(s.start_ticks, 4242);
        assert_eq!(s.rss_pages, 250);
    }

    #[test]
    fn garbage_stat_is_none() {
        assert_eq!(parse_stat("nonsense"), None);
        assert_eq!(parse_stat("1 (x) R"), None);
    }

    #[test]
    fn listening_socket_found_by_address_and_port() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
           0: 0A00007F:1388 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n\
           1: 0B00007F:1538 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0\n";
        let rw: SocketAddr = "127.0.0.10:5000".parse().expect("addr");
        assert!(listening_in(tcp, false, rw));
        // An established connection on 127.0.0.11:5432 is not a listener.
        let pg: SocketAddr = "127.0.0.11:5432".parse().expect("addr");
        assert!(!listening_in(tcp, false, pg));
        let wildcard = "h\n 0: 00000000:1F90 00000000:0000 0A 0 0 0 0 0 0\n";
        let any: SocketAddr = "127.0.0.5:8080".parse().expect("addr");
        assert!(listening_in(wildcard, false, any));
    }

    /// Found by `fuzz/run.sh 60 procfs` with overflow checks: counters whose sums overflow.
    #[test]
    fn counters_that_overflow_are_refused_or_saturate_never_a_panic() {
        let max = u64::MAX;
        let stat = format!("1 (x) S 0 0 0 0 0 0 0 0 0 0 {max} {max} {max} {max} 0 0 0 0 0 0 0");
        assert_eq!(parse_stat(&stat), None);
        let cpu = parse_cpu_times(&format!("cpu  {max} {max} {max} {max} {max} 0 0 0\n"))
            .expect("saturated, not refused");
        assert_eq!(cpu.total, max);
        let meminfo = format!("MemTotal: {max} kB\nMemAvailable: 1 kB\n");
        assert_eq!(parse_meminfo(&meminfo), None);
    }

    /// Found by `fuzz/run.sh 600 procfs`: a non-ASCII character across an IPv6 word's edge.
    #[test]
    fn a_garbled_address_is_no_address_never_a_panic() {
        let local = format!("{}é{}:1F90", "0".repeat(15), "0".repeat(15));
        assert_eq!(local.split_once(':').map(|(ip, _)| ip.len()), Some(32));
        let table = format!(
            "  sl  local_address rem_address   st\n   0: {local} 00000000000000000000000000000000:0000 0A\n"
        );
        let addr: SocketAddr = "[::1]:8080".parse().expect("addr");
        assert!(!listening_in(&table, true, addr));
        assert_eq!(parse_proc_addr(&local, true), None);
        assert_eq!(parse_proc_addr("0100007G:1F90", false), None);
        assert_eq!(
            parse_proc_addr("0100007F:1F90", false),
            Some((IpAddr::V4(Ipv4Addr::LOCALHOST), 8080))
        );
    }

    #[test]
    fn cpu_times_and_meminfo_parse() {
        let c = parse_cpu_times("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3\n").expect("cpu");
        assert_eq!(c.total, 1000);
        assert_eq!(c.busy, 150);
        let m = parse_meminfo(
            "MemTotal:  1000 kB\nMemFree: 10 kB\nMemAvailable:  250 kB\nSwapTotal: 0 kB\n",
        )
        .expect("mem");
        assert_eq!(m.total, 1_024_000);
        assert_eq!(m.available, 256_000);
    }

    #[test]
    fn own_process_is_readable() {
        let me = std::process::id();
        let s = read_stat(me).expect("own stat");
        assert!(s.exists() && !s.stopped());
        assert!(!read_cmdline(me).expect("own cmdline").is_empty());
        let fs = fs_usage(Path::new("/")).expect("statvfs /");
        assert!(fs.total_bytes > 0);
    }
}
