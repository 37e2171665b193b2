//! The lineage budget and the child TTL, decided locally before anything is sent: an exhausted
//! budget or a run with no time left costs no server call.

use std::time::Duration;

use crate::api::types::{CoordinatorConfig, Me};

/// AGH's fallback when a lineage budget holds zeros (`internal/session/spawn.go` ~14-18, 443-452).
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
    /// daemon enforces; a zero there means AGH's own fallback (5 children, depth 1), exactly as
    /// `effectiveSpawnBudget` does. `me.limits` is not consulted: AGH's spawn never reads it.
    pub fn from_answers(me: Option<&Me>, coordinator: Option<&CoordinatorConfig>) -> Budget {
        let lineage = me
            .and_then(|me| me.session.as_ref())
            .and_then(|session| session.lineage.as_ref());
        let stored = lineage.and_then(|lineage| lineage.spawn_budget.as_ref());
        let pick = |stored: Option<i64>, default: i64| stored.filter(|v| *v > 0).unwrap_or(default);
        Budget {
            own_depth: lineage.map_or(0, |lineage| lineage.spawn_depth.max(0)),
            max_depth: pick(stored.map(|b| b.max_depth), DEFAULT_MAX_SPAWN_DEPTH),
            max_children: pick(stored.map(|b| b.max_children), DEFAULT_MAX_CHILDREN),
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
    fn zeros_in_the_lineage_budget_mean_five_children_at_depth_one_whatever_the_limits_say() {
        assert_eq!(Budget::from_answers(None, None), Budget::default());
        let budget = Budget::from_answers(Some(&me(0, Some((0, 0)), None)), None);
        assert_eq!((budget.max_children, budget.max_depth), (5, 1));
        // AGH's spawn falls back to its own constants, never to `me.limits`.
        let budget = Budget::from_answers(Some(&me(0, Some((0, 0)), Some((3, 2)))), None);
        assert_eq!((budget.max_children, budget.max_depth), (5, 1));
        let budget = Budget::from_answers(Some(&me(0, Some((0, 4)), Some((9, 9)))), None);
        assert_eq!((budget.max_children, budget.max_depth), (5, 4));
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
}
