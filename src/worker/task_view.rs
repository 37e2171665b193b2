//! The task view read after each claim and each adoption (`GET /api/tasks/{id}`, with the
//! session's identity headers): the only read that carries the task's description and its own
//! metadata, and, for an adopted run, the run's metadata. A run never waits on it for long and
//! never fails for want of it: without it the document says `task_details: "unavailable"`.

use std::time::Duration;

use super::{AghApi, WorkerSettings};
use crate::api::types::{Claim, TaskView};

/// The longest the read may take, whatever the lease.
const MAX_READ: Duration = Duration::from_secs(10);

/// How long the task view may take: the lease's safety margin (a sixth of the lease), at most
/// 10 s. The keeper renews the lease while the read is in flight, so the read cannot cost the
/// lease; the bound keeps the handler's start within the margin the keeper already reserves, so
/// even a run whose first renewal fails starts with time left before the lease is given up, and a
/// hung daemon delays a handler by seconds, not by the client's retry budget.
pub(super) fn read_bound(settings: &WorkerSettings) -> Duration {
    settings.lease_margin().min(MAX_READ)
}

/// Reads the view of the claimed run's task within `bound`; `None` (logged) when it cannot be.
pub(super) async fn read<A: AghApi>(api: &A, claim: &Claim, bound: Duration) -> Option<TaskView> {
    let task_id = if claim.task.id.is_empty() {
        claim.run.task_id.as_deref().unwrap_or_default()
    } else {
        claim.task.id.as_str()
    };
    if task_id.is_empty() {
        tracing::warn!(
            "the run names no task; the handler gets what the claim gave (task_details: unavailable)"
        );
        return None;
    }
    match tokio::time::timeout(bound, api.task(task_id)).await {
        Ok(Ok(view)) => Some(view),
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "could not read the task view; the handler gets what the claim gave (task_details: unavailable)");
            None
        }
        Err(_) => {
            tracing::warn!(
                bound_ms = bound.as_millis() as u64,
                "the task view did not come in time; the handler gets what the claim gave (task_details: unavailable)"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn the_read_is_bounded_by_the_lease_margin_and_ten_seconds() {
        let mut settings = WorkerSettings::from_config(&Config::default());
        settings.lease = Duration::from_secs(30);
        assert_eq!(read_bound(&settings), Duration::from_secs(5));
        settings.lease = Duration::from_secs(600);
        assert_eq!(read_bound(&settings), MAX_READ);
    }
}
