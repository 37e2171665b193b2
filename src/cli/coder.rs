//! The `coder` and `agentuity` command lines (what the commands do is in `commands::coder`).

use std::path::PathBuf;

use clap::{Args, Subcommand};

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
        #[arg(long, conflicts_with = "connectable")]
        archived: bool,
        /// Only sessions a client can attach to: running sandboxes, and paused ones that are
        /// still up or can be woken (`coder wake ID`). Filters the Hub's first page.
        #[arg(long)]
        connectable: bool,
        /// At most this many sessions (with `--connectable`: connectable ones).
        #[arg(long)]
        limit: Option<u32>,
        #[command(flatten)]
        view: ListView,
    },
    /// One session's detail, including usage when the Hub reports it.
    Show { id: String },
    /// A loop-mode session's loop state.
    Loop { id: String },
    /// A session's transcript: the lead's and the sub-agents' messages (GET …/replay).
    Replay {
        /// The session id.
        id: String,
    },
    /// Follow a session live over its event stream (GET …/events, Server-Sent Events): a line
    /// per event (a table on a terminal, JSON lines otherwise) until the session completes,
    /// fails or shuts down; reopened with backoff when it breaks.
    Follow {
        /// The session id.
        id: String,
        /// Only these events: names, categories or `prefix_*`, comma-separated (default: all).
        #[arg(long, value_delimiter = ',', default_value = "*")]
        subscribe: Vec<String>,
        #[command(flatten)]
        view: ListView,
    },
    /// A session's event history, newest first.
    Events {
        id: String,
        /// Only events older than this event id.
        #[arg(long, value_name = "EVENT_ID")]
        before: Option<i64>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        view: ListView,
    },
    /// Who is or was attached to a session: people, observers, agents (GET …/participants).
    Participants {
        /// The session id.
        id: String,
        /// At most this many participants.
        #[arg(long)]
        limit: Option<u32>,
        /// Include participants that have disconnected.
        #[arg(long)]
        include_disconnected: bool,
        #[command(flatten)]
        view: ListView,
    },
    /// The users the Hub knows (GET /api/hub/users).
    Users {
        /// Only users whose display name matches this text (the Hub searches).
        #[arg(long)]
        search: Option<String>,
        /// At most this many users.
        #[arg(long)]
        limit: Option<u32>,
        #[command(flatten)]
        view: ListView,
    },
    /// Custom agents: list, show, create, update, publish, archive, versions.
    #[command(subcommand)]
    Agents(AgentsCommand),
    /// Archive a session: the sandbox stops, the transcript stays.
    Archive { id: String },
    /// Wake a paused session.
    Resume { id: String },
    /// Wake a paused session and wait until a client can attach to it; prints the session.
    Wake {
        /// The session id.
        id: String,
        /// Longest wait for the sandbox, in seconds; past it the command exits 75 naming the
        /// session's last status.
        #[arg(long, value_name = "SECS", default_value_t = 60,
              value_parser = clap::value_parser!(u64).range(1..=86_400))]
        timeout: u64,
    },
    /// Delete a session permanently (transcript and usage are lost).
    Delete { id: String },
    /// Workspaces: repositories and skills sessions start with; their ids are what
    /// `coder.workspace_id` takes.
    #[command(subcommand)]
    Workspaces(WorkspacesCommand),
    /// The skills library (saved skills) and skill buckets (named groups of saved skills).
    #[command(subcommand)]
    Skills(SkillsCommand),
    /// The GitHub accounts connected to the Hub and their repositories, whose clone URLs are what
    /// `coder.repo_url` takes.
    #[command(subcommand)]
    Github(GithubCommand),
}

/// `coder workspaces` subcommands.
#[derive(Debug, Subcommand)]
pub enum WorkspacesCommand {
    /// List the workspaces (GET /api/hub/workspaces); the ID column is what
    /// `coder.workspace_id` takes.
    List {
        #[command(flatten)]
        view: ListView,
    },
    /// One workspace: its repositories, saved skills and skill buckets.
    Show {
        /// The workspace id.
        id: String,
    },
    /// Create a workspace (POST /api/hub/workspaces) from a JSON object: `name`, and optionally
    /// `description`, `scope` (`user` or `org`), `repos`, `savedSkillIds`, `skillBucketIds`.
    Create {
        #[command(flatten)]
        body: BodyFile,
    },
    /// Delete a workspace.
    Delete {
        /// The workspace id.
        id: String,
    },
}

/// `coder skills` subcommands.
#[derive(Debug, Subcommand)]
pub enum SkillsCommand {
    /// List the saved skills (GET /api/hub/skills/library).
    List {
        #[command(flatten)]
        view: ListView,
    },
    /// Save a skill to the library (POST /api/hub/skills/library) from a JSON object: `repo`,
    /// `skillId`, `name`, and optionally `description`, `url`, `source`, `content`.
    Save {
        #[command(flatten)]
        body: BodyFile,
    },
    /// Remove a saved skill from the library.
    Delete {
        /// The saved skill's id (the ID column of `coder skills list`, not its skill id).
        id: String,
    },
    /// Skill buckets: list, create, delete.
    #[command(subcommand)]
    Buckets(BucketsCommand),
}

/// `coder skills buckets` subcommands.
#[derive(Debug, Subcommand)]
pub enum BucketsCommand {
    /// List the skill buckets (GET /api/hub/skills/buckets).
    List {
        #[command(flatten)]
        view: ListView,
    },
    /// Create a skill bucket (POST /api/hub/skills/buckets) from a JSON object: `name`, and
    /// optionally `description` and `savedSkillIds`.
    Create {
        #[command(flatten)]
        body: BodyFile,
    },
    /// Delete a skill bucket (its saved skills stay in the library).
    Delete {
        /// The bucket id.
        id: String,
    },
}

/// `coder github` subcommands.
#[derive(Debug, Subcommand)]
pub enum GithubCommand {
    /// The GitHub users and organisations the Hub's GitHub App reaches
    /// (GET /api/hub/github/accounts); the ID column is what `coder github repos` takes.
    Accounts {
        #[command(flatten)]
        view: ListView,
    },
    /// The repositories of one GitHub account (GET /api/hub/github/repos?accountId=); the
    /// CLONE URL column is what `coder.repo_url` takes.
    Repos {
        /// The account id (the ID column of `coder github accounts`).
        account_id: String,
        #[command(flatten)]
        view: ListView,
    },
}

/// `coder agents` subcommands.
#[derive(Debug, Subcommand)]
pub enum AgentsCommand {
    /// List the custom agents (GET /api/hub/agents).
    List {
        /// Include archived agents.
        #[arg(long)]
        archived: bool,
        #[command(flatten)]
        view: ListView,
    },
    /// One custom agent: its draft and its latest published version.
    Show {
        /// The agent's slug (or id).
        slug: String,
    },
    /// Create a custom-agent draft (POST /api/hub/agents) from a JSON object.
    Create {
        #[command(flatten)]
        body: BodyFile,
    },
    /// Change a custom agent's draft (PATCH /api/hub/agents/{slug}) with a JSON object.
    Update {
        /// The agent's slug (or id).
        slug: String,
        #[command(flatten)]
        body: BodyFile,
    },
    /// Publish the draft as the agent's next version.
    Publish {
        /// The agent's slug (or id).
        slug: String,
    },
    /// Archive a custom agent.
    Archive {
        /// The agent's slug (or id).
        slug: String,
    },
    /// A custom agent's published versions.
    Versions {
        /// The agent's slug (or id).
        slug: String,
        #[command(flatten)]
        view: ListView,
    },
}

/// How a list answer is printed.
#[derive(Clone, Copy, Debug, Default, Args)]
pub struct ListView {
    /// Print a short table even when stdout is not a terminal (a terminal gets one unless `--json`).
    #[arg(long, conflicts_with = "json")]
    pub table: bool,
}

/// Where a request body comes from.
#[derive(Debug, Args)]
pub struct BodyFile {
    /// A file holding the JSON object to send, or `-` for stdin.
    #[arg(long, value_name = "PATH|-")]
    pub file: PathBuf,
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
        #[command(flatten)]
        view: ListView,
    },
    /// GET /session/{id} on Catalyst.
    Get { id: String },
    /// GET /cli/session/{id}/logs on the App API.
    Logs { id: String },
}
