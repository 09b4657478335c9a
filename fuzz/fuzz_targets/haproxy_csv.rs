//! HAProxy's `show stat` CSV, as the stats socket or page returns it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vigie_agent::probe::haproxy_backends;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(rows) = haproxy_backends::parse_stat_csv(&text) {
        let apps = [
            (
                "demo".to_string(),
                "demo_rw".to_string(),
                Some("demo_ro".to_string()),
            ),
            ("other".to_string(), "x".to_string(), None),
        ];
        let _ = haproxy_backends::judge(&rows, &apps);
    }
});
