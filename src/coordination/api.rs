//! The AGH calls the coordination layer makes, as a trait: the real client implements it, unit
//! tests use the in-memory fake below on paused time.

use std::future::Future;

use std::time::Duration;

use crate::api::types::{
    ChannelMessage, CoordinatorConfig, Me, ReplyRequest, SendRequest, SpawnRequest, Spawned,
    SpawnedSession,
};
use crate::api::{AghClient, ApiError, RecvOptions};

/// The AGH calls the coordination layer makes. The real client implements it; unit tests use
/// fakes, as the worker does with [`crate::worker::AghApi`].
pub trait CoordinationApi: Send + Sync + 'static {
    /// `recv?wait=true` under the client's long-poll deadline; the deadline answers `[]`.
    fn recv_wait(
        &self,
        channel: &str,
    ) -> impl Future<Output = Result<Vec<ChannelMessage>, ApiError>> + Send;
    fn send(
        &self,
        channel: &str,
        request: &SendRequest,
    ) -> impl Future<Output = Result<ChannelMessage, ApiError>> + Send;
    fn reply(
        &self,
        request: &ReplyRequest,
    ) -> impl Future<Output = Result<ChannelMessage, ApiError>> + Send;
    /// One spawn call under `timeout` (`coordination.spawn_timeout_seconds`).
    fn spawn(
        &self,
        request: &SpawnRequest,
        timeout: Duration,
    ) -> impl Future<Output = Result<Spawned, ApiError>> + Send;
    /// The sessions AGH lists whose `lineage.parent_session_id` is this session.
    fn children(&self) -> impl Future<Output = Result<Vec<SpawnedSession>, ApiError>> + Send;
    fn me(&self) -> impl Future<Output = Result<Me, ApiError>> + Send;
    fn coordinator_config(
        &self,
    ) -> impl Future<Output = Result<CoordinatorConfig, ApiError>> + Send;
}

impl CoordinationApi for AghClient {
    fn recv_wait(
        &self,
        channel: &str,
    ) -> impl Future<Output = Result<Vec<ChannelMessage>, ApiError>> + Send {
        // No limit: the queue is bounded (100) by the daemon, and a limit would hide newer
        // messages behind stuck older ones (recv answers oldest first).
        AghClient::recv(
            self,
            channel,
            RecvOptions {
                wait: true,
                limit: None,
            },
        )
    }
    fn send(
        &self,
        channel: &str,
        request: &SendRequest,
    ) -> impl Future<Output = Result<ChannelMessage, ApiError>> + Send {
        AghClient::send(self, channel, request)
    }
    fn reply(
        &self,
        request: &ReplyRequest,
    ) -> impl Future<Output = Result<ChannelMessage, ApiError>> + Send {
        AghClient::reply(self, request)
    }
    fn spawn(
        &self,
        request: &SpawnRequest,
        timeout: Duration,
    ) -> impl Future<Output = Result<Spawned, ApiError>> + Send {
        AghClient::spawn(self, request, timeout)
    }
    async fn children(&self) -> Result<Vec<SpawnedSession>, ApiError> {
        let me = self.identity().session_id.as_str();
        let sessions = AghClient::sessions(self).await?;
        Ok(sessions
            .into_iter()
            .filter(|session| {
                session
                    .lineage
                    .as_ref()
                    .and_then(|lineage| lineage.parent_session_id.as_deref())
                    == Some(me)
            })
            .collect())
    }
    fn me(&self) -> impl Future<Output = Result<Me, ApiError>> + Send {
        AghClient::me(self)
    }
    fn coordinator_config(
        &self,
    ) -> impl Future<Output = Result<CoordinatorConfig, ApiError>> + Send {
        AghClient::coordinator_config(self)
    }
}

/// An in-memory [`CoordinationApi`] for unit tests on paused time.
#[cfg(test)]
pub(crate) mod fake {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::api::ErrorKind;
    use crate::util::sync::lock;

    /// Answers every spawn with a transport error (the daemon never reached) and lists no
    /// children. Answers every recv with `queued` (at once when something is queued, after `long_poll`
    /// with `[]` otherwise, like a waiting recv that reaches the client's deadline) and records
    /// every send.
    #[derive(Default)]
    pub(crate) struct FakeApi {
        pub queued: Mutex<Vec<ChannelMessage>>,
        pub long_poll: Duration,
        pub recvs: AtomicUsize,
        /// When each recv was asked, in (paused) tokio time.
        pub recv_times: Mutex<Vec<tokio::time::Instant>>,
        pub sends: Mutex<Vec<SendRequest>>,
        pub send_error: Mutex<Option<ApiError>>,
        pub spawns: AtomicUsize,
        pub children_listed: AtomicUsize,
    }

    impl FakeApi {
        pub(crate) fn recv_count(&self) -> usize {
            self.recvs.load(Ordering::SeqCst)
        }

        pub(crate) fn sent_texts(&self) -> Vec<String> {
            lock(&self.sends)
                .iter()
                .filter_map(|s| s.body["text"].as_str().map(str::to_string))
                .collect()
        }
    }

    impl CoordinationApi for FakeApi {
        async fn recv_wait(&self, _channel: &str) -> Result<Vec<ChannelMessage>, ApiError> {
            self.recvs.fetch_add(1, Ordering::SeqCst);
            lock(&self.recv_times).push(tokio::time::Instant::now());
            let queued = lock(&self.queued).clone();
            if queued.is_empty() {
                tokio::time::sleep(self.long_poll).await;
            }
            Ok(queued)
        }
        async fn send(
            &self,
            _channel: &str,
            request: &SendRequest,
        ) -> Result<ChannelMessage, ApiError> {
            if let Some(err) = lock(&self.send_error).clone() {
                return Err(err);
            }
            lock(&self.sends).push(request.clone());
            Ok(ChannelMessage::default())
        }
        async fn reply(&self, _request: &ReplyRequest) -> Result<ChannelMessage, ApiError> {
            Ok(ChannelMessage::default())
        }
        async fn spawn(
            &self,
            _request: &SpawnRequest,
            _timeout: Duration,
        ) -> Result<Spawned, ApiError> {
            self.spawns.fetch_add(1, Ordering::SeqCst);
            Err(ApiError::local(
                "spawn",
                ErrorKind::Transport,
                "not in this fake",
            ))
        }
        async fn children(&self) -> Result<Vec<SpawnedSession>, ApiError> {
            self.children_listed.fetch_add(1, Ordering::SeqCst);
            Ok(Vec::new())
        }
        async fn me(&self) -> Result<Me, ApiError> {
            Ok(Me::default())
        }
        async fn coordinator_config(&self) -> Result<CoordinatorConfig, ApiError> {
            Ok(CoordinatorConfig::default())
        }
    }
}
