//! The typed AGH agent API client.
