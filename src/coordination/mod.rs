//! Coordination: the channel listener that routes inbound messages to runs ([`listener`]), the
//! outbox that turns what handlers report into channel messages ([`outbox`]), and the spawner of
//! child sessions within the lineage budget ([`spawner`]). The runs in hand are kept once, in
//! [`runs`]. All of them reach AGH through [`CoordinationApi`] ([`api`]).
//!
//! Dependencies point one way: `outbox` → `listener` → `runs` → `spawner` → `api`.

pub mod api;
pub mod listener;
pub mod outbox;
pub mod runs;
pub mod spawner;

pub use api::CoordinationApi;
pub use outbox::{Coordination, CoordinationSettings};
pub use runs::{OUTBOX_CAPACITY, Runs};
