//! A typed client of Agentuity: the Coder Hub (sessions, loop state, events, replay, custom
//! agents, workspaces, saved skills, skill buckets, GitHub accounts) and the Sessions API. The
//! facts it follows are in the research notes (`agentuity-coder.md`): discovery, auth, error
//! shapes, retries.
//!
//! `settings` says how to reach Agentuity, `core` is the client and its one request path,
//! `retry` when a request is sent again, `stream` a session's live event stream; the endpoints are `impl AgentuityClient` blocks in `hub`
//! (what the coder handler calls) and `admin` (what only the operator commands call).

mod admin;
mod core;
pub mod error;
mod hub;
mod retry;
mod settings;
mod stream;
pub mod types;

pub use self::core::AgentuityClient;
pub use error::{AgentuityError, ApiFailure, ErrorClass};
pub use retry::RetryPolicy;
pub use settings::{ClientSettings, Env, process_env};
pub use stream::{SessionStream, StreamRead};
pub use types::*;
