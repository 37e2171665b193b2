//! The one terminal call of a run: complete, fail or release, sent once. When its answer is lost
//! (the connection dropped, the answer unreadable, or a retry refused because an earlier attempt
//! may have been applied), the daemon's record of the run, `GET /api/task-runs/{id}`, says
//! whether it took effect; the worker does not guess.

use super::keeper::KeeperHandle;
use super::payload::{MAX_PAYLOAD_BYTES, cap, failure_message};
use super::status::{LeaseLostReason, RunEnd};
use super::{AghApi, ClaimLoop, EventSink};
use crate::api::types::{
    CompleteRequest, FailRequest, LeaseSummary, ReleaseRequest, RunStatus, TaskRun,
};
use crate::api::{ApiError, ErrorKind};
use crate::handler::Outcome;

/// Makes the single terminal call for `outcome`.
pub(super) async fn finish<A: AghApi, E: EventSink>(
    worker: &ClaimLoop<A, E>,
    run_id: &str,
    outcome: Outcome,
    keeper: &mut KeeperHandle,
) -> RunEnd {
    let api = worker.api.as_ref();
    let (intended, call) = TerminalCall::for_outcome(outcome);
    // The keeper is asked first. When the handler returned at the instant a heartbeat was
    // answered "lease lost", both were ready to the supervisor, which may pick the handler's
    // outcome; the terminal call must then not be sent, the daemon having said the lease was no
    // longer ours.
    if keeper.has_ended() {
        return keeper_loss(
            worker,
            keeper,
            &call,
            "lease lost before the terminal call was sent",
        )
        .await;
    }
    // Once the call is on its way, the daemon's answer to it settles the run; the keeper goes on
    // renewing meanwhile but no longer decides. Giving up the call when the keeper reported a
    // loss raced with the call itself: a heartbeat that reached the daemon just after our own
    // `complete` was answered "lease expired" (the run was completed, its token cleared), and
    // the worker dropped the call it had just made succeed and counted the run as a lost lease.
    // A call sent after the lease really passed on is refused by the daemon (token fencing).
    // Lost and unreadable answers are retried inside the client; what is still unknown after
    // that is read from the run, and the call is sent once more only if it did not land.
    let mut resent = false;
    loop {
        let err = match call.send(api, run_id).await {
            Ok(_) => {
                tracing::info!(call = call.name(), "run finished");
                worker.status.contact();
                return intended;
            }
            Err(err) => err,
        };
        if call.result_refused(&err) {
            return fail_refused_result(api, run_id, &err).await;
        }
        if !outcome_unknown(&err, resent) {
            return refused(worker, &call, &err);
        }
        let landed = confirm_terminal(api, run_id, &call).await;
        match settle(worker, keeper, &call, intended, &err, landed, resent).await {
            Some(end) => return end,
            None => resent = true,
        }
    }
}

/// The run end a lost answer comes to, given what reading the run said (`landed`); `None` to
/// send the call once more.
async fn settle<A: AghApi, E: EventSink>(
    worker: &ClaimLoop<A, E>,
    keeper: &mut KeeperHandle,
    call: &TerminalCall,
    intended: RunEnd,
    err: &ApiError,
    landed: Result<Landed, String>,
    resent: bool,
) -> Option<RunEnd> {
    let end = match landed {
        Ok(Landed::Yes) => {
            tracing::info!(call = call.name(), error = %err, "the answer was lost, but the call took effect: confirmed by reading the run");
            worker.status.contact();
            intended
        }
        Ok(Landed::No) if keeper.has_ended() => {
            let what = "the terminal call did not land and the lease was lost meanwhile";
            keeper_loss(worker, keeper, call, what).await
        }
        Ok(Landed::No) if !resent => {
            tracing::warn!(call = call.name(), error = %err, "the terminal call did not land (the run is still ours): sending it once more");
            return None;
        }
        Ok(Landed::No) => {
            tracing::error!(call = call.name(), error = %err, "the terminal call did not land, twice; the lease will expire and the run return to the queue");
            RunEnd::TerminalCallFailed
        }
        Ok(Landed::Elsewhere(status)) => {
            tracing::warn!(call = call.name(), run_status = %status, error = %err, "the terminal call did not land: the run went on without this session (confirmed by reading the run)");
            worker.status.lease_lost(LeaseLostReason::Rejected);
            RunEnd::LeaseLost
        }
        Err(read) => unconfirmed(call, intended, err, &read),
    };
    Some(end)
}

/// What the daemon's record of a run says about a terminal call whose answer was lost.
#[derive(Clone, Debug, PartialEq)]
enum Landed {
    /// The run is where the call puts it, bound to this session: the call took effect.
    Yes,
    /// The run is still claimed by this session: the call did not take effect.
    No,
    /// The run went on without this session (back in the queue, claimed by another session,
    /// ended some other way); the status it is in.
    Elsewhere(String),
}

/// Reads the run and judges whether `call` took effect. An error when the run cannot be read or
/// its record does not tell.
async fn confirm_terminal<A: AghApi>(
    api: &A,
    run_id: &str,
    call: &TerminalCall,
) -> Result<Landed, String> {
    let detail = api.task_run(run_id).await.map_err(|err| err.to_string())?;
    if detail.run.id != run_id {
        return Err(format!("the daemon answered about run {:?}", detail.run.id));
    }
    judge(call.kind(), &detail.run, api.session_id()).ok_or_else(|| {
        let status = detail.run.status.as_ref().map_or("none", RunStatus::as_str);
        format!("the run's record does not tell (status {status})")
    })
}

/// Which terminal call was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CallKind {
    Complete,
    Fail,
    Release,
}

/// The status each call leaves a run in (agh-protocol.md §3.8): complete → `completed`, fail →
/// `failed` (both keep the session), release → `queued` (session cleared). A run still
/// claimed by `us` did not see the call; anything else means it went on without us. `None`
/// when the record does not tell.
fn judge(call: CallKind, run: &TaskRun, us: &str) -> Option<Landed> {
    let status = run.status.as_ref()?;
    let ours = run.holder().is_none_or(|holder| holder == us);
    let elsewhere = || Some(Landed::Elsewhere(status.to_string()));
    match (status, call) {
        (RunStatus::Completed, CallKind::Complete) | (RunStatus::Failed, CallKind::Fail)
            if ours =>
        {
            Some(Landed::Yes)
        }
        // A release and a lease swept after it expired both leave the run queued: either way
        // it is back in the queue, which is what the release was for.
        (RunStatus::Queued, CallKind::Release) => Some(Landed::Yes),
        (RunStatus::Claimed | RunStatus::Starting | RunStatus::Running, _) => match run.holder() {
            Some(holder) if holder == us => Some(Landed::No),
            Some(_) => elsewhere(),
            None => None,
        },
        (
            RunStatus::Queued
            | RunStatus::Completed
            | RunStatus::Failed
            | RunStatus::Canceled
            | RunStatus::NeedsAttention,
            _,
        ) => elsewhere(),
        (RunStatus::Other(_), _) => None,
    }
}

/// Whether a failed terminal call may still have taken effect: its answer was lost or
/// unreadable, or an earlier attempt (a client retry, or the call before a re-send) may have
/// been applied and this answer is only the refusal of a repeat.
fn outcome_unknown(err: &ApiError, resent: bool) -> bool {
    err.attempts > 1
        || resent
        || matches!(
            err.kind,
            ErrorKind::Transport
                | ErrorKind::Timeout
                | ErrorKind::MalformedBody
                | ErrorKind::ResponseTooLarge
                | ErrorKind::Server
                | ErrorKind::UnexpectedStatus
        )
}

/// The daemon refused the one attempt of the call: nothing was applied.
fn refused<A: AghApi, E: EventSink>(
    worker: &ClaimLoop<A, E>,
    call: &TerminalCall,
    err: &ApiError,
) -> RunEnd {
    if err.kind.is_lease_lost() || err.kind == ErrorKind::Conflict {
        tracing::warn!(call = call.name(), error = %err, "the lease was no longer ours at the terminal call");
        worker.status.lease_lost(LeaseLostReason::Rejected);
        RunEnd::LeaseLost
    } else if err.is_unsent_for_stop() {
        tracing::info!(
            call = call.name(),
            "AGH is stopping the session: no terminal call; the lease will expire and the run return to the queue"
        );
        RunEnd::TerminalCallFailed
    } else {
        tracing::error!(call = call.name(), error = %err, "the terminal call did not get through; the lease will expire and the run return to the queue");
        RunEnd::TerminalCallFailed
    }
}

/// The run could not be read after a lost answer: what the answer alone suggests, said to be
/// unconfirmed. A 409 to a repeat means an earlier attempt was most likely applied.
fn unconfirmed(call: &TerminalCall, intended: RunEnd, err: &ApiError, read: &str) -> RunEnd {
    if err.kind.is_lease_lost() || err.kind == ErrorKind::Conflict {
        tracing::info!(call = call.name(), error = %err, read_error = %read, "an earlier attempt of the terminal call was most likely applied (unconfirmed: the run could not be read)");
        intended
    } else {
        tracing::error!(call = call.name(), error = %err, read_error = %read, "the terminal call did not get through (unconfirmed: the run could not be read); the lease will expire and the run return to the queue");
        RunEnd::TerminalCallFailed
    }
}

/// The keeper reported a loss: no (further) terminal call.
async fn keeper_loss<A: AghApi, E: EventSink>(
    worker: &ClaimLoop<A, E>,
    keeper: &mut KeeperHandle,
    call: &TerminalCall,
    what: &str,
) -> RunEnd {
    let loss = keeper.lost().await;
    tracing::warn!(reason = %loss, call = call.name(), "{what}");
    loss.end(&worker.status)
}

/// The result itself was refused and nothing was applied: report that as the failure.
async fn fail_refused_result<A: AghApi>(api: &A, run_id: &str, err: &ApiError) -> RunEnd {
    tracing::error!(error = %err, "the daemon refused the result; failing the run instead");
    let request = FailRequest {
        error: failure_message(&format!(
            "the daemon refused the handler's result: {}",
            err.message
        )),
        metadata: None,
    };
    match api.fail(run_id, &request).await {
        Ok(_) => RunEnd::Failed,
        Err(err) => {
            tracing::error!(error = %err, "the fail call after a refused result did not get through");
            RunEnd::TerminalCallFailed
        }
    }
}

/// The one call that finishes a run.
enum TerminalCall {
    Complete(CompleteRequest),
    Fail(FailRequest),
    Release(ReleaseRequest),
}

impl TerminalCall {
    /// The call `outcome` asks for, capped and cleaned, and the end it makes when it lands.
    fn for_outcome(outcome: Outcome) -> (RunEnd, TerminalCall) {
        match outcome {
            Outcome::Complete(result) => {
                let request = CompleteRequest {
                    result: Some(cap(result, MAX_PAYLOAD_BYTES)),
                };
                (RunEnd::Completed, TerminalCall::Complete(request))
            }
            Outcome::Fail { error, metadata } => {
                let request = FailRequest {
                    error: failure_message(&error),
                    metadata: metadata.map(|m| cap(m, MAX_PAYLOAD_BYTES)),
                };
                (RunEnd::Failed, TerminalCall::Fail(request))
            }
            Outcome::Release(reason) => {
                let request = ReleaseRequest {
                    reason: Some(failure_message(&reason)),
                };
                (RunEnd::Released, TerminalCall::Release(request))
            }
        }
    }

    fn kind(&self) -> CallKind {
        match self {
            TerminalCall::Complete(_) => CallKind::Complete,
            TerminalCall::Fail(_) => CallKind::Fail,
            TerminalCall::Release(_) => CallKind::Release,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            TerminalCall::Complete(_) => "complete",
            TerminalCall::Fail(_) => "fail",
            TerminalCall::Release(_) => "release",
        }
    }

    /// Whether `err` refuses a completion's result (too large, or not allowed): nothing was
    /// applied, and the run is failed instead.
    fn result_refused(&self, err: &ApiError) -> bool {
        matches!(self, TerminalCall::Complete(_))
            && matches!(err.kind, ErrorKind::Validation | ErrorKind::PayloadTooLarge)
    }

    async fn send<A: AghApi>(&self, api: &A, run_id: &str) -> Result<LeaseSummary, ApiError> {
        match self {
            TerminalCall::Complete(request) => api.complete(run_id, request).await,
            TerminalCall::Fail(request) => api.fail(run_id, request).await,
            TerminalCall::Release(request) => api.release(run_id, request).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::ActorRef;

    const US: &str = "sess-us";

    fn run(status: &str, holder: Option<&str>) -> TaskRun {
        TaskRun {
            id: "run-1".into(),
            status: Some(RunStatus::from(status)),
            session_id: holder.map(str::to_owned),
            ..Default::default()
        }
    }

    fn elsewhere(status: &str) -> Option<Landed> {
        Some(Landed::Elsewhere(status.into()))
    }

    #[test]
    fn a_run_in_the_status_the_call_leaves_and_bound_to_us_confirms_the_call() {
        let completed = run("completed", Some(US));
        assert_eq!(judge(CallKind::Complete, &completed, US), Some(Landed::Yes));
        let failed = run("failed", Some(US));
        assert_eq!(judge(CallKind::Fail, &failed, US), Some(Landed::Yes));
        // A release clears the session.
        let queued = run("queued", None);
        assert_eq!(judge(CallKind::Release, &queued, US), Some(Landed::Yes));
    }

    #[test]
    fn a_run_still_claimed_by_us_did_not_see_the_call() {
        for status in ["claimed", "starting", "running"] {
            for call in [CallKind::Complete, CallKind::Fail, CallKind::Release] {
                let held = run(status, Some(US));
                assert_eq!(
                    judge(call, &held, US),
                    Some(Landed::No),
                    "{status} {call:?}"
                );
            }
        }
        // The claimer names the session when `session_id` is left out.
        let claimed = TaskRun {
            claimed_by: Some(ActorRef {
                kind: Some("agent_session".into()),
                reference: Some(US.into()),
            }),
            ..run("claimed", None)
        };
        assert_eq!(judge(CallKind::Complete, &claimed, US), Some(Landed::No));
    }

    #[test]
    fn a_run_that_went_on_without_us_is_elsewhere() {
        let taken = run("claimed", Some("sess-other"));
        assert_eq!(judge(CallKind::Complete, &taken, US), elsewhere("claimed"));
        // Swept back to the queue after the lease expired: a complete or fail did not land.
        let swept = run("queued", None);
        assert_eq!(judge(CallKind::Complete, &swept, US), elsewhere("queued"));
        assert_eq!(judge(CallKind::Fail, &swept, US), elsewhere("queued"));
        let completed_by_other = run("completed", Some("sess-other"));
        assert_eq!(
            judge(CallKind::Complete, &completed_by_other, US),
            elsewhere("completed")
        );
        // Ended some other way than the call asked.
        let failed = run("failed", Some(US));
        assert_eq!(judge(CallKind::Complete, &failed, US), elsewhere("failed"));
        let completed = run("completed", Some(US));
        assert_eq!(
            judge(CallKind::Release, &completed, US),
            elsewhere("completed")
        );
        for status in ["canceled", "needs_attention"] {
            let ended = run(status, Some(US));
            assert_eq!(judge(CallKind::Fail, &ended, US), elsewhere(status));
        }
    }

    #[test]
    fn a_record_that_does_not_tell_is_no_verdict() {
        let unknown = run("paused_for_review", Some(US));
        assert_eq!(judge(CallKind::Complete, &unknown, US), None);
        let no_status = TaskRun {
            status: None,
            ..run("claimed", Some(US))
        };
        assert_eq!(judge(CallKind::Complete, &no_status, US), None);
        let claimed_by_nobody = run("claimed", None);
        assert_eq!(judge(CallKind::Release, &claimed_by_nobody, US), None);
    }

    #[test]
    fn only_answers_that_leave_the_outcome_open_are_confirmed() {
        let answer = |kind: ErrorKind, attempts: u32| ApiError {
            attempts,
            ..ApiError::local("complete", kind, "x")
        };
        for kind in [
            ErrorKind::Transport,
            ErrorKind::Timeout,
            ErrorKind::MalformedBody,
            ErrorKind::ResponseTooLarge,
            ErrorKind::Server,
        ] {
            assert!(outcome_unknown(&answer(kind, 1), false), "{kind}");
        }
        // A refusal of the first and only attempt settles it; of a repeat, it does not.
        assert!(!outcome_unknown(&answer(ErrorKind::LeaseExpired, 1), false));
        assert!(outcome_unknown(&answer(ErrorKind::LeaseExpired, 2), false));
        assert!(outcome_unknown(&answer(ErrorKind::LeaseExpired, 1), true));
        assert!(!outcome_unknown(
            &answer(ErrorKind::IdentityStale, 1),
            false
        ));
    }
}
