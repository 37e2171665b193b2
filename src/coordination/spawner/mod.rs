//! The spawner: owns every child session this worker creates. It checks the lineage budget
//! locally before calling `spawn` (so an exhausted budget costs no server call), caps each
//! child's TTL by the run's remaining time and a configured ceiling, gives the call its own
//! timeout (AGH starts the child's agent inside the request), and keeps a ledger of live children
//! until their TTL.
//!
//! A spawn is never repeated blindly: AGH ignores `idempotency_key`. When no answer says what
//! happened (a transport error, a timeout, a 5xx), the spawner looks for the child by name among
//! this session's children first ([`lookup`]); only a transport error with no child found is asked
//! once more. The handler is told which happened: created, found after a lost answer, or not
//! created and why. Budget exhaustion is an ordinary answer ([`SpawnAnswer::Refused`]), never an
//! error of the run.

pub mod budget;
pub mod lookup;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

pub use budget::{
    Budget, DEFAULT_MAX_CHILDREN, DEFAULT_MAX_SPAWN_DEPTH, DEFAULT_TTL_SECONDS, check_budget,
    child_ttl,
};
use lookup::Lookup;

use super::api::CoordinationApi;
use crate::api::types::SpawnRequest;
use crate::api::{ApiError, ErrorKind};
use crate::handler::{SpawnAnswer, SpawnAsk};
use crate::util::sync::lock;
use crate::worker::StatusBoard;
use crate::worker::status::ChildSession;

/// When the run started and how long it may take, to cap children by its remaining time.
#[derive(Clone, Copy, Debug)]
pub struct RunClock {
    pub started: Instant,
    pub time_limit: Option<Duration>,
}

impl RunClock {
    /// Time left before the run's limit, if it has one.
    pub fn remaining(&self) -> Option<Duration> {
        self.time_limit
            .map(|limit| limit.saturating_sub(self.started.elapsed()))
    }
}

/// Spawner settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpawnSettings {
    /// `coordination.max_child_ttl_seconds`.
    pub max_child_ttl_seconds: u64,
    /// `coordination.spawn_timeout_seconds`: how long one spawn call may take.
    pub spawn_timeout: Duration,
}

impl Default for SpawnSettings {
    fn default() -> Self {
        SpawnSettings {
            max_child_ttl_seconds: 3_600,
            spawn_timeout: Duration::from_secs(120),
        }
    }
}

/// Creates child sessions for handlers, within the budget.
pub struct Spawner<A> {
    api: Arc<A>,
    status: StatusBoard,
    settings: SpawnSettings,
    /// `None` until read, and again after a 409 says it may have changed.
    budget: Mutex<Option<Budget>>,
    /// One spawn at a time: two concurrent asks must not both pass the local check.
    gate: tokio::sync::Mutex<()>,
    /// Makes the names of unnamed children unique.
    names: AtomicU64,
}

impl<A> std::fmt::Debug for Spawner<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spawner")
            .field("settings", &self.settings)
            .field("budget", &*lock(&self.budget))
            .finish_non_exhaustive()
    }
}

/// What was sent, to find and record the child.
struct Asked {
    run_id: String,
    agent_name: String,
    name: String,
    ttl_seconds: i64,
}

impl<A: CoordinationApi> Spawner<A> {
    pub fn new(api: Arc<A>, status: StatusBoard, settings: SpawnSettings) -> Self {
        // Seeded from the clock so that names stay unique across restarts of the worker.
        let seed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| since.as_micros() as u64 & 0xff_ffff);
        Spawner {
            api,
            status,
            settings,
            budget: Mutex::new(None),
            gate: tokio::sync::Mutex::new(()),
            names: AtomicU64::new(seed),
        }
    }

    /// Reads the budget from `me` and `coordinator/config`. A failed read leaves the budget
    /// unknown; the next spawn tries again and, meanwhile, the daemon's defaults apply.
    pub async fn refresh(&self) -> Budget {
        let me = self.api.me().await;
        let coordinator = self.api.coordinator_config().await;
        if let Err(err) = &me {
            tracing::warn!(error = %err, "cannot read the spawn budget from /api/agent/me; assuming the daemon's defaults");
        }
        if let Err(err) = &coordinator {
            tracing::debug!(error = %err, "cannot read coordinator/config; default child TTL {DEFAULT_TTL_SECONDS} s");
        }
        let budget = Budget::from_answers(me.as_ref().ok(), coordinator.as_ref().ok());
        *lock(&self.budget) = me.is_ok().then_some(budget);
        tracing::debug!(?budget, "spawn budget");
        budget
    }

    /// The budget in force (read when unknown).
    pub async fn budget(&self) -> Budget {
        let known = *lock(&self.budget);
        match known {
            Some(budget) => budget,
            None => self.refresh().await,
        }
    }

    /// Live children this worker created (their TTL has not passed): the status board keeps them.
    pub fn live_children(&self) -> usize {
        self.status.live_children().len()
    }

    /// Answers one ask: a local budget check, then one `spawn` call (a second only after a
    /// transport error and a children list without the child).
    pub async fn spawn(&self, run_id: &str, clock: RunClock, ask: SpawnAsk) -> SpawnAnswer {
        let _one_at_a_time = self.gate.lock().await;
        let answer = self.decide(run_id, clock, ask).await;
        match &answer {
            SpawnAnswer::Spawned {
                session_id,
                agent_name,
                ttl_seconds,
                found_after_lost_answer,
            } => {
                tracing::info!(run_id, child = %session_id, agent = %agent_name, ttl_s = ttl_seconds, found_after_lost_answer, "child session spawned");
            }
            SpawnAnswer::Refused { reason } => {
                self.status.spawn_refused();
                tracing::info!(run_id, reason = %reason, "spawn refused");
            }
        }
        answer
    }

    async fn decide(&self, run_id: &str, clock: RunClock, ask: SpawnAsk) -> SpawnAnswer {
        let refused = |reason: String| SpawnAnswer::Refused { reason };
        let agent_name = ask.agent_name.trim().to_string();
        if agent_name.is_empty() {
            return refused(
                "invalid spawn request: agent_name is required (refused locally, nothing sent)"
                    .into(),
            );
        }
        let budget = self.budget().await;
        if let Err(reason) = check_budget(&budget, self.live_children()) {
            return refused(reason);
        }
        let ttl = match child_ttl(
            ask.ttl_seconds,
            budget.default_ttl_seconds,
            clock.remaining(),
            self.settings.max_child_ttl_seconds,
        ) {
            Ok(ttl) => ttl,
            Err(reason) => return refused(reason),
        };
        let nonce = self.names.fetch_add(1, Ordering::Relaxed);
        let name = lookup::child_name(ask.name.as_deref(), &agent_name, run_id, nonce);
        let request = SpawnRequest {
            agent_name: agent_name.clone(),
            ttl_seconds: ttl,
            spawn_role: ask.spawn_role.filter(|role| !role.trim().is_empty()),
            auto_stop_on_parent: None,
            permissions: ask.permissions,
            provider: None,
            name: Some(name.clone()),
            prompt_overlay: ask.prompt_overlay.filter(|p| !p.is_empty()),
        };
        let asked = Asked {
            run_id: run_id.to_string(),
            agent_name,
            name,
            ttl_seconds: ttl,
        };
        self.ask_daemon(&request, &asked).await
    }

    /// The spawn call, and after an answer that does not say what happened, the children list.
    async fn ask_daemon(&self, request: &SpawnRequest, asked: &Asked) -> SpawnAnswer {
        let known: Vec<String> = self
            .status
            .live_children()
            .into_iter()
            .map(|child| child.session_id)
            .collect();
        let mut asked_again = false;
        loop {
            let err = match self.api.spawn(request, self.settings.spawn_timeout).await {
                Ok(spawned) if !spawned.session.id.is_empty() => {
                    return self.spawned(asked, spawned.session.id, false);
                }
                Ok(_) => {
                    return SpawnAnswer::Refused {
                        reason:
                            "spawn failed: the daemon answered without a session id; not retried"
                                .into(),
                    };
                }
                Err(err) if !lookup::outcome_unknown(&err) => {
                    return SpawnAnswer::Refused {
                        reason: self.refusal(&err),
                    };
                }
                Err(err) => err,
            };
            let why = self.no_answer(&err);
            tracing::warn!(run_id = %asked.run_id, child_name = %asked.name, error = %err, "no answer to spawn; looking for the child among this session's children");
            let children = match self.api.children().await {
                Ok(children) => children,
                Err(list_err) => {
                    return SpawnAnswer::Refused {
                        reason: format!(
                            "spawn outcome unknown: {why}; this session's children could not be listed either ({list_err}), so a child named {:?} may exist until its TTL; not asked again",
                            asked.name
                        ),
                    };
                }
            };
            match lookup::find(&children, &asked.name, &asked.agent_name, &known) {
                Lookup::Found(child) => return self.spawned(asked, child.id, true),
                Lookup::NotActive(child) => {
                    let state = child.state.as_ref().map_or("unknown", |s| s.as_str());
                    return SpawnAnswer::Refused {
                        reason: format!(
                            "spawn not created: {why}; its child {} ({:?}) is {state}, not active",
                            child.id, asked.name
                        ),
                    };
                }
                Lookup::Absent if err.kind == ErrorKind::Transport && !asked_again => {
                    tracing::info!(run_id = %asked.run_id, child_name = %asked.name, "no child came of the lost spawn; asking once more");
                    asked_again = true;
                }
                Lookup::Absent => {
                    return SpawnAnswer::Refused {
                        reason: format!(
                            "spawn not created: {why}; no child named {:?} among this session's children",
                            asked.name
                        ),
                    };
                }
            }
        }
    }

    /// Why an answer says nothing about the child, for the handler.
    fn no_answer(&self, err: &ApiError) -> String {
        if err.kind == ErrorKind::Timeout {
            format!(
                "no answer within {} s (coordination.spawn_timeout_seconds), and giving up cancels the spawn in AGH; raise the timeout if the agent takes longer to start",
                self.settings.spawn_timeout.as_secs()
            )
        } else {
            format!("no usable answer ({err})")
        }
    }

    fn spawned(&self, asked: &Asked, session_id: String, found: bool) -> SpawnAnswer {
        let ttl = Duration::from_secs(asked.ttl_seconds.max(1) as u64);
        self.track(&session_id, &asked.agent_name, &asked.run_id, ttl);
        SpawnAnswer::Spawned {
            session_id,
            agent_name: asked.agent_name.clone(),
            ttl_seconds: asked.ttl_seconds,
            found_after_lost_answer: found,
        }
    }

    /// The reason for a refusal by the daemon; a limit means the budget may have changed.
    fn refusal(&self, err: &ApiError) -> String {
        match err.kind {
            ErrorKind::SpawnLimit => {
                *lock(&self.budget) = None;
                format!("spawn limit reached (daemon): {}", err.message)
            }
            ErrorKind::SpawnPermission | ErrorKind::PermissionDenied => {
                format!("spawn permission denied (daemon): {}", err.message)
            }
            ErrorKind::SpawnValidation | ErrorKind::Validation => {
                format!("invalid spawn request (daemon): {}", err.message)
            }
            _ => format!("spawn failed, not retried: {err}"),
        }
    }

    /// Records a child on the status board until its TTL: children outlive their run until the
    /// daemon reaps them, so they count against the budget until then, not until the run ends.
    fn track(&self, session_id: &str, agent_name: &str, run_id: &str, ttl: Duration) {
        self.status.child_spawned(
            ChildSession {
                session_id: session_id.to_string(),
                agent_name: agent_name.to_string(),
                run_id: run_id.to_string(),
                ttl_expires_at: SystemTime::now() + ttl,
            },
            Instant::now() + ttl,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_remaining_time_of_a_run_without_a_limit_is_unknown() {
        let clock = RunClock {
            started: Instant::now(),
            time_limit: None,
        };
        assert_eq!(clock.remaining(), None);
        let clock = RunClock {
            started: Instant::now(),
            time_limit: Some(Duration::from_secs(100)),
        };
        assert!(
            clock
                .remaining()
                .is_some_and(|left| left <= Duration::from_secs(100))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_spawn_that_never_reached_the_daemon_is_asked_once_more_after_no_child_is_found() {
        use crate::coordination::api::fake::FakeApi;
        use std::sync::atomic::Ordering;

        let api = Arc::new(FakeApi::default());
        let spawner = Spawner::new(
            api.clone(),
            StatusBoard::default(),
            SpawnSettings::default(),
        );
        let clock = RunClock {
            started: Instant::now(),
            time_limit: None,
        };
        let ask = SpawnAsk {
            agent_name: "helper".into(),
            ..SpawnAsk::default()
        };
        let answer = spawner.spawn("run-1", clock, ask).await;
        let SpawnAnswer::Refused { reason } = answer else {
            panic!("the fake never spawns: {answer:?}");
        };
        assert!(reason.starts_with("spawn not created"), "{reason}");
        assert_eq!(api.spawns.load(Ordering::SeqCst), 2, "asked twice, no more");
        assert_eq!(
            api.children_listed.load(Ordering::SeqCst),
            2,
            "looked before each decision"
        );
    }
}
