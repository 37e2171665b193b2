//! The typed AGH agent API client: endpoint and identity, wire types, classified errors, calls.

mod client;
mod counters;
mod endpoint;
mod endpoints;
mod error;
mod stream;
pub mod types;

pub use client::{
    AghClient, ClientOptions, HEADER_AGENT, HEADER_SESSION, HEADER_WORKSPACE, RetryOptions,
    encode_segment,
};
pub use counters::{ApiRequestCounters, CLASS_DEADLINE, CLASS_OK};
pub use endpoint::{Endpoint, EndpointParseError, Identity};
pub use endpoints::{ClaimOutcome, RecvOptions, SoulAnswer};
pub use error::{ApiError, ErrorKind, MAX_DAEMON_MESSAGE_CHARS, classify};
pub use stream::TaskEventStream;
