//! Wiring at the edge: configuration to client, commands to their implementations, errors to exit codes.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;

use crate::api::AghClient;
use crate::assembly::{Worker, WorkerBuilder};
use crate::cli::{Cli, Command, RunArgs, parse_duration};
use crate::commands::oneshot::{self, Output};
use crate::config::{self, Config, ConfigSources, LoadedConfig};
use crate::exit;
use crate::ops::logging::LogControl;
use crate::worker::{Shutdown, WorkerExit, WorkerSettings};

/// A client for the configured endpoint and identity.
pub fn build_client(config: &Config) -> anyhow::Result<AghClient> {
    let endpoint = config
        .endpoint()
        .context("cannot work out the AGH endpoint")?;
    Ok(AghClient::new(
        endpoint,
        config.identity(),
        config.client_options(),
    )?)
}

/// Loads the configuration for `cli`, printing a person-readable error on failure.
pub fn load_config(cli: &Cli) -> Result<LoadedConfig, ExitCode> {
    let sources = ConfigSources::from_process(cli.config.clone(), cli.overrides());
    config::load(&sources).map_err(|err| {
        eprintln!("agh-worker: the configuration cannot be used:\n{err}");
        ExitCode::from(exit::BAD_CONFIG)
    })
}

/// The whole program after `main`: parse, load, dispatch.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("agh-worker: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(dispatch(cli));
    // `acp` reads stdin on a blocking thread that cannot be cancelled: a runtime waiting for it
    // would hang an exit on a signal until AGH closed the pipe.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    code
}

async fn dispatch(cli: Cli) -> ExitCode {
    match &cli.command {
        Command::Sim(args) => return crate::dev::serve::serve(args).await,
        // Its own loading and logging: a durable log file beside stderr, no stdout at all.
        Command::Acp(_) => {
            let (config, _log) = match crate::acp::session::load_and_log(&cli, "agh-worker acp") {
                Ok(loaded) => loaded,
                Err(code) => return code,
            };
            return match config.attach.socket_path() {
                Some(socket) => crate::attach::thin::run(config, socket).await,
                None => crate::acp::run(config).await,
            };
        }
        Command::Demo(args) => return crate::dev::demo::run(args).await,
        Command::Soak(args) => return crate::dev::soak::run(args).await,
        // Before the validated load below: `check` reports an invalid configuration itself,
        // `agh-setup` needs no identity, and completions and the man page need no configuration.
        Command::Check(args) => return crate::commands::check::run(&cli, args).await,
        Command::AghSetup(args) => return crate::commands::agh_setup::run(&cli, args),
        Command::Completions(args) => return crate::commands::docs::completions(args),
        Command::Man(args) => return crate::commands::docs::man(args),
        Command::Bench(args) => return crate::dev::bench::run(args).await,
        // Agentuity commands need no AGH identity, so no validated configuration either.
        Command::Coder(args) => {
            let _log = crate::ops::logging::init("warn", crate::config::LogFormat::Text);
            return crate::commands::coder::coder(&cli, args).await;
        }
        Command::Agentuity(args) => {
            let _log = crate::ops::logging::init("warn", crate::config::LogFormat::Text);
            return crate::commands::coder::agentuity(&cli, args).await;
        }
        _ => {}
    }
    let loaded = match load_config(&cli) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let config = loaded.config;
    let log = crate::ops::logging::init(&config.log.level, config.log.format);
    if let Command::Run(args) = &cli.command {
        let sources = ConfigSources::from_process(cli.config.clone(), cli.overrides());
        if let Some(socket) = config.attach.socket_path() {
            return crate::attach::resident::run(config, socket, args, sources, log).await;
        }
        return run_worker(sources, config, args, log).await;
    }
    let client = match build_client(&config) {
        Ok(client) => client,
        Err(err) => {
            eprintln!("agh-worker: {err:#}");
            return ExitCode::from(exit::BAD_CONFIG);
        }
    };
    let output = if cli.json || !std::io::stdout().is_terminal() {
        Output::Json
    } else {
        Output::Human
    };
    let mut stdout = std::io::stdout();
    match oneshot::execute(
        &client,
        &cli.command,
        config.coordination.spawn_timeout(),
        output,
        &mut stdout,
    )
    .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            oneshot::report_error(&err, output, &mut stdout);
            ExitCode::from(err.exit_code())
        }
    }
}

/// `agh-worker run`: the long-running worker until a signal, `--max-runs`, `--idle-exit` or `--once`.
pub async fn run_worker(
    sources: ConfigSources,
    config: Config,
    args: &RunArgs,
    log: LogControl,
) -> ExitCode {
    let settings = match worker_settings(&config, args) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("agh-worker run: {err}");
            return ExitCode::from(exit::BAD_CONFIG);
        }
    };
    let worker = match WorkerBuilder::new(config.clone())
        .settings(settings)
        .build()
    {
        Ok(worker) => worker,
        Err(err) => {
            eprintln!("agh-worker run: {err}");
            return ExitCode::from(exit::BAD_CONFIG);
        }
    };
    let shutdown = Shutdown::default();
    let mut reloads = match crate::ops::signals::install(shutdown.clone()) {
        Ok(reloads) => reloads,
        Err(err) => {
            eprintln!("agh-worker run: cannot listen for signals: {err}");
            return ExitCode::FAILURE;
        }
    };
    let health = match start_health(&config, &worker, &shutdown).await {
        Ok(health) => health,
        Err(code) => return code,
    };
    let client = worker.client();
    tracing::info!(
        endpoint = %client.endpoint(),
        session_id = %client.identity().session_id,
        agent = %client.identity().agent,
        handlers = config.handlers.len(),
        "agh-worker starting"
    );
    let worker = Arc::new(worker);
    let reloading = worker.clone();
    let reload_args = args.clone();
    tokio::spawn(async move {
        while reloads.recv().await.is_some() {
            reload(&reloading, &sources, &reload_args, &log);
        }
    });
    let notifier = crate::ops::notify::spawn(worker.status_board().clone(), shutdown.clone());
    let exit = worker.run(shutdown).await;
    // The notifier sends nothing once the loop has stopped and only sleeps between its ticks (a
    // second apart without a watchdog); waiting for its next tick delayed every exit by up to a
    // second. Aborting it is safe: its only await point is that sleep.
    notifier.abort();
    let _ = notifier.await;
    if let Some(health) = health {
        health.stop().await;
    }
    let counters = worker.status().counters;
    tracing::info!(
        reason = ?exit,
        completed = counters.runs_completed,
        failed = counters.runs_failed,
        released = counters.runs_released,
        leases_lost = counters.leases_lost,
        "agh-worker stopped"
    );
    match exit {
        WorkerExit::Shutdown | WorkerExit::MaxRuns | WorkerExit::Idle => ExitCode::SUCCESS,
    }
}

/// SIGHUP: the handler table, the log level and the worker's timeouts, from the same sources.
fn reload(worker: &Worker, sources: &ConfigSources, args: &RunArgs, log: &LogControl) {
    match config::load(sources) {
        Ok(loaded) => {
            let settings = match worker_settings(&loaded.config, args) {
                Ok(settings) => settings,
                Err(err) => {
                    tracing::error!(error = %err, "reload refused; the running configuration stays in force");
                    return;
                }
            };
            worker.reload(loaded.config.handlers.clone(), settings);
            let level_applied = log.set_level(&loaded.config.log.level);
            tracing::info!(
                handlers = loaded.config.handlers.len(),
                log_level = %loaded.config.log.level,
                level_applied,
                "configuration reloaded: handler table, log level and worker timeouts (the run in hand keeps its settings; [agh] keys apply at restart)"
            );
        }
        Err(err) => {
            tracing::error!(error = %err, "reload refused; the running configuration stays in force");
        }
    }
}

/// The loop's settings: the configuration's, with the `run` flags on top.
pub fn worker_settings(config: &Config, args: &RunArgs) -> Result<WorkerSettings, String> {
    let mut settings = WorkerSettings::from_config(config);
    if let Some(max_runs) = args.max_runs {
        settings.max_runs = (max_runs > 0).then_some(max_runs);
    }
    if let Some(raw) = &args.idle_exit {
        let idle = parse_duration(raw).map_err(|err| format!("--idle-exit: {err}"))?;
        settings.idle_exit = (!idle.is_zero()).then_some(idle);
    }
    if args.once {
        settings.once = true;
        settings.max_runs = Some(1);
    }
    Ok(settings)
}

/// Starts the `[health]` server, unless disabled. A listener that cannot be bound is a
/// configuration to fix (exit 64), named by its key, before any work is claimed.
async fn start_health(
    config: &Config,
    worker: &Worker,
    shutdown: &Shutdown,
) -> Result<Option<crate::ops::server::HealthServer>, ExitCode> {
    crate::ops::server::start_for(config, worker, shutdown)
        .await
        .map_err(|err| {
            eprintln!("agh-worker run: {err}");
            ExitCode::from(exit::BAD_CONFIG)
        })
}
