//! Both binaries' TOML configuration files: an error names a field, never a panic.
#![no_main]
use std::collections::HashMap;
use std::io::Write;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut file) = tempfile::NamedTempFile::new() else {
        return;
    };
    if file.write_all(data).is_err() {
        return;
    }
    let _ = vigie_agent::config::load(file.path(), HashMap::new());
    let _ = vigie_collector::config::load(file.path(), HashMap::new());
});
