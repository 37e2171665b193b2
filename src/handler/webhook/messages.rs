//! Inbound channel messages forwarded to the sidecar's `messages_url` while a task runs: one
//! POST each, signed like the task, never retried, a bounded number in flight.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::answer::status_text;
use super::signing::SigningKey;
use super::{
    LOG_TARGET, MESSAGE_ID_HEADER, Prepared, RUN_ID_HEADER, SIGNATURE_HEADER, TASK_ID_HEADER,
};
use crate::api::types::ChannelMessage;
use crate::handler::{TaskDocument, message_json};
use crate::util::error;

/// Forwarded messages in flight at once; more are dropped (logged) rather than queued without end.
const MESSAGE_POSTS_IN_FLIGHT: usize = 8;
/// A forwarded message that takes longer than this is abandoned (logged): it is not retried anyway.
const MESSAGE_POST_TIMEOUT: Duration = Duration::from_secs(10);

/// Forwards inbound messages while the exchange runs; never returns (the exchange decides when the
/// run ends, and dropping this aborts posts still in flight: nothing outlives the run).
pub(super) async fn forward_messages(
    prepared: &Prepared,
    document: &TaskDocument,
    inbound: &mut mpsc::Receiver<ChannelMessage>,
) -> std::convert::Infallible {
    let mut posts = JoinSet::new();
    let shared = prepared.messages.as_ref().map(|url| {
        Arc::new(MessagePoster {
            client: prepared.client.clone(),
            url: url.clone(),
            headers: prepared.headers.clone(),
            key: prepared.key.clone(),
            run_id: document.run_id.clone(),
            task_id: document.task_id.clone(),
        })
    });
    loop {
        tokio::select! {
            message = inbound.recv() => {
                let Some(message) = message else { break };
                let Some(poster) = &shared else {
                    tracing::debug!(
                        target: LOG_TARGET,
                        run_id = %document.run_id,
                        message_id = %message.message_id,
                        kind = message.metadata.as_ref().map(|m| m.message_kind.as_str()),
                        text = message.text(),
                        "inbound message (no messages_url: not forwarded)"
                    );
                    continue;
                };
                if posts.len() >= MESSAGE_POSTS_IN_FLIGHT {
                    tracing::warn!(
                        target: LOG_TARGET,
                        run_id = %document.run_id,
                        message_id = %message.message_id,
                        "inbound message dropped: {MESSAGE_POSTS_IN_FLIGHT} forwards are still in flight"
                    );
                    continue;
                }
                posts.spawn(Arc::clone(poster).post(message));
            }
            Some(_) = posts.join_next(), if !posts.is_empty() => {}
        }
    }
    while posts.join_next().await.is_some() {}
    std::future::pending().await
}

/// What a forwarded message needs, owned so each post can run as its own task.
struct MessagePoster {
    client: reqwest::Client,
    url: Url,
    headers: HeaderMap,
    key: Option<SigningKey>,
    run_id: String,
    task_id: String,
}

impl MessagePoster {
    /// One POST, not retried; a failure is logged and otherwise ignored.
    async fn post(self: Arc<Self>, message: ChannelMessage) {
        let body = message_json(&message).to_string().into_bytes();
        let mut headers = self.headers.clone();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, text) in [
            (RUN_ID_HEADER, &self.run_id),
            (TASK_ID_HEADER, &self.task_id),
            (MESSAGE_ID_HEADER, &message.message_id),
        ] {
            if let Ok(value) = HeaderValue::from_str(text) {
                headers.insert(name, value);
            }
        }
        if let Some(key) = &self.key
            && let Some(signature) = key.sign(&body)
        {
            headers.insert(SIGNATURE_HEADER, signature);
        }
        let sent = tokio::time::timeout(
            MESSAGE_POST_TIMEOUT,
            self.client
                .post(self.url.clone())
                .headers(headers)
                .body(body)
                .send(),
        )
        .await;
        match sent {
            Ok(Ok(response)) if response.status().is_success() => {
                tracing::debug!(target: LOG_TARGET, run_id = %self.run_id, message_id = %message.message_id, "message forwarded");
            }
            Ok(Ok(response)) => tracing::warn!(
                target: LOG_TARGET,
                run_id = %self.run_id,
                message_id = %message.message_id,
                url = %self.url,
                "forwarding a message: the sidecar answered HTTP {}",
                status_text(response.status())
            ),
            Ok(Err(err)) => tracing::warn!(
                target: LOG_TARGET,
                run_id = %self.run_id,
                message_id = %message.message_id,
                url = %self.url,
                "forwarding a message failed: {}",
                error::chain(&err)
            ),
            Err(_) => tracing::warn!(
                target: LOG_TARGET,
                run_id = %self.run_id,
                message_id = %message.message_id,
                url = %self.url,
                "forwarding a message took longer than {} s: abandoned",
                MESSAGE_POST_TIMEOUT.as_secs()
            ),
        }
    }
}
