//! The `exec` handler: runs one program per task and speaks JSON lines with it.
//!
//! stdin carries the task document (first line), then inbound channel messages and spawn answers;
//! stdout carries the program's protocol lines (progress, result, release, message, reply, spawn)
//! mixed with its log; stderr is log only. The program runs in its own process group so that
//! cancellation, time limits and clean-up reach everything it started. See the README, "The exec handler protocol".
//!
//! Everything the program writes is untrusted: lines are length-capped while reading, decoded
//! lossily, and never unwrapped.
//!
//! This file runs one program and maps how it ended to an outcome; `config` holds the settings
//! and their checks, `process` the command, its process group and the signals that stop it,
//! `pipes` the tasks on its stdin, stdout and stderr, `protocol` the line types, and `capture`
//! the log tails and the length-capped line reader.

use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::process_groups::ProcessGroups;
use super::{Outcome, TaskContext};
use crate::util::sync::lock;
use crate::util::time::seconds_text;
use capture::{Captured, LogTail, Shared};
use config::quoted;
use pipes::{StdoutReader, forward_inbound, read_stderr, write_stdin};

mod capture;
mod config;
mod pipes;
mod process;
mod protocol;

pub use config::ExecConfig;

/// Exit status a program uses to say "temporary failure, give the run back" (sysexits.h).
pub const EX_TEMPFAIL: i32 = 75;

/// How long to wait for the output pipes to reach end-of-file once the process group is gone.
/// Only a process that left the group (setsid) and kept the pipes open can make this elapse.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);
/// Lines queued for the program's stdin before inbound messages wait (back-pressure).
const STDIN_QUEUE: usize = 64;

const LOG_TARGET: &str = "agh_worker::handler::exec";

/// How the program's run ended, before mapping to an outcome.
enum ProgramExit {
    Exited(std::io::Result<ExitStatus>),
    Cancelled(&'static str),
    TimedOut(Duration, &'static str),
}

/// Runs the configured program for one task and maps how it ended to an [`Outcome`].
/// When this returns, the program's process group is gone.
pub async fn run(config: &ExecConfig, ctx: TaskContext, groups: &ProcessGroups) -> Outcome {
    let run_id = ctx.document.run_id.clone();
    if ctx.cancel.is_cancelled() {
        return Outcome::Release(
            "cancelled: the run was stopped before the program started".into(),
        );
    }
    if let Some(dir) = &config.working_dir
        && !dir.is_dir()
    {
        return fail(
            format!(
                "exec handler: working directory {} does not exist or is not a directory: check handlers[].exec.working_dir",
                quoted(dir)
            ),
            None,
        );
    }
    let document_line = match serde_json::to_string(&*ctx.document) {
        Ok(line) => line,
        Err(err) => {
            return fail(
                format!("exec handler: cannot encode the task document: {err}"),
                None,
            );
        }
    };

    let mut command = process::command(config, &ctx);
    let mut child = match process::spawn(&mut command).await {
        Ok(child) => child,
        Err(err) => {
            return fail(
                format!(
                    "exec handler: cannot start {}: {err}: check handlers[].exec.program",
                    quoted(&config.program)
                ),
                None,
            );
        }
    };
    // With process_group(0) the group id is the leader's pid; read it before the leader is reaped.
    let pgid = child.id();
    // Kept until the group was emptied below, so a crash before then leaves it on record.
    let group_record =
        pgid.map(|pgid| groups.record(pgid, &run_id, &config.program.display().to_string()));
    tracing::debug!(target: LOG_TARGET, run_id = %run_id, pid = ?pgid, program = %config.program.display(), "program started");

    let TaskContext {
        document: _,
        cancel,
        time_limit,
        events,
        inbound,
    } = ctx;
    let stop = CancellationToken::new();
    let shared: Shared = Arc::new(Mutex::new(Captured {
        stdout: LogTail::new(config.stdout_cap_bytes),
        stderr: LogTail::new(config.stderr_cap_bytes),
        result: None,
        release: None,
    }));
    let (stdin_tx, stdin_rx) = mpsc::channel::<String>(STDIN_QUEUE);

    let mut helpers = tokio::task::JoinSet::new();
    if let Some(stdin) = child.stdin.take() {
        helpers.spawn(write_stdin(stdin, document_line, stdin_rx, stop.clone()));
    }
    helpers.spawn(forward_inbound(inbound, stdin_tx.clone(), stop.clone()));
    let mut readers = tokio::task::JoinSet::new();
    if let Some(stdout) = child.stdout.take() {
        let reader = StdoutReader {
            shared: shared.clone(),
            events,
            stdin: stdin_tx,
            stop: stop.clone(),
            max_line_bytes: config.max_line_bytes.max(1),
            run_id: run_id.clone(),
        };
        readers.spawn(reader.run(stdout));
    }
    if let Some(stderr) = child.stderr.take() {
        readers.spawn(read_stderr(
            stderr,
            shared.clone(),
            config.max_line_bytes.max(1),
            run_id.clone(),
        ));
    }

    let grace = Duration::from_millis(config.kill_grace_ms);
    let timer = async {
        match time_limit {
            Some(limit) => tokio::time::sleep(limit).await,
            None => std::future::pending().await,
        }
    };
    let ending = tokio::select! {
        status = child.wait() => ProgramExit::Exited(status),
        () = cancel.cancelled() => ProgramExit::Cancelled(process::stop_program(&mut child, pgid, grace).await),
        () = timer => {
            let limit = time_limit.unwrap_or_default();
            ProgramExit::TimedOut(limit, process::stop_program(&mut child, pgid, grace).await)
        }
    };
    process::kill_leftovers(pgid);
    drop(group_record);

    // Output written just before the exit is still in the pipes: read it to the end.
    let drained = tokio::time::timeout(DRAIN_LIMIT, async {
        while readers.join_next().await.is_some() {}
    })
    .await
    .is_ok();
    if !drained {
        tracing::warn!(target: LOG_TARGET, run_id = %run_id, "the program's output stayed open after it exited (a process outside its group holds it); stopped reading");
    }
    readers.abort_all();
    stop.cancel();
    helpers.abort_all();
    drop(child);

    let captured = lock(&shared);
    let outcome = outcome_of(ending, &captured);
    // The kind only: the payload is the program's (its result can hold anything it read,
    // secrets given to it in exec.env included) and goes to AGH, not to the worker's log.
    let kind = match &outcome {
        Outcome::Complete(_) => "complete",
        Outcome::Fail { .. } => "fail",
        Outcome::Release(_) => "release",
    };
    tracing::debug!(target: LOG_TARGET, run_id = %run_id, outcome = kind, "program finished");
    outcome
}

fn fail(error: String, metadata: Option<Value>) -> Outcome {
    tracing::warn!(target: LOG_TARGET, "{error}");
    Outcome::Fail { error, metadata }
}

fn tails(captured: &Captured) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert("stderr_tail".into(), captured.stderr.text().into());
    map.insert("stdout_tail".into(), captured.stdout.text().into());
    // Says how much is missing before the tails, so a reader does not take them for everything.
    for (key, tail) in [
        ("stderr_dropped_bytes", &captured.stderr),
        ("stdout_dropped_bytes", &captured.stdout),
    ] {
        if tail.dropped > 0 {
            map.insert(key.into(), tail.dropped.into());
        }
    }
    map
}

fn outcome_of(ending: ProgramExit, captured: &Captured) -> Outcome {
    let status = match ending {
        ProgramExit::Cancelled(signal) => {
            return Outcome::Release(format!(
                "cancelled: the worker stopped the run; the program was ended with {signal}"
            ));
        }
        ProgramExit::TimedOut(limit, signal) => {
            let mut metadata = tails(captured);
            metadata.insert("time_limit_seconds".into(), json!(limit.as_secs_f64()));
            metadata.insert("stopped_with".into(), signal.into());
            return Outcome::Fail {
                error: format!(
                    "handler exceeded its time limit of {} s",
                    seconds_text(limit)
                ),
                metadata: Some(Value::Object(metadata)),
            };
        }
        ProgramExit::Exited(Err(err)) => {
            return Outcome::Fail {
                error: format!("exec handler: waiting for the program failed: {err}"),
                metadata: Some(Value::Object(tails(captured))),
            };
        }
        ProgramExit::Exited(Ok(status)) => status,
    };
    if let Some(reason) = &captured.release {
        return Outcome::Release(reason.clone());
    }
    let stderr_last = captured.stderr.last_line();
    match status.code() {
        Some(0) => Outcome::Complete(
            captured
                .result
                .clone()
                .unwrap_or_else(|| json!({"exit_code": 0, "stdout_tail": captured.stdout.text()})),
        ),
        Some(EX_TEMPFAIL) => Outcome::Release(match stderr_last {
            Some(line) => format!("handler exited 75 (temporary failure): {line}"),
            None => "handler exited 75 (temporary failure)".into(),
        }),
        Some(code) => {
            let mut metadata = tails(captured);
            metadata.insert("exit_code".into(), code.into());
            Outcome::Fail {
                error: match stderr_last {
                    Some(line) => format!("handler exited with status {code}: {line}"),
                    None => format!("handler exited with status {code} (nothing on stderr)"),
                },
                metadata: Some(Value::Object(metadata)),
            }
        }
        None => {
            let mut metadata = tails(captured);
            #[cfg(unix)]
            let signal = std::os::unix::process::ExitStatusExt::signal(&status);
            #[cfg(not(unix))]
            let signal: Option<i32> = None;
            let error = match signal {
                #[cfg(unix)]
                Some(number) => format!(
                    "handler was killed by signal {number} ({})",
                    crate::handler::process_groups::signal::name(number)
                ),
                #[cfg(not(unix))]
                Some(number) => format!("handler was killed by signal {number}"),
                None => format!("handler ended without an exit code ({status})"),
            };
            metadata.insert("signal".into(), json!(signal));
            Outcome::Fail {
                error,
                metadata: Some(Value::Object(metadata)),
            }
        }
    }
}
