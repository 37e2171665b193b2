//! agh-worker: the agent side of the AGH agent runtime.
//!
//! The flow, one way: configuration and signals come in; the worker loop claims a task run,
//! hands the lease to its own task, which heartbeats while a handler does the work and then
//! makes exactly one terminal call (complete, fail or release). Beside the loop, the channel
//! listener ([`coordination::listener`]) long-polls the session's and the run's coordination channels and hands
//! new messages to the run they name; the event sink ([`coordination`]) sends what handlers report
//! as channel messages, and the spawner ([`coordination::spawner`]) creates child sessions within the budget.
//!
//! The words used here (session, run, lease, terminal call, coordination channel, child session,
//! handler, `Outcome`, `RunEnd`, `WorkerExit`…), the flow of one run through the code and who owns
//! what are in `ARCHITECTURE.md` at the repository root.

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
