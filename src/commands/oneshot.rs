//! Operator one-shots: one AGH call each, the answer printed as JSON (or a short human form on a
//! terminal), and an exit code per error class.

use std::io::Write;

use serde::Serialize;
use serde_json::{Value, json};

use crate::api::types::*;
use crate::api::{AghClient, ApiError, ClaimOutcome, ErrorKind, RecvOptions};
use crate::cli::{Command, SoulAction};

/// How answers are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Pretty JSON on stdout (scripts, pipes, `--json`).
    Json,
    /// A few readable lines (a terminal).
    Human,
}

/// A one-shot that could not be carried out: a bad argument or a failed call.
#[derive(Debug, thiserror::Error)]
pub enum OneShotError {
    /// An argument the user gave cannot be used.
    #[error("{0}")]
    Usage(String),
    /// The AGH call failed.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The daemon answered with a negative verdict (an invalid SOUL.md, HTTP 422). The answer
    /// itself is printed as usual; this only makes the exit code say so, so that
    /// `soul validate` can gate a script.
    #[error("{0}")]
    Rejected(String),
}

impl OneShotError {
    /// The process exit code: 2 for usage, the class code of the API error otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            OneShotError::Usage(_) => 2,
            OneShotError::Api(err) => err.kind.exit_code(),
            OneShotError::Rejected(_) => ErrorKind::Validation.exit_code(),
        }
    }

    /// The JSON form printed on stdout in JSON mode, so scripts can branch on `kind`.
    pub fn to_json(&self) -> Value {
        match self {
            OneShotError::Usage(message) => json!({"error": {"kind": "usage", "message": message}}),
            OneShotError::Rejected(message) => {
                json!({"error": {"kind": "validation", "status": 422, "message": message}})
            }
            OneShotError::Api(err) => json!({"error": {
                "kind": err.kind.as_str(),
                "call": err.call,
                "status": err.status,
                "message": err.message,
                "retryable": err.is_retryable(),
                "diagnostic": err.diagnostic,
            }}),
        }
    }
}

/// Carries out one one-shot and prints its answer. `spawn_timeout` bounds a `spawn`
/// (`coordination.spawn_timeout_seconds`): AGH starts the child's agent inside the request.
pub async fn execute(
    client: &AghClient,
    command: &Command,
    spawn_timeout: std::time::Duration,
    output: Output,
    out: &mut dyn Write,
) -> Result<(), OneShotError> {
    let mut rejected = None;
    let answer: Value = match command {
        Command::Me => to_value(&client.me().await?),
        Command::Context => to_value(&client.context().await?),
        Command::Channels => json!({"channels": client.channels().await?}),
        Command::Claim(args) => {
            let request = ClaimRequest {
                wait: args.wait,
                lease_seconds: args.lease_seconds,
                priority_min: args.priority_min,
                required_capabilities: args.capabilities.clone(),
                workspace_id: None,
            };
            match client.claim_next(&request).await? {
                ClaimOutcome::Claimed(claim) => json!({"claim": claim}),
                ClaimOutcome::NothingToDo => json!({"claim": null, "reason": "nothing to claim"}),
                ClaimOutcome::DeadlineReached => {
                    json!({"claim": null, "reason": "nothing claimed before the wait deadline"})
                }
            }
        }
        Command::Heartbeat(args) => {
            let request = HeartbeatRequest {
                lease_seconds: args.lease_seconds,
            };
            json!({"lease": client.heartbeat(&args.run, &request).await?})
        }
        Command::Complete(args) => {
            let result = args
                .result
                .as_deref()
                .map(|raw| parse_json_arg("--result", raw))
                .transpose()?;
            json!({"lease": client.complete(&args.run, &CompleteRequest { result }).await?})
        }
        Command::Fail(args) => {
            let metadata = args
                .metadata
                .as_deref()
                .map(|raw| parse_json_arg("--metadata", raw))
                .transpose()?;
            let request = FailRequest {
                error: args.error.clone(),
                metadata,
            };
            json!({"lease": client.fail(&args.run, &request).await?})
        }
        Command::Release(args) => {
            let request = ReleaseRequest {
                reason: args.reason.clone(),
            };
            json!({"lease": client.release(&args.run, &request).await?})
        }
        Command::TaskRun(args) => json!({"run": client.task_run(&args.run).await?}),
        Command::Recv(args) => {
            let options = RecvOptions {
                wait: args.wait,
                limit: args.limit,
            };
            json!({"messages": client.recv(&args.channel, options).await?})
        }
        Command::Send(args) => {
            let request = SendRequest {
                body: json!({"text": args.text}),
                metadata: MessageMetadata {
                    task_id: args.task_id.clone(),
                    run_id: args.run_id.clone(),
                    workflow_id: None,
                    coordination_channel_id: args
                        .coordination_channel_id
                        .clone()
                        .unwrap_or_else(|| args.channel.clone()),
                    message_kind: MessageKind::from(args.kind.as_str()),
                    correlation_id: args
                        .correlation_id
                        .clone()
                        .unwrap_or_else(|| args.run_id.clone()),
                    ext: None,
                },
                idempotency_key: args.idempotency_key.clone(),
            };
            json!({"message": client.send(&args.channel, &request).await?})
        }
        Command::Reply(args) => {
            let request = ReplyRequest {
                reply_to_message_id: args.message.clone(),
                body: json!({"text": args.text}),
                metadata: None,
                idempotency_key: args.idempotency_key.clone(),
            };
            json!({"message": client.reply(&request).await?})
        }
        Command::CoordinatorConfig => json!({"coordinator": client.coordinator_config().await?}),
        Command::Soul(args) => {
            let answer = match &args.action {
                None => client.soul().await?,
                Some(SoulAction::Validate { file }) => {
                    let body = match file {
                        Some(path) => Some(std::fs::read_to_string(path).map_err(|err| {
                            OneShotError::Usage(format!("cannot read {}: {err}", path.display()))
                        })?),
                        None => None,
                    };
                    client
                        .validate_soul(&SoulValidateRequest {
                            body,
                            ..Default::default()
                        })
                        .await?
                }
            };
            if answer.http_status == 422 {
                let findings: Vec<&str> = answer
                    .soul
                    .diagnostics
                    .iter()
                    .filter_map(|d| d.message.as_deref())
                    .collect();
                rejected = Some(if findings.is_empty() {
                    "SOUL.md is invalid (HTTP 422)".to_string()
                } else {
                    format!("SOUL.md is invalid (HTTP 422): {}", findings.join("; "))
                });
            }
            to_value(&answer.soul)
        }
        Command::Spawn(args) => {
            let permissions = args
                .permissions
                .as_deref()
                .map(|raw| {
                    serde_json::from_str::<Permissions>(raw).map_err(|err| {
                        OneShotError::Usage(format!(
                            "--permissions is not a permissions object ({err}); e.g. '{{\"tools\":[\"read\"]}}'"
                        ))
                    })
                })
                .transpose()?;
            let request = SpawnRequest {
                agent_name: args.agent_name.clone(),
                ttl_seconds: args.ttl,
                spawn_role: args.role.clone(),
                auto_stop_on_parent: args.keep_on_parent_stop.then_some(false),
                permissions,
                name: args.name.clone(),
                provider: None,
                prompt_overlay: None,
            };
            json!({"spawn": client.spawn(&request, spawn_timeout).await?})
        }
        Command::Run(_)
        | Command::Acp(_)
        | Command::Demo(_)
        | Command::Sim(_)
        | Command::Soak(_)
        | Command::Check(_)
        | Command::AghSetup(_)
        | Command::Completions(_)
        | Command::Man(_)
        | Command::Bench(_)
        | Command::Coder(_)
        | Command::Agentuity(_) => {
            return Err(OneShotError::Usage("not a one-shot command".into()));
        }
    };
    let text = match output {
        Output::Json => serde_json::to_string_pretty(&answer).unwrap_or_default(),
        Output::Human => human(command, &answer),
    };
    let _ = writeln!(out, "{text}");
    match rejected {
        Some(message) => Err(OneShotError::Rejected(message)),
        None => Ok(()),
    }
}

fn parse_json_arg(flag: &str, raw: &str) -> Result<Value, OneShotError> {
    serde_json::from_str(raw).map_err(|err| {
        OneShotError::Usage(format!(
            "{flag} is not valid JSON ({err}); quote strings, e.g. {flag} '{{\"summary\":\"done\"}}'"
        ))
    })
}

fn to_value<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or("-")
}

/// A short readable form; anything not summarised is in the JSON form.
fn human(command: &Command, answer: &Value) -> String {
    match command {
        Command::Me => {
            let leases: Vec<&str> = answer["active_task_leases"]
                .as_array()
                .map(|leases| leases.iter().map(|l| text(l, "/run_id")).collect())
                .unwrap_or_default();
            format!(
                "session   {} ({})\nagent     {}\nworkspace {}\nleases    {}\nlimits    children {} · depth {} · leases {}",
                text(answer, "/self/session_id"),
                text(answer, "/session/state"),
                text(answer, "/self/agent_name"),
                text(answer, "/workspace/id"),
                if leases.is_empty() {
                    "none".to_string()
                } else {
                    leases.join(", ")
                },
                answer
                    .pointer("/limits/max_children")
                    .unwrap_or(&Value::Null),
                answer
                    .pointer("/limits/max_spawn_depth")
                    .unwrap_or(&Value::Null),
                answer
                    .pointer("/limits/max_active_task_leases")
                    .unwrap_or(&Value::Null),
            )
        }
        Command::Claim(_) => match answer.get("claim").filter(|c| !c.is_null()) {
            Some(claim) => format!(
                "claimed run {} (attempt {}) of task {} \"{}\"\nlease until {}",
                text(claim, "/run/id"),
                claim.pointer("/run/attempt").unwrap_or(&Value::Null),
                text(claim, "/task/id"),
                text(claim, "/task/title"),
                text(claim, "/lease/lease_until"),
            ),
            None => text(answer, "/reason").to_string(),
        },
        Command::Heartbeat(_) | Command::Complete(_) | Command::Fail(_) | Command::Release(_) => {
            format!(
                "run {}: {} (lease until {})",
                text(answer, "/lease/run_id"),
                text(answer, "/lease/status"),
                text(answer, "/lease/lease_until"),
            )
        }
        Command::TaskRun(_) => format!(
            "run {} (attempt {}) of task {} \"{}\": {}\nsession {}",
            text(answer, "/run/run/id"),
            answer.pointer("/run/run/attempt").unwrap_or(&Value::Null),
            text(answer, "/run/task/id"),
            text(answer, "/run/task/title"),
            text(answer, "/run/run/status"),
            text(answer, "/run/run/session_id"),
        ),
        Command::Recv(_) => {
            let messages = answer["messages"].as_array().cloned().unwrap_or_default();
            if messages.is_empty() {
                return "no messages".into();
            }
            messages
                .iter()
                .map(|m| {
                    format!(
                        "{} {} [{}] {}: {}",
                        text(m, "/timestamp"),
                        text(m, "/message_id"),
                        text(m, "/metadata/message_kind"),
                        text(m, "/from_session_id"),
                        text(m, "/body/text"),
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        }
        Command::Send(_) | Command::Reply(_) => format!(
            "sent {} on {}",
            text(answer, "/message/message_id"),
            text(answer, "/message/channel_id")
        ),
        Command::Spawn(_) => format!(
            "spawned {} ({}), depth {}, ttl until {}",
            text(answer, "/spawn/session/id"),
            text(answer, "/spawn/session/agent_name"),
            answer
                .pointer("/spawn/lineage/spawn_depth")
                .unwrap_or(&Value::Null),
            text(answer, "/spawn/lineage/ttl_expires_at"),
        ),
        _ => serde_json::to_string_pretty(answer).unwrap_or_default(),
    }
}

/// Prints a failed one-shot: a line on stderr always, and the JSON form on stdout in JSON mode.
pub fn report_error(err: &OneShotError, output: Output, out: &mut dyn Write) {
    eprintln!("error: {err}");
    // A rejected answer was already printed; a second JSON document would break the output.
    if output == Output::Json && !matches!(err, OneShotError::Rejected(_)) {
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&err.to_json()).unwrap_or_default()
        );
    }
}
