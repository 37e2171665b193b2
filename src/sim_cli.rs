//! `agh-worker sim`: serves the built-in AGH simulator until SIGINT/SIGTERM.

use std::process::ExitCode;

use crate::cli::SimArgs;

/// Serves the simulator as the flags ask.
pub async fn serve(_args: &SimArgs) -> ExitCode {
    eprintln!("agh-worker sim: not wired yet");
    ExitCode::FAILURE
}
