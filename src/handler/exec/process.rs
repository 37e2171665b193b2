//! Starting and stopping an exec handler's program: its command and environment, its own
//! process group, and the signals that end it and whatever it started.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::LOG_TARGET;
use super::config::{ExecConfig, refused_pass_env};
use crate::handler::TaskContext;
#[cfg(unix)]
use crate::handler::process_groups::signal;

/// The command for the configured program: no shell, no environment but [`program_env`], piped
/// standard streams, and on Unix a process group of its own so that stopping it reaches
/// everything it started. On Linux it also dies with the worker (see [`die_with_the_worker`]).
pub(super) fn command(config: &ExecConfig, ctx: &TaskContext) -> Command {
    let mut command = Command::new(&config.program);
    command
        .args(&config.args)
        .env_clear()
        .envs(program_env(config, ctx))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    #[cfg(unix)]
    command.process_group(0);
    #[cfg(target_os = "linux")]
    die_with_the_worker(&mut command);
    if let Some(dir) = &config.working_dir {
        command.current_dir(dir);
    }
    command
}

/// Gives the program a parent-death signal (SIGKILL): it runs in a group of its own, out of
/// reach of whatever stops the worker's group, so without it a SIGKILLed worker's handler would
/// work on, and a restarted worker adopting the lease would start a second one. Its own children
/// stay in its group; the state-file sweep (`handler::process_groups`) reaches them.
///
/// The signal follows the thread that forked: tokio spawns from a runtime worker thread, which
/// lives as long as the runtime (the worker never spawns from `spawn_blocking` or
/// `block_in_place`, whose threads come and go).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn die_with_the_worker(command: &mut Command) {
    use rustix::process::{Signal, getpid, getppid, set_parent_process_death_signal};
    let worker = getpid();
    // SAFETY: the closure runs in the forked child before exec and only makes two system calls
    // (prctl, getppid), both async-signal-safe; it allocates nothing and takes no lock.
    unsafe {
        command.pre_exec(move || {
            set_parent_process_death_signal(Some(Signal::KILL))?;
            // The worker died between the fork and the prctl: the signal will never come.
            if getppid() != Some(worker) {
                return Err(std::io::Error::other(
                    "the worker exited while starting the program",
                ));
            }
            Ok(())
        });
    }
}

/// The environment the program gets: only what is listed, never the worker's secrets.
/// Later entries win: pass-through, then explicit `env`, then the run's own variables.
fn program_env(config: &ExecConfig, ctx: &TaskContext) -> BTreeMap<String, std::ffi::OsString> {
    let mut env = BTreeMap::new();
    for name in &config.pass_env {
        if let Some(why) = refused_pass_env(name) {
            if !config.env.contains_key(name) {
                tracing::warn!(target: LOG_TARGET, variable = %name, "pass_env entry refused: {why}");
            }
            continue;
        }
        if let Some(value) = std::env::var_os(name) {
            env.insert(name.clone(), value);
        }
    }
    for (name, value) in &config.env {
        env.insert(name.clone(), value.into());
    }
    let document = &ctx.document;
    env.insert("AGH_WORKER_RUN_ID".into(), document.run_id.clone().into());
    env.insert("AGH_WORKER_TASK_ID".into(), document.task_id.clone().into());
    env.insert(
        "AGH_WORKER_ATTEMPT".into(),
        document.attempt.to_string().into(),
    );
    let deadline = ctx
        .time_limit
        .map(|limit| limit.as_secs() + u64::from(limit.subsec_nanos() > 0))
        .or(document.deadline_seconds);
    if let Some(seconds) = deadline {
        env.insert(
            "AGH_WORKER_DEADLINE_SECONDS".into(),
            seconds.to_string().into(),
        );
    }
    if let Some(channel) = document.coordination_channel_id() {
        env.insert(
            "AGH_WORKER_COORDINATION_CHANNEL".into(),
            channel.to_string().into(),
        );
    }
    env
}

/// Starts the command, retrying briefly on ETXTBSY: a program file that was just written can
/// still be open for writing in a process forked meanwhile (by any thread) that has not yet
/// reached exec; the condition clears by itself within moments.
pub(super) async fn spawn(command: &mut Command) -> std::io::Result<Child> {
    const ETXTBSY: i32 = 26;
    let mut delay = Duration::from_millis(10);
    for _ in 0..4 {
        match command.spawn() {
            Err(err) if err.raw_os_error() == Some(ETXTBSY) => {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            other => return other,
        }
    }
    command.spawn()
}

/// Stops the program: SIGTERM to its group, SIGKILL after the grace. Returns the signal that
/// ended it ("SIGTERM" or "SIGKILL").
pub(super) async fn stop_program(
    child: &mut Child,
    pgid: Option<u32>,
    grace: Duration,
) -> &'static str {
    #[cfg(unix)]
    if let Some(pgid) = pgid {
        signal::group(pgid, signal::SIGTERM);
        if tokio::time::timeout(grace, child.wait()).await.is_ok() {
            return "SIGTERM";
        }
        signal::group(pgid, signal::SIGKILL);
        let _ = child.wait().await;
        return "SIGKILL";
    }
    let _ = (pgid, grace);
    let _ = child.start_kill();
    let _ = child.wait().await;
    "SIGKILL"
}

/// Kills whatever is left of the group (background children of a program that has exited).
pub(super) fn kill_leftovers(pgid: Option<u32>) {
    #[cfg(unix)]
    if let Some(pgid) = pgid {
        // The leader was just reaped; the group id cannot be reused while members are alive, and
        // when none are, this finds nothing (ESRCH).
        signal::group(pgid, signal::SIGKILL);
    }
    #[cfg(not(unix))]
    let _ = pgid;
}
