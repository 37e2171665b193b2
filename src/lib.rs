//! agh-worker: the agent side of the AGH agent runtime.
//!
//! The flow, one way: configuration and signals come in; the worker loop claims a task run,
//! hands the lease to its own task, which heartbeats while a handler does the work and then
//! makes exactly one terminal call (complete, fail or release). Beside the loop, the channel
//! listener ([`coordination::listener`]) long-polls the session's and the run's coordination channels and hands
//! new messages to the run they name; the event sink ([`coordination`]) sends what handlers report
//! as channel messages, and the spawner ([`coordination::spawner`]) creates child sessions within the budget.
//!
//! Glossary:
//! - **session**: an AGH agent session; its id and agent name are the worker's identity.
//! - **run**: one attempt at a task; a session holds at most one run's lease at a time.
//! - **lease**: the right to work on a run until `lease_until`; renewed by heartbeats.
//! - **terminal call**: complete, fail or release; exactly one per claimed run.
//! - **coordination channel**: the network channel of a run, where its status and messages go;
//!   a session can only send on its own channel.
//! - **child session**: a session spawned by this one, within its lineage budget, until its TTL.

// Product code has no unsafe at all (Cargo.toml denies it everywhere; here nothing can allow it
// back) and no unwrap or expect outside tests (clippy.toml exempts `#[cfg(test)]` code).
#![forbid(unsafe_code)]
#![warn(clippy::unwrap_used, clippy::expect_used)]

pub mod agentuity;
pub mod api;
pub mod app;
pub mod cli;
pub mod commands;
pub mod config;
pub mod coordination;
pub mod dev;
pub mod exit;
pub mod handler;
pub mod ops;
pub mod util;
pub mod worker;
