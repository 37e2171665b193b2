//! Wire types of the AGH agent API: tolerant readers for every response, exact writers for requests.
//!
//! Readers accept what a newer or older daemon may send: unknown fields are ignored (or kept in
//! `extra` where a handler may want them), every field is optional, lists default to empty, and
//! enum values this build does not know are kept as `Other(..)` instead of failing the call.
//!
//! One file per concern, all re-exported here: `identity` (me, sessions, lineage, limits),
//! `context`, `tasks` (claim, leases, terminal calls, run detail), `task_view` (the task view),
//! `events` (the task event stream), `channels`, `soul`, `spawn`
//! (and the coordinator settings) and `errors` (error bodies).

use serde::{Deserialize, Deserializer};

/// Declares a string enum that keeps values it does not know.
macro_rules! open_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($variant,)+
            /// A value this build does not know; kept verbatim.
            Other(String),
        }

        impl $name {
            /// The wire spelling.
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => $wire,)+
                    $name::Other(raw) => raw.as_str(),
                }
            }
        }

        impl From<&str> for $name {
            fn from(raw: &str) -> Self {
                match raw {
                    $($wire => $name::$variant,)+
                    other => $name::Other(other.to_string()),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = <String as serde::Deserialize>::deserialize(deserializer)?;
                Ok($name::from(raw.as_str()))
            }
        }
    };
}

/// Accepts `null` where a list is expected (the daemon normalises to `[]`, but a reader should not care).
fn null_as_empty<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
}

mod channels;
mod context;
mod errors;
mod events;
mod identity;
mod soul;
mod spawn;
mod task_view;
mod tasks;

pub use channels::*;
pub use context::*;
pub use errors::*;
pub use events::*;
pub use identity::*;
pub use soul::*;
pub use spawn::*;
pub use task_view::*;
pub use tasks::*;
