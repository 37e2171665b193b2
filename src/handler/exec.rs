//! The `exec` handler: runs one program per task and speaks JSON lines with it.
//!
//! stdin carries the task document (first line), then inbound channel messages and spawn answers;
//! stdout carries the program's protocol lines (progress, result, release, message, reply, spawn)
//! mixed with its log; stderr is log only. The program runs in its own process group so that
//! cancellation, time limits and clean-up reach everything it started. See the README, "The exec handler protocol".
//!
//! Everything the program writes is untrusted: lines are length-capped while reading, decoded
//! lossily, and never unwrapped.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{HandlerEvent, Outcome, SpawnAnswer, SpawnAsk, TaskContext};
use crate::api::types::{ChannelMessage, MessageKind, Permissions};
use crate::util::sync::lock;

/// Exit status a program uses to say "temporary failure, give the run back" (sysexits.h).
pub const EX_TEMPFAIL: i32 = 75;

/// Variables never passed through from the worker's environment, whatever `pass_env` says.
const NEVER_PASSED: &[&str] = &["AGENTUITY_SDK_KEY"];
/// Prefix of the worker's own configuration variables; they may hold secrets.
const WORKER_CONFIG_PREFIX: &str = "AGH_WORKER__";
/// Name fragments that mark a variable as a secret (compared case-insensitively).
const SECRET_MARKERS: &[&str] = &["KEY", "TOKEN", "SECRET", "PASSWORD", "CREDENTIAL"];

/// How long to wait for the output pipes to reach end-of-file once the process group is gone.
/// Only a process that left the group (setsid) and kept the pipes open can make this elapse.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);
/// Lines queued for the program's stdin before inbound messages wait (back-pressure).
const STDIN_QUEUE: usize = 64;

const LOG_TARGET: &str = "agh_worker::handler::exec";

/// Configuration of one exec handler (`handlers[].exec`).
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecConfig {
    /// The program to run: a path, or a bare name looked up on the passed `PATH`.
    pub program: PathBuf,
    /// Arguments, passed as they are (no shell).
    pub args: Vec<String>,
    /// Working directory of the program; the worker's own when unset.
    pub working_dir: Option<PathBuf>,
    /// Extra variables set for the program; explicit, so secrets may be given here on purpose.
    pub env: BTreeMap<String, String>,
    /// Names of worker environment variables passed through; nothing else is inherited.
    pub pass_env: Vec<String>,
    /// Grace between SIGTERM and SIGKILL when the run is stopped, in milliseconds.
    pub kill_grace_ms: u64,
    /// Bytes of stdout log (non-protocol lines) kept; the tail is kept.
    pub stdout_cap_bytes: usize,
    /// Bytes of stderr kept; the tail is kept.
    pub stderr_cap_bytes: usize,
    /// Longest protocol line accepted; longer lines are truncated and treated as log.
    pub max_line_bytes: usize,
}

impl Default for ExecConfig {
    fn default() -> Self {
        ExecConfig {
            program: PathBuf::new(),
            args: Vec::new(),
            working_dir: None,
            env: BTreeMap::new(),
            pass_env: ["PATH", "HOME", "LANG", "TZ"]
                .into_iter()
                .map(String::from)
                .collect(),
            kill_grace_ms: 5000,
            stdout_cap_bytes: 64 * 1024,
            stderr_cap_bytes: 64 * 1024,
            max_line_bytes: 1024 * 1024,
        }
    }
}

impl ExecConfig {
    /// Every problem with this configuration, each naming the key under `path`
    /// (e.g. `handlers[0].exec`) and saying what to change. Empty when it is usable.
    pub fn problems(&self, path: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if self.program.as_os_str().is_empty() {
            problems.push(format!(
                "{path}.program is empty: set it to the program to run for each task"
            ));
        } else if let Some(problem) = program_problem(&self.program, self.working_dir.as_deref()) {
            problems.push(format!("{path}.program: {problem}"));
        }
        if let Some(dir) = &self.working_dir
            && !dir.is_dir()
        {
            problems.push(format!(
                "{path}.working_dir: {} is not an existing directory: create it or change the setting",
                quoted(dir)
            ));
        }
        for name in &self.pass_env {
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                problems.push(format!(
                    "{path}.pass_env: {name:?} is not a variable name: remove it"
                ));
            } else if let Some(why) = refused_pass_env(name)
                && !self.env.contains_key(name)
            {
                problems.push(format!(
                    "{path}.pass_env: {name:?} is never passed through ({why}): remove it, or set \
                     the value explicitly in {path}.env if the program really needs it"
                ));
            }
        }
        for name in self.env.keys() {
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                problems.push(format!(
                    "{path}.env: {name:?} is not a variable name: remove it"
                ));
            }
        }
        if self.max_line_bytes == 0 {
            problems.push(format!(
                "{path}.max_line_bytes is 0: no protocol line would fit; use at least 4096 (default 1048576)"
            ));
        }
        problems
    }
}

/// Why `program` cannot be started, if that can be told without starting it.
fn program_problem(program: &Path, working_dir: Option<&Path>) -> Option<String> {
    let has_separator = program.components().count() > 1 || program.is_absolute();
    if has_separator {
        let resolved = match working_dir {
            Some(dir) if program.is_relative() => dir.join(program),
            _ => program.to_path_buf(),
        };
        return match std::fs::metadata(&resolved) {
            Err(err) => Some(format!(
                "cannot use {}: {err}: check the path",
                quoted(&resolved)
            )),
            Ok(meta) if !meta.is_file() => Some(format!(
                "{} is not a file: point it at the program itself",
                quoted(&resolved)
            )),
            Ok(meta) if !is_executable(&meta) => Some(format!(
                "{} is not executable: chmod +x it",
                quoted(&resolved)
            )),
            Ok(_) => None,
        };
    }
    // A bare name is looked up on the PATH the program will get: the worker's, when passed.
    let path = std::env::var_os("PATH")?;
    let found = std::env::split_paths(&path).any(|dir| {
        std::fs::metadata(dir.join(program))
            .is_ok_and(|meta| meta.is_file() && is_executable(&meta))
    });
    (!found).then(|| {
        format!(
            "{} was not found on PATH: give its full path",
            quoted(program)
        )
    })
}

#[cfg(unix)]
fn is_executable(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(_meta: &std::fs::Metadata) -> bool {
    true
}

fn quoted(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

/// Why a `pass_env` name is refused, or `None` when it may pass.
fn refused_pass_env(name: &str) -> Option<&'static str> {
    if name.starts_with(WORKER_CONFIG_PREFIX) {
        return Some("the worker's own configuration");
    }
    if NEVER_PASSED.contains(&name) {
        return Some("the worker's own credential");
    }
    let upper = name.to_ascii_uppercase();
    SECRET_MARKERS
        .iter()
        .any(|marker| upper.contains(marker))
        .then_some("its name marks it as a secret")
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

// ---------------------------------------------------------------------------------------------
// Captured output

/// The last `cap` bytes of a stream, kept as whole lines where possible.
#[derive(Debug)]
struct LogTail {
    cap: usize,
    lines: VecDeque<String>,
    /// Bytes held, counting one newline per line.
    bytes: usize,
    /// Bytes dropped from the front so far.
    dropped: u64,
}

impl LogTail {
    fn new(cap: usize) -> Self {
        LogTail {
            cap,
            lines: VecDeque::new(),
            bytes: 0,
            dropped: 0,
        }
    }

    fn push(&mut self, line: &str) {
        let cost = line.len() + 1;
        if cost > self.cap {
            // One line bigger than the whole cap: keep only its end.
            self.dropped += (self.bytes + cost) as u64;
            self.lines.clear();
            self.bytes = 0;
            if self.cap > 1 {
                let kept = tail_at_char_boundary(line, self.cap - 1);
                self.dropped -= (kept.len() + 1) as u64;
                self.bytes = kept.len() + 1;
                self.lines.push_back(kept.to_string());
            }
            return;
        }
        self.lines.push_back(line.to_string());
        self.bytes += cost;
        while self.bytes > self.cap {
            match self.lines.pop_front() {
                Some(old) => {
                    self.bytes -= old.len() + 1;
                    self.dropped += (old.len() + 1) as u64;
                }
                None => break,
            }
        }
    }

    fn text(&self) -> String {
        let mut text = String::with_capacity(self.bytes);
        for line in &self.lines {
            text.push_str(line);
            text.push('\n');
        }
        text
    }

    fn last_line(&self) -> Option<&str> {
        self.lines
            .iter()
            .rev()
            .map(|line| line.trim())
            .find(|line| !line.is_empty())
    }
}

/// The last at most `max` bytes of `text`, starting on a character boundary.
fn tail_at_char_boundary(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// What the readers learnt from the program. Shared so that it survives a reader being abandoned.
#[derive(Debug)]
struct Captured {
    stdout: LogTail,
    stderr: LogTail,
    result: Option<Value>,
    release: Option<String>,
}

type Shared = Arc<Mutex<Captured>>;

/// Reads one line of at most `max` bytes (without the newline) into `line`.
/// Returns `Ok(None)` at end of input, else whether the line was longer and got cut.
/// The rest of a long line is read and thrown away, so memory stays bounded whatever the input.
async fn read_capped_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<bool>> {
    line.clear();
    let mut truncated = false;
    let mut read_any = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(read_any.then_some(truncated));
        }
        read_any = true;
        let (chunk, used, done) = match available.iter().position(|&b| b == b'\n') {
            Some(at) => (&available[..at], at + 1, true),
            None => (available, available.len(), false),
        };
        let room = max.saturating_sub(line.len());
        if chunk.len() > room {
            truncated = true;
        }
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        reader.consume(used);
        if done {
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(Some(truncated));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The stdout protocol

/// A protocol line from the program, after its `type` was found to be known.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ProgramLine {
    Progress {
        text: String,
    },
    Result {
        #[serde(default)]
        result: Value,
    },
    Release {
        #[serde(default)]
        reason: Option<String>,
    },
    Message {
        kind: String,
        text: String,
    },
    Reply {
        to: String,
        text: String,
    },
    Spawn {
        agent_name: String,
        #[serde(default)]
        ttl_seconds: Option<i64>,
        #[serde(default)]
        spawn_role: Option<String>,
        // Boxed: the permission lists dwarf every other line type.
        #[serde(default)]
        permissions: Option<Box<Permissions>>,
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        prompt_overlay: Option<String>,
    },
}

const KNOWN_TYPES: &[&str] = &["progress", "result", "release", "message", "reply", "spawn"];

/// Message kinds a program may send with a `message` line (replies have their own line).
const SENDABLE_KINDS: &[&str] = &[
    "blocker",
    "handoff",
    "request",
    "result",
    "review_request",
    "status",
];

/// How a stdout line is to be taken.
#[derive(Debug)]
enum Parsed {
    Protocol(ProgramLine),
    /// A known type whose fields are wrong: worth a warning, not an action.
    Invalid {
        kind: String,
        error: String,
    },
    Log,
}

fn parse_line(raw: &[u8]) -> Parsed {
    let first = raw.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Parsed::Log;
    }
    let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(raw) else {
        return Parsed::Log;
    };
    let Some(kind) = object.get("type").and_then(Value::as_str) else {
        return Parsed::Log;
    };
    if !KNOWN_TYPES.contains(&kind) {
        return Parsed::Log;
    }
    let kind = kind.to_string();
    match serde_json::from_value::<ProgramLine>(Value::Object(object)) {
        Ok(line) => Parsed::Protocol(line),
        Err(err) => Parsed::Invalid {
            kind,
            error: err.to_string(),
        },
    }
}

/// Everything the stdout reader needs besides the pipe.
struct StdoutReader {
    shared: Shared,
    events: mpsc::Sender<HandlerEvent>,
    stdin: mpsc::Sender<String>,
    stop: CancellationToken,
    max_line_bytes: usize,
    run_id: String,
}

impl StdoutReader {
    async fn run<R: AsyncRead + Unpin>(self, pipe: R) {
        let mut reader = BufReader::new(pipe);
        let mut raw = Vec::new();
        loop {
            let truncated = match read_capped_line(&mut reader, &mut raw, self.max_line_bytes).await
            {
                Ok(Some(truncated)) => truncated,
                Ok(None) => break,
                Err(err) => {
                    self.warn(&format!("reading the program's stdout failed: {err}"));
                    break;
                }
            };
            if truncated {
                self.warn(&format!(
                    "a stdout line longer than {} bytes was cut and treated as log",
                    self.max_line_bytes
                ));
                self.log(&raw);
                continue;
            }
            match parse_line(&raw) {
                Parsed::Log => self.log(&raw),
                Parsed::Invalid { kind, error } => {
                    self.warn(&format!("ignored a {kind:?} line: {error}"));
                }
                Parsed::Protocol(line) => self.handle(line).await,
            }
        }
    }

    async fn handle(&self, line: ProgramLine) {
        match line {
            ProgramLine::Progress { text } => {
                self.emit(HandlerEvent::Progress(text)).await;
            }
            ProgramLine::Result { result } => lock(&self.shared).result = Some(result),
            ProgramLine::Release { reason } => {
                let reason = reason
                    .filter(|r| !r.trim().is_empty())
                    .unwrap_or_else(|| "the handler released the run".into());
                lock(&self.shared).release = Some(reason);
            }
            ProgramLine::Message { kind, text } => {
                if SENDABLE_KINDS.contains(&kind.as_str()) {
                    let kind = MessageKind::from(kind.as_str());
                    self.emit(HandlerEvent::Message { kind, text }).await;
                } else {
                    self.warn(&format!(
                        "ignored a message line of unknown kind {kind:?} (known: {})",
                        SENDABLE_KINDS.join(", ")
                    ));
                }
            }
            ProgramLine::Reply { to, text } => {
                self.emit(HandlerEvent::Reply {
                    to_message_id: to,
                    text,
                })
                .await;
            }
            ProgramLine::Spawn {
                agent_name,
                ttl_seconds,
                spawn_role,
                permissions,
                name,
                prompt_overlay,
            } => {
                let ask = SpawnAsk {
                    agent_name,
                    ttl_seconds,
                    spawn_role,
                    permissions: permissions.map(|p| *p),
                    name,
                    prompt_overlay,
                };
                self.spawn(ask).await;
            }
        }
    }

    /// Hands the ask to the worker and answers the program later, without holding up stdout.
    async fn spawn(&self, ask: SpawnAsk) {
        let (answer, receive) = oneshot::channel();
        let sent = self
            .events
            .send(HandlerEvent::Spawn {
                ask: Box::new(ask),
                answer,
            })
            .await;
        let stdin = self.stdin.clone();
        let stop = self.stop.clone();
        tokio::spawn(async move {
            let answer = if sent.is_err() {
                SpawnAnswer::Refused {
                    reason: "the run is ending".into(),
                }
            } else {
                tokio::select! {
                    answer = receive => answer.unwrap_or(SpawnAnswer::Refused {
                        reason: "the spawner is not running".into(),
                    }),
                    () = stop.cancelled() => return,
                }
            };
            let _ = stdin.send(spawn_answer_line(&answer)).await;
        });
    }

    async fn emit(&self, event: HandlerEvent) {
        // A closed worker side means the run is ending; the program's exit decides the rest.
        let _ = self.events.send(event).await;
    }

    fn log(&self, raw: &[u8]) {
        let line = String::from_utf8_lossy(raw);
        tracing::debug!(target: LOG_TARGET, run_id = %self.run_id, stream = "stdout", "{line}");
        lock(&self.shared).stdout.push(&line);
    }

    fn warn(&self, warning: &str) {
        tracing::warn!(target: LOG_TARGET, run_id = %self.run_id, "{warning}");
        lock(&self.shared)
            .stdout
            .push(&format!("agh-worker: warning: {warning}"));
    }
}

async fn read_stderr<R: AsyncRead + Unpin>(pipe: R, shared: Shared, max: usize, run_id: String) {
    let mut reader = BufReader::new(pipe);
    let mut raw = Vec::new();
    while let Ok(Some(_)) = read_capped_line(&mut reader, &mut raw, max).await {
        let line = String::from_utf8_lossy(&raw);
        tracing::debug!(target: LOG_TARGET, run_id = %run_id, stream = "stderr", "{line}");
        lock(&shared).stderr.push(&line);
    }
}

// ---------------------------------------------------------------------------------------------
// stdin

fn spawn_answer_line(answer: &SpawnAnswer) -> String {
    let value = match answer {
        SpawnAnswer::Spawned {
            session_id,
            agent_name,
            ttl_seconds,
        } => json!({
            "type": "spawned",
            "session_id": session_id,
            "agent_name": agent_name,
            "ttl_seconds": ttl_seconds,
        }),
        SpawnAnswer::Refused { reason } => json!({"type": "spawn_refused", "reason": reason}),
    };
    value.to_string()
}

fn inbound_line(message: &ChannelMessage) -> String {
    json!({
        "type": "message",
        "message_id": message.message_id,
        "channel_id": message.channel_id,
        "from": message.from_session_id,
        "kind": message.metadata.as_ref().map(|m| m.message_kind.as_str()),
        "text": message.text(),
        "body": message.body,
        "metadata": message.metadata,
    })
    .to_string()
}

/// Writes the document, then whatever is queued, until the program stops reading or the run ends.
/// Holding `stdin` keeps the pipe open, because a program may wait for messages.
async fn write_stdin(
    mut stdin: ChildStdin,
    first: String,
    mut lines: mpsc::Receiver<String>,
    stop: CancellationToken,
) {
    let work = async {
        let mut line = first;
        loop {
            line.push('\n');
            // A closed pipe (the program closed stdin or exited) just ends the writing.
            if stdin.write_all(line.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
                return;
            }
            match lines.recv().await {
                Some(next) => line = next,
                None => return,
            }
        }
    };
    tokio::select! {
        () = work => {}
        () = stop.cancelled() => {}
    }
}

async fn forward_inbound(
    mut inbound: mpsc::Receiver<ChannelMessage>,
    stdin: mpsc::Sender<String>,
    stop: CancellationToken,
) {
    let work = async {
        while let Some(message) = inbound.recv().await {
            if stdin.send(inbound_line(&message)).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = work => {}
        () = stop.cancelled() => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Signals

#[cfg(unix)]
mod signal {
    use rustix::process::{Pid, Signal, kill_process_group};

    pub const SIGKILL: i32 = 9;
    pub const SIGTERM: i32 = 15;

    /// Sends `signal` to every process in the group `pgid`. Returns whether any process got it.
    pub fn group(pgid: u32, signal: i32) -> bool {
        // pgid 0 or 1 would mean "our own group" or "everyone": never, whatever went wrong.
        let Ok(pgid) = i32::try_from(pgid) else {
            return false;
        };
        if pgid <= 1 {
            return false;
        }
        let (Some(pid), Some(signal)) = (Pid::from_raw(pgid), Signal::from_named_raw(signal))
        else {
            return false;
        };
        kill_process_group(pid, signal).is_ok()
    }

    /// Names of the signals numbered alike on Linux and the BSDs.
    pub fn name(signal: i32) -> &'static str {
        match signal {
            1 => "SIGHUP",
            2 => "SIGINT",
            3 => "SIGQUIT",
            4 => "SIGILL",
            6 => "SIGABRT",
            8 => "SIGFPE",
            9 => "SIGKILL",
            11 => "SIGSEGV",
            13 => "SIGPIPE",
            14 => "SIGALRM",
            15 => "SIGTERM",
            _ => "signal",
        }
    }
}

/// Stops the program: SIGTERM to its group, SIGKILL after the grace. Returns the signal that
/// ended it ("SIGTERM" or "SIGKILL").
async fn stop_program(child: &mut Child, pgid: Option<u32>, grace: Duration) -> &'static str {
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
fn kill_leftovers(pgid: Option<u32>) {
    #[cfg(unix)]
    if let Some(pgid) = pgid {
        // The leader was just reaped; the group id cannot be reused while members are alive, and
        // when none are, this finds nothing (ESRCH).
        signal::group(pgid, signal::SIGKILL);
    }
    #[cfg(not(unix))]
    let _ = pgid;
}

// ---------------------------------------------------------------------------------------------
// The handler

/// How the program's run ended, before mapping to an outcome.
enum Ending {
    Exited(std::io::Result<ExitStatus>),
    Cancelled(&'static str),
    TimedOut(Duration, &'static str),
}

/// Runs the configured program for one task and maps how it ended to an [`Outcome`].
/// When this returns, the program's process group is gone.
pub async fn run(config: &ExecConfig, ctx: TaskContext) -> Outcome {
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

    let mut command = Command::new(&config.program);
    command
        .args(&config.args)
        .env_clear()
        .envs(program_env(config, &ctx))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    #[cfg(unix)]
    command.process_group(0);
    if let Some(dir) = &config.working_dir {
        command.current_dir(dir);
    }
    let mut child = match spawn(&mut command).await {
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
        status = child.wait() => Ending::Exited(status),
        () = cancel.cancelled() => Ending::Cancelled(stop_program(&mut child, pgid, grace).await),
        () = timer => {
            let limit = time_limit.unwrap_or_default();
            Ending::TimedOut(limit, stop_program(&mut child, pgid, grace).await)
        }
    };
    kill_leftovers(pgid);

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

/// Starts the command, retrying briefly on ETXTBSY: a program file that was just written can
/// still be open for writing in a process forked meanwhile (by any thread) that has not yet
/// reached exec; the condition clears by itself within moments.
async fn spawn(command: &mut Command) -> std::io::Result<Child> {
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

fn format_seconds(duration: Duration) -> String {
    if duration.subsec_nanos() == 0 {
        format!("{}", duration.as_secs())
    } else {
        let text = format!("{:.3}", duration.as_secs_f64());
        text.trim_end_matches('0').to_string()
    }
}

fn outcome_of(ending: Ending, captured: &Captured) -> Outcome {
    let status = match ending {
        Ending::Cancelled(signal) => {
            return Outcome::Release(format!(
                "cancelled: the worker stopped the run; the program was ended with {signal}"
            ));
        }
        Ending::TimedOut(limit, signal) => {
            let mut metadata = tails(captured);
            metadata.insert("time_limit_seconds".into(), json!(limit.as_secs_f64()));
            metadata.insert("stopped_with".into(), signal.into());
            return Outcome::Fail {
                error: format!(
                    "handler exceeded its time limit of {} s",
                    format_seconds(limit)
                ),
                metadata: Some(Value::Object(metadata)),
            };
        }
        Ending::Exited(Err(err)) => {
            return Outcome::Fail {
                error: format!("exec handler: waiting for the program failed: {err}"),
                metadata: Some(Value::Object(tails(captured))),
            };
        }
        Ending::Exited(Ok(status)) => status,
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
                    signal::name(number)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_tail_keeps_the_last_whole_lines_within_its_cap() {
        let mut tail = LogTail::new(10);
        for line in ["aaa", "bbb", "ccc", "ddd"] {
            tail.push(line);
        }
        assert_eq!(tail.text(), "ccc\nddd\n");
        assert!(tail.bytes <= 10);
        assert_eq!(tail.dropped, 8);
        assert_eq!(tail.last_line(), Some("ddd"));
    }

    #[test]
    fn a_line_longer_than_the_cap_keeps_its_end_on_a_char_boundary() {
        let mut tail = LogTail::new(6);
        tail.push("xx");
        tail.push("abcdééfg");
        assert_eq!(tail.text(), "éfg\n");
        assert!(tail.bytes <= 6);
    }

    #[test]
    fn a_zero_cap_keeps_nothing() {
        let mut tail = LogTail::new(0);
        tail.push("anything");
        assert_eq!(tail.text(), "");
        assert_eq!(tail.last_line(), None);
    }

    #[tokio::test]
    async fn long_lines_are_cut_at_the_limit_and_the_rest_is_skipped() {
        let input: &[u8] = b"short\r\n0123456789abcdef\nnext\nlast-without-newline";
        let mut reader = BufReader::with_capacity(4, input);
        let mut line = Vec::new();
        let mut seen = Vec::new();
        while let Some(truncated) = read_capped_line(&mut reader, &mut line, 8).await.unwrap() {
            seen.push((String::from_utf8_lossy(&line).into_owned(), truncated));
        }
        assert_eq!(
            seen,
            vec![
                ("short".to_string(), false),
                ("01234567".to_string(), true),
                ("next".to_string(), false),
                ("last-wit".to_string(), true),
            ]
        );
    }

    #[test]
    fn protocol_lines_are_recognised_and_everything_else_is_log() {
        assert!(matches!(
            parse_line(br#"{"type":"progress","text":"half"}"#),
            Parsed::Protocol(ProgramLine::Progress { text }) if text == "half"
        ));
        assert!(matches!(
            parse_line(br#"{"type":"result","result":[1,2]}"#),
            Parsed::Protocol(ProgramLine::Result { result }) if result == json!([1, 2])
        ));
        assert!(matches!(
            parse_line(br#"{"type":"release"}"#),
            Parsed::Protocol(ProgramLine::Release { reason: None })
        ));
        assert!(matches!(
            parse_line(br#"{"type":"spawn","agent_name":"a","ttl_seconds":60,"permissions":{"tools":["x"]}}"#),
            Parsed::Protocol(ProgramLine::Spawn { agent_name, ttl_seconds: Some(60), permissions: Some(_), .. }) if agent_name == "a"
        ));
        assert!(matches!(
            parse_line(br#"{"type":"progress"}"#),
            Parsed::Invalid { kind, .. } if kind == "progress"
        ));
        assert!(matches!(
            parse_line(br#"{"type":"progress","text":"x","extra":1}"#),
            Parsed::Protocol(_)
        ));
        for log in [
            &b"plain text"[..],
            br#"{"type":"unknown"}"#,
            br#"{"no_type":1}"#,
            br#"["type"]"#,
            b"{\"type\":\"progress\",\"text\":\"\xff\"}",
            b"{not json",
            b"",
        ] {
            assert!(matches!(parse_line(log), Parsed::Log), "{log:?}");
        }
    }

    #[test]
    fn secret_looking_names_are_refused_for_pass_through() {
        for name in [
            "MY_API_KEY",
            "github_token",
            "Db_Password",
            "AWS_SECRET_ACCESS_KEY",
            "GOOGLE_APPLICATION_CREDENTIALS",
            "AGH_WORKER__AGH__SESSION_ID",
            "AGENTUITY_SDK_KEY",
        ] {
            assert!(refused_pass_env(name).is_some(), "{name}");
        }
        for name in [
            "PATH",
            "HOME",
            "LANG",
            "TZ",
            "AGH_HOME",
            "AGH_WORKER_RUN_ID",
        ] {
            assert!(refused_pass_env(name).is_none(), "{name}");
        }
    }

    #[test]
    fn the_default_config_asks_for_a_program() {
        let config = ExecConfig::default();
        assert_eq!(config.pass_env, ["PATH", "HOME", "LANG", "TZ"]);
        let problems = config.problems("handlers[0].exec");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("handlers[0].exec.program is empty"));
    }

    #[test]
    fn problems_name_every_bad_setting() {
        let config = ExecConfig {
            program: "/definitely/not/here".into(),
            working_dir: Some("/definitely/not/a/dir".into()),
            pass_env: vec!["PATH".into(), "MY_API_KEY".into(), "".into()],
            max_line_bytes: 0,
            ..ExecConfig::default()
        };
        let problems = config.problems("handlers[1].exec");
        assert_eq!(problems.len(), 5, "{problems:?}");
        assert!(problems.iter().all(|p| p.starts_with("handlers[1].exec.")));
        assert!(problems[0].contains("/definitely/not/here"));
    }

    #[test]
    fn an_explicit_value_makes_a_secret_name_acceptable() {
        let config = ExecConfig {
            program: "sh".into(),
            pass_env: vec!["MY_API_KEY".into()],
            env: [("MY_API_KEY".to_string(), "given".to_string())].into(),
            ..ExecConfig::default()
        };
        assert_eq!(config.problems("h"), Vec::<String>::new());
    }

    #[test]
    fn the_config_rejects_unknown_keys() {
        let err = serde_json::from_value::<ExecConfig>(json!({"program": "x", "argz": []}));
        assert!(err.is_err());
        let config: ExecConfig = serde_json::from_value(json!({"program": "x"})).unwrap();
        assert_eq!(config.kill_grace_ms, 5000);
        assert_eq!(config.max_line_bytes, 1 << 20);
    }

    #[test]
    fn seconds_are_printed_without_noise() {
        assert_eq!(format_seconds(Duration::from_secs(30)), "30");
        assert_eq!(format_seconds(Duration::from_millis(300)), "0.3");
        assert_eq!(format_seconds(Duration::from_millis(1250)), "1.25");
    }

    #[test]
    fn spawn_answers_are_single_json_lines() {
        let line = spawn_answer_line(&SpawnAnswer::Spawned {
            session_id: "s1".into(),
            agent_name: "helper".into(),
            ttl_seconds: 60,
        });
        assert_eq!(
            serde_json::from_str::<Value>(&line).unwrap(),
            json!({"type":"spawned","session_id":"s1","agent_name":"helper","ttl_seconds":60})
        );
        let line = spawn_answer_line(&SpawnAnswer::Refused {
            reason: "budget\nexceeded".into(),
        });
        assert!(!line.contains('\n'));
    }
}
