//! The process exit codes, in one place. Operators script against them; `docs/cli.md` lists them.
//!
//! The values follow `sysexits.h` where one fits (64 usage, 69 unavailable, 75 temporary
//! failure, 76 protocol); the two-digit ones below 64 name AGH's own error families.

/// Identity missing, mismatched or refused.
pub const IDENTITY: u8 = 10;
/// The session is stale (stopped, or its lease on life is gone).
pub const IDENTITY_STALE: u8 = 11;
/// The lease is gone, or the run is not this session's.
pub const LEASE: u8 = 20;
/// The session already holds a lease, or the call conflicts with the run's state.
pub const CONFLICT: u8 = 21;
/// The request was refused as invalid (including an invalid SOUL.md, HTTP 422).
pub const VALIDATION: u8 = 30;
/// A spawn was refused: budget, permission or validation.
pub const SPAWN: u8 = 40;
/// The daemon refused permission.
pub const PERMISSION: u8 = 43;
/// The thing asked for does not exist.
pub const NOT_FOUND: u8 = 44;
/// A configuration or command line a person must fix (`EX_USAGE`).
pub const BAD_CONFIG: u8 = 64;
/// A file is in the way: it says something else, and the command will not overwrite it (`EX_CANTCREAT`).
pub const CANT_CREATE: u8 = 73;
/// A file could not be read or written (`EX_IOERR`).
pub const IO_ERROR: u8 = 74;
/// The service (AGH or Agentuity) could not be reached or answered with a server error (`EX_UNAVAILABLE`).
pub const UNAVAILABLE: u8 = 69;
/// Gave up waiting: trying again later, or with a longer timeout, may do (`EX_TEMPFAIL`).
pub const NOT_READY: u8 = 75;
/// An answer that breaks the protocol: unreadable, too large, or an unexpected status (`EX_PROTOCOL`).
pub const PROTOCOL: u8 = 76;
