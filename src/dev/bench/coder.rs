//! The coder handler against the dev Coder Hub: how soon a run ends after the Hub's deciding
//! broadcast (`session_complete`), following the session live (`follow = stream`) and, for
//! comparison, by polling (`follow = poll`), both with `poll_seconds` at its default 5 s; and how
//! many Hub requests a run makes per minute it lasts.
//!
//! The whole worker runs in this process against the AGH simulator, with one coder handler whose
//! Hub is the dev Hub; a run ends when the simulator records it completed and the worker claims
//! again.

use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use serde_json::json;

use super::rig::{Rig, builder, in_process_worker, settings};
use super::stats::{max, ms, percentile};
use super::{Plan, Row};
use crate::agentuity::ClientSettings;
use crate::dev::hub::DevHub;
use crate::dev::sim::{Route, TaskSpec};
use crate::handler::coder::{CoderConfig, FollowMode};
use crate::handler::{HandlerConfig, HandlerKind, MatchRule};
use crate::worker::{Shutdown, WorkerExit};

/// The longest any one step of a run may take before the measurement is given up.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);

pub(super) async fn coder(plan: &Plan) -> anyhow::Result<Vec<Row>> {
    // The request-rate runs mostly wait: they run beside the latency samples.
    let (latencies, rates) = tokio::join!(
        async {
            let stream = end_latencies(FollowMode::Stream, plan.coder_samples).await?;
            let poll = end_latencies(FollowMode::Poll, plan.coder_samples).await?;
            anyhow::Ok((stream, poll))
        },
        async {
            tokio::try_join!(
                requests_per_minute(FollowMode::Stream, plan.coder_window),
                requests_per_minute(FollowMode::Poll, plan.coder_window),
            )
        },
    );
    let (stream, poll) = latencies?;
    let (stream_rate, poll_rate) = rates?;
    let mut rows = Vec::new();
    rows.extend(latency_rows("stream", &stream, Some(1000.0)));
    rows.extend(latency_rows("poll", &poll, None));
    rows.push(rate_row("stream", &stream_rate).target(
        "far fewer than polling's (≤ ⅓)",
        stream_rate.per_minute * 3.0 <= poll_rate.per_minute,
    ));
    rows.push(rate_row("poll", &poll_rate));
    Ok(rows)
}

/// The p50 and p99 rows of one follow mode; `goal` in ms, when the mode has one.
fn latency_rows(mode: &str, sorted: &[f64], goal: Option<f64>) -> [Row; 2] {
    let figure =
        |p: &str| format!("deciding broadcast → run completed at AGH, follow = {mode}, {p}, ms");
    let p99 = percentile(sorted, 99.0);
    let mut p99_row = Row::new(figure("p99"), format!("{p99:.0}")).spread(format!(
        "max {:.0}; {} samples",
        max(sorted),
        sorted.len()
    ));
    if let Some(goal) = goal {
        p99_row = p99_row.target(format!("≤ {goal:.0}"), p99 <= goal);
    }
    [
        Row::new(figure("p50"), format!("{:.0}", percentile(sorted, 50.0))).spread(format!(
            "p10–p90 {:.0}–{:.0}",
            percentile(sorted, 10.0),
            percentile(sorted, 90.0)
        )),
        p99_row,
    ]
}

fn rate_row(mode: &str, rate: &RequestRate) -> Row {
    Row::new(
        format!("Hub requests per run minute, follow = {mode}"),
        format!("{:.1}", rate.per_minute),
    )
    .spread(format!(
        "{} in a {:.0} s run",
        rate.requests,
        rate.window.as_secs_f64()
    ))
}

/// A worker whose one handler is a coder handler following sessions of a dev Hub, against a
/// simulator.
struct CoderRig {
    rig: Rig,
    hub: DevHub,
    shutdown: Shutdown,
    running: tokio::task::JoinHandle<WorkerExit>,
    /// Runs enqueued so far (each makes one session).
    runs: u64,
}

impl CoderRig {
    async fn start(follow: FollowMode) -> anyhow::Result<CoderRig> {
        let rig = Rig::start().await?;
        let hub = DevHub::start()
            .await
            .context("serving the dev Hub on loopback")?;
        let coder = CoderConfig {
            client: ClientSettings {
                key: Some("bench-key".into()),
                hub_url: Some(hub.url().to_string()),
                ..CoderConfig::default().client
            },
            // `poll_seconds` stays at its default 5 s in both modes.
            follow,
            ..CoderConfig::default()
        };
        let handlers = vec![HandlerConfig {
            kind: HandlerKind::Coder,
            coder: Some(coder),
            ..HandlerConfig::noop("coder", MatchRule::default())
        }];
        let worker = in_process_worker(
            &rig,
            builder(handlers),
            settings(None, Duration::from_secs(60), Duration::from_secs(20)),
        )?;
        let shutdown = Shutdown::default();
        let running = {
            let shutdown = shutdown.clone();
            tokio::spawn(async move { worker.run(shutdown).await })
        };
        Ok(CoderRig {
            rig,
            hub,
            shutdown,
            running,
            runs: 0,
        })
    }

    /// Enqueues a task once the worker waits in a claim, and answers its run and its session id
    /// once the handler has made the session (and, following live, opened its stream).
    async fn start_run(&mut self, follow: FollowMode) -> anyhow::Result<(String, String)> {
        within(
            self.rig.sim.wait_for_waiters(Route::ClaimNext, 1),
            "the worker opened no long-poll claim",
        )
        .await?;
        self.runs += 1;
        let run = self
            .rig
            .sim
            .enqueue_task(TaskSpec::titled(&format!("coder bench task {}", self.runs)));
        let session = within(
            self.hub.session_created(self.runs),
            "the coder handler created no session",
        )
        .await?;
        if follow == FollowMode::Stream {
            within(
                self.hub.until_streaming(&session),
                "the coder handler opened no event stream",
            )
            .await?;
        }
        Ok((run.run_id, session))
    }

    /// Broadcasts the session's end and answers how long after it the run was completed at AGH.
    async fn end_run(&self, run_id: &str, session: &str) -> anyhow::Result<Duration> {
        self.hub.broadcast(
            session,
            "session_complete",
            json!({"summary": "The bench task is done."}),
        );
        let broadcast = Instant::now();
        // The worker claims again once the run's terminal call is answered.
        within(
            self.rig.sim.wait_for_waiters(Route::ClaimNext, 1),
            "the run did not end after its session_complete broadcast",
        )
        .await?;
        let ended = broadcast.elapsed();
        let status = self.rig.sim.run(run_id).map(|run| run.status);
        ensure!(
            status.as_deref() == Some("completed"),
            "the run {run_id} ended {status:?}, not completed"
        );
        Ok(ended)
    }

    async fn stop(self) {
        self.shutdown.drain.cancel();
        let _ = self.running.await;
        self.hub.stop();
        self.rig.stop().await;
    }
}

async fn within<T>(future: impl Future<Output = T>, what: &str) -> anyhow::Result<T> {
    tokio::time::timeout(STEP_TIMEOUT, future)
        .await
        .with_context(|| format!("{what} within {} s", STEP_TIMEOUT.as_secs()))
}

/// Deciding broadcast → run completed, in ms, sorted, for `samples` runs. The broadcast comes at
/// a random moment: within 200 ms of the stream opening, or of the poll cycle.
async fn end_latencies(follow: FollowMode, samples: usize) -> anyhow::Result<Vec<f64>> {
    let mut rig = CoderRig::start(follow).await?;
    let spread = match follow {
        FollowMode::Stream => Duration::from_millis(200),
        FollowMode::Poll => Duration::from_secs_f64(CoderConfig::default().poll_seconds),
    };
    let mut latencies = Vec::with_capacity(samples);
    for _ in 0..samples {
        let (run_id, session) = rig.start_run(follow).await?;
        let at = fastrand::u64(0..spread.as_micros() as u64);
        tokio::time::sleep(Duration::from_micros(at)).await;
        latencies.push(ms(rig.end_run(&run_id, &session).await?));
    }
    rig.stop().await;
    latencies.sort_by(f64::total_cmp);
    Ok(latencies)
}

/// The Hub requests of one run that lasts `window` before its deciding broadcast.
struct RequestRate {
    requests: u64,
    window: Duration,
    per_minute: f64,
}

/// Every Hub request of a run (lookup, create, following, archive and final reads) that lasts
/// `window` from its session's creation to the deciding broadcast, per minute of the run.
async fn requests_per_minute(follow: FollowMode, window: Duration) -> anyhow::Result<RequestRate> {
    let mut rig = CoderRig::start(follow).await?;
    let (run_id, session) = rig.start_run(follow).await?;
    tokio::time::sleep(window).await;
    let ended = rig.end_run(&run_id, &session).await?;
    let requests = rig.hub.requests();
    rig.stop().await;
    let lasted = window + ended;
    Ok(RequestRate {
        requests,
        window: lasted,
        per_minute: requests as f64 * 60.0 / lasted.as_secs_f64(),
    })
}
