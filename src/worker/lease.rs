//! One lease's life, from claim to its single terminal call: read the bundle and the task view,
//! pick the handler, keep the lease renewed while the handler works, cancel it when the lease is
//! lost, the time limit passes or the drain ends, then complete, fail or release exactly once.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use super::keeper::LeaseLoss;
use super::keeper::{KeeperHandle, keep_lease};
use super::reckon::reckon;
use super::status::{CurrentRun, RunEnd, WorkerState};
use super::task_stream::{Followed, StreamStart, follow};
use super::terminal::finish;
use super::{AghApi, ClaimLoop, EventSink, WorkerSettings, task_view};
use crate::api::types::{ChannelMessage, Claim, TaskBundle};
use crate::handler::FORCED_STOP_GRACE;
use crate::handler::{ChosenHandler, Outcome, TaskContext, TaskDocument};
use crate::util::time::{parse_rfc3339, sleep_until_option};

/// How long a run works before its task stream is opened. Most runs of a busy queue end sooner,
/// and a stream per run costs AGH a subscription and the worker a connection; an operator's
/// cancel in that time is still seen when the stream opens (it replays from the task view's
/// sequence), so the delay bounds the extra latency of an early cancel.
pub const FOLLOW_AFTER: Duration = Duration::from_millis(200);

/// How the worker came to hold the lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// From a claim-next answer.
    Claimed,
    /// Found in `me.active_task_leases` with no task owning it.
    Adopted,
}

/// Drives one lease to its end and answers how it ended. Never returns while the handler still runs.
pub async fn run_lease<A: AghApi, E: EventSink>(
    worker: &ClaimLoop<A, E>,
    claim: Claim,
    claim_sent: Instant,
    origin: Origin,
) -> RunEnd {
    let span = tracing::info_span!(
        "run",
        run_id = %claim.run.id,
        task_id = %claim.task.id,
        attempt = claim.run.attempt.unwrap_or(1),
    );
    drive(worker, claim, claim_sent, origin)
        .instrument(span)
        .await
}

async fn drive<A: AghApi, E: EventSink>(
    worker: &ClaimLoop<A, E>,
    claim: Claim,
    claim_sent: Instant,
    origin: Origin,
) -> RunEnd {
    let claim_answered = Instant::now();
    // The run's frozen snapshot: the settings and the handler table in force at the claim. A
    // reload from now on changes neither for this run.
    let settings = worker.settings.get();
    let handlers = worker.handlers.current();
    let run_id = claim.run.id.clone();
    tracing::info!(
        ?origin,
        title = claim.task.title.as_deref().unwrap_or(""),
        "run in hand"
    );

    // The lease runs from when the claim was sent (an adopted one: from the daemon's
    // lease_until): reckon conservatively.
    let daemon_lease_until = claim.lease.lease_until.as_deref().and_then(parse_rfc3339);
    let first = reckon(
        origin,
        claim_sent,
        daemon_lease_until,
        &settings,
        Instant::now(),
    );
    let (first_deadline, first_beat) = (first.deadline, first.first_beat);
    let (deadline_tx, deadline_rx) = watch::channel(first_deadline);
    let (loss_tx, loss_rx) = oneshot::channel();
    // The keeper runs in this task, polled beside the run below, not as a task of its own: a
    // spawned keeper cost a spawn, a stop and a join per run, each able to wake a parked runtime
    // thread, even when the run ended long before its first renewal (about 45 µs of CPU per
    // no-op run in `agh-worker bench`). Polled here it still renews while the bundle is read,
    // while the handler works, while its events are handled and while the terminal call is
    // retried, and it is dropped (with any renewal in flight) when the run ends, as stopping the
    // task did. It stays in the run's span.
    // The task stream's follower is polled with the keeper: a cancel it reads is reported as
    // the keeper reports a loss, and it ends with the run.
    let followed = Followed::of(&claim).filter(|_| settings.follow_task_events);
    let (start_tx, start_rx) = oneshot::channel::<StreamStart>();
    let keeper_task = {
        let api = worker.api.clone();
        let run_id = run_id.clone();
        let settings = settings.clone();
        let status = worker.status.clone();
        async move {
            let follower = async {
                let Some(followed) = followed else {
                    return std::future::pending().await;
                };
                // Where the task's history stood is known from the task view read beside the
                // bundle (the claim's reference carries no sequence in AGH).
                let start = start_rx.await.unwrap_or_default();
                match followed.starting(start) {
                    Ok(followed) => {
                        // The stream replays everything after the view's sequence, so waiting
                        // loses no event; a run that ends sooner never opens a stream.
                        tokio::time::sleep(FOLLOW_AFTER).await;
                        follow(api.clone(), followed, status.clone()).await
                    }
                    Err(cancel) => cancel,
                }
            };
            let keeper = keep_lease(
                api.clone(),
                run_id,
                settings,
                status.clone(),
                deadline_tx,
                first_beat,
            );
            let loss = tokio::select! {
                loss = keeper => loss,
                cancel = follower => LeaseLoss::Canceled(cancel),
            };
            let _ = loss_tx.send(loss);
            std::future::pending::<std::convert::Infallible>().await
        }
    };
    let mut keeper = KeeperHandle {
        loss: Some(loss_rx),
        reported: None,
        deadline: deadline_rx,
    };
    let keeper = &mut keeper;
    let run = async move {
        worker.status.run_started(CurrentRun {
            run_id: run_id.clone(),
            task_id: claim.task.id.clone(),
            attempt: claim.run.attempt.unwrap_or(1),
            handler: String::new(),
            started_at: SystemTime::now(),
            lease_deadline: to_system_time(first_deadline),
            task_paused: None,
        });

        // The task view holds what the claim lacks (description, task metadata); read beside
        // the bundle, so it costs the handler's start no extra round trip.
        let (bundle, view) = tokio::join!(
            read_bundle(worker.api.as_ref(), &run_id),
            task_view::read(
                worker.api.as_ref(),
                &claim,
                task_view::read_bound(&settings)
            ),
        );
        let _ = start_tx.send(StreamStart::from_view(view.as_ref(), &run_id));
        let time_limit = time_limit(bundle.as_ref(), settings.max_runtime);
        let document = TaskDocument::new(claim, bundle, time_limit);
        let document = Arc::new(match &view {
            Some(view) => document.with_task_view(view),
            None => document,
        });

        let outcome = match handlers.select(&document) {
            None => {
                tracing::warn!("no handler matches this run; releasing it");
                Supervised::Outcome(Outcome::Release(
                    "agh-worker: no configured handler matches this task".into(),
                ))
            }
            Some(handler) => {
                worker.status.run_handler(&run_id, handler.name());
                worker.status.record_start_latency(claim_answered.elapsed());
                // The coordination layer routes channel messages for this run into `inbound`.
                let (inbound_tx, inbound_rx) = mpsc::channel(64);
                worker.events.run_started(&document, inbound_tx);
                let ended = supervise(
                    worker, &settings, &document, handler, time_limit, keeper, inbound_rx,
                )
                .await;
                worker.events.run_ended(&document.run_id);
                ended
            }
        };

        let end = match outcome {
            Supervised::Lost(loss @ LeaseLoss::Canceled(_)) => {
                tracing::warn!(reason = %loss, "operator cancel: the handler was stopped and no terminal call is made");
                loss.end(&worker.status)
            }
            Supervised::Lost(loss) => {
                tracing::warn!(reason = %loss, "lease lost; the handler was stopped and no terminal call is made");
                loss.end(&worker.status)
            }
            Supervised::Outcome(outcome) => finish(worker, &run_id, outcome, keeper).await,
        };
        worker.status.run_ended(end);
        end
    };
    tokio::select! {
        // The keeper first: when a renewal was refused at the instant the run finished, the
        // terminal call must see the loss (see `finish`).
        biased;
        never = keeper_task => match never {},
        end = run => end,
    }
}

/// How the handler phase ended.
enum Supervised {
    Outcome(Outcome),
    Lost(LeaseLoss),
}

/// Runs the handler while watching the lease, the time limit and shutdown.
async fn supervise<A: AghApi, E: EventSink>(
    worker: &ClaimLoop<A, E>,
    settings: &WorkerSettings,
    document: &Arc<TaskDocument>,
    handler: ChosenHandler,
    time_limit: Option<Duration>,
    keeper: &mut KeeperHandle,
    inbound_rx: mpsc::Receiver<ChannelMessage>,
) -> Supervised {
    // Its own receiver, polled beside `keeper.lost()` in the loop below.
    let mut deadline_rx = keeper.deadline.clone();
    let cancel = CancellationToken::new();
    let (events_tx, mut events_rx) = mpsc::channel(64);
    let context = TaskContext {
        document: document.clone(),
        cancel: cancel.clone(),
        time_limit,
        events: events_tx,
        inbound: inbound_rx,
    };
    let name = handler.name().to_string();
    // In the run's span, so the handler's own log lines carry run_id, task_id and attempt.
    let mut task = tokio::spawn(handler.run(context).in_current_span());
    tracing::info!(
        handler = %name,
        time_limit_s = time_limit.map(|d| d.as_secs()),
        "handler started"
    );

    let started = Instant::now();
    let limit_at = time_limit.map(|limit| started + limit);
    let mut drain_at: Option<Instant> = None;
    let mut stop_reason: Option<StopReason> = None;
    let mut abandon_at: Option<Instant> = None;

    loop {
        tokio::select! {
            joined = &mut task => {
                worker.status.record_handler_duration(started.elapsed());
                let outcome = match joined {
                    Ok(outcome) => outcome,
                    Err(err) => Outcome::Fail {
                        error: format!("the handler crashed: {err}"),
                        metadata: None,
                    },
                };
                // Drain the events the handler sent just before returning.
                while let Ok(event) = events_rx.try_recv() {
                    worker.events.handle(document, event).await;
                }
                return Supervised::Outcome(adjust_after_stop(outcome, stop_reason, time_limit));
            }
            Some(event) = events_rx.recv() => {
                worker.events.handle(document, event).await;
            }
            loss = keeper.lost() => {
                cancel.cancel();
                // The lease is gone: the handler must stop; wait a little so it can clean up.
                let grace = settings.cancel_grace;
                if tokio::time::timeout(grace, &mut task).await.is_err() {
                    task.abort();
                    tracing::error!(grace_s = grace.as_secs(), "the handler did not stop after its lease was lost; abandoned it");
                }
                return Supervised::Lost(loss);
            }
            _ = sleep_until_option(limit_at), if stop_reason.is_none() => {
                tracing::warn!(limit_s = time_limit.map(|d| d.as_secs()), "the handler reached its time limit; cancelling it");
                stop_reason = Some(StopReason::TimeLimit);
                cancel.cancel();
                abandon_at = Some(Instant::now() + settings.cancel_grace);
            }
            _ = worker.shutdown.drain.cancelled(), if drain_at.is_none() && stop_reason.is_none() => {
                tracing::info!(drain_timeout_s = settings.drain_timeout.as_secs(), "shutting down: letting the run finish until the drain deadline");
                worker.status.set_state(WorkerState::Draining);
                drain_at = Some(Instant::now() + settings.drain_timeout);
            }
            _ = sleep_until_option(drain_at), if stop_reason.is_none() => {
                tracing::warn!("drain deadline reached; cancelling the handler and releasing the run");
                stop_reason = Some(StopReason::Shutdown);
                cancel.cancel();
                abandon_at = Some(Instant::now() + settings.cancel_grace);
            }
            _ = worker.shutdown.force.cancelled(), if !matches!(stop_reason, Some(StopReason::Shutdown)) => {
                tracing::warn!("stopping now: cancelling the handler and releasing the run");
                stop_reason = Some(StopReason::Shutdown);
                cancel.cancel();
                abandon_at = Some(Instant::now() + settings.cancel_grace.min(FORCED_STOP_GRACE));
            }
            _ = sleep_until_option(abandon_at) => {
                task.abort();
                tracing::error!("the handler did not stop after being cancelled; abandoned it");
                let outcome = match stop_reason {
                    Some(StopReason::TimeLimit) => Outcome::Fail {
                        error: time_limit_message(time_limit),
                        metadata: None,
                    },
                    _ => Outcome::Release("agh-worker: the worker is shutting down".into()),
                };
                return Supervised::Outcome(outcome);
            }
            changed = deadline_rx.changed() => {
                if changed.is_ok() {
                    let deadline = *deadline_rx.borrow();
                    worker
                        .status
                        .lease_deadline(&document.run_id, to_system_time(deadline));
                }
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StopReason {
    TimeLimit,
    Shutdown,
}

/// A handler stopped by us may still have finished its work; anything else becomes the outcome
/// the stop calls for.
fn adjust_after_stop(
    outcome: Outcome,
    stop: Option<StopReason>,
    time_limit: Option<Duration>,
) -> Outcome {
    match (stop, outcome) {
        (None, outcome) | (_, outcome @ Outcome::Complete(_)) => outcome,
        (Some(StopReason::TimeLimit), Outcome::Fail { error, metadata }) => Outcome::Fail {
            error: if error.contains("time limit") {
                error
            } else {
                format!("{}: {error}", time_limit_message(time_limit))
            },
            metadata,
        },
        (Some(StopReason::TimeLimit), Outcome::Release(_)) => Outcome::Fail {
            error: time_limit_message(time_limit),
            metadata: None,
        },
        // The handler's own reason is kept after ours: it may name work left running for the
        // next claim (the coder handler's live session).
        (Some(StopReason::Shutdown), Outcome::Release(reason)) if !reason.trim().is_empty() => {
            Outcome::Release(format!("agh-worker: the worker is shutting down; {reason}"))
        }
        (Some(StopReason::Shutdown), _) => {
            Outcome::Release("agh-worker: the worker is shutting down".into())
        }
    }
}

fn time_limit_message(limit: Option<Duration>) -> String {
    match limit {
        Some(limit) => format!(
            "the handler exceeded its time limit of {} s",
            limit.as_secs()
        ),
        None => "the handler exceeded its time limit".into(),
    }
}

/// Reads the context bundle of `run_id`; `None` when it cannot be read or is about another run.
async fn read_bundle<A: AghApi>(api: &A, run_id: &str) -> Option<TaskBundle> {
    match api.context().await {
        Ok(context) => {
            let bundle = context.task.and_then(|t| t.bundle)?;
            match bundle.current_run.as_ref().map(|r| r.id.as_str()) {
                Some(id) if id == run_id => Some(bundle),
                Some(other) => {
                    tracing::warn!(
                        bundle_run = other,
                        "the context bundle is about another run; ignoring it"
                    );
                    None
                }
                None => Some(bundle),
            }
        }
        Err(err) => {
            tracing::warn!(error = %err, "could not read the context bundle; the handler gets the claim only");
            None
        }
    }
}

/// The smaller of the bundle's `max_runtime_seconds` (0 = none) and the configured ceiling.
pub fn time_limit(bundle: Option<&TaskBundle>, ceiling: Option<Duration>) -> Option<Duration> {
    let from_bundle = bundle
        .and_then(|b| b.limits.as_ref())
        .map(|l| l.max_runtime_seconds)
        .filter(|s| *s > 0)
        .map(|s| Duration::from_secs(s as u64));
    match (from_bundle, ceiling) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn to_system_time(deadline: Instant) -> SystemTime {
    let now = Instant::now();
    if deadline >= now {
        SystemTime::now() + (deadline - now)
    } else {
        SystemTime::now() - (now - deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::BundleLimits;

    fn bundle(max_runtime_seconds: i64) -> TaskBundle {
        TaskBundle {
            limits: Some(BundleLimits {
                max_runtime_seconds,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_time_limit_is_the_smaller_of_bundle_and_ceiling() {
        let hour = Some(Duration::from_secs(3600));
        assert_eq!(
            time_limit(Some(&bundle(60)), hour),
            Some(Duration::from_secs(60))
        );
        assert_eq!(time_limit(Some(&bundle(7200)), hour), hour);
        assert_eq!(time_limit(Some(&bundle(0)), hour), hour);
        assert_eq!(time_limit(None, None), None);
        assert_eq!(
            time_limit(Some(&bundle(5)), None),
            Some(Duration::from_secs(5))
        );
    }

    #[test]
    fn a_stopped_handler_that_finished_its_work_still_completes() {
        let done = Outcome::Complete(serde_json::json!({"ok": true}));
        assert_eq!(
            adjust_after_stop(done.clone(), Some(StopReason::Shutdown), None),
            done
        );
        assert!(matches!(
            adjust_after_stop(
                Outcome::Fail {
                    error: "x".into(),
                    metadata: None
                },
                Some(StopReason::Shutdown),
                None
            ),
            Outcome::Release(_)
        ));
        assert_eq!(
            adjust_after_stop(
                Outcome::Release("coder session codesess_1 left running".into()),
                Some(StopReason::Shutdown),
                None
            ),
            Outcome::Release(
                "agh-worker: the worker is shutting down; coder session codesess_1 left running"
                    .into()
            )
        );
        match adjust_after_stop(
            Outcome::Release("cancelled".into()),
            Some(StopReason::TimeLimit),
            Some(Duration::from_secs(5)),
        ) {
            Outcome::Fail { error, .. } => assert!(error.contains("time limit of 5 s")),
            other => panic!("{other:?}"),
        }
    }
}
