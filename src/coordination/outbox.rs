//! The outbox: [`Coordination`] is the [`EventSink`] that turns
//! what handlers report into channel messages and spawns, and registers each run's inbound queue
//! with the channel listener ([`super::listener`]).
//!
//! - `Progress` → a `send` of `message_kind: status`, throttled and coalesced per run (at most one
//!   per `coordination.progress_interval_ms`; the latest text wins; the last pending progress of a
//!   run is **flushed** when the run ends, because the final status is the one peers need).
//! - `Message{kind}` → a `send` of that kind; `Reply` → a `reply` to the message named.
//! - `Spawn` → the [`Spawner`], answered on the handler's oneshot.
//!
//! Sends never hold up the handler: each run has a bounded queue drained by its own task. Every
//! send carries complete metadata (`task_id`, `run_id`, `coordination_channel_id`,
//! `message_kind`, `correlation_id` = run id) and an idempotency key, so the client's retry of a
//! send cannot duplicate it. A session can only send on its own channel: a 404 is logged once per
//! run, and the rest of that run's messages go only to the log.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use super::api::CoordinationApi;
use super::listener::{Listener, ListenerSettings};
use super::runs::{OUTBOX_CAPACITY, OutboxQueue, Outgoing, Runs};
use super::spawner::{RunClock, SpawnSettings, Spawner};
use crate::api::types::{ChannelMessage, MessageKind, MessageMetadata, ReplyRequest, SendRequest};
use crate::api::{ApiError, ErrorKind};
use crate::config::Config;
use crate::handler::{HandlerEvent, TaskDocument};
use crate::util::time::sleep_until_option;
use crate::worker::{EventSink, Shutdown, StatusBoard};
use tracing::Instrument as _;

/// Settings of the event sink and the spawner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoordinationSettings {
    /// At most one progress send per run per interval.
    pub progress_interval: Duration,
    pub spawn: SpawnSettings,
}

impl Default for CoordinationSettings {
    fn default() -> Self {
        CoordinationSettings {
            progress_interval: Duration::from_secs(1),
            spawn: SpawnSettings::default(),
        }
    }
}

impl CoordinationSettings {
    pub fn from_config(config: &Config) -> Self {
        CoordinationSettings {
            progress_interval: config.coordination.progress_interval(),
            spawn: SpawnSettings {
                max_child_ttl_seconds: config.coordination.max_child_ttl_seconds,
                spawn_timeout: config.coordination.spawn_timeout(),
            },
        }
    }
}

/// Who a run's messages are from and where they go.
#[derive(Clone, Debug)]
struct RunIdentity {
    run_id: String,
    task_id: String,
    channel: Option<String>,
}

struct Shared<A> {
    api: Arc<A>,
    status: StatusBoard,
    settings: CoordinationSettings,
    /// Per-process part of idempotency keys: a run adopted after a restart starts its sequence
    /// again, and the daemon would silently drop a message whose key it has seen.
    nonce: String,
    /// The own-channel 404 is a warning the first time in this process, then info per run.
    warned_not_found: AtomicBool,
}

/// The event sink of the worker: channel messages, progress and spawns for handlers.
pub struct Coordination<A> {
    shared: Arc<Shared<A>>,
    /// The runs in hand (shared with the listener).
    runs: Arc<Runs>,
    spawner: Arc<Spawner<A>>,
    tasks: TaskTracker,
}

impl<A> std::fmt::Debug for Coordination<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordination")
            .field("settings", &self.shared.settings)
            .field("runs", &self.runs)
            .finish_non_exhaustive()
    }
}

impl<A: CoordinationApi> Coordination<A> {
    pub fn new(api: Arc<A>, status: StatusBoard, settings: CoordinationSettings) -> Self {
        let spawner = Arc::new(Spawner::new(
            api.clone(),
            status.clone(),
            settings.spawn.clone(),
        ));
        Coordination {
            shared: Arc::new(Shared {
                api,
                status,
                settings,
                nonce: format!("{:08x}", fastrand::u32(..)),
                warned_not_found: AtomicBool::new(false),
            }),
            runs: Arc::new(Runs::default()),
            spawner,
            tasks: TaskTracker::new(),
        }
    }

    /// The listener that feeds this sink's runs; run it on its own task.
    pub fn listener(&self, settings: ListenerSettings, shutdown: Shutdown) -> Listener<A> {
        Listener::new(
            self.shared.api.clone(),
            self.runs.clone(),
            settings,
            self.shared.status.clone(),
            shutdown,
        )
    }

    /// The runs in hand.
    pub fn runs(&self) -> &Arc<Runs> {
        &self.runs
    }

    pub fn spawner(&self) -> &Arc<Spawner<A>> {
        &self.spawner
    }

    /// Waits (at most `within`) for the sends of ended runs to go out. Call at exit.
    pub async fn flush(&self, within: Duration) -> bool {
        self.tasks.close();
        let done = tokio::time::timeout(within, self.tasks.wait())
            .await
            .is_ok();
        if !done {
            tracing::warn!(
                within_ms = within.as_millis() as u64,
                "some channel messages were still being sent at exit; dropped"
            );
        }
        done
    }

    fn enqueue(&self, document: &TaskDocument, item: Outgoing) {
        let sent = self
            .runs
            .with(&document.run_id, |entry| entry.outbox.try_send(item));
        match sent {
            Some(Ok(())) => {}
            Some(Err(mpsc::error::TrySendError::Full(item))) => {
                self.shared.status.message_send_failed();
                tracing::warn!(run_id = %document.run_id, ?item, capacity = OUTBOX_CAPACITY, "too many channel messages waiting to be sent; dropped one");
            }
            Some(Err(mpsc::error::TrySendError::Closed(_))) | None => {
                tracing::debug!(run_id = %document.run_id, "the run has ended; message only logged");
            }
        }
    }
}

impl<A: CoordinationApi> EventSink for Coordination<A> {
    fn run_started(&self, document: &TaskDocument, inbound: mpsc::Sender<ChannelMessage>) {
        let identity = RunIdentity {
            run_id: document.run_id.clone(),
            task_id: document.task_id.clone(),
            channel: document.coordination_channel_id().map(str::to_string),
        };
        if identity.channel.is_none() {
            tracing::info!(run_id = %identity.run_id, "the run has no coordination channel; its messages go only to the log");
        }
        let clock = RunClock {
            started: Instant::now(),
            time_limit: document.deadline_seconds.map(Duration::from_secs),
        };
        let outbox = self
            .runs
            .register(&identity.run_id, identity.channel.clone(), inbound, clock);
        let sender = RunSender {
            shared: self.shared.clone(),
            run: identity,
            seq: 0,
            muted: false,
        };
        self.tasks
            .spawn(run_outbox(sender, outbox).in_current_span());
    }

    fn run_ended(&self, run_id: &str) {
        self.runs.unregister(run_id);
    }

    async fn handle(&self, document: &TaskDocument, event: HandlerEvent) {
        let run_id = document.run_id.as_str();
        match event {
            HandlerEvent::Progress(text) => {
                tracing::info!(run_id, progress = %text, "handler progress");
                if text.trim().is_empty() {
                    tracing::debug!(run_id, "empty progress not sent");
                    return;
                }
                let slot = self.runs.with(run_id, |entry| entry.progress.clone());
                if let Some(slot) = slot {
                    slot.put(text);
                }
            }
            HandlerEvent::Message { kind, text } => {
                tracing::info!(run_id, kind = %kind, text = %text, "handler message");
                if text.trim().is_empty() {
                    tracing::warn!(run_id, kind = %kind, "a message with empty text cannot be sent; ignored");
                    return;
                }
                self.enqueue(document, Outgoing::Message { kind, text });
            }
            HandlerEvent::Reply {
                to_message_id,
                text,
            } => {
                tracing::info!(run_id, to = %to_message_id, text = %text, "handler reply");
                if text.trim().is_empty() || to_message_id.trim().is_empty() {
                    tracing::warn!(run_id, to = %to_message_id, "a reply needs a message id and non-empty text; ignored");
                    return;
                }
                self.enqueue(
                    document,
                    Outgoing::Reply {
                        to_message_id,
                        text,
                    },
                );
            }
            HandlerEvent::Spawn { ask, answer } => {
                let clock = self
                    .runs
                    .with(run_id, |entry| entry.clock)
                    .unwrap_or(RunClock {
                        started: Instant::now(),
                        time_limit: document.deadline_seconds.map(Duration::from_secs),
                    });
                let spawner = self.spawner.clone();
                let run_id = run_id.to_string();
                // The spawn call must not hold up the handler's other events.
                tokio::spawn(
                    async move {
                        let decided = spawner.spawn(&run_id, clock, *ask).await;
                        let _ = answer.send(decided);
                    }
                    .in_current_span(),
                );
            }
        }
    }
}

/// Drains one run's outbox: messages and replies in order, progress at most once per interval.
async fn run_outbox<A: CoordinationApi>(mut sender: RunSender<A>, outbox: OutboxQueue) {
    let OutboxQueue {
        mut queue,
        progress,
    } = outbox;
    let interval = sender.shared.settings.progress_interval;
    let mut last_progress: Option<Instant> = None;
    loop {
        let due = progress
            .is_pending()
            .then(|| last_progress.map_or_else(Instant::now, |at| at + interval));
        tokio::select! {
            biased;
            item = queue.recv() => match item {
                Some(Outgoing::Message { kind, text }) => sender.send(kind, text).await,
                Some(Outgoing::Reply { to_message_id, text }) => sender.reply(to_message_id, text).await,
                None => break,
            },
            _ = sleep_until_option(due) => {
                if let Some(text) = progress.take() {
                    last_progress = Some(Instant::now());
                    sender.send(MessageKind::Status, text).await;
                }
            }
            _ = progress.notify.notified() => {}
        }
    }
    if let Some(text) = progress.take() {
        sender.send(MessageKind::Status, text).await;
    }
}

/// Sends for one run.
struct RunSender<A> {
    shared: Arc<Shared<A>>,
    run: RunIdentity,
    seq: u64,
    /// The daemon refused the run's channel (404 own-channel rule, or 503): log only from now.
    muted: bool,
}

impl<A: CoordinationApi> RunSender<A> {
    fn next_key(&mut self) -> String {
        self.seq += 1;
        format!("{}-{}-{}", self.run.run_id, self.shared.nonce, self.seq)
    }

    fn metadata(&self, kind: MessageKind, channel: &str) -> MessageMetadata {
        MessageMetadata {
            task_id: self.run.task_id.clone(),
            run_id: self.run.run_id.clone(),
            workflow_id: None,
            coordination_channel_id: channel.to_string(),
            message_kind: kind,
            correlation_id: self.run.run_id.clone(),
            ext: None,
        }
    }

    async fn send(&mut self, kind: MessageKind, text: String) {
        let Some(channel) = self.run.channel.clone() else {
            return;
        };
        if self.muted {
            return;
        }
        let request = SendRequest {
            body: json!({ "text": text }),
            metadata: self.metadata(kind.clone(), &channel),
            idempotency_key: Some(self.next_key()),
        };
        match self.shared.api.send(&channel, &request).await {
            Ok(_) => self.shared.status.message_sent(),
            Err(err) => {
                self.shared.status.message_send_failed();
                self.after_send_error(&channel, &kind, &err);
            }
        }
    }

    fn after_send_error(&mut self, channel: &str, kind: &MessageKind, err: &ApiError) {
        let run_id = self.run.run_id.as_str();
        match err.kind {
            ErrorKind::NotFound | ErrorKind::ServiceUnavailable => {
                self.muted = true;
                let first_in_process = !self.shared.warned_not_found.swap(true, Ordering::Relaxed);
                let why = if err.kind == ErrorKind::NotFound {
                    "a session can only send on its own channel"
                } else {
                    "the daemon's network is unavailable"
                };
                if first_in_process {
                    tracing::warn!(run_id, channel, error = %err, "cannot send on the run's coordination channel ({why}); this run's messages go only to the log");
                } else {
                    tracing::info!(run_id, channel, error = %err, "cannot send on the run's coordination channel ({why}); this run's messages go only to the log");
                }
            }
            _ => {
                tracing::warn!(run_id, channel, kind = %kind, error = %err, "a channel message could not be sent");
            }
        }
    }

    async fn reply(&mut self, to_message_id: String, text: String) {
        // Without a coordination channel the reply inherits the source message's metadata.
        let metadata = self
            .run
            .channel
            .clone()
            .map(|channel| self.metadata(MessageKind::Reply, &channel));
        let request = ReplyRequest {
            reply_to_message_id: to_message_id.clone(),
            body: json!({ "text": text }),
            metadata,
            idempotency_key: Some(self.next_key()),
        };
        match self.shared.api.reply(&request).await {
            Ok(_) => self.shared.status.message_sent(),
            Err(err) => {
                // A 404 here is about the source message or its sender, not the run: replies to
                // other messages may still work, so nothing is muted.
                self.shared.status.message_send_failed();
                tracing::warn!(run_id = %self.run.run_id, to = %to_message_id, error = %err, "a reply could not be sent");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::{Claim, TaskRun};
    use crate::coordination::api::fake::FakeApi;
    use crate::util::sync::lock;

    fn document(channel: Option<&str>) -> TaskDocument {
        TaskDocument::new(
            Claim {
                run: TaskRun {
                    id: "run-1".into(),
                    task_id: Some("task-1".into()),
                    coordination_channel_id: channel.map(str::to_string),
                    ..Default::default()
                },
                ..Default::default()
            },
            None,
            None,
        )
    }

    fn sink(api: &Arc<FakeApi>, interval: Duration) -> Coordination<FakeApi> {
        Coordination::new(
            api.clone(),
            StatusBoard::default(),
            CoordinationSettings {
                progress_interval: interval,
                spawn: SpawnSettings::default(),
            },
        )
    }

    #[tokio::test(start_paused = true)]
    async fn steady_progress_is_sent_at_most_once_per_interval_with_the_latest_text() {
        let api = Arc::new(FakeApi::default());
        let sink = sink(&api, Duration::from_secs(1));
        let document = document(Some("builders"));
        sink.run_started(&document, mpsc::channel(1).0);
        // Ten seconds of progress, ten lines a second.
        for step in 1..=100 {
            sink.handle(&document, HandlerEvent::Progress(format!("step {step}")))
                .await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        sink.run_ended(&document.run_id);
        assert!(sink.flush(Duration::from_secs(5)).await);
        let texts = api.sent_texts();
        assert!(
            (10..=12).contains(&texts.len()),
            "{} sends: {texts:?}",
            texts.len()
        );
        assert_eq!(texts.last().map(String::as_str), Some("step 100"));
        let sends = lock(&api.sends);
        let keys: std::collections::HashSet<_> =
            sends.iter().map(|s| s.idempotency_key.clone()).collect();
        assert_eq!(keys.len(), sends.len(), "idempotency keys repeat");
        assert!(
            sends
                .iter()
                .all(|s| s.metadata.message_kind == MessageKind::Status
                    && s.metadata.run_id == "run-1"
                    && s.metadata.task_id == "task-1"
                    && s.metadata.coordination_channel_id == "builders"
                    && s.metadata.correlation_id == "run-1")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_without_a_coordination_channel_sends_nothing() {
        let api = Arc::new(FakeApi::default());
        let sink = sink(&api, Duration::from_millis(100));
        let document = document(None);
        sink.run_started(&document, mpsc::channel(1).0);
        sink.handle(&document, HandlerEvent::Progress("quiet".into()))
            .await;
        sink.run_ended(&document.run_id);
        assert!(sink.flush(Duration::from_secs(5)).await);
        assert!(api.sent_texts().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_404_mutes_the_run_after_one_attempt() {
        let api = Arc::new(FakeApi::default());
        *lock(&api.send_error) = Some(ApiError::from_response(
            "send",
            404,
            br#"{"error":"network: local peer not found: session=s channel=builders"}"#,
        ));
        let sink = sink(&api, Duration::from_millis(100));
        let document = document(Some("builders"));
        sink.run_started(&document, mpsc::channel(1).0);
        for step in 0..20 {
            sink.handle(&document, HandlerEvent::Progress(format!("{step}")))
                .await;
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        sink.run_ended(&document.run_id);
        assert!(sink.flush(Duration::from_secs(5)).await);
        assert_eq!(
            sink.shared.status.snapshot().counters.message_send_failures,
            1
        );
    }
}
