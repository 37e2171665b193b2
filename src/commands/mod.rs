//! Operator commands other than `run`: `check`, the one-shot API calls, completions and the man
//! page, and the `coder`/`agentuity` commands.

pub mod agh_setup;
pub mod check;
pub mod coder;
pub mod docs;
pub mod oneshot;
