//! Leases the session holds without a task on them: after a restart, a lost claim answer, or a
//! claim given up as it committed. Adopted or released per `worker.orphan_policy`; an adopted
//! lease is rebuilt into a claim from the lease summary and the context bundle.

use tokio::time::Instant;

use super::status::RunEnd;
use super::{AghApi, ClaimLoop, EventSink, lease};
use crate::api::ApiError;
use crate::api::ErrorKind;
use crate::api::types::{Claim, LeaseSummary, ReleaseRequest, TaskRef, TaskRun};
use crate::config::OrphanPolicy;
use crate::util::time::parse_rfc3339;

impl<A: AghApi, E: EventSink> ClaimLoop<A, E> {
    /// Finds a lease this session holds without a task owning it, and adopts or releases it per
    /// `orphan_policy`. Answers `None` when there was none, `Some(None)` when it was released,
    /// and `Some(Some(end))` when it was adopted and run to `end`.
    pub(super) async fn recover_orphans(&self) -> Result<Option<Option<RunEnd>>, ApiError> {
        let me = self.api.me().await?;
        self.status.identity_confirmed();
        if let Some(limits) = &me.limits
            && limits.max_active_task_leases > 1
        {
            tracing::info!(
                max_active_task_leases = limits.max_active_task_leases,
                "the daemon allows several leases per session; this worker still runs one at a time"
            );
        }
        let Some(orphan) = me.active_task_leases.into_iter().next() else {
            return Ok(None);
        };
        if orphan.run_id.is_empty() {
            return Ok(None);
        }
        match self.settings.get().orphan_policy {
            OrphanPolicy::Release => {
                tracing::warn!(run_id = %orphan.run_id, "releasing a lease this session held without a worker on it");
                let request = ReleaseRequest {
                    reason: Some(
                        "agh-worker: orphaned lease released (worker.orphan_policy = release)"
                            .into(),
                    ),
                };
                match self.api.release(&orphan.run_id, &request).await {
                    Ok(_) => self.status.run_ended(RunEnd::Released),
                    Err(err) if err.kind.is_lease_lost() || err.kind == ErrorKind::Conflict => {
                        tracing::info!(run_id = %orphan.run_id, error = %err, "the orphaned lease had already ended");
                    }
                    Err(err) => return Err(err),
                }
                Ok(Some(None))
            }
            OrphanPolicy::Adopt => {
                tracing::warn!(run_id = %orphan.run_id, "adopting a lease this session held without a worker on it");
                let claim = claim_from_orphan(self.api.as_ref(), orphan).await;
                self.status.run_adopted();
                let end =
                    lease::run_lease(self, claim, Instant::now(), lease::Origin::Adopted).await;
                Ok(Some(Some(end)))
            }
        }
    }

    /// Releases whatever lease the session holds (used when the loop stops with a claim open).
    pub(super) async fn release_anything_held(&self, reason: &str) -> Result<(), ApiError> {
        let me = self.api.me().await?;
        for lease in me.active_task_leases {
            if lease.run_id.is_empty() {
                continue;
            }
            tracing::warn!(run_id = %lease.run_id, "a claim committed as the worker stopped waiting; releasing it");
            let request = ReleaseRequest {
                reason: Some(format!("agh-worker: {reason}")),
            };
            match self.api.release(&lease.run_id, &request).await {
                Ok(_) => self.status.run_ended(RunEnd::Released),
                Err(err) if err.kind.is_lease_lost() => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }
}

/// Rebuilds a claim for an orphaned lease from the lease summary and the context's task section.
/// The bundle's `current_run` is a run summary (AGH `internal/task/types.go` ~428-447): no
/// metadata, result or origin (the task view supplies the metadata later), and unset times written
/// as Go's zero time, which are dropped here so no handler mistakes them for instants.
pub(super) async fn claim_from_orphan<A: AghApi>(api: &A, lease: LeaseSummary) -> Claim {
    let mut claim = Claim {
        task: TaskRef {
            id: lease.task_id.clone().unwrap_or_default(),
            ..Default::default()
        },
        run: TaskRun {
            id: lease.run_id.clone(),
            task_id: lease.task_id.clone(),
            status: lease.status.clone(),
            coordination_channel_id: lease.coordination_channel_id.clone(),
            ..Default::default()
        },
        coordination_channel: lease.coordination_channel.clone(),
        lease,
    };
    if let Ok(context) = api.context().await
        && let Some(section) = context.task
    {
        if let Some(task) = section.task.filter(|t| !t.id.is_empty()) {
            claim.task = task;
        }
        if let Some(run) = section
            .bundle
            .and_then(|b| b.current_run)
            .filter(|r| r.id == claim.run.id)
        {
            claim.run = run;
        }
    }
    for time in [
        &mut claim.run.lease_until,
        &mut claim.run.heartbeat_at,
        &mut claim.run.claimed_at,
        &mut claim.run.queued_at,
        &mut claim.run.started_at,
        &mut claim.run.ended_at,
        &mut claim.lease.lease_until,
        &mut claim.lease.heartbeat_at,
    ] {
        unset_if_zero(time);
    }
    if claim.lease.lease_until.is_none() {
        claim.lease.lease_until = claim.run.lease_until.clone();
    }
    claim
}

/// Drops a time that does not read as a real instant (Go's zero time means "not set").
fn unset_if_zero(time: &mut Option<String>) {
    if time.as_deref().and_then(parse_rfc3339).is_none() {
        *time = None;
    }
}
