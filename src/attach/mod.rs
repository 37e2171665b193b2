//! Attached sessions: one resident worker process serves many of the sessions AGH starts.
//!
//! AGH starts an agent process per session (see `acp`). With `agh-worker acp --attach
//! unix:PATH` as the provider command, that process stays thin: it keeps the ACP conversation
//! with AGH and hands the session (its identity, wake prompts, the stop) to the resident worker
//! (`agh-worker run --attach unix:PATH`, under systemd or in a container) over a Unix socket.
//! The resident runs one slot per attached session, so several runs at once in one process,
//! each with its own lease, heartbeats, handler and channel listener.
//!
//! - `wire`: the socket's line protocol, shared by both sides.
//! - `thin`: the thin `acp --attach` process.
//! - `resident/`: the resident worker: the socket, the slot table, one connection's life, and
//!   what its health server shows.
//!
//! See docs/attach.md.

pub mod resident;
pub mod thin;
pub mod wire;
