//! The `agh-worker` binary: command line to configuration to the app, and an exit code.

fn main() -> std::process::ExitCode {
    agh_worker::app::main()
}
