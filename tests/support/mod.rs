//! The shared pieces of the integration tests. Every test binary compiles all of them and uses
//! what it needs, hence no dead-code warnings here.
#![allow(dead_code)]

pub mod binary;
pub mod client_rig;
pub mod fake_agentuity;
pub mod fake_agh;
pub mod handler_fixtures;
pub mod log_capture;
pub mod recorder;
pub mod sim;
