//! The shared pieces of the integration tests. Every test binary compiles all of them and uses
//! what it needs, hence no dead-code warnings here.
#![allow(dead_code)]

pub(crate) mod acp_rig;
pub(crate) mod binary;
pub(crate) mod client_rig;
pub(crate) mod fake_agentuity;
pub(crate) mod fake_agh;
pub(crate) mod handler_fixtures;
pub(crate) mod log_capture;
pub(crate) mod recorder;
pub(crate) mod resident_rig;
pub(crate) mod sim;
