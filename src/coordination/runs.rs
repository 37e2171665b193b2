//! The runs in hand, as coordination knows them: the one registry, keyed by run id. The outbox
//! registers a run when its handler starts and drops it when the handler ends; the listener
//! reads which channels to poll and hands each new message to the run it names; the outbox finds
//! a run's queue, progress slot and clock here.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Notify, mpsc, watch};

use super::spawner::RunClock;
use crate::api::types::{ChannelMessage, MessageKind};
use crate::util::sync::lock;

/// How many messages and replies of one run may wait to be sent; more are dropped with a
/// warning (a handler cannot stall on a slow daemon, and memory stays bounded).
pub const OUTBOX_CAPACITY: usize = 64;

/// Where a message went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Queued for the handler of this run.
    Routed(String),
    /// The handler's inbound queue is full; the message was dropped.
    Full(String),
    /// The handler no longer reads messages (it ended or dropped its receiver).
    Closed(String),
    /// No run in hand matches the message's `metadata.run_id`.
    NoRun,
}

/// A message or reply waiting in a run's outbox (progress has its own coalescing slot).
#[derive(Debug)]
pub(crate) enum Outgoing {
    Message { kind: MessageKind, text: String },
    Reply { to_message_id: String, text: String },
}

/// The latest progress not yet sent; newer text replaces older.
#[derive(Debug, Default)]
pub(crate) struct ProgressSlot {
    text: Mutex<Option<String>>,
    pub(crate) notify: Notify,
}

impl ProgressSlot {
    pub(crate) fn put(&self, text: String) {
        *lock(&self.text) = Some(text);
        self.notify.notify_one();
    }

    pub(crate) fn take(&self) -> Option<String> {
        lock(&self.text).take()
    }

    pub(crate) fn is_pending(&self) -> bool {
        lock(&self.text).is_some()
    }
}

/// One run in hand.
pub(crate) struct RunInHand {
    /// Its coordination channel, which the listener polls while the run is in hand.
    pub(crate) channel: Option<String>,
    /// The handler's queue of channel messages addressed to the run.
    inbound: mpsc::Sender<ChannelMessage>,
    /// Messages and replies its handler asked to send.
    pub(crate) outbox: mpsc::Sender<Outgoing>,
    pub(crate) progress: Arc<ProgressSlot>,
    /// When it started and its time limit, to cap the TTL of the children it spawns.
    pub(crate) clock: RunClock,
}

/// The receiving ends of a run's outbox, for the task that sends what it holds.
#[derive(Debug)]
pub struct OutboxQueue {
    pub(crate) queue: mpsc::Receiver<Outgoing>,
    pub(crate) progress: Arc<ProgressSlot>,
}

/// The runs in hand. Shared by the outbox (which registers runs) and the listener (which reads
/// channels and routes messages); a watch tells the listener when the set changes.
pub struct Runs {
    runs: Mutex<HashMap<String, RunInHand>>,
    changed: watch::Sender<u64>,
}

impl std::fmt::Debug for Runs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runs")
            .field("runs", &self.lock().keys().cloned().collect::<Vec<_>>())
            .finish()
    }
}

impl Default for Runs {
    fn default() -> Self {
        Runs {
            runs: Mutex::new(HashMap::new()),
            changed: watch::channel(0).0,
        }
    }
}

impl Runs {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, RunInHand>> {
        lock(&self.runs)
    }

    /// A run starts: messages naming it go to `inbound`, its channel is listened to, and its
    /// outbox opens. Answers the outbox's receiving ends.
    pub fn register(
        &self,
        run_id: &str,
        channel: Option<String>,
        inbound: mpsc::Sender<ChannelMessage>,
        clock: RunClock,
    ) -> OutboxQueue {
        let (outbox, queue) = mpsc::channel(OUTBOX_CAPACITY);
        let progress = Arc::new(ProgressSlot::default());
        self.lock().insert(
            run_id.to_string(),
            RunInHand {
                channel,
                inbound,
                outbox,
                progress: progress.clone(),
                clock,
            },
        );
        self.changed.send_modify(|version| *version += 1);
        OutboxQueue { queue, progress }
    }

    /// A run ended: nothing more is routed to it, its channel is dropped unless shared, and its
    /// outbox closes (its task sends what is queued, flushes the last progress, and ends).
    pub fn unregister(&self, run_id: &str) {
        if self.lock().remove(run_id).is_some() {
            self.changed.send_modify(|version| *version += 1);
        }
    }

    /// Reads the entry of `run_id`, if it is in hand.
    pub(crate) fn with<T>(&self, run_id: &str, read: impl FnOnce(&RunInHand) -> T) -> Option<T> {
        self.lock().get(run_id).map(read)
    }

    /// The coordination channels of the runs in hand.
    pub fn run_channels(&self) -> BTreeSet<String> {
        self.lock()
            .values()
            .filter_map(|run| run.channel.clone())
            .collect()
    }

    /// Hands `message` to the run named in its metadata, without ever waiting.
    pub fn deliver(&self, message: &ChannelMessage) -> Delivery {
        let Some(run_id) = message
            .metadata
            .as_ref()
            .map(|metadata| metadata.run_id.as_str())
            .filter(|id| !id.is_empty())
        else {
            return Delivery::NoRun;
        };
        let runs = self.lock();
        let Some(run) = runs.get(run_id) else {
            return Delivery::NoRun;
        };
        match run.inbound.try_send(message.clone()) {
            Ok(()) => Delivery::Routed(run_id.to_string()),
            Err(mpsc::error::TrySendError::Full(_)) => Delivery::Full(run_id.to_string()),
            Err(mpsc::error::TrySendError::Closed(_)) => Delivery::Closed(run_id.to_string()),
        }
    }

    /// Changes to the set of runs, for the listener.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}
