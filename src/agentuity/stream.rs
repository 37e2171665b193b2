//! A session's live event stream: `GET /hub/session/{id}/events` read as Server-Sent Events with
//! the one decoder ([`SseDecoder`]), each frame parsed into a [`StreamMessage`].

use std::collections::VecDeque;

use super::core::{AgentuityClient, seg};
use super::error::AgentuityError;
use super::types::StreamMessage;
use crate::util::sse::SseDecoder;

/// The largest single frame accepted: a hydration carries the conversation so far.
const MAX_FRAME_BYTES: usize = 8 * 1024 * 1024;

/// An open event stream of one session.
pub struct SessionStream {
    response: reqwest::Response,
    decoder: SseDecoder,
    ready: VecDeque<StreamMessage>,
    path: String,
}

/// Written by hand: the response's own `Debug` shows its URL, whose query carries the key.
impl std::fmt::Debug for SessionStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionStream")
            .field("path", &self.path)
            .field("status", &self.response.status())
            .field("ready", &self.ready.len())
            .finish_non_exhaustive()
    }
}

/// What reading the stream gave.
#[derive(Debug)]
pub enum StreamRead {
    /// A message.
    Message(StreamMessage),
    /// Bytes arrived that completed no message (a comment, a keep-alive, part of a frame): the
    /// stream is alive.
    Alive,
    /// The Hub closed the stream.
    Ended,
}

impl AgentuityClient {
    /// Opens the live event stream of session `id`. `subscribe` filters events by name, category
    /// or `prefix_*` (empty: the Hub's default observer events).
    pub async fn session_events(
        &self,
        id: &str,
        subscribe: &[String],
    ) -> Result<SessionStream, AgentuityError> {
        let path = format!("/session/{}/events", seg(id));
        let mut query = Vec::new();
        if !subscribe.is_empty() {
            query.push(("subscribe", subscribe.join(",")));
        }
        let response = self.open_stream(&path, &query).await?;
        Ok(SessionStream {
            response,
            decoder: SseDecoder::new(MAX_FRAME_BYTES),
            ready: VecDeque::new(),
            path: format!("/api/hub{path}"),
        })
    }
}

impl SessionStream {
    /// The next thing the stream says. Cancel-safe: a message decoded but not yet returned is
    /// kept for the next call. Frames whose data is not JSON are skipped.
    pub async fn next(&mut self) -> Result<StreamRead, AgentuityError> {
        if let Some(message) = self.ready.pop_front() {
            return Ok(StreamRead::Message(message));
        }
        let broken = |message: String| AgentuityError::Transport {
            method: "GET".into(),
            path: self.path.clone(),
            message,
            timeout: false,
        };
        let chunk = match self.response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => return Ok(StreamRead::Ended),
            Err(err) => return Err(broken(err.without_url().to_string())),
        };
        let events = self
            .decoder
            .feed(&chunk)
            .map_err(|err| broken(err.to_string()))?;
        for event in events {
            match StreamMessage::parse(&event.event, &event.data) {
                Some(message) => self.ready.push_back(message),
                None => {
                    tracing::debug!(frame = %event.event, "agentuity: a stream frame whose data is not JSON was skipped")
                }
            }
        }
        Ok(match self.ready.pop_front() {
            Some(message) => StreamRead::Message(message),
            None => StreamRead::Alive,
        })
    }
}
