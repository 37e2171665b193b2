//! The health rules: what `/healthz` (the loop is alive) and `/readyz` (the worker can take work)
//! decide from a snapshot of the [`StatusBoard`](crate::worker::StatusBoard), as pure functions so
//! they are tested without a server (which is in [`super::server`]).
//!
//! - **healthy** ([`liveness`]): the loop ticked within [`HealthTimings::liveness_threshold`].
//! - **ready** ([`readiness`]): identity valid, not draining or stopped, AGH contact within
//!   [`HealthTimings::contact_threshold`], and no handler unhealthy (a handler is unhealthy from a
//!   problem only a person can fix, such as Agentuity refusing a coder handler's key, until a run
//!   with it succeeds). An idle worker's open long-poll claim counts as contact when it ends with
//!   nothing to do, so an idle healthy worker stays ready.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

// The status board keeps tokio's clock (see `worker::status`).
use tokio::time::Instant;

use serde::Serialize;

use crate::api::ClientOptions;
use crate::config::Config;
use crate::worker::{UnhealthyHandler, WorkerSettings, WorkerState, WorkerStatus};

/// The intervals the health rules are derived from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthTimings {
    /// Client deadline of a long-poll claim (`agh.long_poll_timeout_ms`).
    pub long_poll: Duration,
    /// Deadline of an ordinary call (`agh.request_timeout_ms`).
    pub request_timeout: Duration,
    /// Time between heartbeats (`worker.heartbeat_every_seconds`).
    pub heartbeat_every: Duration,
    /// Longest backoff pause of the loop (`retry.max_backoff_ms`).
    pub max_backoff: Duration,
    /// Pause between probes of a stale identity (`worker.identity_probe_seconds`).
    pub identity_probe: Duration,
}

impl HealthTimings {
    /// The timings of the configuration.
    pub fn from_config(config: &Config) -> Self {
        HealthTimings {
            long_poll: config.agh.long_poll_timeout(),
            request_timeout: config.agh.request_timeout(),
            heartbeat_every: config.worker.heartbeat_every(),
            max_backoff: config.retry.max_backoff(),
            identity_probe: config.worker.identity_probe(),
        }
    }

    /// The timings of a worker built from its parts (tests, the demo).
    pub fn from_parts(settings: &WorkerSettings, client: &ClientOptions) -> Self {
        HealthTimings {
            long_poll: client.long_poll_timeout,
            request_timeout: client.request_timeout,
            heartbeat_every: settings.heartbeat_every,
            max_backoff: settings.max_backoff,
            identity_probe: settings.identity_probe,
        }
    }

    /// How long the loop may go without a tick before `/healthz` says stale: twice the longest
    /// wait the loop legitimately makes between ticks (a long-poll claim, a heartbeat interval
    /// while a run is in hand, a backoff pause, an identity probe pause), plus one request
    /// timeout for the call in flight at its end. Defaults: 2 × 30 s + 10 s = 70 s.
    pub fn liveness_threshold(&self) -> Duration {
        let longest_wait = self
            .long_poll
            .max(self.heartbeat_every)
            .max(self.max_backoff)
            .max(self.identity_probe);
        longest_wait * 2 + self.request_timeout
    }

    /// How old the last AGH contact may be for `/readyz`: twice the heartbeat interval, but at
    /// least one long-poll plus a request timeout, because an idle worker hears nothing from the
    /// daemon while its claim waits. Defaults: max(40 s, 30 s + 10 s) = 40 s.
    pub fn contact_threshold(&self) -> Duration {
        (self.heartbeat_every * 2).max(self.long_poll + self.request_timeout)
    }
}

/// What `/healthz` answers.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Liveness {
    /// `ok` or `stale`.
    pub status: &'static str,
    pub last_tick_seconds_ago: f64,
    pub threshold_seconds: f64,
}

impl Liveness {
    pub fn is_ok(&self) -> bool {
        self.status == "ok"
    }
}

/// The liveness rule: the loop ticked within the threshold.
pub fn liveness(status: &WorkerStatus, now: Instant, timings: &HealthTimings) -> Liveness {
    let age = now.saturating_duration_since(status.last_tick);
    let threshold = timings.liveness_threshold();
    Liveness {
        status: if age <= threshold { "ok" } else { "stale" },
        last_tick_seconds_ago: age.as_secs_f64(),
        threshold_seconds: threshold.as_secs_f64(),
    }
}

/// Why the worker is not ready; stable, low-cardinality codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotReady {
    /// The identity was rejected (session stopped or unknown), or has not been checked yet.
    IdentityNotValid,
    /// A shutdown began: no new work is taken.
    Draining,
    /// The loop has ended.
    Stopped,
    /// No answer from AGH within the contact threshold (or never).
    NoRecentContact,
    /// A handler cannot work until a person acts (`unhealthy_handlers` says which and why).
    HandlerUnhealthy,
}

/// An unhealthy handler as `/readyz` and `/status` show it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HandlerProblem {
    pub name: String,
    /// What is wrong and what to do; never a secret.
    pub reason: String,
    /// When it became unhealthy, in unix seconds.
    pub since: f64,
    pub since_seconds_ago: f64,
}

impl HandlerProblem {
    fn new(handler: &UnhealthyHandler, now: Instant) -> Self {
        HandlerProblem {
            name: handler.name.clone(),
            reason: handler.reason.clone(),
            since: unix_seconds(handler.since),
            since_seconds_ago: now
                .saturating_duration_since(handler.since_instant)
                .as_secs_f64(),
        }
    }
}

/// What `/readyz` answers.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: &'static str,
    /// Empty when ready.
    pub reasons: Vec<NotReady>,
    pub state: WorkerState,
    pub last_contact_seconds_ago: Option<f64>,
    pub contact_threshold_seconds: f64,
    /// Handlers that cannot work until a person acts, by name; empty when all can.
    pub unhealthy_handlers: Vec<HandlerProblem>,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.reasons.is_empty()
    }
}

/// The readiness rule: identity valid, not stopping, AGH heard from recently, and every handler
/// healthy.
/// `stopping` is the shutdown signal itself, so readiness drops the moment a drain begins,
/// before the loop has noticed it.
pub fn readiness(
    status: &WorkerStatus,
    stopping: bool,
    now: Instant,
    timings: &HealthTimings,
) -> Readiness {
    let mut reasons = Vec::new();
    if !status.identity_ok {
        reasons.push(NotReady::IdentityNotValid);
    }
    if status.state == WorkerState::Stopped {
        reasons.push(NotReady::Stopped);
    } else if stopping || status.state == WorkerState::Draining {
        reasons.push(NotReady::Draining);
    }
    let contact_age = status
        .last_contact_instant
        .map(|at| now.saturating_duration_since(at));
    let threshold = timings.contact_threshold();
    if contact_age.is_none_or(|age| age > threshold) {
        reasons.push(NotReady::NoRecentContact);
    }
    if !status.unhealthy_handlers.is_empty() {
        reasons.push(NotReady::HandlerUnhealthy);
    }
    Readiness {
        status: if reasons.is_empty() {
            "ready"
        } else {
            "not_ready"
        },
        reasons,
        state: status.state,
        last_contact_seconds_ago: contact_age.map(|age| age.as_secs_f64()),
        contact_threshold_seconds: threshold.as_secs_f64(),
        unhealthy_handlers: status
            .unhealthy_handlers
            .iter()
            .map(|handler| HandlerProblem::new(handler, now))
            .collect(),
    }
}

/// A wall-clock time as unix seconds, the way the health answers write every time.
pub fn unix_seconds(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::worker::StatusBoard;

    /// The default timings (the metrics tests use them too).
    pub(crate) fn timings() -> HealthTimings {
        HealthTimings {
            long_poll: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
            heartbeat_every: Duration::from_secs(20),
            max_backoff: Duration::from_secs(10),
            identity_probe: Duration::from_secs(5),
        }
    }

    fn ready_status() -> WorkerStatus {
        let board = StatusBoard::default();
        board.set_state(WorkerState::Idle);
        board.contact();
        board.identity_confirmed();
        board.snapshot()
    }

    #[test]
    fn the_default_thresholds_are_seventy_and_forty_seconds() {
        assert_eq!(timings().liveness_threshold(), Duration::from_secs(70));
        assert_eq!(timings().contact_threshold(), Duration::from_secs(40));
        let mut slow_heartbeat = timings();
        slow_heartbeat.heartbeat_every = Duration::from_secs(60);
        assert_eq!(slow_heartbeat.contact_threshold(), Duration::from_secs(120));
        assert_eq!(
            slow_heartbeat.liveness_threshold(),
            Duration::from_secs(130)
        );
    }

    #[test]
    fn healthz_is_stale_once_the_loop_has_not_ticked_for_longer_than_the_threshold() {
        let status = ready_status();
        let threshold = timings().liveness_threshold();
        let fresh = liveness(&status, status.last_tick + threshold, &timings());
        assert!(fresh.is_ok(), "{fresh:?}");
        let old = liveness(
            &status,
            status.last_tick + threshold + Duration::from_secs(1),
            &timings(),
        );
        assert_eq!(old.status, "stale");
        assert!(old.last_tick_seconds_ago > threshold.as_secs_f64());
    }

    #[test]
    fn an_idle_worker_with_recent_contact_is_ready() {
        let status = ready_status();
        let answer = readiness(&status, false, Instant::now(), &timings());
        assert!(answer.is_ready(), "{answer:?}");
        assert_eq!(answer.status, "ready");
    }

    #[test]
    fn readiness_lists_every_reason_it_is_not_ready() {
        let mut status = ready_status();
        status.identity_ok = false;
        let late = status.last_contact_instant.unwrap_or_else(Instant::now)
            + timings().contact_threshold()
            + Duration::from_secs(1);
        let answer = readiness(&status, true, late, &timings());
        assert_eq!(
            answer.reasons,
            vec![
                NotReady::IdentityNotValid,
                NotReady::Draining,
                NotReady::NoRecentContact
            ]
        );
        assert_eq!(answer.status, "not_ready");
        status.identity_ok = true;
        status.state = WorkerState::Stopped;
        let answer = readiness(&status, true, Instant::now(), &timings());
        assert_eq!(answer.reasons, vec![NotReady::Stopped]);
    }

    #[test]
    fn a_worker_that_never_reached_the_daemon_is_not_ready() {
        let status = StatusBoard::default().snapshot();
        let answer = readiness(&status, false, Instant::now(), &timings());
        assert_eq!(
            answer.reasons,
            vec![NotReady::IdentityNotValid, NotReady::NoRecentContact]
        );
        assert_eq!(answer.last_contact_seconds_ago, None);
    }

    #[test]
    fn an_unhealthy_handler_makes_the_worker_not_ready_and_is_named_with_its_reason() {
        let board = StatusBoard::default();
        board.set_state(WorkerState::Idle);
        board.contact();
        board.identity_confirmed();
        board
            .handler_health()
            .configure([("coder", false), ("exec", false)]);
        let coder = board.handler_health().reporter("coder");
        coder.unhealthy("Agentuity refused the key (401): set AGENTUITY_SDK_KEY");
        let status = board.snapshot();
        let later = status.unhealthy_handlers[0].since_instant + Duration::from_secs(7);
        let answer = readiness(&status, false, later, &timings());
        assert_eq!(answer.reasons, vec![NotReady::HandlerUnhealthy]);
        assert_eq!(answer.status, "not_ready");
        assert_eq!(answer.unhealthy_handlers.len(), 1);
        let problem = &answer.unhealthy_handlers[0];
        assert_eq!(problem.name, "coder");
        assert!(
            problem.reason.contains("refused the key (401)"),
            "{problem:?}"
        );
        assert_eq!(problem.since_seconds_ago, 7.0);
        let body = serde_json::to_value(&answer).unwrap_or_default();
        assert_eq!(body["reasons"], serde_json::json!(["handler_unhealthy"]));
        assert_eq!(body["unhealthy_handlers"][0]["name"], "coder");

        coder.healthy();
        let answer = readiness(&board.snapshot(), false, Instant::now(), &timings());
        assert!(answer.is_ready(), "{answer:?}");
        assert!(answer.unhealthy_handlers.is_empty());
    }
}
