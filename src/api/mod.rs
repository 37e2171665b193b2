//! The typed AGH agent API client.

mod endpoint;

pub use endpoint::{Endpoint, EndpointParseError, Identity};
