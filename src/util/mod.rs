//! Small pieces every layer uses: backoff, error chains, poison-tolerant locking, redaction,
//! Server-Sent Events decoding, timers. They depend on nothing else in the crate.

pub mod backoff;
pub mod error;
pub mod procfs;
pub mod redact;
pub mod sse;
pub mod sync;
pub mod text;
pub mod time;
