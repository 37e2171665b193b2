//! Tolerant DTOs of the Coder Hub and the Sessions API.
//!
//! The Hub adds fields often and documents few of its statuses, so almost everything is optional,
//! unknown fields are kept in `extra`, and every status enum keeps values it does not know as
//! `Other` instead of failing the whole answer.

//!
//! `hub.rs` holds what the coder handler reads (sessions, loop state, events, the transcript),
//! `admin.rs` what only the operator commands read (users, participants, workspaces, skills,
//! GitHub, the Sessions API parameters); both are re-exported here.

use serde::Deserialize;
use serde::de::Deserializer;
use serde_json::Value;

/// A string enum that keeps unknown values: `(variant, "wire name")`, then `Other(String)`.
macro_rules! open_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(from = "String", into = "String")]
        pub enum $name {
            $($variant,)+
            /// A value this build does not know, kept as sent.
            Other(String),
        }

        impl From<String> for $name {
            fn from(value: String) -> Self {
                match value.as_str() {
                    $($wire => $name::$variant,)+
                    _ => $name::Other(value),
                }
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.as_str().to_string()
            }
        }

        impl $name {
            /// The wire name.
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => $wire,)+
                    $name::Other(value) => value,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// A number sent as a number or a numeric string; anything else is dropped rather than failing
/// the whole answer.
fn lenient_f64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<f64>, D::Error> {
    Ok(match Value::deserialize(deserializer)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

fn lenient_u64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    Ok(lenient_f64(deserializer)?
        .filter(|n| n.is_finite() && *n >= 0.0)
        .map(|n| n as u64))
}

fn lenient_i64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    Ok(lenient_f64(deserializer)?
        .filter(|n| n.is_finite())
        .map(|n| n as i64))
}

/// `null` or a non-list becomes an empty list; entries that do not parse are skipped.
fn lenient_vec<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    Ok(match Value::deserialize(deserializer)? {
        Value::Array(items) => items
            .into_iter()
            .filter_map(|item| serde_json::from_value(item).ok())
            .collect(),
        _ => Vec::new(),
    })
}

/// A value of the wrong shape becomes `None` instead of failing the whole answer.
fn lenient<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    Ok(serde_json::from_value(Value::deserialize(deserializer)?).ok())
}

/// An identifier sent as a string or a number (GitHub ids are numbers in some answers and
/// strings in others), kept as a string.
fn lenient_id<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(deserializer)? {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

/// A list answer as an object: a bare array (which the SDK accepts for users and sessions) becomes
/// `{key: [...], total: n}`; an object stays as it is.
pub(crate) fn listed(answer: Value, key: &str) -> Value {
    match answer {
        Value::Array(items) => {
            let total = items.len();
            serde_json::json!({ key: items, "total": total })
        }
        other => other,
    }
}

mod admin;
mod hub;
mod stream;

pub use admin::*;
pub use hub::*;
pub use stream::*;
