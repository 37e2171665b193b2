//! Operator commands for Agentuity: `agh-worker coder …` (Coder Hub sessions, users, custom
//! agents, workspaces, skills and GitHub) and `agh-worker agentuity sessions …` (the Sessions
//! API). Each prints the answer as JSON; list answers print a short table instead on a terminal
//! (`--json` and `--table` choose).
//!
//! The connection settings are those of a `coder` handler in the configuration (the first one,
//! or the one named with `--handler`); without one, the environment alone (`AGENTUITY_SDK_KEY`,
//! `AGENTUITY_CODER_URL`, …) is used. No AGH identity is needed: these commands never call AGH.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

use crate::agentuity::{
    AgentuityClient, AgentuityError, ClientSettings, GitHubAccountList, ListAgentSessions,
    ListAgents, ListConnectable, ListParticipants, ListSessions, ListUsers, Session, process_env,
};
use crate::cli::Cli;
use crate::cli::coder::*;
use crate::config::{ConfigSources, load_unvalidated};
use crate::exit;
use crate::handler::HandlerKind;

mod body;
mod follow;
mod layouts;
mod table;

use body::body_or_exit;
use layouts::*;

/// How often `coder wake` reads the session while it wakes (the SDK's default).
const WAKE_POLL: Duration = Duration::from_secs(1);

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
            .map(|c| c.client.clone())
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
        ExitCode::from(exit::BAD_CONFIG)
    })?;
    AgentuityClient::new(&settings, &process_env()).map_err(|err| {
        eprintln!("agh-worker: {err}");
        ExitCode::from(exit::BAD_CONFIG)
    })
}

impl CoderCommand {
    /// The list options of a list command.
    fn view(&self) -> Option<ListView> {
        match self {
            CoderCommand::Sessions { view, .. }
            | CoderCommand::Follow { view, .. }
            | CoderCommand::Events { view, .. }
            | CoderCommand::Participants { view, .. }
            | CoderCommand::Users { view, .. }
            | CoderCommand::Agents(AgentsCommand::List { view, .. })
            | CoderCommand::Agents(AgentsCommand::Versions { view, .. })
            | CoderCommand::Workspaces(WorkspacesCommand::List { view })
            | CoderCommand::Skills(SkillsCommand::List { view })
            | CoderCommand::Skills(SkillsCommand::Buckets(BucketsCommand::List { view }))
            | CoderCommand::Github(GithubCommand::Accounts { view })
            | CoderCommand::Github(GithubCommand::Repos { view, .. }) => Some(*view),
            _ => None,
        }
    }
}

/// Refuses `--json` with `--table`: clap sees the clash only when both follow the subcommand.
fn clashing_formats(cli: &Cli, view: Option<ListView>) -> Option<ExitCode> {
    (cli.json && view.is_some_and(|view| view.table)).then(|| {
        eprintln!("agh-worker: --json and --table cannot be used together");
        ExitCode::from(2)
    })
}

/// A table when asked for with `--table`, or on a terminal without `--json`; else JSON.
fn wants_table(json: bool, table: bool, terminal: bool) -> bool {
    table || (terminal && !json)
}

/// The layout to print a list answer with, if it is to be a table.
fn table_for(cli: &Cli, view: ListView, layout: &'static Layout) -> Option<&'static Layout> {
    wants_table(cli.json, view.table, std::io::stdout().is_terminal()).then_some(layout)
}

fn print(answer: Result<Value, AgentuityError>, table: Option<&Layout>) -> ExitCode {
    match answer {
        Ok(value) => {
            match table.and_then(|layout| layout.render(&value)) {
                Some(text) => print!("{text}"),
                None => match serde_json::to_string_pretty(&value) {
                    Ok(text) => println!("{text}"),
                    Err(err) => {
                        eprintln!("agh-worker: the answer cannot be printed: {err}");
                        return ExitCode::FAILURE;
                    }
                },
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("agh-worker: {err}");
            ExitCode::from(exit_code(&err))
        }
    }
}

/// The exit code of a failed command. Every variant is named so that a new one is classified
/// here rather than falling into "bad setting".
pub(super) fn exit_code(err: &AgentuityError) -> u8 {
    match err {
        AgentuityError::Api(_) if err.is_gone() => exit::NOT_FOUND,
        AgentuityError::Api(_)
        | AgentuityError::Transport { .. }
        | AgentuityError::Decode { .. } => exit::UNAVAILABLE,
        AgentuityError::NotReady { .. } => exit::NOT_READY,
        AgentuityError::MissingKey
        | AgentuityError::BothKeys
        | AgentuityError::KeyFile { .. }
        | AgentuityError::EmptyKeyFile { .. }
        | AgentuityError::BadKey
        | AgentuityError::BadUrl { .. }
        | AgentuityError::Client(_) => exit::BAD_CONFIG,
    }
}

/// Why a woken session cannot be attached to, if it cannot: it is over, and nothing wakes it.
fn over_after_wake(id: &str, session: &Session) -> Option<String> {
    session.is_over().then(|| {
        format!(
            "coder session {id} is over (status {}): there is nothing to wake",
            session.status_str()
        )
    })
}

/// `coder wake`: the session as it is once ready (or over), then the exit code.
fn print_woken(id: &str, answer: Result<Session, AgentuityError>) -> ExitCode {
    let over = answer
        .as_ref()
        .ok()
        .and_then(|session| over_after_wake(id, session));
    let code = print(to_value(answer), None);
    match over {
        Some(reason) if code == ExitCode::SUCCESS => {
            eprintln!("agh-worker: {reason}");
            ExitCode::from(exit::NOT_FOUND)
        }
        _ => code,
    }
}

/// A word to the operator when the Hub says GitHub is not connected at all (the list is then
/// empty, and an empty table would not say why).
fn github_not_connected(answer: &GitHubAccountList) -> Option<&'static str> {
    (answer.connected == Some(false)).then_some(
        "GitHub is not connected for this key's user: connect it in the Coder Hub, then list again",
    )
}

fn to_value<T: serde::Serialize>(
    answer: Result<T, AgentuityError>,
) -> Result<Value, AgentuityError> {
    answer.map(|value| serde_json::to_value(value).unwrap_or(Value::Null))
}

/// `agh-worker coder …`.
pub async fn coder(cli: &Cli, args: &CoderArgs) -> ExitCode {
    if let Some(code) = clashing_formats(cli, args.command.view()) {
        return code;
    }
    let client = match client(cli, args.handler.as_deref()) {
        Ok(client) => client,
        Err(code) => return code,
    };
    let (answer, table) = match &args.command {
        CoderCommand::Sessions {
            search,
            archived,
            connectable,
            limit,
            view,
        } => (
            if *connectable {
                to_value(
                    client
                        .list_connectable_sessions(&ListConnectable {
                            search: search.clone(),
                            limit: *limit,
                            offset: None,
                        })
                        .await,
                )
            } else {
                to_value(
                    client
                        .list_sessions(&ListSessions {
                            search: search.clone(),
                            include_archived: *archived,
                            limit: *limit,
                            offset: None,
                        })
                        .await,
                )
            },
            table_for(cli, *view, &SESSIONS),
        ),
        CoderCommand::Follow {
            id,
            subscribe,
            view,
        } => {
            let table = wants_table(cli.json, view.table, std::io::stdout().is_terminal());
            return follow::follow(&client, id, subscribe, table).await;
        }
        CoderCommand::Show { id } => (to_value(client.get_session(id).await), None),
        CoderCommand::Loop { id } => (to_value(client.loop_state(id).await), None),
        CoderCommand::Replay { id } => (to_value(client.replay(id).await), None),
        CoderCommand::Events {
            id,
            before,
            limit,
            view,
        } => (
            to_value(client.event_history(id, Some(*limit), *before).await),
            table_for(cli, *view, &EVENTS),
        ),
        CoderCommand::Participants {
            id,
            limit,
            include_disconnected,
            view,
        } => (
            to_value(
                client
                    .list_participants(
                        id,
                        &ListParticipants {
                            limit: *limit,
                            include_disconnected: *include_disconnected,
                            offset: None,
                        },
                    )
                    .await,
            ),
            table_for(cli, *view, &PARTICIPANTS),
        ),
        CoderCommand::Users {
            search,
            limit,
            view,
        } => (
            to_value(
                client
                    .search_users(&ListUsers {
                        search: search.clone(),
                        limit: *limit,
                        offset: None,
                    })
                    .await,
            ),
            table_for(cli, *view, &USERS),
        ),
        CoderCommand::Agents(command) => match command {
            AgentsCommand::List { archived, view } => (
                client
                    .list_agents(&ListAgents {
                        include_archived: *archived,
                    })
                    .await,
                table_for(cli, *view, &AGENTS),
            ),
            AgentsCommand::Show { slug } => (client.get_agent(slug).await, None),
            AgentsCommand::Create { body } => match body_or_exit(body) {
                Ok(body) => (client.create_agent(&body).await, None),
                Err(code) => return code,
            },
            AgentsCommand::Update { slug, body } => match body_or_exit(body) {
                Ok(body) => (client.update_agent(slug, &body).await, None),
                Err(code) => return code,
            },
            AgentsCommand::Publish { slug } => (client.publish_agent(slug).await, None),
            AgentsCommand::Archive { slug } => (client.archive_agent(slug).await, None),
            AgentsCommand::Versions { slug, view } => (
                client.agent_versions(slug).await,
                table_for(cli, *view, &VERSIONS),
            ),
        },
        CoderCommand::Archive { id } => (client.archive_session(id).await, None),
        CoderCommand::Resume { id } => (client.resume_session(id).await, None),
        CoderCommand::Wake { id, timeout } => {
            let answer = client
                .prepare_session_for_remote_attach(id, Duration::from_secs(*timeout), WAKE_POLL)
                .await;
            return print_woken(id, answer);
        }
        CoderCommand::Delete { id } => (client.delete_session(id).await, None),
        CoderCommand::Workspaces(command) => match command {
            WorkspacesCommand::List { view } => (
                to_value(client.list_workspaces().await),
                table_for(cli, *view, &WORKSPACES),
            ),
            WorkspacesCommand::Show { id } => (to_value(client.get_workspace(id).await), None),
            WorkspacesCommand::Create { body } => match body_or_exit(body) {
                Ok(body) => (to_value(client.create_workspace(&body).await), None),
                Err(code) => return code,
            },
            WorkspacesCommand::Delete { id } => (client.delete_workspace(id).await, None),
        },
        CoderCommand::Skills(command) => match command {
            SkillsCommand::List { view } => (
                to_value(client.list_saved_skills().await),
                table_for(cli, *view, &SKILLS),
            ),
            SkillsCommand::Save { body } => match body_or_exit(body) {
                Ok(body) => (to_value(client.save_skill(&body).await), None),
                Err(code) => return code,
            },
            SkillsCommand::Delete { id } => (client.delete_saved_skill(id).await, None),
            SkillsCommand::Buckets(BucketsCommand::List { view }) => (
                to_value(client.list_skill_buckets().await),
                table_for(cli, *view, &BUCKETS),
            ),
            SkillsCommand::Buckets(BucketsCommand::Create { body }) => match body_or_exit(body) {
                Ok(body) => (to_value(client.create_skill_bucket(&body).await), None),
                Err(code) => return code,
            },
            SkillsCommand::Buckets(BucketsCommand::Delete { id }) => {
                (client.delete_skill_bucket(id).await, None)
            }
        },
        CoderCommand::Github(GithubCommand::Accounts { view }) => {
            let answer = client.list_github_accounts().await;
            if let Some(note) = answer.as_ref().ok().and_then(github_not_connected) {
                eprintln!("agh-worker: {note}");
            }
            (to_value(answer), table_for(cli, *view, &GITHUB_ACCOUNTS))
        }
        CoderCommand::Github(GithubCommand::Repos { account_id, view }) => (
            to_value(client.list_github_repos(account_id).await),
            table_for(cli, *view, &GITHUB_REPOS),
        ),
    };
    print(answer, table)
}

/// `agh-worker agentuity …`.
pub async fn agentuity(cli: &Cli, args: &AgentuityArgs) -> ExitCode {
    let AgentuityCommand::Sessions(command) = &args.command;
    if let AgentSessionsCommand::List { view, .. } = command
        && let Some(code) = clashing_formats(cli, Some(*view))
    {
        return code;
    }
    let client = match client(cli, args.handler.as_deref()) {
        Ok(client) => client,
        Err(code) => return code,
    };
    let (answer, table) = match command {
        AgentSessionsCommand::List {
            limit,
            offset,
            filters,
            view,
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
            (
                client.list_agent_sessions(&params).await,
                table_for(cli, *view, &AGENT_SESSIONS),
            )
        }
        AgentSessionsCommand::Get { id } => (client.get_agent_session(id).await, None),
        AgentSessionsCommand::Logs { id } => (client.agent_session_logs(id).await, None),
    };
    print(answer, table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_terminal_gets_a_table_unless_json_is_asked_for() {
        assert!(wants_table(false, false, true));
        assert!(!wants_table(true, false, true));
        assert!(!wants_table(false, false, false));
        assert!(wants_table(false, true, false));
    }

    #[test]
    fn an_answer_without_the_expected_rows_is_not_a_table() {
        assert_eq!(SESSIONS.render(&json!({"error": "odd"})), None);
        assert_eq!(SESSIONS.render(&json!({"sessions": {"a": 1}})), None);
        assert_eq!(AGENT_SESSIONS.render(&json!({"id": "x"})), None);
        let table = AGENT_SESSIONS
            .render(&json!([{"id": "sess_1", "total_cost": 0.5}]))
            .expect("an array is rows");
        assert!(
            table.starts_with("ID      TRIGGER  SUCCESS  COST"),
            "{table}"
        );
        assert!(table.contains("sess_1  -        -        0.5"), "{table}");
    }

    fn api_failure(status: u16, code: Option<&str>) -> AgentuityError {
        AgentuityError::Api(Box::new(crate::agentuity::ApiFailure {
            code: code.map(str::to_string),
            ..crate::agentuity::ApiFailure::answered(status, "/api/hub/session/codesess_1")
        }))
    }

    #[test]
    fn a_wake_that_timed_out_exits_75_and_is_not_reported_as_a_bad_setting() {
        let timed_out = AgentuityError::NotReady {
            id: "codesess_1".into(),
            waited: Duration::from_secs(60),
            state: "status paused, runtimeAvailable false, wakeAvailable true".into(),
        };
        assert_eq!(exit_code(&timed_out), exit::NOT_READY);
        assert_ne!(exit::NOT_READY, exit::BAD_CONFIG);
    }

    #[test]
    fn exit_codes_tell_not_found_from_agentuity_failures_and_bad_settings() {
        assert_eq!(exit_code(&api_failure(404, None)), exit::NOT_FOUND);
        assert_eq!(
            exit_code(&api_failure(400, Some("CODER_SESSION_ARCHIVED"))),
            exit::NOT_FOUND
        );
        assert_eq!(exit_code(&api_failure(400, None)), exit::UNAVAILABLE);
        assert_eq!(exit_code(&api_failure(401, None)), exit::UNAVAILABLE);
        let transport = AgentuityError::Transport {
            method: "GET".into(),
            path: "/api/hub/workspaces".into(),
            message: "connection refused".into(),
            timeout: false,
        };
        assert_eq!(exit_code(&transport), exit::UNAVAILABLE);
        assert_eq!(exit_code(&AgentuityError::MissingKey), exit::BAD_CONFIG);
        let bad_url = AgentuityError::BadUrl {
            what: "hub_url",
            value: "ftp://x".into(),
            why: "is not http(s)".into(),
        };
        assert_eq!(exit_code(&bad_url), exit::BAD_CONFIG);
    }

    #[test]
    fn a_woken_session_that_is_over_is_reported_with_its_status() {
        let archived: Session =
            serde_json::from_value(json!({"status": "archived", "bucket": "history"}))
                .expect("session");
        let reason = over_after_wake("codesess_1", &archived).expect("over");
        assert!(
            reason.contains("codesess_1") && reason.contains("archived"),
            "{reason}"
        );
        let live: Session = serde_json::from_value(
            json!({"status": "active", "bucket": "running", "runtimeAvailable": true}),
        )
        .expect("session");
        assert_eq!(over_after_wake("codesess_1", &live), None);
    }

    #[test]
    fn only_a_hub_that_says_github_is_not_connected_gets_the_hint() {
        let list = |value| serde_json::from_value::<GitHubAccountList>(value).expect("list");
        assert!(github_not_connected(&list(json!({"connected": false, "accounts": []}))).is_some());
        assert_eq!(
            github_not_connected(&list(json!({"connected": true}))),
            None
        );
        assert_eq!(github_not_connected(&list(json!({"accounts": []}))), None);
    }

    #[test]
    fn the_repositories_table_keeps_a_long_clone_url_whole() {
        let url =
            "https://github.com/a-rather-long-organisation-name/a-rather-long-repository-name.git";
        let table = GITHUB_REPOS
            .render(&json!({"repositories": [
                {"fullName": "org/repo", "cloneUrl": url, "defaultBranch": "main", "private": true}
            ]}))
            .expect("rows");
        assert!(table.contains(url), "{table}");
        assert!(
            table
                .lines()
                .nth(1)
                .is_some_and(|line| line.ends_with("main    true     -")),
            "{table}"
        );
    }
}
