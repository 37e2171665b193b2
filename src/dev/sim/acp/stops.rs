//! What AGH's stop of a session leaves to check: the calls made with the session's identity
//! after its stop began. AGH turns the session `stopping` first, so each such call answers 401
//! (`internal/agentidentity/identity.go` ~134-141: any state but `active` is `identity_stale`);
//! then it sends `session/cancel` and closes the agent's stdin (`internal/acp/client.go`
//! ~841-896). The agent can know of the stop only once stdin has closed, so each call is kept
//! with its time from the stop's start and from the close: one that arrives well after the close
//! was made by an agent that went on after it knew.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::super::faults::Route;
use crate::util::sync::lock;

/// At most this many calls after a stop are kept; [`StopRecords::calls_total`] counts them all.
const KEPT_CALLS: usize = 1_000;

/// A call that came with the identity of a session whose stop had begun.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallAfterStop {
    pub session_id: String,
    pub route: Route,
    /// From the session turning `stopping` to the call's arrival.
    pub since_stop: Duration,
    /// From the agent's stdin closing to the call's arrival; `None`: it came before the close,
    /// while the agent could not know of the stop yet.
    pub since_stdin_closed: Option<Duration>,
}

/// When a stop began and when it closed the agent's stdin.
#[derive(Clone, Copy, Debug)]
struct StopMarks {
    began: Instant,
    stdin_closed: Option<Instant>,
}

/// The stops of one simulator and the calls made after them.
#[derive(Debug, Default)]
pub(crate) struct StopRecords {
    stops: Mutex<HashMap<String, StopMarks>>,
    calls: Mutex<(Vec<CallAfterStop>, u64)>,
}

impl StopRecords {
    /// The session has turned `stopping`.
    pub(super) fn began(&self, session_id: &str) {
        lock(&self.stops).insert(
            session_id.to_owned(),
            StopMarks {
                began: Instant::now(),
                stdin_closed: None,
            },
        );
    }

    /// The session's agent has had its stdin closed.
    pub(super) fn stdin_closed(&self, session_id: &str) {
        if let Some(marks) = lock(&self.stops).get_mut(session_id) {
            marks.stdin_closed = Some(Instant::now());
        }
    }

    /// A call arrived on `route` naming `session_id` (if any) as its caller: kept when that
    /// session's stop has begun, whatever the answer (a fault the call meets included).
    pub(crate) fn note_call(&self, session_id: Option<&str>, route: Route) {
        let Some(session_id) = session_id else {
            return;
        };
        let Some(marks) = lock(&self.stops).get(session_id).copied() else {
            return;
        };
        let now = Instant::now();
        let call = CallAfterStop {
            session_id: session_id.to_owned(),
            route,
            since_stop: now.saturating_duration_since(marks.began),
            since_stdin_closed: marks
                .stdin_closed
                .map(|closed| now.saturating_duration_since(closed)),
        };
        let mut calls = lock(&self.calls);
        calls.1 += 1;
        if calls.0.len() < KEPT_CALLS {
            calls.0.push(call);
        }
    }

    /// The calls kept, oldest first.
    pub(super) fn calls(&self) -> Vec<CallAfterStop> {
        lock(&self.calls).0.clone()
    }

    /// Every call after a stop, kept or not.
    pub(super) fn calls_total(&self) -> u64 {
        lock(&self.calls).1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_calls_after_a_sessions_stop_began_are_kept_and_those_after_the_close_say_so() {
        let records = StopRecords::default();
        records.note_call(Some("sess-a"), Route::Heartbeat);
        records.note_call(None, Route::TaskRun);
        records.began("sess-a");
        records.note_call(Some("sess-a"), Route::Heartbeat);
        records.note_call(Some("sess-b"), Route::ClaimNext);
        records.stdin_closed("sess-a");
        records.note_call(Some("sess-a"), Route::Me);
        let calls = records.calls();
        assert_eq!(records.calls_total(), 2);
        assert_eq!(
            calls
                .iter()
                .map(|call| (call.session_id.as_str(), call.route))
                .collect::<Vec<_>>(),
            vec![("sess-a", Route::Heartbeat), ("sess-a", Route::Me)]
        );
        assert_eq!(calls[0].since_stdin_closed, None);
        assert!(calls[1].since_stdin_closed.is_some());
        assert!(calls[1].since_stop >= calls[0].since_stop);
    }

    #[test]
    fn the_kept_calls_are_bounded_while_the_total_counts_every_one() {
        let records = StopRecords::default();
        records.began("sess-a");
        for _ in 0..KEPT_CALLS + 5 {
            records.note_call(Some("sess-a"), Route::Me);
        }
        assert_eq!(records.calls().len(), KEPT_CALLS);
        assert_eq!(records.calls_total(), KEPT_CALLS as u64 + 5);
    }
}
