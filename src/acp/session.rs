//! One AGH session's life as its agent: load the configuration as `run` does, answer AGH on
//! stdin/stdout, start the worker once `session/new` is answered (AGH holds the session
//! `starting` until then and refuses its identity), turn wake prompts into claims, and stop as
//! AGH stops a session.
//!
//! AGH's stop (`internal/acp/client.go` ~841-896, `internal/subprocess/process.go` ~405-486):
//! the session turns `stopping` (every agent call now answers 401, a release included), then
//! `session/cancel`, stdin closes, and 5 s later SIGTERM and SIGKILL go to the worker's process
//! group only. Handler programs run in groups of their own, out of that reach. So when stdin
//! closes the worker calls AGH no more, ends every handler group itself, and exits within
//! [`STOP_BUDGET`]; the run in hand is requeued when its short lease (`acp.lease_seconds`)
//! expires.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::Instrument as _;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

use super::conversation::{self, Conversation, SessionEvent, StateSource};
use super::log_file::{self, CappedFile};
use crate::assembly::{Worker, WorkerBuilder};
use crate::cli::Cli;
use crate::config::{self, Config, ConfigSources};
use crate::exit;
use crate::handler::process_groups::{signal, state_dir};
use crate::ops::logging::LogControl;
use crate::ops::server::HealthServer;
use crate::worker::{Shutdown, WorkerExit, WorkerSettings};

/// How long the whole stop may take once stdin has closed: well inside AGH's 5 s before SIGTERM.
pub const STOP_BUDGET: Duration = Duration::from_millis(1500);

/// Between SIGTERM and SIGKILL to the handler groups, as AGH gives its own agents' groups.
const TERM_TO_KILL: Duration = Duration::from_millis(250);

/// The longest wait between probes of a session AGH does not accept yet: it turns `active` just
/// after reading the answer to `session/new`, which the worker's first call may overtake.
const ACP_IDENTITY_PROBE: Duration = Duration::from_secs(1);

/// `agh-worker acp`, with its configuration loaded and its log set up ([`load_and_log`]).
pub async fn run(config: Config) -> ExitCode {
    let span = tracing::info_span!("acp", session_id = %config.agh.session_id);
    serve(config).instrument(span).await
}

/// The configuration, loaded as `run` loads it, and the log: stderr and its durable copy
/// (`acp.log_file`). `program` names the command in the error for a configuration that cannot
/// be used.
pub fn load_and_log(cli: &Cli, program: &str) -> Result<(Config, LogControl), ExitCode> {
    let sources = ConfigSources::from_process(cli.config.clone(), cli.overrides());
    let config = match config::load(&sources) {
        Ok(loaded) => loaded.config,
        Err(err) => {
            eprintln!("{program}: the configuration cannot be used:\n{err}");
            return Err(ExitCode::from(exit::BAD_CONFIG));
        }
    };
    let copy = log_copy(&config);
    let log = crate::ops::logging::init_with_copy(&config.log.level, config.log.format, copy);
    Ok((config, log))
}

/// The durable log file, when on and writable (else stderr alone, said on stderr).
fn log_copy(config: &Config) -> Option<BoxMakeWriter> {
    let path = log_file::path(&config.acp, &state_dir(|name| std::env::var_os(name)))?;
    match CappedFile::open(&path, config.acp.log_file_max_bytes) {
        Ok(file) => Some(BoxMakeWriter::new(file)),
        Err(err) => {
            eprintln!("agh-worker acp: {err}; logging to stderr only");
            None
        }
    }
}

/// The loop's settings in `acp` mode: the configuration's, with the short lease of
/// `acp.lease_seconds`, heartbeats at least every third of it, and a quick identity probe.
pub fn acp_settings(config: &Config) -> WorkerSettings {
    let mut settings = WorkerSettings::from_config(config);
    settings.lease = Duration::from_secs(config.acp.lease_seconds);
    settings.heartbeat_every = settings.heartbeat_every.min(settings.lease / 3);
    settings.identity_probe = settings.identity_probe.min(ACP_IDENTITY_PROBE);
    settings
}

async fn serve(config: Config) -> ExitCode {
    let worker = match WorkerBuilder::new(config.clone())
        .settings(acp_settings(&config))
        .build()
    {
        Ok(worker) => Arc::new(worker),
        Err(err) => {
            tracing::error!(error = %err, "agh-worker acp cannot start");
            return ExitCode::from(exit::BAD_CONFIG);
        }
    };
    let shutdown = Shutdown::default();
    // A signal means AGH (or a person) is past waiting: stop as for a closed stdin.
    let _reloads = match crate::ops::signals::install(shutdown.clone()) {
        Ok(reloads) => reloads,
        Err(err) => {
            tracing::error!(error = %err, "cannot listen for signals");
            return ExitCode::FAILURE;
        }
    };
    let (events, mut session_events) = mpsc::unbounded_channel();
    let conversation = Conversation {
        agh_session_id: config.agh.session_id.clone(),
        events,
        state: StateSource::Board(worker.status_board().clone()),
    };
    let mut talk = tokio::spawn(
        conversation::serve(tokio::io::stdin(), tokio::io::stdout(), conversation)
            .in_current_span(),
    );
    tracing::info!(
        endpoint = %worker.client().endpoint(),
        agent = %worker.client().identity().agent,
        lease_seconds = config.acp.lease_seconds,
        "agh-worker acp: waiting for AGH's handshake"
    );
    let mut running: Option<JoinHandle<WorkerExit>> = None;
    let mut health: Option<HealthServer> = None;
    loop {
        tokio::select! {
            event = session_events.recv() => match event {
                Some(SessionEvent::Started { acp_session_id }) => {
                    if running.is_some() {
                        tracing::warn!(%acp_session_id, "another session/new: the worker already runs for this AGH session");
                        continue;
                    }
                    health = start_health(&config, &worker, &shutdown).await;
                    tracing::info!(%acp_session_id, "session active: claiming");
                    let worker = worker.clone();
                    let shutdown = shutdown.clone();
                    running = Some(tokio::spawn(async move { worker.run(shutdown).await }.in_current_span()));
                }
                Some(SessionEvent::Woken { .. }) => worker.wake().wake(),
                // The conversation has ended; its task says how, below.
                None => {}
            },
            ended = &mut talk => {
                conversation::log_end(&ended);
                break;
            }
            _ = shutdown.stopping() => {
                tracing::info!("stop signal: stopping as for a closed stdin");
                break;
            }
            exit = conversation::task_ended(&mut running) => {
                tracing::info!(reason = ?exit, "the worker loop ended by itself (worker.max_runs or worker.idle_exit_seconds); exiting");
                running = None;
                break;
            }
        }
    }
    stop_worker(&worker, &shutdown, running).await;
    if let Some(health) = health {
        health.stop().await;
    }
    let counters = worker.status().counters;
    tracing::info!(
        completed = counters.runs_completed,
        failed = counters.runs_failed,
        released = counters.runs_released,
        "agh-worker acp stopped"
    );
    ExitCode::SUCCESS
}

/// The health server, when configured; one that cannot start is logged, not fatal: several
/// `acp` processes on one host would otherwise fight over one address (see docs/acp.md).
async fn start_health(
    config: &Config,
    worker: &Worker,
    shutdown: &Shutdown,
) -> Option<HealthServer> {
    match crate::ops::server::start_for(config, worker, shutdown).await {
        Ok(server) => server,
        Err(err) => {
            tracing::warn!(error = %err, "no health server for this session");
            None
        }
    }
}

/// AGH's stop, from the worker's side: no call to AGH any more (it would answer 401), every
/// handler group ended, the loop stopped at once, all within [`STOP_BUDGET`]. A resident
/// worker stops an attached session's slot the same way.
pub async fn stop_worker(
    worker: &Worker,
    shutdown: &Shutdown,
    running: Option<JoinHandle<WorkerExit>>,
) {
    let started = tokio::time::Instant::now();
    worker.client().silence();
    let groups = worker.handler_process_groups();
    let reached = groups.signal_all(signal::SIGTERM);
    shutdown.drain.cancel();
    shutdown.force.cancel();
    if reached > 0 {
        tracing::info!(groups = reached, "handler process groups sent SIGTERM");
        tokio::time::sleep(TERM_TO_KILL).await;
        let killed = groups.signal_all(signal::SIGKILL);
        if killed > 0 {
            tracing::warn!(
                groups = killed,
                "handler process groups still there; sent SIGKILL"
            );
        }
    }
    let Some(running) = running else {
        return;
    };
    let left = STOP_BUDGET.saturating_sub(started.elapsed());
    match tokio::time::timeout(left, running).await {
        Ok(_) => tracing::debug!("the worker loop stopped"),
        Err(_) => tracing::warn!(
            budget_ms = STOP_BUDGET.as_millis() as u64,
            "the worker loop did not stop within the budget; exiting without it (its run is requeued when the lease expires)"
        ),
    }
}
