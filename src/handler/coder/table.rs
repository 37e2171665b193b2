//! The `[handlers.coder]` table as serde reads and writes it: one flat table that holds the
//! Agentuity client settings (the keys [`ClientSettings`] declares, but `api_url`) beside the
//! session settings [`CoderConfig`] declares.
//!
//! `#[serde(flatten)]` would say this in one line, but it reads the table into a buffer first:
//! a value of the wrong type would then be reported for the whole table rather than under its key
//! (`handlers[0].coder.request_timeout_seconds`), and an unknown key would come without the list
//! of known ones that the config loader's "did you mean …?" is drawn from. Here each key is read
//! in place: a client key is checked against [`ClientSettings`] and kept, every other key goes to
//! the derived reader of the session settings, and an unknown key is named with all known keys.

use std::fmt;
use std::sync::OnceLock;

use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, Visitor};
use serde::ser::{self, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::config::CoderConfig;
use crate::agentuity::ClientSettings;

/// The [`ClientSettings`] keys a coder handler's table takes. Not `api_url`: session logs are
/// read by the operator commands only, from the environment.
const CLIENT_KEYS: &[&str] = &[
    "key",
    "key_file",
    "org_id",
    "region",
    "hub_url",
    "catalyst_url",
    "request_timeout_seconds",
];

impl<'de> Deserialize<'de> for CoderConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut client = Map::new();
        let mut config = CoderConfig::deserialize(Table {
            inner: deserializer,
            client: &mut client,
        })?;
        // Each value was checked as it was read; together they cannot fail now.
        config.client = with_keys(&config.client, client).map_err(de::Error::custom)?;
        Ok(config)
    }
}

impl Serialize for CoderConfig {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut table = object(&self.client).map_err(ser::Error::custom)?;
        table.retain(|key, _| CLIENT_KEYS.contains(&key.as_str()));
        let session = CoderConfig::serialize(self, serde_json::value::Serializer)
            .map_err(ser::Error::custom)?;
        if let Value::Object(session) = session {
            table.extend(session);
        }
        table.serialize(serializer)
    }
}

/// `settings` with the given keys' values in place of its own.
fn with_keys(
    settings: &ClientSettings,
    given: Map<String, Value>,
) -> Result<ClientSettings, serde_json::Error> {
    let mut table = object(settings)?;
    table.extend(given);
    ClientSettings::deserialize(Value::Object(table))
}

fn object(settings: &ClientSettings) -> Result<Map<String, Value>, serde_json::Error> {
    match serde_json::to_value(settings)? {
        Value::Object(table) => Ok(table),
        _ => Ok(Map::new()),
    }
}

/// Every key the table takes, for the unknown-key error: the client's, then the session's.
fn all_keys(session: &'static [&'static str]) -> &'static [&'static str] {
    static ALL: OnceLock<Vec<&'static str>> = OnceLock::new();
    ALL.get_or_init(|| CLIENT_KEYS.iter().chain(session).copied().collect())
}

/// The deserializer the derived session reader is given: the caller's, with client keys taken
/// out of the map on the way.
struct Table<'c, D> {
    inner: D,
    client: &'c mut Map<String, Value>,
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Table<'_, D> {
    type Error = D::Error;

    /// Only the derived reader uses this deserializer, and it asks for a struct.
    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, D::Error> {
        Err(de::Error::custom(
            "a coder handler table is read as a struct",
        ))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.inner.deserialize_map(TableVisitor {
            visitor,
            session: fields,
            client: self.client,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

struct TableVisitor<'c, V> {
    visitor: V,
    session: &'static [&'static str],
    client: &'c mut Map<String, Value>,
}

impl<'de, V: Visitor<'de>> Visitor<'de> for TableVisitor<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.visitor.expecting(f)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.visitor.visit_map(SessionKeys {
            map,
            session: self.session,
            client: self.client,
        })
    }
}

/// The table's map as the session reader sees it: client keys are read into `client` and
/// skipped, unknown keys are refused naming every known key.
struct SessionKeys<'c, A> {
    map: A,
    session: &'static [&'static str],
    client: &'c mut Map<String, Value>,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for SessionKeys<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        while let Some(key) = self.map.next_key::<String>()? {
            if CLIENT_KEYS.contains(&key.as_str()) {
                let value = self.map.next_value_seed(ClientValue { key: &key })?;
                self.client.insert(key, value);
            } else if self.session.contains(&key.as_str()) {
                return seed
                    .deserialize(IntoDeserializer::<A::Error>::into_deserializer(key))
                    .map(Some);
            } else {
                return Err(de::Error::unknown_field(&key, all_keys(self.session)));
            }
        }
        Ok(None)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        self.map.next_value_seed(seed)
    }
}

/// One client key's value, checked against [`ClientSettings`] while it is read, so that a value
/// of the wrong type is reported under its own key.
struct ClientValue<'k> {
    key: &'k str,
}

impl<'de> DeserializeSeed<'de> for ClientValue<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        let value = Value::deserialize(deserializer)?;
        let alone = Map::from_iter([(self.key.to_string(), value.clone())]);
        ClientSettings::deserialize(Value::Object(alone)).map_err(de::Error::custom)?;
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_client_keys_are_the_client_settings_but_api_url() {
        let mut keys: Vec<String> = object(&ClientSettings::default())
            .unwrap_or_default()
            .into_iter()
            .map(|(key, _)| key)
            .filter(|key| key != "api_url")
            .collect();
        keys.sort();
        let mut expected: Vec<&str> = CLIENT_KEYS.to_vec();
        expected.sort();
        assert_eq!(keys, expected);
    }

    #[test]
    fn one_flat_table_holds_the_client_and_the_session_settings() {
        let config: CoderConfig = serde_json::from_value(json!({
            "key": "k",
            "hub_url": "http://127.0.0.1:1",
            "poll_seconds": 2,
            "workflow_mode": "loop",
        }))
        .expect("config");
        assert_eq!(config.client.key.as_deref(), Some("k"));
        assert_eq!(config.client.hub_url.as_deref(), Some("http://127.0.0.1:1"));
        assert_eq!(config.client.request_timeout_seconds, 30);
        assert_eq!(config.poll_seconds, 2.0);
        assert_eq!(config.workflow_mode, "loop");
        let written = serde_json::to_value(&config).expect("serialisable");
        assert_eq!(written["key"], json!("k"));
        assert_eq!(written["poll_seconds"], json!(2.0));
        assert!(written.get("api_url").is_none() && written.get("client").is_none());
        let again: CoderConfig = serde_json::from_value(written).expect("read back");
        assert_eq!(again, config);
    }

    #[test]
    fn a_bad_value_is_named_by_its_key_and_an_unknown_key_with_every_known_one() {
        for (table, path) in [
            (
                json!({"request_timeout_seconds": "x"}),
                "request_timeout_seconds",
            ),
            (json!({"poll_seconds": "x"}), "poll_seconds"),
        ] {
            let err = serde_path_to_error::deserialize::<_, CoderConfig>(table)
                .expect_err("a string is not a number");
            assert_eq!(err.path().to_string(), path);
            assert!(err.inner().to_string().starts_with("invalid type"), "{err}");
        }
        for unknown in ["api_url", "pol_seconds"] {
            let err = serde_json::from_value::<CoderConfig>(json!({ unknown: 1 }))
                .expect_err("unknown key");
            let text = err.to_string();
            assert!(
                text.starts_with(&format!("unknown field `{unknown}`, expected one of `key`")),
                "{text}"
            );
            assert!(text.contains("`poll_seconds`"), "{text}");
        }
    }
}
