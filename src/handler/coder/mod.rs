//! The `coder` handler: runs each task as an Agentuity Coder Hub session.
//!
//! The flow follows the research notes (§9) and the official SDK: adopt a session already made for
//! this run (by the `agh-run:<run_id>` tag, or the run's metadata) or create one from the
//! configured template; follow it over its live event stream (polling its detail, its loop state
//! and the tail of its event history while the stream is down), forwarding milestones as
//! throttled progress; decide completion by `session_complete`/`session_error`, the loop's terminal
//! states, the session going to history, or in standard mode the lead's `agent_end` with no task
//! running. The result carries the
//! summary, the session id, usage with cost (`null` when unknown, never 0) and the duration. The
//! session is archived once done, on the deadline, and (by default) when the run is cancelled.
//!
//! There is no idempotency key on session create, so a create whose fate is unknown (a timeout, a
//! 502/503) is never repeated blindly: the run's tag is looked up first.
//!
//! This file runs one task and holds what a run knows; `config` (with `table`, how its one flat
//! table is read) and `request` say what sessions are created with, `hub` wraps the client with
//! health and error explanations, `adopt` starts the session, `follow`, `live` and `events`
//! follow it,
//! `finish`, `stop` and `summary` end the run, and `probe` is `agh-worker check`'s.

use std::time::Duration;

use tokio::time::Instant;

use super::health::HandlerHealthReporter;
use super::{Outcome, TaskContext, TaskDocument};
use crate::agentuity::{AgentuityClient, LoopState, Session, process_env};
use crate::util::redact::without_userinfo;
use crate::util::time::sleep_until_option;
use config::seconds;
use hub::Hub;

mod adopt;
mod config;
mod events;
mod finish;
mod follow;
mod hub;
mod live;
mod probe;
mod repo;
mod request;
mod stop;
mod summary;
mod table;

pub use config::{CoderConfig, FollowMode, StopPolicy};
pub use hub::refused_key_reason;
pub use probe::{ProbeFailure, probe};
pub use repo::RepoConfig;
pub use request::run_tag;

const LOG_TARGET: &str = "agh_worker::handler::coder";

/// Runs one task as a Coder session, with the key and URLs from this process's environment;
/// whether Agentuity accepts the key goes to `health`.
pub async fn run(
    config: &CoderConfig,
    context: TaskContext,
    health: &HandlerHealthReporter,
) -> Outcome {
    match AgentuityClient::new(&config.client, &process_env()) {
        Ok(client) => run_with_health(config, context, &client, health).await,
        Err(err) => {
            let error = without_userinfo(&format!("the Agentuity client cannot be set up: {err}"));
            health.unhealthy(error.clone());
            Outcome::Fail {
                error: format!("coder: {error}"),
                metadata: None,
            }
        }
    }
}

/// Runs one task as a Coder session through `client`, reporting health nowhere.
pub async fn run_with_client(
    config: &CoderConfig,
    context: TaskContext,
    client: &AgentuityClient,
) -> Outcome {
    run_with_health(config, context, client, &HandlerHealthReporter::default()).await
}

/// Runs one task as a Coder session through `client`. A refused key marks the handler unhealthy
/// in `health`: a 401 on any call, a 403 on discovery, listing or creating (a 403 on one
/// session's call does not); any accepted call marks it healthy again.
pub async fn run_with_health(
    config: &CoderConfig,
    context: TaskContext,
    client: &AgentuityClient,
    health: &HandlerHealthReporter,
) -> Outcome {
    let hub = Hub {
        client,
        health,
        config,
    };
    let mut run = Run::new(config, &context, hub);
    let id = tokio::select! {
        biased;
        _ = context.cancel.cancelled() => return run.stopped(None).await,
        _ = sleep_until_option(run.deadline) => return run.stopped(None).await,
        adopted = run.adopt_or_create() => match adopted {
            Ok(id) => id,
            Err(outcome) => return outcome,
        },
    };
    tracing::info!(target: LOG_TARGET, session_id = %id, "following the coder session");
    run.follow(&id).await
}

/// Why a followed session is done.
enum SessionEnd {
    Complete {
        status: String,
        summary: Option<String>,
    },
    Fail(String),
}

/// One run of a task as a session: what is known of the session while it is followed.
struct Run<'a> {
    config: &'a CoderConfig,
    context: &'a TaskContext,
    client: Hub<'a>,
    started: Instant,
    deadline: Option<Instant>,
    poll: Duration,
    session_id: Option<String>,
    created_at: Option<Instant>,
    last_event_id: Option<i64>,
    lead_ended_at: Option<Instant>,
    /// The lead's `agent_end` came over the live stream.
    lead_end_live: bool,
    blocked_since: Option<Instant>,
    resumes: u32,
    last_progress: Option<Instant>,
    pending: Vec<String>,
    dropped: usize,
    last_loop: Option<LoopState>,
    last_session: Option<Session>,
    session_ended: Option<SessionEnd>,
    provisioning_since: Option<Instant>,
    read_failures: u32,
    reported_cost: Option<f64>,
}

impl<'a> Run<'a> {
    fn new(config: &'a CoderConfig, context: &'a TaskContext, client: Hub<'a>) -> Self {
        let started = Instant::now();
        let deadline = context.time_limit.map(|limit| {
            let margin = seconds(config.deadline_margin_seconds, 15.0);
            // A margin as long as the limit would leave no time at all: keep the limit then.
            started
                + if margin < limit {
                    limit - margin
                } else {
                    limit
                }
        });
        Run {
            config,
            context,
            client,
            started,
            deadline,
            poll: seconds(config.poll_seconds, 5.0).max(Duration::from_millis(1)),
            session_id: None,
            created_at: None,
            last_event_id: None,
            lead_ended_at: None,
            lead_end_live: false,
            blocked_since: None,
            resumes: 0,
            last_progress: None,
            pending: Vec::new(),
            dropped: 0,
            last_loop: None,
            last_session: None,
            session_ended: None,
            provisioning_since: None,
            read_failures: 0,
            reported_cost: None,
        }
    }

    fn document(&self) -> &TaskDocument {
        &self.context.document
    }

    fn duration_ms(&self) -> u64 {
        let from = self.created_at.unwrap_or(self.started);
        u64::try_from(from.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}
