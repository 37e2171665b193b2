//! The keeper of one lease: it renews the lease while the handler works, sooner after a failed
//! renewal but never later than the regular interval, and reports the lease's loss once, to the
//! supervisor in `lease.rs`, with the deadline each renewal moves.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::status::{LeaseLostReason, RunEnd};
use super::task_stream::OperatorCancel;
use super::{AghApi, StatusBoard, WorkerSettings};
use crate::api::types::HeartbeatRequest;
use crate::api::{ApiError, ErrorKind};
use crate::util::backoff::Backoff;

/// Why the lease is no longer ours.
#[derive(Clone, Debug, PartialEq)]
pub enum LeaseLoss {
    /// The daemon said so (expired, no active lease, foreign run, session gone).
    Rejected(ApiError),
    /// Renewals kept failing and the reckoned lease end came within the safety margin.
    DeadlineNear,
    /// An operator cancelled the run; the task stream said so before any heartbeat could.
    Canceled(OperatorCancel),
}

impl LeaseLoss {
    /// How a run that lost its lease this way ends, counted on `status` (why a lease was lost
    /// goes to the per-reason counters; a cancel is an ending of its own).
    pub(super) fn end(&self, status: &StatusBoard) -> RunEnd {
        let reason = match self {
            LeaseLoss::Rejected(_) => LeaseLostReason::Rejected,
            LeaseLoss::DeadlineNear => LeaseLostReason::Deadline,
            LeaseLoss::Canceled(_) => return RunEnd::Canceled,
        };
        status.lease_lost(reason);
        RunEnd::LeaseLost
    }
}

impl std::fmt::Display for LeaseLoss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeaseLoss::Rejected(err) => write!(f, "the daemon rejected the lease: {err}"),
            LeaseLoss::DeadlineNear => {
                f.write_str("heartbeats kept failing and the lease was about to expire")
            }
            LeaseLoss::Canceled(cancel) => cancel.fmt(f),
        }
    }
}

/// The supervisor's side of the keeper: the loss it reports, once, and the lease deadline as
/// each renewal moves it.
pub(super) struct KeeperHandle {
    pub(super) loss: Option<oneshot::Receiver<LeaseLoss>>,
    /// A loss seen by [`KeeperHandle::has_ended`] and not yet taken by [`KeeperHandle::lost`].
    pub(super) reported: Option<LeaseLoss>,
    pub(super) deadline: watch::Receiver<Instant>,
}

impl KeeperHandle {
    /// Waits for the keeper to report a loss (never, once it has reported one).
    pub(super) async fn lost(&mut self) -> LeaseLoss {
        if let Some(loss) = self.reported.take() {
            return loss;
        }
        match self.loss.as_mut() {
            Some(receiver) => {
                // A keeper gone without a word cannot vouch for the lease.
                let loss = receiver.await.unwrap_or(LeaseLoss::DeadlineNear);
                self.loss = None;
                loss
            }
            None => std::future::pending().await,
        }
    }

    /// Whether the keeper has already reported a loss.
    pub(super) fn has_ended(&mut self) -> bool {
        if self.reported.is_some() {
            return true;
        }
        let Some(receiver) = self.loss.as_mut() else {
            return false;
        };
        match receiver.try_recv() {
            Ok(loss) => {
                self.reported = Some(loss);
                self.loss = None;
                true
            }
            Err(oneshot::error::TryRecvError::Empty) => false,
            Err(oneshot::error::TryRecvError::Closed) => {
                self.reported = Some(LeaseLoss::DeadlineNear);
                self.loss = None;
                true
            }
        }
    }
}

/// Renews the lease until stopped; returns when it is lost.
pub(super) async fn keep_lease<A: AghApi>(
    api: Arc<A>,
    run_id: String,
    settings: Arc<WorkerSettings>,
    status: super::StatusBoard,
    deadline_tx: watch::Sender<Instant>,
    first_beat: Instant,
) -> LeaseLoss {
    let margin = settings.lease_margin();
    let request = HeartbeatRequest {
        lease_seconds: Some(settings.lease.as_secs().max(1) as i64),
    };
    let mut deadline = *deadline_tx.borrow();
    let mut next_beat = first_beat;
    let mut failures: u32 = 0;
    loop {
        let give_up_at = deadline.checked_sub(margin).unwrap_or(deadline);
        tokio::time::sleep_until(next_beat.min(give_up_at)).await;
        if Instant::now() >= give_up_at {
            return LeaseLoss::DeadlineNear;
        }
        let sent = Instant::now();
        let attempt = tokio::time::timeout_at(give_up_at, api.heartbeat(&run_id, &request)).await;
        match attempt {
            Ok(Ok(_)) => {
                failures = 0;
                deadline = sent + settings.lease;
                let _ = deadline_tx.send(deadline);
                next_beat = sent + settings.heartbeat_every;
                status.heartbeat_ok();
            }
            Ok(Err(err)) if lease_rejected(&err) => {
                status.heartbeat_failed(true);
                return LeaseLoss::Rejected(err);
            }
            Ok(Err(err)) => {
                failures += 1;
                status.heartbeat_failed(err.status.is_some());
                let retry_in = heartbeat_retry_delay(failures, settings.heartbeat_every);
                tracing::warn!(error = %err, failures, retry_in_ms = retry_in.as_millis() as u64, "heartbeat failed");
                next_beat = Instant::now() + retry_in;
            }
            Err(_) => {
                status.heartbeat_failed(false);
                return LeaseLoss::DeadlineNear;
            }
        }
    }
}

/// Answers that mean the lease is gone for good.
fn lease_rejected(err: &ApiError) -> bool {
    err.kind.is_lease_lost()
        || err.kind.is_identity()
        || matches!(err.kind, ErrorKind::Conflict | ErrorKind::NotFound)
}

/// After `failures` failed renewals: 1 s, 2 s, 4 s … but never later than the regular interval.
fn heartbeat_retry_delay(failures: u32, every: Duration) -> Duration {
    Backoff::new(Duration::from_secs(1), every)
        .delay_after(failures.saturating_sub(1))
        .min(every)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_retries_speed_up_but_never_exceed_the_interval() {
        let every = Duration::from_secs(20);
        assert_eq!(heartbeat_retry_delay(1, every), Duration::from_secs(1));
        assert_eq!(heartbeat_retry_delay(3, every), Duration::from_secs(4));
        assert_eq!(heartbeat_retry_delay(30, every), every);
    }
}
