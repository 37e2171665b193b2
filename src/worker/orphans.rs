//! Leases the session holds without a task on them: after a restart, a lost claim answer, or a
//! claim given up as it committed. Adopted or released per `worker.orphan_policy`.

use tokio::time::Instant;

use super::status::RunEnd;
use super::{AghApi, ClaimLoop, EventSink, lease};
use crate::api::ApiError;
use crate::api::ErrorKind;
use crate::api::types::ReleaseRequest;
use crate::config::OrphanPolicy;

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
                let claim = lease::claim_from_orphan(self.api.as_ref(), orphan).await;
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
