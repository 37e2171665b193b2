//! `GET /api/tasks/{id}/stream`: a task's live events over Server-Sent Events, on the same
//! transports and with the same identity headers as every other call.
//!
//! The stream is long-lived: only the connection and the answer's headers are under a deadline
//! (AGH flushes its headers at once, `internal/api/core/sse.go` ~20-35), never the body. AGH sends
//! no keep-alives, so a quiet task is a silent stream, not a dead one. Each event is bounded in
//! size (`agh.max_response_bytes`) by the one SSE decoder, `util::sse`.

use std::collections::VecDeque;

use tokio::sync::mpsc;

use super::client::{AghClient, path_segment, read_capped, transport_error};
use super::counters::CLASS_OK;
use super::error::{ApiError, ErrorKind};
use super::types::TaskStreamEvent;
use crate::util::sse::SseDecoder;

const CALL: &str = "task-stream";

/// An open task stream: its events in order, until it ends.
pub struct TaskEventStream {
    source: Source,
}

enum Source {
    Http(Box<HttpSource>),
    /// Events handed in by a test double.
    Channel(mpsc::Receiver<Result<TaskStreamEvent, ApiError>>),
}

struct HttpSource {
    response: reqwest::Response,
    decoder: SseDecoder,
    ready: VecDeque<Result<TaskStreamEvent, ApiError>>,
}

impl std::fmt::Debug for TaskEventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskEventStream").finish_non_exhaustive()
    }
}

impl TaskEventStream {
    /// A stream fed by `events` (a fake daemon's): it ends when the sender is dropped.
    pub fn from_channel(events: mpsc::Receiver<Result<TaskStreamEvent, ApiError>>) -> Self {
        TaskEventStream {
            source: Source::Channel(events),
        }
    }

    /// The next event; `Ok(None)` when the daemon ended the stream. An event whose data is not
    /// an event is an `Err` of kind `MalformedBody`, and the stream goes on after it; a transport
    /// failure or an oversized event ends it.
    pub async fn next(&mut self) -> Result<Option<TaskStreamEvent>, ApiError> {
        match &mut self.source {
            Source::Channel(events) => events.recv().await.transpose(),
            Source::Http(http) => loop {
                let HttpSource {
                    response,
                    decoder,
                    ready,
                } = &mut **http;
                if let Some(event) = ready.pop_front() {
                    return event.map(Some);
                }
                let chunk = response
                    .chunk()
                    .await
                    .map_err(|err| transport_error(CALL, &err))?;
                let Some(chunk) = chunk else {
                    return Ok(None);
                };
                let frames = decoder.feed(&chunk).map_err(|err| {
                    ApiError::local(
                        CALL,
                        ErrorKind::ResponseTooLarge,
                        format!("{err} (agh.max_response_bytes)"),
                    )
                })?;
                ready.extend(frames.iter().map(|frame| {
                    TaskStreamEvent::from_sse(frame).map_err(|err| {
                        ApiError::local(CALL, ErrorKind::MalformedBody, err.to_string())
                    })
                }));
            },
        }
    }
}

impl AghClient {
    /// Opens the event stream of `task_id`, resuming after the event `after` (sent both as
    /// `after_sequence` and as `Last-Event-ID`, which AGH prefers when both are present). With
    /// no cursor AGH replays the task's whole history first.
    pub async fn task_events(
        &self,
        task_id: &str,
        after: Option<i64>,
    ) -> Result<TaskEventStream, ApiError> {
        let mut path = format!(
            "/api/tasks/{}/stream",
            path_segment(CALL, "task id", task_id)?
        );
        if let Some(after) = after {
            path.push_str(&format!("?after_sequence={after}"));
        }
        let opened = self.open_stream(&path, after).await;
        self.count(
            CALL,
            match &opened {
                Ok(_) => CLASS_OK,
                Err(err) => err.kind.as_str(),
            },
        );
        opened
    }

    async fn open_stream(
        &self,
        path: &str,
        after: Option<i64>,
    ) -> Result<TaskEventStream, ApiError> {
        self.refuse_if_silenced(CALL)?;
        let mut request =
            self.request_accepting(reqwest::Method::GET, path, "text/event-stream")?;
        if let Some(after) = after {
            request = request.header("Last-Event-ID", after.to_string());
        }
        let timeout = self.options.request_timeout;
        let response = match tokio::time::timeout(timeout, request.send()).await {
            Ok(Ok(response)) => response,
            Ok(Err(err)) => return Err(transport_error(CALL, &err)),
            Err(_) => {
                return Err(ApiError::local(
                    CALL,
                    ErrorKind::Timeout,
                    format!(
                        "no answer to the stream request within {} ms",
                        timeout.as_millis()
                    ),
                ));
            }
        };
        let status = response.status().as_u16();
        if status != 200 {
            // An error answer is an ordinary bounded body.
            let cap = self.options.max_response_bytes;
            let body = match tokio::time::timeout(timeout, read_capped(CALL, response, cap)).await {
                Ok(Ok((_, body))) => body,
                Ok(Err(err)) => return Err(err),
                Err(_) => Vec::new(),
            };
            return Err(ApiError::from_response(CALL, status, &body));
        }
        Ok(TaskEventStream {
            source: Source::Http(Box::new(HttpSource {
                response,
                decoder: SseDecoder::resuming(
                    self.options.max_response_bytes,
                    after.map(|after| after.to_string()),
                ),
                ready: VecDeque::new(),
            })),
        })
    }
}
