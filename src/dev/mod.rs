//! Development tools shipped in the binary: the built-in simulator, the demo, the benchmark and
//! the fault soak.

pub mod bench;
pub mod demo;
pub mod serve;
pub mod sim;
pub mod soak;
