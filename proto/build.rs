//! Compiles `proto/vigie/v1/*.proto` with protox (a pure-Rust protobuf compiler), so building
//! vigie never needs a system `protoc`. The fact messages derive serde: the agent's JSON output
//! and the collector's API are generated from these same types.

/// Enum-typed fields of the fact messages (`i32` in prost), serialized as their words
/// (`running`, `rw`; `null` for the unspecified 0): (field, enum).
const ENUM_FIELDS: [(&str, &str); 7] = [
    ("PortFacts.check", "PortCheck"),
    ("HaproxyPortsFacts.check", "PortCheck"),
    ("HaproxyProxy.kind", "ProxyKind"),
    ("PatroniNodeFacts.state_kind", "StateKind"),
    ("PatroniMember.state_kind", "StateKind"),
    ("PostgresAcceptFacts.refused", "Refusal"),
    ("PatroniConfigFacts.synchronous_mode", "SyncMode"),
];

/// Enums with words: snake_case variant names.
const WORD_ENUMS: [&str; 6] = [
    "Status",
    "PortCheck",
    "ProxyKind",
    "StateKind",
    "Refusal",
    "SyncMode",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/vigie/v1/ingest.proto", "proto/vigie/v1/facts.proto"];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let mut config = tonic_prost_build::configure();
    for file in &fds.file {
        if file.name() != "vigie/v1/facts.proto" {
            continue;
        }
        for message in &file.message_type {
            config = config.type_attribute(
                format!(".vigie.v1.{}", message.name()),
                "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]",
            );
        }
    }
    for (field, e) in ENUM_FIELDS {
        config = config.field_attribute(
            format!(".vigie.v1.{field}"),
            format!(
                "#[serde(serialize_with = \"crate::words::serialize::<crate::v1::{e}, _>\", \
                 deserialize_with = \"crate::words::deserialize::<crate::v1::{e}, _>\")]"
            ),
        );
    }
    for e in WORD_ENUMS {
        config = config.type_attribute(
            format!(".vigie.v1.{e}"),
            "#[derive(serde::Serialize, serde::Deserialize)] #[serde(rename_all = \"snake_case\")]",
        );
    }
    config = config.type_attribute(
        ".vigie.v1.ProbeResult.facts",
        "#[derive(serde::Serialize)] #[serde(untagged)]",
    );
    config.compile_fds(fds)?;
    Ok(())
}
