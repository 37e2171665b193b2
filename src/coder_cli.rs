//! Operator commands for Agentuity: `agh-worker coder …` (Coder Hub sessions) and
//! `agh-worker agentuity sessions …` (the Sessions API). Each prints the answer as JSON.
//!
//! The connection settings are those of a `coder` handler in the configuration (the first one,
//! or the one named with `--handler`); without one, the environment alone (`AGENTUITY_SDK_KEY`,
//! `AGENTUITY_CODER_URL`, …) is used. No AGH identity is needed: these commands never call AGH.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::Value;

use crate::agentuity::{
    AgentuityClient, AgentuityError, ClientSettings, ErrorClass, ListAgentSessions, ListSessions,
    process_env,
};
use crate::cli::Cli;
use crate::config::{ConfigSources, load_unvalidated};
use crate::handler::HandlerKind;

/// Exit code when Agentuity answered with an error or could not be reached.
pub const EXIT_AGENTUITY: u8 = 69;
/// Exit code for a bad setting (no key, bad URL, unknown handler).
pub const EXIT_BAD_CONFIG: u8 = 64;
/// Exit code when the session (or agent session) does not exist.
pub const EXIT_NOT_FOUND: u8 = 44;

/// `coder` options.
#[derive(Debug, Args)]
pub struct CoderArgs {
    /// The coder handler whose settings are used (default: the first coder handler, else the environment).
    #[arg(long, global = true, value_name = "NAME")]
    pub handler: Option<String>,
    #[command(subcommand)]
    pub command: CoderCommand,
}

/// `coder` subcommands.
#[derive(Debug, Subcommand)]
pub enum CoderCommand {
    /// List Coder sessions (GET /api/hub/sessions).
    Sessions {
        /// Search title, task and metadata, e.g. `agh-run:RUN_ID`.
        #[arg(long)]
        search: Option<String>,
        /// Include archived sessions.
        #[arg(long)]
        archived: bool,
        #[arg(long)]
        limit: Option<u32>,
    },
    /// One session's detail, including usage when the Hub reports it.
    Show { id: String },
    /// A loop-mode session's loop state.
    Loop { id: String },
    /// A session's event history, newest first.
    Events {
        id: String,
        /// Only events older than this event id.
        #[arg(long, value_name = "EVENT_ID")]
        before: Option<i64>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Archive a session: the sandbox stops, the transcript stays.
    Archive { id: String },
    /// Wake a paused session.
    Resume { id: String },
    /// Delete a session permanently (transcript and usage are lost).
    Delete { id: String },
}

/// `agentuity` options.
#[derive(Debug, Args)]
pub struct AgentuityArgs {
    /// The coder handler whose settings are used (default: the first coder handler, else the environment).
    #[arg(long, global = true, value_name = "NAME")]
    pub handler: Option<String>,
    #[command(subcommand)]
    pub command: AgentuityCommand,
}

/// `agentuity` subcommands.
#[derive(Debug, Subcommand)]
pub enum AgentuityCommand {
    /// The Sessions API (agent executions, with cost and tokens).
    #[command(subcommand)]
    Sessions(AgentSessionsCommand),
}

/// `agentuity sessions` subcommands.
#[derive(Debug, Subcommand)]
pub enum AgentSessionsCommand {
    /// GET /session on Catalyst.
    List {
        #[arg(long, default_value_t = 10)]
        limit: u32,
        #[arg(long)]
        offset: Option<u32>,
        /// Any other filter the API takes, e.g. `--filter trigger=api`; repeatable.
        #[arg(long = "filter", value_name = "NAME=VALUE")]
        filters: Vec<String>,
    },
    /// GET /session/{id} on Catalyst.
    Get { id: String },
    /// GET /cli/session/{id}/logs on the App API.
    Logs { id: String },
}

/// The client settings for `handler` (or the first coder handler), else empty (environment only).
fn settings(cli: &Cli, handler: Option<&str>) -> Result<ClientSettings, String> {
    let sources = ConfigSources::from_process(cli.config.clone(), cli.overrides());
    let handlers = match load_unvalidated(&sources) {
        Ok(loaded) => loaded.config.handlers,
        // The configuration may be for another host; the environment can still be enough.
        Err(err) if handler.is_none() => {
            tracing::debug!(error = %err, "no usable configuration; using the environment only");
            Vec::new()
        }
        Err(err) => return Err(format!("the configuration cannot be read: {err}")),
    };
    let mut coders = handlers
        .iter()
        .filter(|h| h.kind == HandlerKind::Coder)
        .filter(|h| handler.is_none_or(|name| h.name == name));
    match (coders.next(), handler) {
        (Some(found), _) => Ok(found
            .coder
            .as_ref()
            .map(|c| c.client_settings())
            .unwrap_or_default()),
        (None, Some(name)) => Err(format!(
            "no coder handler named {name:?} in the configuration"
        )),
        (None, None) => Ok(ClientSettings::default()),
    }
}

fn client(cli: &Cli, handler: Option<&str>) -> Result<AgentuityClient, ExitCode> {
    let settings = settings(cli, handler).map_err(|err| {
        eprintln!("agh-worker: {err}");
        ExitCode::from(EXIT_BAD_CONFIG)
    })?;
    AgentuityClient::new(&settings, &process_env()).map_err(|err| {
        eprintln!("agh-worker: {err}");
        ExitCode::from(EXIT_BAD_CONFIG)
    })
}

fn print(answer: Result<Value, AgentuityError>) -> ExitCode {
    match answer {
        Ok(value) => {
            match serde_json::to_string_pretty(&value) {
                Ok(text) => println!("{text}"),
                Err(err) => {
                    eprintln!("agh-worker: the answer cannot be printed: {err}");
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("agh-worker: {err}");
            match err.class() {
                Some(ErrorClass::Gone) => ExitCode::from(EXIT_NOT_FOUND),
                None if !matches!(
                    err,
                    AgentuityError::Transport { .. } | AgentuityError::Decode { .. }
                ) =>
                {
                    ExitCode::from(EXIT_BAD_CONFIG)
                }
                _ => ExitCode::from(EXIT_AGENTUITY),
            }
        }
    }
}

fn to_value<T: serde::Serialize>(
    answer: Result<T, AgentuityError>,
) -> Result<Value, AgentuityError> {
    answer.map(|value| serde_json::to_value(value).unwrap_or(Value::Null))
}

/// `agh-worker coder …`.
pub async fn coder(cli: &Cli, args: &CoderArgs) -> ExitCode {
    let client = match client(cli, args.handler.as_deref()) {
        Ok(client) => client,
        Err(code) => return code,
    };
    let answer = match &args.command {
        CoderCommand::Sessions {
            search,
            archived,
            limit,
        } => to_value(
            client
                .list_sessions(&ListSessions {
                    search: search.clone(),
                    include_archived: *archived,
                    limit: *limit,
                    offset: None,
                })
                .await,
        ),
        CoderCommand::Show { id } => to_value(client.get_session(id).await),
        CoderCommand::Loop { id } => to_value(client.loop_state(id).await),
        CoderCommand::Events { id, before, limit } => {
            to_value(client.event_history(id, Some(*limit), *before).await)
        }
        CoderCommand::Archive { id } => client.archive_session(id).await,
        CoderCommand::Resume { id } => client.resume_session(id).await,
        CoderCommand::Delete { id } => client.delete_session(id).await,
    };
    print(answer)
}

/// `agh-worker agentuity …`.
pub async fn agentuity(cli: &Cli, args: &AgentuityArgs) -> ExitCode {
    let client = match client(cli, args.handler.as_deref()) {
        Ok(client) => client,
        Err(code) => return code,
    };
    let AgentuityCommand::Sessions(command) = &args.command;
    let answer = match command {
        AgentSessionsCommand::List {
            limit,
            offset,
            filters,
        } => {
            let mut params = ListAgentSessions {
                limit: Some(*limit),
                offset: *offset,
                ..Default::default()
            };
            for filter in filters {
                match filter.split_once('=') {
                    Some((name, value)) if !name.is_empty() => {
                        params.filters.insert(name.into(), value.into());
                    }
                    _ => {
                        eprintln!("agh-worker: --filter {filter:?} is not NAME=VALUE");
                        return ExitCode::from(2);
                    }
                }
            }
            client.list_agent_sessions(&params).await
        }
        AgentSessionsCommand::Get { id } => client.get_agent_session(id).await,
        AgentSessionsCommand::Logs { id } => client.agent_session_logs(id).await,
    };
    print(answer)
}
