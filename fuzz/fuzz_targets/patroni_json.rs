//! Patroni's `/patroni` and `/cluster` documents, as any server on the REST port could answer.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vigie_agent::probe::{patroni_cluster, patroni_health, patroni_node};

fuzz_target!(|data: &[u8]| {
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let _ = patroni_node::judge(&doc, 1_796_000_000);
    let _ = patroni_health::judge(&Ok(doc.clone()));
    let _ = patroni_cluster::judge(&doc, "node1", 16 * 1024 * 1024);
});
