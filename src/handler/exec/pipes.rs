//! The tasks around a running program's pipes: the stdout reader that acts on protocol lines
//! and keeps the rest as log, the stderr reader, and the stdin writer fed with the task document,
//! inbound channel messages and spawn answers.

use tokio::io::{AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::ChildStdin;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::LOG_TARGET;
use super::capture::{Shared, read_capped_line};
use super::protocol::{Parsed, ProgramLine, SENDABLE_KINDS, parse_line, spawn_answer_line};
use crate::api::types::{ChannelMessage, MessageKind};
use crate::handler::{HandlerEvent, SpawnAnswer, SpawnAsk, message_json};
use crate::util::sync::lock;

/// Everything the stdout reader needs besides the pipe.
pub(super) struct StdoutReader {
    pub(super) shared: Shared,
    pub(super) events: mpsc::Sender<HandlerEvent>,
    pub(super) stdin: mpsc::Sender<String>,
    pub(super) stop: CancellationToken,
    pub(super) max_line_bytes: usize,
    pub(super) run_id: String,
}

impl StdoutReader {
    pub(super) async fn run<R: AsyncRead + Unpin>(self, pipe: R) {
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

pub(super) async fn read_stderr<R: AsyncRead + Unpin>(
    pipe: R,
    shared: Shared,
    max: usize,
    run_id: String,
) {
    let mut reader = BufReader::new(pipe);
    let mut raw = Vec::new();
    while let Ok(Some(_)) = read_capped_line(&mut reader, &mut raw, max).await {
        let line = String::from_utf8_lossy(&raw);
        tracing::debug!(target: LOG_TARGET, run_id = %run_id, stream = "stderr", "{line}");
        lock(&shared).stderr.push(&line);
    }
}

/// Writes the document, then whatever is queued, until the program stops reading or the run ends.
/// Holding `stdin` keeps the pipe open, because a program may wait for messages.
pub(super) async fn write_stdin(
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

pub(super) async fn forward_inbound(
    mut inbound: mpsc::Receiver<ChannelMessage>,
    stdin: mpsc::Sender<String>,
    stop: CancellationToken,
) {
    let work = async {
        while let Some(message) = inbound.recv().await {
            if stdin
                .send(message_json(&message).to_string())
                .await
                .is_err()
            {
                return;
            }
        }
    };
    tokio::select! {
        () = work => {}
        () = stop.cancelled() => {}
    }
}
