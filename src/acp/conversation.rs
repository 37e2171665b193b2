//! The ACP conversation with AGH, on the worker's stdin and stdout, through the official SDK
//! (`agent-client-protocol`). Every request is answered at once, from what is at hand: nothing
//! here waits on the worker, so a handler's work never holds a turn open (AGH queues its
//! synthetic prompts behind an open turn, and cancels a turn silent for 30 minutes).
//!
//! AGH's side: `internal/acp/client.go` (coder/acp-go-sdk v0.12.2). It reads only
//! `agentCapabilities.loadSession` from `initialize`, keeps `sessionId` from `session/new`, and
//! reads `stopReason` from `session/prompt`; `session/cancel` comes as a notification, and a
//! `$/cancel_request` for a request still open (the SDK handles that one itself).

use agent_client_protocol::schema::ProtocolVersion;
use agent_client_protocol::v1::schema::{
    AgentCapabilities, CancelNotification, ContentBlock, ContentChunk, Implementation,
    InitializeRequest, InitializeResponse, NewSessionRequest, NewSessionResponse, PromptRequest,
    PromptResponse, SessionNotification, SessionUpdate, StopReason,
};
use agent_client_protocol::{Agent, ByteStreams};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio_util::compat::{TokioAsyncReadCompatExt as _, TokioAsyncWriteCompatExt as _};

use super::turn::{self, Turn};
use crate::worker::StatusBoard;

/// What the conversation tells the rest of `acp`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEvent {
    /// `session/new` was answered: AGH makes the session active now, so claiming may begin.
    Started { acp_session_id: String },
    /// A scheduler wake prompt: claim now.
    Woken {
        task_id: String,
        task_run_id: String,
    },
}

/// Why the conversation ended.
#[derive(Debug, thiserror::Error)]
#[error("the ACP connection on stdin/stdout failed: {0}")]
pub struct ConversationError(String);

/// Where a turn's answer reads the worker's state from.
#[derive(Clone, Debug)]
pub enum StateSource {
    /// The worker in this process (`agh-worker acp`).
    Board(StatusBoard),
    /// The latest line from a resident worker, or about reaching it (`acp --attach`).
    Line(watch::Receiver<String>),
}

impl StateSource {
    /// The state as one line.
    pub fn describe(&self) -> String {
        match self {
            StateSource::Board(board) => turn::describe(&board.snapshot()),
            StateSource::Line(line) => line.borrow().clone(),
        }
    }
}

/// The agent's half of the conversation: who it is, where its events go, whose state it reports.
#[derive(Clone, Debug)]
pub struct Conversation {
    /// AGH's session id: the ACP session id is derived from it, so logs on both sides match.
    pub agh_session_id: String,
    pub events: mpsc::UnboundedSender<SessionEvent>,
    pub state: StateSource,
}

impl Conversation {
    fn initialize(&self, request: &InitializeRequest) -> InitializeResponse {
        tracing::info!(protocol_version = ?request.protocol_version, "ACP initialize");
        // No session/load: a worker has no conversation to resume, and AGH restarts sessions
        // anew. Everything else AGH asks of an agent (fs, terminal) it offers, not asks.
        // Version 1 is the one this agent speaks, whatever the client offered (ACP's rule).
        InitializeResponse::new(ProtocolVersion::V1)
            .agent_capabilities(AgentCapabilities::new().load_session(false))
            .agent_info(Implementation::new("agh-worker", env!("CARGO_PKG_VERSION")))
    }

    fn new_session(&self, request: &NewSessionRequest) -> String {
        let acp_session_id = format!("agh-worker-{}", self.agh_session_id);
        tracing::info!(cwd = %request.cwd.display(), %acp_session_id, "ACP session/new");
        acp_session_id
    }

    fn prompt(&self, request: &PromptRequest) -> String {
        let turn = Turn::from_meta(request.meta.as_ref());
        if let Turn::Wake {
            task_id,
            task_run_id,
        } = &turn
        {
            tracing::info!(%task_id, %task_run_id, "woken by AGH's scheduler: claiming now");
            let _ = self.events.send(SessionEvent::Woken {
                task_id: task_id.clone(),
                task_run_id: task_run_id.clone(),
            });
        } else {
            tracing::info!("ACP prompt answered with the worker's state; it takes no instructions");
        }
        turn::answer(&turn, &self.state.describe())
    }
}

/// Logs how the conversation task ended: stdin closed (AGH is stopping the session), or a
/// failure. Either way the session is over.
pub fn log_end(ended: &Result<Result<(), ConversationError>, tokio::task::JoinError>) {
    match ended {
        Ok(Ok(())) => tracing::info!("stdin closed: AGH is stopping this session"),
        Ok(Err(err)) => tracing::error!(error = %err, "the ACP connection failed; stopping"),
        Err(err) => {
            tracing::error!(error = %err, "the ACP conversation task ended abnormally; stopping")
        }
    }
}

/// Resolves with a task's result once the task, if started, has ended (`None`: it panicked);
/// never while it is not started.
pub async fn task_ended<T>(task: &mut Option<tokio::task::JoinHandle<T>>) -> Option<T> {
    match task {
        Some(running) => running.await.ok(),
        None => std::future::pending().await,
    }
}

/// Speaks ACP on `input`/`output` until `input` closes (AGH closes the agent's stdin to stop
/// it), answering as `conversation` says.
pub async fn serve<R, W>(
    input: R,
    output: W,
    conversation: Conversation,
) -> Result<(), ConversationError>
where
    R: AsyncRead + Send + 'static,
    W: AsyncWrite + Send + 'static,
{
    let transport = ByteStreams::new(output.compat_write(), input.compat());
    let on_initialize = conversation.clone();
    let on_new = conversation.clone();
    let on_prompt = conversation;
    Agent
        .v1()
        .name("agh-worker")
        .on_receive_request(
            async move |request: InitializeRequest, responder, _connection| {
                responder.respond(on_initialize.initialize(&request))
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            async move |request: NewSessionRequest, responder, _connection| {
                let acp_session_id = on_new.new_session(&request);
                responder.respond(NewSessionResponse::new(acp_session_id.clone()))?;
                // After the answer is on its way: AGH holds the session `starting` until it has
                // it, and refuses the session's identity until then.
                let _ = on_new.events.send(SessionEvent::Started { acp_session_id });
                Ok(())
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            async move |request: PromptRequest, responder, connection| {
                let text = on_prompt.prompt(&request);
                let update =
                    SessionUpdate::AgentMessageChunk(ContentChunk::new(ContentBlock::from(text)));
                connection.send_notification(SessionNotification::new(
                    request.session_id.clone(),
                    update,
                ))?;
                responder.respond(PromptResponse::new(StopReason::EndTurn))
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_notification(
            async move |cancel: CancelNotification, _connection| {
                // Every turn has ended before a cancel can come, and cancelling a turn is not
                // stopping the session: AGH closes stdin for that.
                tracing::info!(session_id = %cancel.session_id, "ACP session/cancel: no turn open");
                Ok(())
            },
            agent_client_protocol::on_receive_notification!(),
        )
        .connect_to(transport)
        .await
        .map_err(|err| ConversationError(err.to_string()))
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"clientCapabilities":{"auth":{},"fs":{"readTextFile":true,"writeTextFile":true},"terminal":true},"clientInfo":{"name":"agh","version":"dev"},"protocolVersion":1}}"#;

    /// Feeds `lines` then AGH's `initialize`, closes the input, and returns what the agent wrote
    /// and whether it ended within the bound.
    fn converse(lines: &[String]) -> (String, bool) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (mut to_agent, agent_in) = tokio::io::duplex(1 << 16);
            let (agent_out, mut from_agent) = tokio::io::duplex(1 << 20);
            let (events, _events_rx) = mpsc::unbounded_channel();
            let conversation = Conversation {
                agh_session_id: "sess-1".into(),
                events,
                state: StateSource::Board(StatusBoard::default()),
            };
            let served = tokio::spawn(serve(agent_in, agent_out, conversation));
            for line in lines {
                let _ = to_agent.write_all(line.as_bytes()).await;
                let _ = to_agent.write_all(b"\n").await;
            }
            let _ = to_agent.write_all(INITIALIZE.as_bytes()).await;
            let _ = to_agent.write_all(b"\n").await;
            drop(to_agent);
            let ended = tokio::time::timeout(Duration::from_secs(5), served)
                .await
                .is_ok();
            let mut output = String::new();
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                from_agent.read_to_string(&mut output),
            )
            .await;
            (output, ended)
        })
    }

    fn near_miss_line() -> impl Strategy<Value = String> {
        prop_oneof![
            "[ -~]{0,80}",
            Just(String::new()),
            Just("{}".to_string()),
            Just(r#"{"jsonrpc":"2.0"}"#.to_string()),
            Just(r#"{"jsonrpc":"2.0","id":7,"method":"session/prompt","params":{}}"#.to_string()),
            Just(
                r#"{"jsonrpc":"2.0","method":"session/cancel","params":{"sessionId":5}}"#
                    .to_string()
            ),
            Just(r#"{"jsonrpc":"2.0","id":"x","method":"no/such"}"#.to_string()),
            Just(r#"{"jsonrpc":"1.0","id":2,"method":"initialize"}"#.to_string()),
            Just(r#"[1,2,3]"#.to_string()),
            "\\{\"jsonrpc\":\"2.0\",\"id\":[0-9]{1,3},\"method\":\"[a-z/_]{1,20}\",\"params\":[ -~]{0,20}\\}",
        ]
    }

    #[test]
    fn agh_s_initialize_is_answered_with_version_1_and_no_session_load() {
        let (output, ended) = converse(&[]);
        assert!(ended);
        let answer: serde_json::Value =
            serde_json::from_str(output.lines().next().unwrap()).unwrap();
        assert_eq!(answer["id"], 1);
        assert_eq!(answer["result"]["protocolVersion"], 1);
        assert_eq!(answer["result"]["agentCapabilities"]["loadSession"], false);
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            // Each case runs a conversation: fewer of them.
            cases: ProptestConfig::default().cases.min(48),
            ..ProptestConfig::default()
        })]

        #[test]
        fn any_lines_from_agh_end_in_time_and_stdout_stays_json_rpc(
            lines in prop::collection::vec(near_miss_line(), 0..8),
        ) {
            let (output, ended) = converse(&lines);
            prop_assert!(ended, "the conversation did not end after its input closed");
            for line in output.lines().filter(|line| !line.trim().is_empty()) {
                let value: serde_json::Value = serde_json::from_str(line)
                    .map_err(|err| TestCaseError::fail(format!("not JSON on stdout: {line:?}: {err}")))?;
                prop_assert_eq!(value["jsonrpc"].as_str(), Some("2.0"), "{}", line);
            }
        }
    }
}
