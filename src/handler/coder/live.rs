//! The followed session's live event stream, as the follower keeps it: open, silent too long,
//! or down until the next attempt (reopened with the SDK's backoff: from 1 s, doubling to 30 s,
//! jittered), and how often the session is read meanwhile.

use std::time::Duration;

use tokio::time::Instant;

use super::LOG_TARGET;
use super::config::{CoderConfig, FollowMode, seconds};
use crate::agentuity::{AgentuityError, SessionStream, StreamRead};
use crate::util::backoff::Backoff;

/// The events a run needs: the session's end, its loop, its agents' and tasks' progress.
pub(super) const SUBSCRIBE: [&str; 5] = ["session_*", "agent_*", "task_*", "tool_*", "loop_*"];

pub(super) struct Live {
    stream: Option<SessionStream>,
    /// When to open the stream next; `None` while it is open, or when following by polling.
    connect_at: Option<Instant>,
    backoff: Backoff,
    heard_at: Instant,
    silence: Duration,
    check: Duration,
    poll: Duration,
    /// Failed opens in a row, for the log.
    failures: u32,
}

impl Live {
    pub(super) fn new(config: &CoderConfig, poll: Duration) -> Live {
        let now = Instant::now();
        Live {
            stream: None,
            connect_at: (config.follow == FollowMode::Stream).then_some(now),
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(30))
                .with_jitter(0.5, 1.0),
            heard_at: now,
            silence: seconds(config.stream_silence_seconds, 90.0).max(Duration::from_millis(1)),
            check: seconds(config.stream_check_seconds, 60.0).max(Duration::from_millis(1)),
            poll,
            failures: 0,
        }
    }

    pub(super) fn is_open(&self) -> bool {
        self.stream.is_some()
    }

    /// When to open the stream, when it is down.
    pub(super) fn connect_at(&self) -> Option<Instant> {
        self.connect_at
    }

    /// When an open stream has been silent too long.
    pub(super) fn silent_at(&self) -> Option<Instant> {
        self.stream.as_ref().map(|_| self.heard_at + self.silence)
    }

    /// How long until the session is read again: rarely while the stream is live, at the poll
    /// cadence otherwise.
    pub(super) fn read_interval(&self) -> Duration {
        if self.is_open() {
            self.check.max(self.poll)
        } else {
            self.poll
        }
    }

    /// The next thing an open stream says (pending forever when none is open).
    pub(super) async fn next(&mut self) -> Result<StreamRead, AgentuityError> {
        match &mut self.stream {
            Some(stream) => {
                let read = stream.next().await;
                self.heard_at = Instant::now();
                read
            }
            None => std::future::pending().await,
        }
    }

    pub(super) fn opened(&mut self, stream: SessionStream) {
        if self.failures > 0 {
            tracing::info!(target: LOG_TARGET, after = self.failures, "the coder session's event stream is open again");
        }
        self.stream = Some(stream);
        self.connect_at = None;
        self.heard_at = Instant::now();
        self.backoff.reset();
        self.failures = 0;
    }

    /// The stream could not be opened, broke, ended or went silent: drop it and try again after
    /// the backoff, polling meanwhile.
    pub(super) fn lost(&mut self, why: &str) {
        self.stream = None;
        self.failures += 1;
        let delay = self.backoff.next_delay();
        self.connect_at = Some(Instant::now() + delay);
        if self.failures == 1 {
            tracing::info!(target: LOG_TARGET, why, retry_ms = delay.as_millis() as u64, "the coder session's event stream is down; polling until it is back");
        } else {
            tracing::debug!(target: LOG_TARGET, why, failures = self.failures, retry_ms = delay.as_millis() as u64, "the coder session's event stream is still down");
        }
    }
}
