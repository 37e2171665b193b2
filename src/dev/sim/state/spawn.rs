//! Spawn and lineage: child sessions within the parent's budget and permissions, and the reaper
//! that stops children past their TTL or without a live parent.

use std::time::Duration;

use serde_json::{Value, json};

use super::super::clock::Timestamp;
use super::super::errors::SimError;
use super::super::ledger::TransitionKind;
use super::super::requests::SpawnRequest;
use super::super::types::{SessionState, SpawnBudget};
use super::{
    DEFAULT_MAX_CHILDREN, DEFAULT_MAX_DEPTH, Lineage, RunStatus, Session, SimState, new_id,
};

/// AGH's daemon-owned extractor children (`session/spawn.go` ~21-22): no channel, not listed.
const MEMORY_EXTRACTOR_ROLE: &str = "memory-extractor";

impl Session {
    /// The lineage's budget with zeros replaced by the daemon defaults.
    fn effective_budget(&self) -> SpawnBudget {
        let stored = self
            .lineage
            .as_ref()
            .map(|lineage| lineage.budget)
            .unwrap_or_default();
        SpawnBudget {
            max_children: if stored.max_children == 0 {
                DEFAULT_MAX_CHILDREN
            } else {
                stored.max_children
            },
            max_depth: if stored.max_depth == 0 {
                DEFAULT_MAX_DEPTH
            } else {
                stored.max_depth
            },
            ..stored
        }
    }

    fn depth(&self) -> u32 {
        self.lineage
            .as_ref()
            .map_or(0, |lineage| lineage.spawn_depth)
    }
}

impl SimState {
    pub(crate) fn spawn(
        &mut self,
        session_id: &str,
        request: SpawnRequest,
        now: Timestamp,
    ) -> Result<Value, SimError> {
        let parent = self.session(session_id)?;
        if parent.state != SessionState::Active {
            return Err(SimError::new(
                422,
                format!(
                    "session: spawn validation failed: parent session {session_id:?} is not active"
                ),
            ));
        }
        let budget = parent.effective_budget();
        let child_depth = parent.depth() + 1;
        if child_depth > budget.max_depth {
            return Err(SimError::new(
                409,
                format!(
                    "session: spawn limit exceeded: child depth {child_depth} exceeds max_depth {}",
                    budget.max_depth
                ),
            ));
        }
        let live_children = self
            .sessions
            .values()
            .filter(|session| {
                session.state.is_live()
                    && session.lineage.as_ref().is_some_and(|lineage| {
                        lineage.parent_session_id.as_deref() == Some(session_id)
                    })
            })
            .count();
        if live_children >= budget.max_children as usize {
            return Err(SimError::new(
                409,
                format!(
                    "session: spawn limit exceeded: parent session {session_id:?} has {live_children} live children (max_children {})",
                    budget.max_children
                ),
            ));
        }
        let root = parent.lineage.as_ref().map_or_else(
            || parent.id.clone(),
            |lineage| lineage.root_session_id.clone(),
        );
        if budget.max_active_per_workspace > 0 {
            let live_in_workspace = self
                .sessions
                .values()
                .filter(|session| {
                    session.state.is_live()
                        && session.workspace_id == parent.workspace_id
                        && (session.id == root
                            || session
                                .lineage
                                .as_ref()
                                .is_some_and(|lineage| lineage.root_session_id == root))
                })
                .count();
            if live_in_workspace >= budget.max_active_per_workspace as usize {
                return Err(SimError::new(
                    409,
                    format!(
                        "session: spawn limit exceeded: workspace has {live_in_workspace} live sessions (max_active_per_workspace {})",
                        budget.max_active_per_workspace
                    ),
                ));
            }
        }
        let requested = request.permissions.clone().unwrap_or_default();
        let parent_policy = parent
            .lineage
            .as_ref()
            .map(|lineage| lineage.permissions.clone())
            .unwrap_or_default();
        for ((category, child_atoms), (_, parent_atoms)) in requested
            .categories()
            .into_iter()
            .zip(parent_policy.categories())
        {
            if let Some(atom) = child_atoms.iter().find(|atom| !parent_atoms.contains(atom)) {
                return Err(SimError::new(
                    403,
                    format!(
                        "session: spawn permission denied: child {category} permission atom {atom:?} widens parent permissions"
                    ),
                ));
            }
        }
        let role = request.role();
        let ttl = request.ttl_seconds.unsigned_abs();
        let lineage = Lineage {
            parent_session_id: Some(session_id.to_owned()),
            root_session_id: root,
            spawn_depth: child_depth,
            spawn_role: Some(role.clone()),
            ttl_expires_at: Some(now.plus(Duration::from_secs(ttl))),
            auto_stop_on_parent: request.auto_stop_on_parent.unwrap_or(true),
            budget: SpawnBudget {
                ttl_seconds: ttl,
                ..budget
            },
            permissions: requested.clone(),
        };
        let child_id = new_id("sess");
        let agent_name = request.agent_name.trim().to_owned();
        let child = Session {
            name: request
                .name
                .clone()
                .filter(|name| !name.is_empty())
                .unwrap_or_else(|| agent_name.clone()),
            workspace_id: parent.workspace_id.clone(),
            kind: "spawned",
            channel: if role == MEMORY_EXTRACTOR_ROLE {
                None
            } else {
                parent.channel.clone()
            },
            provider: request
                .provider
                .clone()
                .filter(|provider| !provider.is_empty()),
            lineage: Some(lineage.clone()),
            ..Session::new(child_id.clone(), agent_name, now)
        };
        let payload = json!({ "spawn": {
            "session": Self::session_full(&child),
            "lineage": Self::lineage_payload(&lineage),
            "permissions": requested,
        }});
        self.sessions.insert(child_id, child);
        Ok(payload)
    }

    /// Stops spawned sessions whose TTL passed or whose parent is gone; returns how many.
    pub(crate) fn reap_spawned(&mut self, now: Timestamp) -> usize {
        let doomed: Vec<(String, &'static str)> = self
            .sessions
            .values()
            .filter(|session| session.state.is_live())
            .filter_map(|session| {
                let lineage = session.lineage.as_ref()?;
                let parent_id = lineage.parent_session_id.as_deref()?;
                let ttl_passed = lineage.ttl_expires_at.is_some_and(|ttl| ttl <= now);
                let parent = self.sessions.get(parent_id);
                let parent_gone = parent.is_none()
                    || (lineage.auto_stop_on_parent && parent.is_some_and(|p| !p.state.is_live()));
                let reason = if parent.is_none() {
                    "orphaned"
                } else if ttl_passed {
                    "ttl_expired"
                } else {
                    "parent_stopped"
                };
                (ttl_passed || parent_gone).then(|| (session.id.clone(), reason))
            })
            .collect();
        for (session_id, reason) in &doomed {
            let reason = *reason;
            let active = self
                .sessions
                .get(session_id)
                .and_then(|s| s.active_run.clone());
            if let Some(run_id) = active
                && self
                    .runs
                    .get(&run_id)
                    .is_some_and(|run| run.status == RunStatus::Claimed)
            {
                self.requeue(&run_id, TransitionKind::ReleasedByReaper, Some(reason), now);
            }
            if let Some(session) = self.sessions.get_mut(session_id) {
                session.state = SessionState::Stopped;
                session.updated_at = now;
            }
        }
        doomed.len()
    }
}

impl SimState {
    /// `GET /api/sessions`: `{"sessions": [SessionPayload]}` (AGH `contract/responses.go` ~8-10,
    /// `contract/contract.go` ~91-120), lineage included (`core/conversions.go` ~46-76); internal
    /// memory-extractor children are hidden (`conversions.go` ~119-128). Oldest first.
    pub(crate) fn sessions_list(&self) -> Value {
        let mut sessions: Vec<&Session> = self
            .sessions
            .values()
            .filter(|session| {
                !session.lineage.as_ref().is_some_and(|lineage| {
                    lineage.spawn_role.as_deref() == Some(MEMORY_EXTRACTOR_ROLE)
                })
            })
            .collect();
        sessions.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        let sessions: Vec<Value> = sessions.into_iter().map(Self::session_full).collect();
        json!({ "sessions": sessions })
    }
}
