//! The spawner: owns every child session this worker creates. It checks the lineage budget
//! locally before calling `spawn` (so an exhausted budget costs no server call), caps each
//! child's TTL by the run's remaining time and a configured ceiling, never retries a spawn
//! (the daemon does not deduplicate them), and keeps a ledger of live children until their TTL.
//!
//! Budget exhaustion is an ordinary answer ([`SpawnAnswer::Refused`]), never an error of the run.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::api::CoordinationApi;
use crate::api::types::{CoordinatorConfig, Me, SpawnRequest};
use crate::api::{ApiError, ErrorKind};
use crate::handler::{SpawnAnswer, SpawnAsk};
use crate::util::sync::lock;
use crate::worker::StatusBoard;
use crate::worker::status::ChildSession;

/// The daemon's effective defaults when a lineage budget holds zeros (agh-protocol.md §6).
pub const DEFAULT_MAX_CHILDREN: i64 = 5;
/// A root session may spawn; its children may not (depth 1).
pub const DEFAULT_MAX_SPAWN_DEPTH: i64 = 1;
/// The daemon's default coordinator TTL, used when `coordinator/config` cannot be read.
pub const DEFAULT_TTL_SECONDS: i64 = 7_200;

/// What the daemon allows this session, as far as the worker can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// This session's depth in its spawn tree (0 for a root session).
    pub own_depth: i64,
    pub max_depth: i64,
    pub max_children: i64,
    /// TTL given to a child whose ask has none.
    pub default_ttl_seconds: i64,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            own_depth: 0,
            max_depth: DEFAULT_MAX_SPAWN_DEPTH,
            max_children: DEFAULT_MAX_CHILDREN,
            default_ttl_seconds: DEFAULT_TTL_SECONDS,
        }
    }
}

impl Budget {
    /// The budget from `me` and `coordinator/config`. The lineage's stored budget is what the
    /// daemon enforces, so it wins; zeros there fall back to `me.limits`, then to the daemon's
    /// defaults (5 children, depth 1).
    pub fn from_answers(me: Option<&Me>, coordinator: Option<&CoordinatorConfig>) -> Budget {
        let lineage = me
            .and_then(|me| me.session.as_ref())
            .and_then(|session| session.lineage.as_ref());
        let stored = lineage.and_then(|lineage| lineage.spawn_budget.as_ref());
        let limits = me.and_then(|me| me.limits.as_ref());
        let pick = |stored: Option<i64>, limit: Option<i64>, default: i64| {
            stored
                .filter(|v| *v > 0)
                .or(limit.filter(|v| *v > 0))
                .unwrap_or(default)
        };
        Budget {
            own_depth: lineage.map_or(0, |lineage| lineage.spawn_depth.max(0)),
            max_depth: pick(
                stored.map(|b| b.max_depth),
                limits.map(|l| l.max_spawn_depth),
                DEFAULT_MAX_SPAWN_DEPTH,
            ),
            max_children: pick(
                stored.map(|b| b.max_children),
                limits.map(|l| l.max_children),
                DEFAULT_MAX_CHILDREN,
            ),
            default_ttl_seconds: coordinator
                .map(|c| c.default_ttl_seconds)
                .filter(|ttl| *ttl > 0)
                .unwrap_or(DEFAULT_TTL_SECONDS),
        }
    }
}

/// Whether one more child fits the budget, given the live children this worker created.
/// `Err` carries the reason given to the handler.
pub fn check_budget(budget: &Budget, live_children: usize) -> Result<(), String> {
    let child_depth = budget.own_depth + 1;
    if child_depth > budget.max_depth {
        return Err(format!(
            "spawn limit: a child would be at depth {child_depth}, beyond max_spawn_depth {} (refused locally, nothing sent)",
            budget.max_depth
        ));
    }
    if live_children as i64 >= budget.max_children {
        return Err(format!(
            "spawn limit: {live_children} live children already, max_children is {} (refused locally, nothing sent)",
            budget.max_children
        ));
    }
    Ok(())
}

/// The TTL to ask for: the requested one (or the default), capped by the run's remaining time
/// (so nothing outlives the run) and by the configured ceiling; at least 1 s.
pub fn child_ttl(
    requested: Option<i64>,
    default_ttl_seconds: i64,
    remaining: Option<Duration>,
    ceiling_seconds: u64,
) -> Result<i64, String> {
    if let Some(ttl) = requested
        && ttl <= 0
    {
        return Err(format!(
            "invalid spawn request: ttl_seconds must be positive, got {ttl} (refused locally, nothing sent)"
        ));
    }
    let mut ttl = requested.unwrap_or(default_ttl_seconds).max(1);
    ttl = ttl.min(i64::try_from(ceiling_seconds).unwrap_or(i64::MAX).max(1));
    if let Some(remaining) = remaining {
        let left = i64::try_from(remaining.as_secs()).unwrap_or(i64::MAX);
        if left < 1 {
            return Err(
                "spawn limit: the run has no time left for a child session (refused locally, nothing sent)"
                    .into(),
            );
        }
        ttl = ttl.min(left);
    }
    Ok(ttl)
}

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
}

impl Default for SpawnSettings {
    fn default() -> Self {
        SpawnSettings {
            max_child_ttl_seconds: 3_600,
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
}

impl<A> std::fmt::Debug for Spawner<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spawner")
            .field("settings", &self.settings)
            .field("budget", &*lock(&self.budget))
            .finish_non_exhaustive()
    }
}

impl<A: CoordinationApi> Spawner<A> {
    pub fn new(api: Arc<A>, status: StatusBoard, settings: SpawnSettings) -> Self {
        Spawner {
            api,
            status,
            settings,
            budget: Mutex::new(None),
            gate: tokio::sync::Mutex::new(()),
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

    /// Answers one ask: a local budget check, then at most one `spawn` call.
    pub async fn spawn(&self, run_id: &str, clock: RunClock, ask: SpawnAsk) -> SpawnAnswer {
        let _one_at_a_time = self.gate.lock().await;
        let answer = self.decide(run_id, clock, ask).await;
        match &answer {
            SpawnAnswer::Spawned {
                session_id,
                agent_name,
                ttl_seconds,
            } => {
                tracing::info!(run_id, child = %session_id, agent = %agent_name, ttl_s = ttl_seconds, "child session spawned");
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
        let request = SpawnRequest {
            agent_name: agent_name.clone(),
            ttl_seconds: ttl,
            spawn_role: ask.spawn_role.filter(|role| !role.trim().is_empty()),
            auto_stop_on_parent: None,
            permissions: ask.permissions,
            provider: None,
            name: ask.name.filter(|name| !name.trim().is_empty()),
            prompt_overlay: ask.prompt_overlay.filter(|p| !p.is_empty()),
        };
        match self.api.spawn(&request).await {
            Ok(spawned) if !spawned.session.id.is_empty() => {
                let session_id = spawned.session.id.clone();
                let ttl_duration = Duration::from_secs(ttl as u64);
                self.track(&session_id, &agent_name, run_id, ttl_duration);
                SpawnAnswer::Spawned {
                    session_id,
                    agent_name,
                    ttl_seconds: ttl,
                }
            }
            Ok(_) => refused(
                "spawn failed: the daemon answered without a session id; not retried".into(),
            ),
            Err(err) => refused(self.refusal(&err)),
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
    use crate::api::types::{AgentLimits, Lineage, SessionSummary, SpawnBudget};

    fn me(depth: i64, stored: Option<(i64, i64)>, limits: Option<(i64, i64)>) -> Me {
        Me {
            session: Some(SessionSummary {
                lineage: Some(Lineage {
                    spawn_depth: depth,
                    spawn_budget: stored.map(|(children, depth)| SpawnBudget {
                        max_children: children,
                        max_depth: depth,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            limits: limits.map(|(children, depth)| AgentLimits {
                max_children: children,
                max_spawn_depth: depth,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn zeros_in_the_lineage_budget_mean_the_limits_then_the_defaults() {
        assert_eq!(Budget::from_answers(None, None), Budget::default());
        let budget = Budget::from_answers(Some(&me(0, Some((0, 0)), None)), None);
        assert_eq!((budget.max_children, budget.max_depth), (5, 1));
        let budget = Budget::from_answers(Some(&me(0, Some((0, 0)), Some((3, 2)))), None);
        assert_eq!((budget.max_children, budget.max_depth), (3, 2));
        let budget = Budget::from_answers(Some(&me(1, Some((2, 3)), Some((5, 1)))), None);
        assert_eq!(
            (budget.own_depth, budget.max_children, budget.max_depth),
            (1, 2, 3)
        );
        let coordinator = CoordinatorConfig {
            default_ttl_seconds: 600,
            ..Default::default()
        };
        assert_eq!(
            Budget::from_answers(None, Some(&coordinator)).default_ttl_seconds,
            600
        );
    }

    #[test]
    fn a_child_beyond_the_depth_or_the_children_budget_is_refused_locally() {
        let root = Budget {
            own_depth: 0,
            max_depth: 1,
            max_children: 2,
            default_ttl_seconds: 60,
        };
        assert_eq!(check_budget(&root, 0), Ok(()));
        assert_eq!(check_budget(&root, 1), Ok(()));
        let full = check_budget(&root, 2).unwrap_err();
        assert!(full.contains("max_children is 2"), "{full}");
        let child = Budget {
            own_depth: 1,
            ..root
        };
        let deep = check_budget(&child, 0).unwrap_err();
        assert!(
            deep.contains("depth 2") && deep.contains("max_spawn_depth 1"),
            "{deep}"
        );
    }

    #[test]
    fn the_ttl_is_capped_by_the_run_and_the_ceiling_and_never_below_one_second() {
        // The ask's own TTL, within every cap.
        assert_eq!(child_ttl(Some(60), 7200, None, 3600), Ok(60));
        // No TTL asked: the coordinator default, capped by the ceiling.
        assert_eq!(child_ttl(None, 7200, None, 3600), Ok(3600));
        // The run's remaining time caps it (whole seconds).
        assert_eq!(
            child_ttl(Some(600), 7200, Some(Duration::from_millis(90_900)), 3600),
            Ok(90)
        );
        // A run with no time left spawns nothing.
        assert!(child_ttl(Some(600), 7200, Some(Duration::from_millis(400)), 3600).is_err());
        // A TTL the daemon would refuse is refused here.
        assert!(child_ttl(Some(0), 7200, None, 3600).is_err());
        assert!(child_ttl(Some(-5), 7200, None, 3600).is_err());
    }

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
}
