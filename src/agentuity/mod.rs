//! A typed client of Agentuity: the Coder Hub (sessions, loop state, events, replay, custom
//! agents, workspaces, saved skills, skill buckets, GitHub accounts) and the Sessions API. The facts it follows are in the research notes
//! (`agentuity-coder.md`): discovery, auth, error shapes, retries.

pub mod client;
pub mod error;
pub mod types;

pub use client::{AgentuityClient, ClientSettings, Env, RetryPolicy, process_env};
pub use error::{AgentuityError, ApiFailure, ErrorClass};
pub use types::*;
