//! A session's live event stream as the Hub serves it: Server-Sent Events, the session's
//! snapshot first, then whatever is sent on the returned sender (broadcast frames).

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::sync::mpsc;

use super::shapes::{snapshot, sse_frame};

/// The answer opening session `id`'s stream (its `detail` gives the snapshot), and the sender
/// whose bytes go out on it until the sender is dropped.
pub fn open(id: &str, detail: &Value) -> (mpsc::UnboundedSender<Bytes>, Response) {
    let (sender, receiver) = mpsc::unbounded_channel::<Bytes>();
    let _ = sender.send(Bytes::from(sse_frame("snapshot", &snapshot(id, detail))));
    let body = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver
            .recv()
            .await
            .map(|bytes| (Ok::<_, Infallible>(bytes), receiver))
    });
    let response = (
        [
            ("content-type", "text/event-stream"),
            ("cache-control", "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response();
    (sender, response)
}
