//! Shared pieces of the integration tests.

pub mod fake_agh;
