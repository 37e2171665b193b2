//! `agh-worker acp --attach unix:PATH`: the thin agent process of one AGH session. It keeps the
//! ACP conversation with AGH on stdin/stdout (the same conversation as `agh-worker acp`) and
//! hands the session to the resident worker on the socket once `session/new` is answered: the
//! identity, each wake prompt, and the stop when AGH closes stdin.
//!
//! The session outlives the resident worker: while it cannot be reached (restarting, refusing
//! for `worker.max_slots`), the thin process keeps answering AGH, says so in each answer, and
//! attaches again with backoff. The resident's new slot then adopts the lease the old one held.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use tokio::net::UnixStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::wire::{self, AttachRequest, FromResident, FromThin, PROTOCOL_VERSION, RefusalReason};
use crate::acp::conversation::{self, Conversation, SessionEvent, StateSource};
use crate::acp::session::STOP_BUDGET;
use crate::config::Config;
use crate::exit;
use crate::util::backoff::Backoff;
use crate::worker::Shutdown;

/// The longest wait for the resident's first answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// Pauses between attempts to reach a resident that is down: short at first, so a restart is
/// bridged in about a second.
const RECONNECT_FIRST: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// Pauses between asking again a resident that refused for want of a free slot.
const REFUSED_FIRST: Duration = Duration::from_secs(1);
const REFUSED_MAX: Duration = Duration::from_secs(30);

/// The whole stop from stdin closing: the resident's own stop ([`STOP_BUDGET`]) and the talk
/// around it, still well inside AGH's 5 s before SIGTERM.
const THIN_STOP_BUDGET: Duration = Duration::from_millis(2500);

/// `agh-worker acp --attach`, with its configuration loaded and its log set up.
pub async fn run(config: Config, socket: PathBuf) -> ExitCode {
    let identity = config.identity();
    if identity.session_id.is_empty() || identity.agent.is_empty() {
        let problem = "AGH_SESSION_ID or AGH_AGENT is empty: agh-worker acp --attach is the agent \
                       AGH launches for a session, and AGH sets both; to work as one given session \
                       use agh-worker run";
        eprintln!("agh-worker acp: {problem}");
        tracing::error!("{problem}");
        return ExitCode::from(exit::BAD_CONFIG);
    }
    let request = AttachRequest {
        version: PROTOCOL_VERSION,
        session_id: identity.session_id.clone(),
        agent: identity.agent.clone(),
        workspace_id: identity.workspace_id.clone(),
        session_channel: Some(config.agh.session_channel.trim().to_string())
            .filter(|channel| !channel.is_empty()),
        pid: std::process::id(),
    };
    let span =
        tracing::info_span!("acp", session_id = %identity.session_id, attach = %socket.display());
    serve(request, socket).instrument(span).await
}

async fn serve(request: AttachRequest, socket: PathBuf) -> ExitCode {
    let shutdown = Shutdown::default();
    let _reloads = match crate::ops::signals::install(shutdown.clone()) {
        Ok(reloads) => reloads,
        Err(err) => {
            tracing::error!(error = %err, "cannot listen for signals");
            return ExitCode::FAILURE;
        }
    };
    let (line, lines) = watch::channel(
        "agh-worker: starting; this session is handed to the resident worker once it is active."
            .to_string(),
    );
    let (events, mut session_events) = mpsc::unbounded_channel();
    let conversation = Conversation {
        agh_session_id: request.session_id.clone(),
        events,
        state: StateSource::Line(lines),
    };
    let mut talk = tokio::spawn(
        conversation::serve(tokio::io::stdin(), tokio::io::stdout(), conversation)
            .in_current_span(),
    );
    tracing::info!(socket = %socket.display(), "agh-worker acp --attach: waiting for AGH's handshake");
    let stop = CancellationToken::new();
    let (wakes, wakes_rx) = mpsc::unbounded_channel();
    let mut link = Some(Link {
        socket,
        request,
        line,
        wakes: wakes_rx,
        stop: stop.clone(),
    });
    let mut running: Option<JoinHandle<LinkEnd>> = None;
    loop {
        tokio::select! {
            event = session_events.recv() => match event {
                Some(SessionEvent::Started { acp_session_id }) => match link.take() {
                    Some(link) => {
                        tracing::info!(%acp_session_id, "session active: attaching to the resident worker");
                        running = Some(tokio::spawn(link.run().in_current_span()));
                    }
                    None => tracing::warn!(%acp_session_id, "another session/new: this session is attached already"),
                },
                Some(SessionEvent::Woken { task_id, task_run_id }) => {
                    let _ = wakes.send(FromThin::Wake { task_id, task_run_id });
                }
                None => {}
            },
            ended = &mut talk => {
                conversation::log_end(&ended);
                break;
            }
            _ = shutdown.stopping() => {
                tracing::info!("stop signal: stopping as for a closed stdin");
                break;
            }
            end = conversation::task_ended(&mut running) => {
                running = None;
                if let Some(LinkEnd::Ended(reason)) = end {
                    tracing::info!(%reason, "the resident worker ended this session's slot by itself; exiting");
                }
                break;
            }
        }
    }
    stop.cancel();
    if let Some(running) = running {
        match tokio::time::timeout(THIN_STOP_BUDGET, running).await {
            Ok(Ok(LinkEnd::Stopped)) => {
                tracing::info!("the resident worker has stopped this session")
            }
            Ok(_) => {}
            Err(_) => {
                tracing::warn!("the resident worker did not confirm the stop in time; exiting")
            }
        }
    }
    ExitCode::SUCCESS
}

/// How the link to the resident ended.
#[derive(Debug)]
enum LinkEnd {
    /// The stop was handed over (or there was no resident to hand it to).
    Stopped,
    /// The slot's loop ended by itself.
    Ended(String),
}

/// Why one attachment ended without the session ending.
enum Lost {
    /// No resident there, or the connection broke: try again soon.
    Unreachable(String),
    /// The resident said no: try again later.
    Refused(RefusalReason, String),
}

/// The session's link to the resident worker: attach, forward, and attach again when lost.
struct Link {
    socket: PathBuf,
    request: AttachRequest,
    /// What the answers to AGH say.
    line: watch::Sender<String>,
    wakes: mpsc::UnboundedReceiver<FromThin>,
    stop: CancellationToken,
}

impl Link {
    async fn run(mut self) -> LinkEnd {
        let mut unreachable = Backoff::new(RECONNECT_FIRST, RECONNECT_MAX).with_jitter(0.8, 1.2);
        let mut refused = Backoff::new(REFUSED_FIRST, REFUSED_MAX).with_jitter(0.8, 1.2);
        loop {
            let (pause, why) = match self.attach().await {
                Ok(end) => return end,
                Err(Lost::Unreachable(why)) => {
                    refused.reset();
                    (unreachable.next_delay(), why)
                }
                Err(Lost::Refused(reason, message)) => {
                    unreachable.reset();
                    tracing::warn!(?reason, %message, "the resident worker refused this session");
                    (
                        refused.next_delay(),
                        format!("refused this session: {message}"),
                    )
                }
            };
            self.say(format!(
                "agh-worker: not working: the resident worker at unix:{} {why}; trying again in {} ms. \
                 This session stays up meanwhile.",
                self.socket.display(),
                pause.as_millis()
            ));
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = self.stop.cancelled() => return LinkEnd::Stopped,
            }
        }
    }

    fn say(&self, line: String) {
        self.line.send_replace(line);
    }

    /// One attachment, from connecting to its end.
    async fn attach(&mut self) -> Result<LinkEnd, Lost> {
        let stream = connect(&self.socket).await?;
        let (read_half, mut write_half) = stream.into_split();
        let mut incoming = wire::spawn_reader::<_, FromResident>(read_half);
        wire::write(&mut write_half, &FromThin::Attach(self.request.clone()))
            .await
            .map_err(|err| Lost::Unreachable(format!("cannot be written to: {err}")))?;
        let first = tokio::select! {
            first = tokio::time::timeout(ANSWER_TIMEOUT, incoming.recv()) => first,
            _ = self.stop.cancelled() => return Ok(LinkEnd::Stopped),
        };
        match first {
            Ok(Some(Ok(FromResident::Attached { slot }))) => {
                tracing::info!(slot, "attached to the resident worker");
                self.say(format!(
                    "agh-worker: attached to the resident worker (slot {slot}); claiming."
                ));
            }
            Ok(Some(Ok(FromResident::Refused { reason, message }))) => {
                return Err(Lost::Refused(reason, message));
            }
            Ok(Some(Ok(other))) => {
                return Err(Lost::Unreachable(format!(
                    "answered {other:?} before attaching"
                )));
            }
            Ok(Some(Err(err))) => return Err(Lost::Unreachable(err.to_string())),
            Ok(None) => return Err(Lost::Unreachable("closed the connection".into())),
            Err(_) => {
                return Err(Lost::Unreachable(format!(
                    "did not answer within {} s",
                    ANSWER_TIMEOUT.as_secs()
                )));
            }
        }
        loop {
            tokio::select! {
                Some(wake) = self.wakes.recv() => {
                    if let Err(err) = wire::write(&mut write_half, &wake).await {
                        return Err(Lost::Unreachable(format!("cannot be written to: {err}")));
                    }
                }
                message = incoming.recv() => match message {
                    Some(Ok(FromResident::Status { line })) => self.say(line),
                    Some(Ok(FromResident::Ended { reason })) => return Ok(LinkEnd::Ended(reason)),
                    Some(Ok(other)) => tracing::debug!(?other, "unexpected message from the resident worker; ignored"),
                    Some(Err(err)) => return Err(Lost::Unreachable(err.to_string())),
                    None => {
                        tracing::warn!("the resident worker closed the connection; attaching again");
                        return Err(Lost::Unreachable("closed the connection (restarting?)".into()));
                    }
                },
                _ = self.stop.cancelled() => {
                    return Ok(hand_over_stop(&mut write_half, &mut incoming).await);
                }
            }
        }
    }
}

/// Tells the resident that AGH is stopping the session and waits, within [`STOP_BUDGET`] and a
/// little, for it to say its handlers are gone.
async fn hand_over_stop(
    write_half: &mut tokio::net::unix::OwnedWriteHalf,
    incoming: &mut mpsc::Receiver<Result<FromResident, wire::WireError>>,
) -> LinkEnd {
    if let Err(err) = wire::write(write_half, &FromThin::Stop).await {
        tracing::warn!(error = %err, "cannot tell the resident worker to stop this session; it stops it when this process exits");
        return LinkEnd::Stopped;
    }
    let confirmed = tokio::time::timeout(STOP_BUDGET + Duration::from_millis(500), async {
        while let Some(message) = incoming.recv().await {
            if matches!(message, Ok(FromResident::Stopped)) {
                return true;
            }
        }
        false
    })
    .await;
    if !matches!(confirmed, Ok(true)) {
        tracing::warn!(
            "the resident worker did not confirm the stop; it stops the slot when this process exits"
        );
    }
    LinkEnd::Stopped
}

async fn connect(socket: &Path) -> Result<UnixStream, Lost> {
    UnixStream::connect(socket).await.map_err(|err| {
        Lost::Unreachable(match err.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                "is not running".to_string()
            }
            std::io::ErrorKind::PermissionDenied => {
                "cannot be reached: permission denied (the thin process and the resident worker must run as the same user)".to_string()
            }
            _ => format!("cannot be reached: {err}"),
        })
    })
}
