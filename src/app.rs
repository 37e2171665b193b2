//! Wiring at the edge: configuration to client, commands to their implementations, errors to exit codes.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;

use crate::api::{AghClient, ClientOptions, RetryOptions};
use crate::cli::{Cli, Command};
use crate::config::{self, Config, ConfigSources, LoadedConfig};
use crate::oneshot::{self, Output};

/// Exit code for a configuration a person must fix (EX_USAGE).
pub const EXIT_BAD_CONFIG: u8 = 64;

/// The client options the configuration asks for.
pub fn client_options(config: &Config) -> ClientOptions {
    ClientOptions {
        connect_timeout: config.agh.connect_timeout(),
        request_timeout: config.agh.request_timeout(),
        long_poll_timeout: config.agh.long_poll_timeout(),
        max_response_bytes: config.agh.max_response_bytes(),
        retry: RetryOptions {
            initial_backoff: config.retry.initial_backoff(),
            max_backoff: config.retry.max_backoff(),
            read_budget: config.retry.read_budget(),
            terminal_budget: config.retry.terminal_budget(),
        },
    }
}

/// A client for the configured endpoint and identity.
pub fn build_client(config: &Config) -> anyhow::Result<AghClient> {
    let endpoint = config
        .endpoint()
        .context("cannot work out the AGH endpoint")?;
    Ok(AghClient::new(
        endpoint,
        config.identity(),
        client_options(config),
    )?)
}

/// Loads the configuration for `cli`, printing a person-readable error on failure.
pub fn load_config(cli: &Cli) -> Result<LoadedConfig, ExitCode> {
    let sources = ConfigSources::from_process(cli.config.clone(), cli.overrides());
    config::load(&sources).map_err(|err| {
        eprintln!("agh-worker: the configuration cannot be used:\n{err}");
        ExitCode::from(EXIT_BAD_CONFIG)
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
    runtime.block_on(dispatch(cli))
}

async fn dispatch(cli: Cli) -> ExitCode {
    match &cli.command {
        Command::Sim(args) => return crate::sim_cli::serve(args).await,
        Command::Demo(_) => {
            eprintln!("agh-worker demo: not built yet (it arrives with the worker loop)");
            return ExitCode::FAILURE;
        }
        _ => {}
    }
    let loaded = match load_config(&cli) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let config = loaded.config;
    crate::logging::init(&config.log.level, config.log.format);
    if let Command::Run(_) = &cli.command {
        eprintln!("agh-worker run: not built yet (it arrives with the worker loop)");
        return ExitCode::FAILURE;
    }
    let client = match build_client(&config) {
        Ok(client) => client,
        Err(err) => {
            eprintln!("agh-worker: {err:#}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let output = if cli.json || !std::io::stdout().is_terminal() {
        Output::Json
    } else {
        Output::Human
    };
    let mut stdout = std::io::stdout();
    match oneshot::execute(&client, &cli.command, output, &mut stdout).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            oneshot::report_error(&err, output, &mut stdout);
            ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(1))
        }
    }
}
