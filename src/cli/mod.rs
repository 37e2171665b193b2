//! The command line: `run`, `demo`, `sim`, and one operator one-shot per AGH agent endpoint.

pub mod coder;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The agent side of the AGH agent runtime: claims task runs, keeps their leases alive while a
/// handler works, and finishes each run exactly once.
#[derive(Debug, Parser)]
#[command(name = "agh-worker", version, propagate_version = true)]
pub struct Cli {
    /// Configuration file (TOML). Default: /etc/agh-worker/agh-worker.toml when it exists.
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// AGH endpoint: unix:/path/daemon.sock or http://127.0.0.1:2123 (overrides agh.endpoint).
    #[arg(long, global = true, value_name = "ENDPOINT")]
    pub endpoint: Option<String>,
    /// Session id sent as X-AGH-Session-ID (overrides agh.session_id and AGH_SESSION_ID).
    #[arg(long, global = true, value_name = "ID")]
    pub session_id: Option<String>,
    /// Agent name sent as X-AGH-Agent (overrides agh.agent and AGH_AGENT).
    #[arg(long, global = true, value_name = "NAME")]
    pub agent: Option<String>,
    /// Workspace id sent as X-AGH-Workspace-ID (overrides agh.workspace_id).
    #[arg(long, global = true, value_name = "ID")]
    pub workspace_id: Option<String>,
    /// Log level or filter, e.g. `debug` or `info,agh_worker=debug` (overrides log.level; RUST_LOG wins).
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Log format (overrides log.format).
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormatArg>,
    /// Any configuration key, e.g. `--set worker.lease_seconds=120`; repeatable.
    #[arg(long = "set", global = true, value_name = "KEY=VALUE", value_parser = key_value)]
    pub set: Vec<String>,
    /// Print one-shot answers as JSON even on a terminal.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// `--log-format` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the worker: claim runs and hand them to the configured handlers until stopped.
    Run(RunArgs),
    /// Be the ACP agent of this AGH session: AGH launches it (provider command `agh-worker acp`)
    /// and talks ACP on stdin/stdout; it claims runs with the session's identity (see docs/acp.md).
    Acp(AcpArgs),
    /// Run the demo: the built-in AGH simulator, sample tasks, the example exec handler, a summary.
    Demo(DemoArgs),
    /// Serve the built-in AGH simulator (for tests, benchmarks and trying things out).
    Sim(SimArgs),
    /// Fault-injection soak: the built-in simulator, worker processes, faults and kills; checks the lease ledger.
    Soak(SoakArgs),
    /// GET /api/agent/me: who this session is, its leases and limits.
    Me,
    /// GET /api/agent/context: the session's situation and task bundle.
    Context,
    /// GET /api/agent/channels: the coordination channels visible to the session.
    Channels,
    /// POST /api/agent/tasks/claim-next: claim one run.
    Claim(ClaimArgs),
    /// POST /api/agent/tasks/{run}/heartbeat: extend a lease.
    Heartbeat(HeartbeatArgs),
    /// POST /api/agent/tasks/{run}/complete: finish a run successfully.
    Complete(CompleteArgs),
    /// POST /api/agent/tasks/{run}/fail: finish a run as failed.
    Fail(FailArgs),
    /// POST /api/agent/tasks/{run}/release: give a run back to the queue.
    Release(ReleaseArgs),
    /// GET /api/task-runs/{run}: the daemon's record of a run (status, session, task).
    TaskRun(TaskRunArgs),
    /// GET /api/agent/channels/{channel}/recv: peek at queued messages.
    Recv(RecvArgs),
    /// POST /api/agent/channels/{channel}/send: send a coordination message.
    Send(SendArgs),
    /// POST /api/agent/channels/reply: reply to a received message.
    Reply(ReplyArgs),
    /// GET /api/agent/coordinator/config: coordinator settings of the session's workspace.
    CoordinatorConfig,
    /// GET /api/agent/soul, or `soul validate` for POST /api/agent/soul/validate.
    Soul(SoulArgs),
    /// POST /api/agent/spawn: create a child session.
    Spawn(SpawnArgs),
    /// Check the configuration, the AGH endpoint, the identity and the handlers; exit 1 on any failure.
    Check(CheckArgs),
    /// Register the worker with AGH as an agent of its own: print (or, with --write, install) the
    /// provider entry in $AGH_HOME/config.toml and the agent's AGENT.md. Never overwrites.
    AghSetup(AghSetupArgs),
    /// Print a shell completion script, e.g. `agh-worker completions bash > /etc/bash_completion.d/agh-worker`.
    Completions(CompletionsArgs),
    /// Print the man page (roff), or write one page per command into a directory.
    Man(ManArgs),
    /// Measure throughput, overhead, idle footprint, latency and growth against the built-in
    /// simulator (run from a release build: `cargo run --release -- bench`).
    Bench(BenchArgs),
    /// Agentuity Coder Hub: sessions, transcripts, participants, users, custom agents, workspaces,
    /// skills and GitHub repositories (JSON, or a table on a terminal).
    Coder(coder::CoderArgs),
    /// The Agentuity Sessions API: `agentuity sessions list|get|logs` (JSON, or a table on a
    /// terminal).
    Agentuity(coder::AgentuityArgs),
}

/// `agh-setup` options.
#[derive(Debug, Args)]
pub struct AghSetupArgs {
    /// Name of the provider and of the agent (tasks owned by the pool of this name are its work).
    #[arg(long, default_value = "agh-worker", value_name = "NAME")]
    pub name: String,
    /// The command AGH launches, shell-quoted. Default: this binary's absolute path, then `acp`
    /// (and `--attach unix:PATH` when --attach or attach.socket names a resident worker).
    #[arg(long, value_name = "COMMAND")]
    pub command: Option<String>,
    /// Sessions attach to the resident worker on this socket: the command becomes the thin
    /// `acp --attach unix:PATH` (see docs/attach.md). Default: attach.socket, if set.
    #[arg(long, value_name = "unix:PATH", conflicts_with = "command")]
    pub attach: Option<String>,
    /// AGH's home directory. Default: agh.home, i.e. $AGH_HOME, else ~/.agh.
    #[arg(long, value_name = "PATH")]
    pub agh_home: Option<PathBuf>,
    /// Write the files; without it, only show what would be written.
    #[arg(long)]
    pub write: bool,
}

/// `bench` options.
#[derive(Debug, Args, Default)]
pub struct BenchArgs {
    /// Smaller sizes: 10 s idle, growth from 1 000 to 10 000 runs, fewer samples.
    #[arg(long)]
    pub quick: bool,
    /// How many times each throughput and start-up figure is measured (median and min–max shown).
    #[arg(long, value_name = "N")]
    pub repeat: Option<u32>,
    /// No-op runs per throughput measurement (exec runs are a third of it).
    #[arg(long, value_name = "N")]
    pub runs: Option<u64>,
    /// Tiny sizes that only show the bench works end to end (for tests; figures mean nothing).
    #[arg(long, hide = true)]
    pub smoke: bool,
    /// Only the sections whose title contains this text (case-insensitive), e.g. `latency`.
    #[arg(long, value_name = "TEXT")]
    pub only: Option<String>,
}

/// `check` options (`--json` prints the checklist as JSON).
#[derive(Debug, Args, Default)]
pub struct CheckArgs {
    /// Call nothing (AGH, webhook sidecars, Agentuity); check the configuration, endpoint
    /// resolution and handler settings only.
    #[arg(long)]
    pub no_probe: bool,
}

/// `completions` options.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `man` options.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write agh-worker.1 and one agh-worker-COMMAND.1 per command into this directory instead
    /// of printing agh-worker.1.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

/// `run` options.
#[derive(Clone, Debug, Args, Default)]
pub struct RunArgs {
    /// Exit after this many runs have finished (overrides worker.max_runs).
    #[arg(long, value_name = "N")]
    pub max_runs: Option<u64>,
    /// Exit after this long with nothing to do, e.g. `90s`, `5m` (overrides worker.idle_exit_seconds).
    #[arg(long, value_name = "DURATION")]
    pub idle_exit: Option<String>,
    /// Handle at most one run, then exit (the same as --max-runs 1 with an idle exit after one claim wait).
    #[arg(long)]
    pub once: bool,
    /// Be a resident worker: serve the sessions whose `agh-worker acp --attach` processes
    /// attach on this Unix socket, one slot each (sets attach.socket; see docs/attach.md).
    #[arg(long, value_name = "unix:PATH")]
    pub attach: Option<String>,
}

/// `acp` options.
#[derive(Clone, Debug, Args, Default)]
pub struct AcpArgs {
    /// Keep only the ACP conversation here and hand the session to the resident worker on this
    /// Unix socket (sets attach.socket; see docs/attach.md).
    #[arg(long, value_name = "unix:PATH")]
    pub attach: Option<String>,
}

/// `demo` options.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// How many sample tasks to enqueue.
    #[arg(long, default_value_t = 24)]
    pub tasks: u32,
    /// The exec handler program to run (default: examples/exec-handler.sh).
    #[arg(long, value_name = "PATH")]
    pub handler: Option<PathBuf>,
    /// Show the AGH-launched way: pool-owned tasks, for which the simulator starts sessions
    /// running `agh-worker acp` by itself, as AGH does.
    #[arg(long)]
    pub acp: bool,
    /// Show the resident way: as --acp, but the sessions run thin `agh-worker acp --attach`
    /// processes that hand their sessions to one resident worker (`run --attach`).
    #[arg(long, conflicts_with = "acp")]
    pub attach: bool,
}

/// `sim` options.
#[derive(Debug, Args)]
pub struct SimArgs {
    /// TCP address to serve on (port 0 picks a free port); default 127.0.0.1:2123 unless --socket is given.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Unix socket path to serve on (may be combined with --listen).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

/// `soak` options.
#[derive(Debug, Args)]
pub struct SoakArgs {
    /// How many runs to enqueue (default 10000, or 400 with --quick).
    #[arg(long, value_name = "N")]
    pub runs: Option<u64>,
    /// How many worker processes to run side by side.
    #[arg(long, value_name = "W", default_value_t = 2)]
    pub workers: usize,
    /// Seed of the fault and kill schedule (default: from the clock; printed, so a run can be repeated).
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// Stop after this many seconds even if runs are left (default 600, or 180 with --quick).
    #[arg(long, value_name = "SECS")]
    pub duration_limit: Option<u64>,
    /// A short soak for CI: fewer runs, the same faults and kills.
    #[arg(long)]
    pub quick: bool,
    /// Append each worker slot's log to DIR/worker-N.log (to study a failed soak).
    #[arg(long, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
}

/// `claim` options.
#[derive(Debug, Args)]
pub struct ClaimArgs {
    /// Wait for a run (up to agh.long_poll_timeout_ms) instead of answering 204 at once.
    #[arg(long)]
    pub wait: bool,
    /// Lease length in seconds (default: the daemon's 300).
    #[arg(long)]
    pub lease_seconds: Option<i64>,
    /// Lowest task priority weight to claim (low=10, medium=20, high=30, urgent=40).
    #[arg(long)]
    pub priority_min: Option<i64>,
    /// A capability this session offers; repeatable.
    #[arg(long = "capability", value_name = "ID")]
    pub capabilities: Vec<String>,
}

/// `heartbeat` options.
#[derive(Debug, Args)]
pub struct HeartbeatArgs {
    /// The run id.
    pub run: String,
    /// New lease length in seconds from now (default: the daemon's 300).
    #[arg(long)]
    pub lease_seconds: Option<i64>,
}

/// `complete` options.
#[derive(Debug, Args)]
pub struct CompleteArgs {
    /// The run id.
    pub run: String,
    /// The result, as JSON (at most 64 KiB).
    #[arg(long, value_name = "JSON")]
    pub result: Option<String>,
}

/// `fail` options.
#[derive(Debug, Args)]
pub struct FailArgs {
    /// The run id.
    pub run: String,
    /// What went wrong (must not be blank).
    #[arg(long)]
    pub error: String,
    /// Detail, as JSON (at most 64 KiB).
    #[arg(long, value_name = "JSON")]
    pub metadata: Option<String>,
}

/// `release` options.
#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// The run id.
    pub run: String,
    /// Why the run goes back to the queue.
    #[arg(long)]
    pub reason: Option<String>,
}

/// `task-run` options.
#[derive(Debug, Args)]
pub struct TaskRunArgs {
    /// The run id.
    pub run: String,
}

/// `recv` options.
#[derive(Debug, Args)]
pub struct RecvArgs {
    /// The channel id.
    pub channel: String,
    /// Wait for a message (up to agh.long_poll_timeout_ms).
    #[arg(long)]
    pub wait: bool,
    /// Return at most this many, oldest first.
    #[arg(long)]
    pub limit: Option<u32>,
}

/// `send` options.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// The channel id (the session's own channel).
    pub channel: String,
    /// The message text.
    #[arg(long)]
    pub text: String,
    /// Message kind: status, request, reply, blocker, handoff, result, review_request.
    #[arg(long, default_value = "status")]
    pub kind: String,
    /// The task the message is about.
    #[arg(long)]
    pub task_id: String,
    /// The run the message is about.
    #[arg(long)]
    pub run_id: String,
    /// The coordination channel id (default: the channel).
    #[arg(long)]
    pub coordination_channel_id: Option<String>,
    /// Correlation id (default: the run id).
    #[arg(long)]
    pub correlation_id: Option<String>,
    /// Makes a repeated send a no-op (becomes the message id).
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

/// `reply` options.
#[derive(Debug, Args)]
pub struct ReplyArgs {
    /// The id of the message replied to.
    pub message: String,
    /// The reply text.
    #[arg(long)]
    pub text: String,
    /// Makes a repeated reply a no-op (becomes the message id).
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

/// `soul` options.
#[derive(Debug, Args)]
pub struct SoulArgs {
    #[command(subcommand)]
    pub action: Option<SoulAction>,
}

/// `soul` sub-actions.
#[derive(Debug, Subcommand)]
pub enum SoulAction {
    /// Validate SOUL.md: the current one, or the body of --file.
    Validate {
        /// A SOUL.md to validate instead of the current one.
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
    },
}

/// `spawn` options.
#[derive(Debug, Args)]
pub struct SpawnArgs {
    /// The child's agent name.
    #[arg(long = "agent-name", alias = "child-agent", value_name = "NAME")]
    pub agent_name: String,
    /// The child's time to live, in seconds.
    #[arg(long)]
    pub ttl: i64,
    /// The child's role (default worker; coordinator is refused by the daemon).
    #[arg(long)]
    pub role: Option<String>,
    /// The child session's name.
    #[arg(long)]
    pub name: Option<String>,
    /// Permissions as JSON, e.g. '{"tools":["read"]}' (must narrow the parent's).
    #[arg(long, value_name = "JSON")]
    pub permissions: Option<String>,
    /// Keep the child when this session stops (default: stop with the parent).
    #[arg(long)]
    pub keep_on_parent_stop: bool,
}

impl Cli {
    /// The configuration overrides the flags make, as key path and value.
    pub fn overrides(&self) -> Vec<(String, String)> {
        let mut overrides = Vec::new();
        let mut push = |key: &str, value: &Option<String>| {
            if let Some(value) = value {
                overrides.push((key.to_string(), value.clone()));
            }
        };
        push("agh.endpoint", &self.endpoint);
        push("agh.session_id", &self.session_id);
        push("agh.agent", &self.agent);
        push("agh.workspace_id", &self.workspace_id);
        push("log.level", &self.log_level);
        match &self.command {
            Command::Run(args) => push("attach.socket", &args.attach),
            Command::Acp(args) => push("attach.socket", &args.attach),
            _ => {}
        }
        push(
            "log.format",
            &self.log_format.map(|f| match f {
                LogFormatArg::Text => "text".to_string(),
                LogFormatArg::Json => "json".to_string(),
            }),
        );
        for pair in &self.set {
            match pair.split_once('=') {
                Some((key, value)) => overrides.push((key.trim().to_string(), value.to_string())),
                // Handed on as-is so the loader names it as an unknown or malformed key.
                None => overrides.push((pair.trim().to_string(), String::new())),
            }
        }
        overrides
    }
}

/// `--set` takes `KEY=VALUE`. Without the `=` a known key was set to the empty string, which for
/// most keys silently means "the default" (`--set agh.workspace_id` dropped the workspace).
fn key_value(raw: &str) -> Result<String, String> {
    match raw.split_once('=') {
        Some((key, _)) if !key.trim().is_empty() => Ok(raw.to_string()),
        _ => Err(
            "expected KEY=VALUE, e.g. --set worker.lease_seconds=120 (use KEY= for an empty value)"
                .to_string(),
        ),
    }
}

/// Parses `90`, `90s`, `5m`, `2h`, `1500ms` into a duration.
pub fn parse_duration(raw: &str) -> Result<std::time::Duration, String> {
    let text = raw.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{raw:?} is not a duration: use e.g. 90s, 5m, 2h or 1500ms"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => return Ok(std::time::Duration::from_millis(value)),
        "m" => value.saturating_mul(60),
        "h" => value.saturating_mul(3600),
        _ => return Err(format!("{raw:?} has an unknown unit: use ms, s, m or h")),
    };
    Ok(std::time::Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_the_common_units() {
        assert_eq!(parse_duration("90"), Ok(std::time::Duration::from_secs(90)));
        assert_eq!(
            parse_duration("5m"),
            Ok(std::time::Duration::from_secs(300))
        );
        assert_eq!(
            parse_duration("2h"),
            Ok(std::time::Duration::from_secs(7200))
        );
        assert_eq!(
            parse_duration("1500ms"),
            Ok(std::time::Duration::from_millis(1500))
        );
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5d").unwrap_err().contains("unknown unit"));
    }

    #[test]
    fn flags_become_configuration_overrides() {
        let cli = Cli::parse_from([
            "agh-worker",
            "--endpoint",
            "unix:/tmp/x.sock",
            "--set",
            "worker.lease_seconds=120",
            "me",
        ]);
        assert_eq!(
            cli.overrides(),
            vec![
                ("agh.endpoint".to_string(), "unix:/tmp/x.sock".to_string()),
                ("worker.lease_seconds".to_string(), "120".to_string()),
            ]
        );
    }

    #[test]
    fn a_set_without_an_equals_sign_is_a_usage_error() {
        let err = Cli::try_parse_from(["agh-worker", "--set", "agh.workspace_id", "me"])
            .expect_err("KEY without =VALUE is refused");
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(err.to_string().contains("KEY=VALUE"), "{err}");
        let cli = Cli::try_parse_from(["agh-worker", "--set", "agh.workspace_id=", "me"])
            .expect("an explicit empty value is fine");
        assert_eq!(
            cli.overrides(),
            vec![("agh.workspace_id".to_string(), String::new())]
        );
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
