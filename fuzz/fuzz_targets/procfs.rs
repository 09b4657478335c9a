//! The `/proc` files the agent reads: `/proc/PID/stat`, `/proc/stat`, `/proc/meminfo`,
//! `/proc/net/tcp{,6}`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vigie_agent::procfs;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = procfs::parse_stat(&text);
    let _ = procfs::parse_cpu_times(&text);
    let _ = procfs::parse_meminfo(&text);
    for addr in ["127.0.0.1:5432", "[::1]:5432", "0.0.0.0:8008"] {
        if let Ok(addr) = addr.parse() {
            let _ = procfs::listening_in(&text, false, addr);
            let _ = procfs::listening_in(&text, true, addr);
        }
    }
});
