//! `agh-worker acp`: the worker as the ACP agent of its own AGH session.
//!
//! AGH launches its agents itself (a provider command, ACP over the child's stdin and stdout) and
//! gives each its session's identity in `AGH_SESSION_ID` and `AGH_AGENT`. Here the worker is
//! that agent: `conversation` answers AGH, `turn` reads its prompts and words the answers,
//! `session` runs the same [`crate::assembly::Worker`] as `agh-worker run` once the session is
//! active and stops it as AGH stops a session, and `log_file` keeps a durable copy of the log.
//! See docs/acp.md.

pub mod conversation;
pub mod log_file;
pub mod session;
pub mod turn;

pub use session::run;
