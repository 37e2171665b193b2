//! The `agh-worker` binary run as an operator or a container runs it: an empty environment plus
//! exactly the variables given, so nothing on the test machine (HOME, /etc/agh-worker, AGH
//! variables) leaks in.

use std::ffi::OsStr;
use std::process::Output;
use std::time::Duration;

use tokio::process::Command;

/// Generous bound so a hung binary fails the test instead of hanging it.
pub(crate) const PATIENCE: Duration = Duration::from_secs(30);

/// Runs the binary with `args`, an empty environment plus `vars`, and waits for it to exit.
pub(crate) async fn run_clean<V: AsRef<OsStr>>(vars: &[(&str, V)], args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_agh-worker"));
    command.env_clear().args(args).kill_on_drop(true);
    for (name, value) in vars {
        command.env(name, value);
    }
    match tokio::time::timeout(PATIENCE, command.output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(err)) => panic!("cannot start agh-worker: {err}"),
        Err(_) => panic!("agh-worker {args:?} did not exit within {PATIENCE:?}"),
    }
}

/// Stdout as text.
pub(crate) fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Exit code, stdout and stderr, for assertion messages.
pub(crate) fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        stdout(output),
        String::from_utf8_lossy(&output.stderr)
    )
}
