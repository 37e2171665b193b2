//! The channel listener: long-polls `recv?wait=true` on the session channel and on the
//! coordination channel of each run in hand, dedupes by `message_id`, backs off when nothing is
//! new, and routes new messages to the handler of the run named in their metadata.
//!
//! `recv` is a peek (agh-protocol.md §5.1): it never removes anything, and a waiting `recv`
//! returns at once while *anything* is queued on the channel, including messages already seen and
//! envelopes the response then filters out. Asking again straight away would turn one stuck
//! message into a hot loop, so every answer is followed by a pause that starts at 250 ms and
//! doubles up to `coordination.recv_backoff_max_ms`, minus the time the request itself took (an
//! idle long-poll that ran to its deadline asks again at once). An answer with news restarts the
//! ramp but is still followed by its first pause: asking again at once would only return the
//! same queue, since one answer already holds everything queued.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod rules;

pub use rules::{RecvFailure, SeenIds, classify_recv_failure, remaining_pause};

use super::api::CoordinationApi;
use super::runs::{Delivery, Runs};
use crate::api::types::ChannelMessage;
use crate::config::Config;
use crate::util::backoff::Backoff;
use crate::util::sync::lock;
use crate::worker::{Shutdown, StatusBoard};
use tracing::Instrument as _;

/// How many message ids the listener remembers. The daemon's queue holds at most 100 messages
/// per session, so 4096 covers every id that can still be returned, with memory bounded.
pub const SEEN_IDS: usize = 4096;

/// First pause after an answer with nothing new.
pub const IDLE_BACKOFF_INITIAL: Duration = Duration::from_millis(250);

/// The listener's pacing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerSettings {
    /// The session's own channel, listened to for the whole life of the process.
    pub session_channel: Option<String>,
    /// First pause after an answer with nothing new.
    pub idle_backoff_initial: Duration,
    /// Longest pause after answers with nothing new.
    pub idle_backoff_max: Duration,
    /// First pause after a failed recv (jittered, doubling).
    pub error_backoff_initial: Duration,
    /// Longest pause after failed recvs.
    pub error_backoff_max: Duration,
    /// Probe interval while a channel answers 503 (network disabled) or refuses the channel.
    pub disabled_probe: Duration,
}

impl ListenerSettings {
    /// Settings from the configuration.
    pub fn from_config(config: &Config) -> Self {
        let channel = config.agh.session_channel.trim();
        ListenerSettings {
            session_channel: (!channel.is_empty()).then(|| channel.to_string()),
            idle_backoff_initial: IDLE_BACKOFF_INITIAL.min(config.coordination.recv_backoff_max()),
            idle_backoff_max: config.coordination.recv_backoff_max(),
            error_backoff_initial: config.retry.initial_backoff(),
            error_backoff_max: config.retry.max_backoff(),
            disabled_probe: config.coordination.network_disabled_probe(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The listener

/// The listener task: one poller per channel in use, started and stopped as runs come and go.
pub struct Listener<A> {
    api: Arc<A>,
    routes: Arc<Runs>,
    settings: ListenerSettings,
    status: StatusBoard,
    shutdown: Shutdown,
}

impl<A> std::fmt::Debug for Listener<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener").finish_non_exhaustive()
    }
}

struct Poller {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// What every poller shares.
struct PollerContext<A> {
    api: Arc<A>,
    routes: Arc<Runs>,
    settings: ListenerSettings,
    status: StatusBoard,
    /// Messages routed (or dropped for a full or closed queue): never handed over again.
    handled: Mutex<SeenIds>,
    /// Messages for no run in hand that were logged: logged once, still routable later.
    logged: Mutex<SeenIds>,
}

impl<A: CoordinationApi> Listener<A> {
    pub fn new(
        api: Arc<A>,
        routes: Arc<Runs>,
        settings: ListenerSettings,
        status: StatusBoard,
        shutdown: Shutdown,
    ) -> Self {
        Listener {
            api,
            routes,
            settings,
            status,
            shutdown,
        }
    }

    /// The session's channel as AGH reports it (`me.session.channel`), for a worker whose
    /// configuration names none: AGH exports `AGH_SESSION_CHANNEL` only to processes it starts,
    /// so a worker started some other way would otherwise never hear its session's messages.
    /// Asked once; without an answer the listener follows its runs' channels only.
    async fn channel_of_session(&self) -> Option<String> {
        let me = tokio::select! {
            biased;
            _ = self.shutdown.force.cancelled() => return None,
            me = self.api.me() => me,
        };
        match me {
            Ok(me) => {
                let channel = me
                    .session
                    .and_then(|session| session.channel)
                    .map(|channel| channel.trim().to_string())
                    .filter(|channel| !channel.is_empty());
                if let Some(channel) = &channel {
                    tracing::info!(channel = %channel, "listening on the session's channel as AGH reports it (agh.session_channel is not set)");
                }
                channel
            }
            Err(err) => {
                tracing::warn!(error = %err, "the session's channel could not be read from AGH; listening on the runs' channels only (set agh.session_channel to name it)");
                None
            }
        }
    }

    /// Runs until stop-now, or until a drain has begun and no run is left in hand: the session
    /// channel is dropped at the drain (no new work is taken), a run's channel only when the
    /// run ends, so a draining handler still gets its messages.
    pub async fn run(mut self) {
        if self.settings.session_channel.is_none() {
            self.settings.session_channel = self.channel_of_session().await;
        }
        let context = Arc::new(PollerContext {
            api: self.api,
            routes: self.routes.clone(),
            settings: self.settings.clone(),
            status: self.status,
            handled: Mutex::new(SeenIds::new(SEEN_IDS)),
            logged: Mutex::new(SeenIds::new(SEEN_IDS)),
        });
        let mut changes = self.routes.subscribe();
        let mut pollers: HashMap<String, Poller> = HashMap::new();
        tracing::info!(
            session_channel = self.settings.session_channel.as_deref().unwrap_or(""),
            "channel listener started"
        );
        loop {
            if self.shutdown.force.is_cancelled() {
                break;
            }
            let draining = self.shutdown.is_stopping();
            let mut wanted = self.routes.run_channels();
            if !draining && let Some(channel) = &self.settings.session_channel {
                wanted.insert(channel.clone());
            }
            pollers.retain(|channel, poller| {
                let keep = wanted.contains(channel);
                if !keep {
                    tracing::debug!(channel = %channel, "no longer listening on channel");
                    poller.stop.cancel();
                }
                keep
            });
            for channel in wanted {
                if pollers.contains_key(&channel) {
                    continue;
                }
                tracing::debug!(channel = %channel, "listening on channel");
                let stop = CancellationToken::new();
                let task = tokio::spawn(
                    poll_channel(context.clone(), channel.clone(), stop.clone()).in_current_span(),
                );
                pollers.insert(channel, Poller { stop, task });
            }
            if draining && pollers.is_empty() {
                break;
            }
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                _ = self.shutdown.drain.cancelled(), if !draining => {}
                _ = self.shutdown.force.cancelled() => {}
            }
        }
        for poller in pollers.values() {
            poller.stop.cancel();
        }
        for (_, poller) in pollers {
            let _ = poller.task.await;
        }
        tracing::info!("channel listener stopped");
    }
}

/// Long-polls one channel until `stop`.
async fn poll_channel<A: CoordinationApi>(
    context: Arc<PollerContext<A>>,
    channel: String,
    stop: CancellationToken,
) {
    let settings = &context.settings;
    // Without jitter: an idle listener settles on exactly `recv_backoff_max_ms`.
    let mut idle = Backoff::new(settings.idle_backoff_initial, settings.idle_backoff_max);
    let mut errors = Backoff::new(settings.error_backoff_initial, settings.error_backoff_max)
        .with_jitter(0.75, 1.25);
    let mut unavailable = false;
    let mut changes = context.routes.subscribe();
    // Messages of the last answer naming a run not (yet) in hand: handed over without another
    // request if that run starts while the listener pauses.
    let mut waiting: Vec<ChannelMessage> = Vec::new();
    loop {
        let sent = Instant::now();
        let answer = tokio::select! {
            answer = context.api.recv_wait(&channel) => answer,
            _ = stop.cancelled() => return,
        };
        changes.borrow_and_update();
        let pause = match answer {
            Ok(messages) => {
                errors.reset();
                if unavailable {
                    tracing::info!(channel = %channel, "the channel answers again; listening");
                    unavailable = false;
                }
                let (news, unrouted) = take_answer(&context, &channel, messages);
                waiting = unrouted;
                if news {
                    idle.reset();
                }
                remaining_pause(idle.next_delay(), sent.elapsed())
            }
            Err(err) => {
                waiting.clear();
                match classify_recv_failure(&err) {
                    RecvFailure::ChannelUnavailable => {
                        // A fact about the deployment, not an incident: said once, then probed slowly.
                        if !unavailable {
                            tracing::warn!(
                                channel = %channel,
                                error = %err,
                                probe_every_s = settings.disabled_probe.as_secs(),
                                "the daemon does not serve this channel (network disabled?); probing slowly"
                            );
                            unavailable = true;
                        }
                        settings.disabled_probe
                    }
                    RecvFailure::Transient => {
                        let delay = errors.next_delay();
                        tracing::warn!(
                            channel = %channel,
                            error = %err,
                            retry_in_ms = delay.as_millis() as u64,
                            "recv failed; backing off"
                        );
                        delay
                    }
                }
            }
        };
        let wake = Instant::now() + pause;
        while Instant::now() < wake {
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => break,
                _ = stop.cancelled() => return,
                changed = changes.changed(), if !waiting.is_empty() => {
                    if changed.is_err() {
                        waiting.clear();
                        continue;
                    }
                    changes.borrow_and_update();
                    let unrouted = std::mem::take(&mut waiting);
                    let (_, still) = take_answer(&context, &channel, unrouted);
                    waiting = still;
                }
            }
        }
    }
}

/// Routes the messages of one answer that were not handled before, in the daemon's order.
/// Answers whether anything was news (routed, or logged for the first time), and the messages
/// naming no run in hand: those stay eligible, because a peer may write about a run a moment
/// before this worker starts it, and recv keeps returning them while they are queued.
fn take_answer<A>(
    context: &PollerContext<A>,
    channel: &str,
    answer: Vec<ChannelMessage>,
) -> (bool, Vec<ChannelMessage>) {
    let mut news = false;
    let mut unrouted = Vec::new();
    // Held while delivering, so a message is routed once even if two pollers see it.
    let mut handled = lock_ids(&context.handled);
    for message in answer {
        if message.message_id.is_empty() || handled.contains(&message.message_id) {
            continue;
        }
        match dispatch(context, channel, &message) {
            Delivery::NoRun => {
                if lock_ids(&context.logged).insert(&message.message_id) {
                    log_message(channel, &message, "channel message for no run in hand");
                    news = true;
                }
                unrouted.push(message);
            }
            _ => {
                handled.insert(&message.message_id);
                news = true;
            }
        }
    }
    (news, unrouted)
}

fn lock_ids(ids: &Mutex<SeenIds>) -> MutexGuard<'_, SeenIds> {
    lock(ids)
}

fn log_message(channel: &str, message: &ChannelMessage, what: &str) {
    let metadata = message.metadata.as_ref();
    let run_id = metadata.map(|m| m.run_id.as_str()).unwrap_or("");
    let kind = metadata.map(|m| m.message_kind.as_str()).unwrap_or("");
    let text = message.text().unwrap_or("");
    let from = message.from_session_id.as_deref().unwrap_or("");
    tracing::info!(channel, run_id, message_id = %message.message_id, from, kind, text, "{what}");
}

/// Hands one message to its run and says so in the log (messages for no run are logged by the caller, once).
fn dispatch<A>(context: &PollerContext<A>, channel: &str, message: &ChannelMessage) -> Delivery {
    let delivery = context.routes.deliver(message);
    match &delivery {
        Delivery::Routed(_) => {
            context.status.message_received();
            log_message(channel, message, "channel message for the run in hand");
        }
        Delivery::Full(run_id) => {
            tracing::warn!(channel, run_id = %run_id, message_id = %message.message_id, "the handler's inbound queue is full; message dropped");
        }
        Delivery::Closed(_) => {
            log_message(
                channel,
                message,
                "channel message for a handler that no longer reads messages",
            );
        }
        Delivery::NoRun => {}
    }
    delivery
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::{MessageKind, MessageMetadata};
    use crate::coordination::api::fake::FakeApi;
    use crate::coordination::spawner::RunClock;
    use tokio::sync::mpsc;

    fn settings() -> ListenerSettings {
        ListenerSettings {
            session_channel: Some("builders".into()),
            idle_backoff_initial: IDLE_BACKOFF_INITIAL,
            idle_backoff_max: Duration::from_secs(5),
            error_backoff_initial: Duration::from_millis(200),
            error_backoff_max: Duration::from_secs(10),
            disabled_probe: Duration::from_secs(60),
        }
    }

    /// Starts a listener on `api` routing into `routes`; cancel the shutdown's `force` to end it.
    fn start_listener(
        api: &Arc<FakeApi>,
        routes: Arc<Runs>,
    ) -> (Shutdown, tokio::task::JoinHandle<()>) {
        let shutdown = Shutdown::default();
        let listener = Listener::new(
            api.clone(),
            routes,
            settings(),
            StatusBoard::default(),
            shutdown.clone(),
        );
        (shutdown, tokio::spawn(listener.run()))
    }

    /// Runs a listener on `api` for `period` of (paused) time; answers the routes it used.
    async fn listen_for(api: &Arc<FakeApi>, routes: Arc<Runs>, period: Duration) {
        let (shutdown, task) = start_listener(api, routes);
        tokio::time::sleep(period).await;
        shutdown.force.cancel();
        task.await.expect("listener ends");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stuck_message_is_routed_once_and_re_read_at_most_every_five_seconds() {
        let api = Arc::new(FakeApi::default());
        lock_queue(&api).push(message("m1", "run-1"));
        let routes = Arc::new(Runs::default());
        let (tx, mut rx) = mpsc::channel(8);
        let _outbox = routes.register("run-1", Some("builders".into()), tx, no_limit());
        listen_for(&api, routes, Duration::from_secs(60)).await;
        assert_eq!(rx.try_recv().map(|m| m.message_id).ok(), Some("m1".into()));
        assert!(rx.try_recv().is_err(), "routed twice");
        // 0.25 + 0.5 + 1 + 2 + 4 s of ramp, then one per 5 s: about 17 in a minute.
        let calls = api.recv_count();
        assert!((12..=20).contains(&calls), "{calls} recv calls in 60 s");
    }

    #[tokio::test(start_paused = true)]
    async fn a_fresh_listener_with_a_stuck_message_asks_once_then_ramps_to_the_cap() {
        let api = Arc::new(FakeApi::default());
        lock_queue(&api).push(message("stuck", "run-9"));
        let start = tokio::time::Instant::now();
        listen_for(&api, Arc::new(Runs::default()), Duration::from_secs(60)).await;
        let times: Vec<Duration> = lock(&api.recv_times)
            .iter()
            .map(|at| at.duration_since(start))
            .collect();
        let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(
            gaps[0] >= IDLE_BACKOFF_INITIAL,
            "asked again {:?} after the first answer",
            gaps[0]
        );
        let in_first_ten = times
            .iter()
            .filter(|t| **t < Duration::from_secs(10))
            .count();
        assert!(
            in_first_ten <= 10,
            "{in_first_ten} recv calls in the first 10 s"
        );
        let settled = &gaps[gaps.len() - 5..];
        assert!(
            settled.iter().all(|gap| *gap == Duration::from_secs(5)),
            "settled gaps {settled:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_message_behind_a_stuck_one_is_seen_within_the_backoff_cap() {
        let api = Arc::new(FakeApi::default());
        lock_queue(&api).push(message("stuck", "run-9"));
        let routes = Arc::new(Runs::default());
        let (tx, mut rx) = mpsc::channel(8);
        let _outbox = routes.register("run-1", Some("builders".into()), tx, no_limit());
        let (shutdown, task) = start_listener(&api, routes);
        tokio::time::sleep(Duration::from_secs(30)).await;
        lock_queue(&api).push(message("fresh", "run-1"));
        let pushed = tokio::time::Instant::now();
        let routed = tokio::time::timeout(Duration::from_secs(6), rx.recv())
            .await
            .expect("seen before the next pause ends")
            .expect("a message");
        assert_eq!(routed.message_id, "fresh");
        assert!(pushed.elapsed() <= Duration::from_secs(5));
        shutdown.force.cancel();
        task.await.expect("listener ends");
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_about_a_run_not_yet_started_reaches_it_when_it_starts() {
        let api = Arc::new(FakeApi::default());
        lock_queue(&api).push(message("early", "run-2"));
        let routes = Arc::new(Runs::default());
        let (shutdown, task) = start_listener(&api, routes.clone());
        // Long enough for the backoff to reach its 5 s cap.
        tokio::time::sleep(Duration::from_secs(20)).await;
        let calls_before = api.recv_count();
        let (tx, mut rx) = mpsc::channel(8);
        let _outbox = routes.register("run-2", None, tx, no_limit());
        let routed = tokio::time::timeout(Duration::from_millis(100), rx.recv())
            .await
            .expect("handed over without waiting for the next recv")
            .expect("a message");
        assert_eq!(routed.message_id, "early");
        assert_eq!(
            api.recv_count(),
            calls_before,
            "no extra request was needed"
        );
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert!(rx.try_recv().is_err(), "routed twice");
        shutdown.force.cancel();
        task.await.expect("listener ends");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_channel_costs_one_recv_per_long_poll_deadline() {
        let api = Arc::new(FakeApi {
            long_poll: Duration::from_secs(30),
            ..FakeApi::default()
        });
        listen_for(&api, Arc::new(Runs::default()), Duration::from_secs(300)).await;
        let calls = api.recv_count();
        assert!((10..=11).contains(&calls), "{calls} recv calls in 300 s");
    }

    fn lock_queue(api: &FakeApi) -> MutexGuard<'_, Vec<ChannelMessage>> {
        lock(&api.queued)
    }

    fn message(id: &str, run_id: &str) -> ChannelMessage {
        ChannelMessage {
            message_id: id.into(),
            body: serde_json::json!({"text": "hello"}),
            metadata: Some(MessageMetadata {
                task_id: "task-1".into(),
                run_id: run_id.into(),
                coordination_channel_id: "builders".into(),
                message_kind: MessageKind::Request,
                correlation_id: run_id.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn no_limit() -> RunClock {
        RunClock {
            started: Instant::now(),
            time_limit: None,
        }
    }

    #[test]
    fn routes_hand_messages_to_the_named_run_without_waiting() {
        let routes = Runs::default();
        let (tx, mut rx) = mpsc::channel(1);
        let _outbox = routes.register("run-1", Some("builders".into()), tx, no_limit());
        assert_eq!(
            routes.run_channels().into_iter().collect::<Vec<_>>(),
            vec!["builders".to_string()]
        );
        assert_eq!(
            routes.deliver(&message("m1", "run-1")),
            Delivery::Routed("run-1".into())
        );
        // The queue holds one: the next is dropped rather than waited for.
        assert_eq!(
            routes.deliver(&message("m2", "run-1")),
            Delivery::Full("run-1".into())
        );
        assert_eq!(routes.deliver(&message("m3", "run-9")), Delivery::NoRun);
        assert_eq!(rx.try_recv().map(|m| m.message_id).ok(), Some("m1".into()));
        drop(rx);
        assert_eq!(
            routes.deliver(&message("m4", "run-1")),
            Delivery::Closed("run-1".into())
        );
        routes.unregister("run-1");
        assert!(routes.run_channels().is_empty());
        assert_eq!(routes.deliver(&message("m5", "run-1")), Delivery::NoRun);
    }
}
