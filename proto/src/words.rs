//! Serde for the enum-typed fields of the fact messages: prost keeps them as `i32`; JSON shows
//! the enum's word (`running`, `too_many_connections`), `null` for the unspecified 0, and the
//! bare number for a value this build does not know (sent by a newer peer).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub fn serialize<E, S>(value: &i32, s: S) -> Result<S::Ok, S::Error>
where
    E: TryFrom<i32> + Serialize,
    S: Serializer,
{
    if *value == 0 {
        return s.serialize_none();
    }
    match E::try_from(*value) {
        Ok(e) => e.serialize(s),
        Err(_) => s.serialize_i32(*value),
    }
}

pub fn deserialize<'de, E, D>(d: D) -> Result<i32, D::Error>
where
    E: Deserialize<'de> + Into<i32>,
    D: Deserializer<'de>,
{
    Ok(Option::<E>::deserialize(d)?.map_or(0, Into::into))
}

#[cfg(test)]
mod tests {
    use crate::v1::{PatroniMember, PostgresAcceptFacts, Refusal, StateKind};

    #[test]
    fn enum_fields_read_and_write_as_words() {
        let m = PatroniMember {
            name: "node1".into(),
            state_kind: StateKind::ArchiveRecovery as i32,
            ..Default::default()
        };
        let json = serde_json::to_value(&m).expect("json");
        assert_eq!(json["state_kind"], "archive_recovery");
        let back: PatroniMember = serde_json::from_value(json).expect("json");
        assert_eq!(back, m);

        let none = serde_json::to_value(PostgresAcceptFacts::default()).expect("json");
        assert!(none["refused"].is_null());
        let refused: PostgresAcceptFacts =
            serde_json::from_value(serde_json::json!({"refused": "too_many_connections"}))
                .expect("json");
        assert_eq!(refused.refused(), Refusal::TooManyConnections);
    }
}
