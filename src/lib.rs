//! agh-worker: the agent side of the AGH agent runtime. It claims task runs as its session,
//! keeps each run's lease alive while a handler does the work, and finishes each run exactly
//! once (complete, fail or release).
//!
//! # Embedding
//! The public API is the handful of items at the crate root: build a [`Worker`] from a
//! [`Config`] with a [`WorkerBuilder`], add in-process [`Handler`]s, and [`Worker::run`] it until
//! its [`Shutdown`]. A handler gets a [`TaskContext`] and returns an [`Outcome`].
//! `examples/embed.rs` runs one against the built-in simulator.
//!
//! The modules below are the daemon's own parts. They are public so that the binary, the
//! project's tests and its tools can reach them, and hidden from the documentation: they carry
//! no stability promise.
//!
//! # Layout
//! - [`assembly`]: the one place a worker is wired together ([`WorkerBuilder`]).
//! - `worker/`: the claim loop (`mod.rs`), one lease's life (`lease.rs`), payload caps, the
//!   status board (`status.rs`, the only writer of the worker's state).
//! - `handler/`: the contract ([`TaskContext`], [`Outcome`], [`Handler`]), the handler table
//!   (`select.rs`), handler health, and one folder per kind: exec, webhook, coder.
//! - `coordination/`: the channel listener, the outbox, the spawner, and the calls they make.
//! - `api/`: the AGH agent API client. `agentuity/`: the Agentuity client (for `coder`).
//! - `config/`: layered configuration: defaults, file, environment, flags; validation.
//! - `ops/`: health probes, metrics, the HTTP server, sd_notify, logging, signals.
//! - `commands/`: `check`, the one-shot API commands, completions and man page, `coder`.
//! - `dev/`: the built-in simulator, the demo, the benchmark and the fault soak.
//! - `acp/`: `agh-worker acp`, the worker as the ACP agent AGH launches for its own session.
//! - `attach/`: the resident worker (`run --attach`) that serves the sessions AGH starts, one
//!   slot each, and the thin `acp --attach` process that hands it its session.
//! - `util/`: backoff, error chains, locking, redaction, timers.
//! - `cli/`, `app.rs`, `exit.rs`: the edge.
//!
//! Dependencies point one way, each layer using only those before it: `util` → `api`,
//! `agentuity` → `handler` → `config` → `worker` → `coordination` → `assembly` → `ops` →
//! `commands`, `dev`, `acp` → `attach` → `app`. The simulator uses nothing but `util`. `ARCHITECTURE.md` follows
//! one run through these files and keeps the glossary.

// Product code has no unsafe but one audited block, the parent-death signal of handler programs
// (`handler/exec/process.rs`; `tests/layers.rs` fails on any other), and no unwrap or expect
// outside tests (clippy.toml exempts `#[cfg(test)]` code).
#![deny(unsafe_code)]
#![warn(clippy::unwrap_used, clippy::expect_used)]

#[doc(hidden)]
pub mod acp;
#[doc(hidden)]
pub mod agentuity;
#[doc(hidden)]
pub mod api;
#[doc(hidden)]
pub mod app;
#[doc(hidden)]
pub mod assembly;
#[doc(hidden)]
pub mod attach;
#[doc(hidden)]
pub mod cli;
#[doc(hidden)]
pub mod commands;
#[doc(hidden)]
pub mod config;
#[doc(hidden)]
pub mod coordination;
#[doc(hidden)]
pub mod dev;
#[doc(hidden)]
pub mod exit;
#[doc(hidden)]
pub mod handler;
#[doc(hidden)]
pub mod ops;
#[doc(hidden)]
pub mod util;
#[doc(hidden)]
pub mod worker;

pub use assembly::{BuildError, Worker, WorkerBuilder};
pub use config::Config;
pub use handler::{Handler, MatchRule, Outcome, TaskContext, TaskDetails, TaskDocument};
pub use worker::{Shutdown, WorkerExit, WorkerStatus};
