//! etcd's JSON gateway answers (`/health`, `/v3/maintenance/status`, `/v3/cluster/member/list`):
//! the input is split on NUL bytes into the three documents.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vigie_agent::probe::etcd_health;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |b| *b == 0);
    let mut next = || -> Result<serde_json::Value, String> {
        serde_json::from_slice(parts.next().unwrap_or_default()).map_err(|e| e.to_string())
    };
    let health = next().unwrap_or_default();
    let (status, members) = (next(), next());
    let _ = etcd_health::judge(&health, status, members);
});
