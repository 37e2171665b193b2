//! agh-worker: the agent side of the AGH agent runtime.
//!
//! The flow, one way: configuration and signals come in; the worker loop claims a task run,
//! hands the lease to its own task, which heartbeats while a handler does the work and then
//! makes exactly one terminal call (complete, fail or release).
//!
//! Glossary:
//! - **session**: an AGH agent session; its id and agent name are the worker's identity.
//! - **run**: one attempt at a task; a session holds at most one run's lease at a time.
//! - **lease**: the right to work on a run until `lease_until`; renewed by heartbeats.
//! - **terminal call**: complete, fail or release; exactly one per claimed run.

pub mod api;
pub mod app;
pub mod check;
pub mod cli;
pub mod cli_docs;
pub mod config;
pub mod demo;
pub mod handler;
pub mod logging;
pub mod notify;
pub mod oneshot;
pub mod shutdown;
pub mod sim;
pub mod sim_cli;
pub mod worker;
