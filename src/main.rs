//! The `agh-worker` binary: command line to configuration to the app, and an exit code.
fn main() {}
