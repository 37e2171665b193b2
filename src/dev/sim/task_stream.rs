//! `GET /api/tasks/{id}/stream` as AGH serves it: `text/event-stream` headers flushed at once,
//! then for each event `id: <sequence>`, `event: <type>` and `data: <JSON>` lines and a blank
//! line; no comments, no keep-alives, no `retry:` (`internal/api/core/sse.go` ~20-123,
//! `internal/api/core/tasks.go` ~853-911). The history after the cursor comes first, then live
//! events until the subscriber is dropped (a full buffer) or the server cuts its connections.

use std::collections::VecDeque;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::errors::SimError;
use super::faults::Route;
use super::requests::StreamCursor;
use super::{Inner, WaiterGuard};

/// Opens the stream of `task_id` after `cursor`; the response streams until it ends.
pub(crate) fn respond(
    inner: &Arc<Inner>,
    task_id: &str,
    cursor: StreamCursor,
    kill: CancellationToken,
) -> Result<Response, SimError> {
    let (backlog, live) = inner.state().subscribe_task_events(
        task_id,
        cursor.after_sequence,
        cursor.last_event_id,
    )?;
    let served = Served {
        backlog: backlog.into(),
        live,
        kill,
        _open: inner.waiter(Route::TaskStream),
    };
    let frames = futures_util::stream::unfold(served, |mut served| async move {
        let event = match served.backlog.pop_front() {
            Some(event) => event,
            None => tokio::select! {
                event = served.live.recv() => event?,
                () = served.kill.cancelled() => return None,
            },
        };
        Some((Ok::<_, std::io::Error>(frame(&event)), served))
    });
    let mut response = Response::new(Body::from_stream(frames));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("X-Accel-Buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// What one served stream holds: its backlog, its subscription, the server's kill switch and
/// its place in the count of open streams.
struct Served {
    backlog: VecDeque<Value>,
    live: mpsc::Receiver<Value>,
    kill: CancellationToken,
    _open: WaiterGuard,
}

/// One event in AGH's framing.
fn frame(event: &Value) -> Bytes {
    let sequence = event["sequence"].as_i64().unwrap_or(0);
    let name = event["type"].as_str().unwrap_or("");
    let data = super::http::go_json_text(event);
    Bytes::from(format!("id: {sequence}\nevent: {name}\ndata: {data}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_event_is_framed_with_its_sequence_type_and_json_data() {
        let event = json!({"sequence": 12, "type": "task.paused", "timeline": {"payload": {"reason": "a<b"}}});
        let text = String::from_utf8(frame(&event).to_vec()).unwrap();
        assert_eq!(
            text,
            "id: 12\nevent: task.paused\ndata: {\"sequence\":12,\"type\":\"task.paused\",\"timeline\":{\"payload\":{\"reason\":\"a\\u003cb\"}}}\n\n"
        );
    }
}
