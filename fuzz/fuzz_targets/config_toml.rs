//! Both binaries' TOML configuration files, typed as start-up types them: an error names a
//! field, never a panic. (Typing only: validation then reads the files the config names, which
//! a fuzzer must not be let loose on.)
#![no_main]
use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use vigie_config::Source;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(source) = Source::from_toml(text, "VIGIE_AGENT", HashMap::new()) {
        let _ = source.deserialize::<vigie_agent::config::AgentConfig>();
    }
    if let Ok(source) = Source::from_toml(text, "VIGIE_COLLECTOR", HashMap::new()) {
        let _ = source.deserialize::<vigie_collector::config::CollectorConfig>();
    }
});
