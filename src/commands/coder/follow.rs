//! `agh-worker coder follow ID`: a session's live event stream for an operator, one line per
//! event (a table on a terminal, the SDK-shaped message as a JSON line otherwise), until the
//! session completes, fails or shuts down. A broken stream is reopened with the SDK's backoff
//! (from 1 s, doubling to 30 s), at most [`MAX_REOPENS`] times in a row.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

use super::exit_code;
use crate::agentuity::{AgentuityClient, StreamMessage, StreamRead};
use crate::exit;
use crate::util::backoff::Backoff;

/// Reopens in a row before giving up (the SDK's `maxReconnectAttempts`).
const MAX_REOPENS: u32 = 10;
/// The widest DETAIL column.
const DETAIL_CHARS: usize = 80;

pub(super) async fn follow(
    client: &AgentuityClient,
    id: &str,
    subscribe: &[String],
    table: bool,
) -> ExitCode {
    let mut backoff =
        Backoff::new(Duration::from_secs(1), Duration::from_secs(30)).with_jitter(0.5, 1.0);
    let mut failures = 0;
    if table {
        println!("{:<8}  {:<22}  {:<12}  DETAIL", "TIME", "EVENT", "AGENT");
    }
    loop {
        match client.session_events(id, subscribe).await {
            Ok(mut stream) => loop {
                match stream.next().await {
                    Ok(StreamRead::Message(message)) => {
                        failures = 0;
                        backoff.reset();
                        print_line(&message, table);
                        match message.name() {
                            "session_complete" | "session_shutdown" => return ExitCode::SUCCESS,
                            "session_error" => return ExitCode::FAILURE,
                            _ => {}
                        }
                    }
                    Ok(StreamRead::Alive) => {}
                    Ok(StreamRead::Ended) => {
                        eprintln!("agh-worker: the hub closed the stream; reopening it");
                        break;
                    }
                    Err(err) => {
                        eprintln!("agh-worker: the stream broke: {err}; reopening it");
                        break;
                    }
                }
            },
            Err(err) if err.is_gone() || err.is_fatal() => {
                eprintln!("agh-worker: {err}");
                return ExitCode::from(exit_code(&err));
            }
            Err(err) => eprintln!("agh-worker: {err}"),
        }
        failures += 1;
        if failures > MAX_REOPENS {
            eprintln!("agh-worker: the stream could not be reopened {MAX_REOPENS} times in a row");
            return ExitCode::from(exit::UNAVAILABLE);
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

fn print_line(message: &StreamMessage, table: bool) {
    let line = if table {
        row(message)
    } else {
        message.to_value().to_string()
    };
    let mut out = std::io::stdout().lock();
    // A closed pipe (`| head`) ends the output, not the command with a panic.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// `TIME  EVENT  AGENT  DETAIL` of one message.
fn row(message: &StreamMessage) -> String {
    let (time, agent, detail) = match message {
        StreamMessage::Broadcast(b) => (
            b.timestamp.map(clock).unwrap_or_default(),
            b.agent().unwrap_or("").to_string(),
            detail(
                &b.data,
                &[
                    "toolName",
                    "currentTool",
                    "status",
                    "error",
                    "summary",
                    "result",
                    "taskId",
                ],
            ),
        ),
        StreamMessage::Snapshot(fields) => (
            String::new(),
            String::new(),
            detail(fields, &["status", "label"]),
        ),
        StreamMessage::Presence(fields) => (
            fields
                .get("timestamp")
                .and_then(Value::as_i64)
                .map(clock)
                .unwrap_or_default(),
            String::new(),
            fields
                .get("participant")
                .and_then(|p| p.get("role"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        ),
        StreamMessage::Hydration(fields) => (
            String::new(),
            String::new(),
            format!(
                "{} entries",
                fields
                    .get("entries")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len)
            ),
        ),
        StreamMessage::Other { .. } => (String::new(), String::new(), String::new()),
    };
    format!("{time:<8}  {:<22}  {agent:<12}  {detail}", message.name())
}

/// `key=value` of the first of `keys` present, cut to [`DETAIL_CHARS`].
fn detail(fields: &serde_json::Map<String, Value>, keys: &[&str]) -> String {
    let text = keys
        .iter()
        .find_map(|key| {
            let value = fields.get(*key).filter(|v| !v.is_null())?;
            Some(match value {
                Value::String(text) => format!("{key}={text}"),
                other => format!("{key}={other}"),
            })
        })
        .unwrap_or_default();
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() > DETAIL_CHARS {
        flat.chars().take(DETAIL_CHARS).collect::<String>() + "…"
    } else {
        flat
    }
}

/// `HH:MM:SS` (UTC) of Unix milliseconds.
fn clock(millis: i64) -> String {
    let seconds = millis.div_euclid(1000).rem_euclid(86_400);
    format!(
        "{:02}:{:02}:{:02}",
        seconds / 3600,
        seconds % 3600 / 60,
        seconds % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broadcast_row_shows_its_time_event_agent_and_first_detail() {
        let message = StreamMessage::parse(
            "broadcast",
            r#"{"event":"tool_execution_start","data":{"agentName":"lead","toolName":"bash"},"category":"tool","sessionId":"s","timestamp":3723000}"#,
        )
        .expect("a message");
        let row = row(&message);
        assert!(row.starts_with("01:02:03  tool_execution_start"), "{row}");
        assert!(
            row.contains("lead") && row.ends_with("toolName=bash"),
            "{row}"
        );
    }
}
