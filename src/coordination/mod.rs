//! Coordination: the channel listener that routes inbound messages to runs ([`listener`]), the
//! outbox that turns what handlers report into channel messages ([`outbox`]), and the spawner of
//! child sessions within the lineage budget ([`spawner`]). All three reach AGH through
//! [`CoordinationApi`] ([`api`]).
//!
//! Dependencies point one way: `outbox` → `listener`, `spawner` → `api`.

pub mod api;
pub mod listener;
pub mod outbox;
pub mod spawner;

pub use api::CoordinationApi;
pub use outbox::{Coordination, CoordinationSettings, OUTBOX_CAPACITY};
