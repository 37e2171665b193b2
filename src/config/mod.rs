//! Layered configuration: built-in defaults < TOML file < `AGH_WORKER__SECTION__KEY` environment < flags.
//!
//! The AGH conventions (`AGH_SESSION_ID`, `AGH_AGENT`/`AGH_AGENT_NAME`, `AGH_SESSION_CHANNEL`,
//! `AGH_HOME`) fill the identity and transport keys that no layer set, so a sidecar started inside
//! an AGH session needs no file at all. Unknown keys and mistyped values are errors naming the key
//! path and where it came from; [`Config::validate`] reports every remaining problem at once.
//!
//! Every key is documented in `config/agh-worker.toml` and `docs/configuration.md`;
//! `tests/config_docs.rs` keeps both in step with the structs below.

mod daemon_config;
mod endpoint;
mod error;
mod keys;
mod load;
mod origin;
mod suggest;
mod validate;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::api::{ClientOptions, Endpoint, Identity, RetryOptions};

pub use endpoint::{
    DEFAULT_TCP_PORT, EndpointSource, ResolveEndpointError, ResolvedEndpoint, resolve_endpoint,
    resolve_endpoint_with,
};
pub use error::{ConfigError, ValidationError, ValidationErrors};
pub use keys::{HANDLER_KEY_PREFIX, handler_keys, section_keys};
pub use load::{
    AGH_CONVENTIONS, ConfigSources, DEFAULT_CONFIG_PATH, Entry, LoadedConfig, load,
    load_unvalidated,
};
pub use origin::{ENV_PREFIX, Origin, env_var_for};

/// The whole configuration, one struct per TOML section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub agh: AghConfig,
    pub retry: RetryConfig,
    pub worker: WorkerConfig,
    pub log: LogConfig,
    pub health: HealthConfig,
    pub coordination: CoordinationConfig,
    pub acp: AcpConfig,
    pub attach: AttachConfig,
    /// `[[handlers]]`: which handler runs which task, first match wins.
    pub handlers: Vec<crate::handler::HandlerConfig>,
}

/// `[agh]`: where the AGH daemon is and who the worker is to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AghConfig {
    /// `unix:/path/daemon.sock` or `http://127.0.0.1:2123`; empty = discover under `home`.
    pub endpoint: String,
    /// AGH home directory; empty = `$AGH_HOME`, else `$HOME/.agh` (filled in by [`load`]).
    pub home: String,
    /// Sent as `X-AGH-Session-ID`; empty = `$AGH_SESSION_ID`.
    pub session_id: String,
    /// Sent as `X-AGH-Agent`; empty = `$AGH_AGENT` (or `$AGH_AGENT_NAME`).
    pub agent: String,
    /// Sent as `X-AGH-Workspace-ID` when non-empty.
    pub workspace_id: String,
    /// The session's network channel; empty = `$AGH_SESSION_CHANNEL`.
    pub session_channel: String,
    pub connect_timeout_ms: u64,
    pub request_timeout_ms: u64,
    /// Client deadline for claim-next and recv waits: the daemon never ends them itself.
    pub long_poll_timeout_ms: u64,
    pub max_response_bytes: u64,
}

impl Default for AghConfig {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            home: String::new(),
            session_id: String::new(),
            agent: String::new(),
            workspace_id: String::new(),
            session_channel: String::new(),
            connect_timeout_ms: 2_000,
            request_timeout_ms: 10_000,
            // Same as the agh CLI's client timeout for `task next --wait`.
            long_poll_timeout_ms: 30_000,
            max_response_bytes: 8 * 1024 * 1024,
        }
    }
}

/// `[retry]`: backoff for transport errors, bounded per call kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// Total time complete/fail/release may keep retrying transport errors.
    pub terminal_budget_ms: u64,
    /// Total time reads (me, context, channels) may keep retrying; 0 = no retries.
    pub read_budget_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            initial_backoff_ms: 200,
            max_backoff_ms: 10_000,
            terminal_budget_ms: 30_000,
            read_budget_ms: 10_000,
        }
    }
}

/// What to do at start-up (or after a lost claim response) with a lease this session already holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrphanPolicy {
    /// Run the held task as if just claimed.
    #[default]
    Adopt,
    /// Give it back to the queue at once.
    Release,
}

impl OrphanPolicy {
    /// The spellings accepted in the file, the environment and flags.
    pub const VARIANTS: &'static [&'static str] = &["adopt", "release"];
}

/// `[worker]`: the claim loop and the lease lifecycle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    pub lease_seconds: u64,
    pub heartbeat_every_seconds: u64,
    pub claim_wait: bool,
    pub orphan_policy: OrphanPolicy,
    pub drain_timeout_seconds: u64,
    /// 0 = no ceiling beyond the task's own `limits.max_runtime_seconds`.
    pub max_runtime_seconds: u64,
    /// 0 = unlimited.
    pub max_runs: u64,
    /// 0 = never exit for idleness.
    pub idle_exit_seconds: u64,
    pub identity_probe_seconds: u64,
    pub required_capabilities: Vec<String>,
    pub priority_min: u64,
    /// Follow each run's task event stream so an operator cancel stops the handler at once.
    pub follow_task_events: bool,
    /// A resident worker's most attached sessions (one claim loop each) at once.
    pub max_slots: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            lease_seconds: 60,
            heartbeat_every_seconds: 20,
            claim_wait: true,
            orphan_policy: OrphanPolicy::Adopt,
            drain_timeout_seconds: 30,
            max_runtime_seconds: 3_600,
            max_runs: 0,
            idle_exit_seconds: 0,
            identity_probe_seconds: 5,
            required_capabilities: Vec::new(),
            priority_min: 0,
            follow_task_events: true,
            max_slots: 8,
        }
    }
}

/// `[acp]`: `agh-worker acp`, the worker as the agent AGH launches for its own session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AcpConfig {
    /// The lease asked for in `acp` mode, in place of `worker.lease_seconds`: AGH stops a
    /// session with no chance to release, so the run in hand is requeued only when it expires.
    pub lease_seconds: u64,
    /// The durable log file (AGH keeps only a 128 KiB stderr tail); empty = `acp.log` in the
    /// state directory, `"off"` = stderr only.
    pub log_file: String,
    /// The log file is moved to `<file>.1` (replacing the previous one) beyond this size.
    pub log_file_max_bytes: u64,
}

impl Default for AcpConfig {
    fn default() -> Self {
        Self {
            lease_seconds: 30,
            log_file: String::new(),
            log_file_max_bytes: 10 * 1024 * 1024,
        }
    }
}

/// `[attach]`: the resident worker that serves the sessions AGH starts, and the thin
/// `agh-worker acp` processes that hand their sessions to it over a Unix socket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AttachConfig {
    /// The resident worker's socket (`unix:` optional). Set: `run` serves the sessions attached
    /// there instead of working as one session, and `acp` hands its session to it. Empty: off.
    pub socket: String,
}

impl AttachConfig {
    /// The socket's path, when attach mode is on.
    pub fn socket_path(&self) -> Option<std::path::PathBuf> {
        let socket = self.socket.trim();
        let path = socket.strip_prefix("unix:").unwrap_or(socket);
        (!path.is_empty()).then(|| std::path::PathBuf::from(path))
    }
}

/// `[coordination]`: the channel listener, messages sent for handlers, and the spawner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoordinationConfig {
    /// Long-poll the session channel and the run's coordination channel for messages.
    pub listen: bool,
    /// At most one progress message per run in this many milliseconds; the latest text wins.
    pub progress_interval_ms: u64,
    /// Longest pause between recv calls (recv is a peek, so a message nobody dequeues would
    /// otherwise be returned in a hot loop); also the longest a new message waits to be seen.
    pub recv_backoff_max_ms: u64,
    /// Seconds between probes of a channel while the daemon answers 503 (network disabled).
    pub network_disabled_probe_seconds: u64,
    /// Ceiling on a child session's TTL, in seconds (the run's remaining time also caps it).
    pub max_child_ttl_seconds: u64,
    /// How long one spawn call may take, in seconds: AGH starts the child's agent process and
    /// its handshake inside the request, independent of the request timeout and the lease.
    pub spawn_timeout_seconds: u64,
}

impl Default for CoordinationConfig {
    fn default() -> Self {
        Self {
            listen: true,
            progress_interval_ms: 1_000,
            recv_backoff_max_ms: 5_000,
            network_disabled_probe_seconds: 60,
            max_child_ttl_seconds: 3_600,
            spawn_timeout_seconds: 120,
        }
    }
}

impl CoordinationConfig {
    pub fn progress_interval(&self) -> Duration {
        Duration::from_millis(self.progress_interval_ms)
    }

    pub fn recv_backoff_max(&self) -> Duration {
        Duration::from_millis(self.recv_backoff_max_ms)
    }

    pub fn network_disabled_probe(&self) -> Duration {
        Duration::from_secs(self.network_disabled_probe_seconds)
    }

    pub fn spawn_timeout(&self) -> Duration {
        Duration::from_secs(self.spawn_timeout_seconds)
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl LogFormat {
    /// The spellings accepted in the file, the environment and flags.
    pub const VARIANTS: &'static [&'static str] = &["text", "json"];
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A level (`info`) or a tracing filter (`info,agh_worker=debug`).
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_string(),
            format: LogFormat::Text,
        }
    }
}

/// `[health]`: the local operations HTTP surface (`/healthz`, `/readyz`, `/status`, `/metrics`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Serve it at all.
    pub enabled: bool,
    /// TCP address, loopback by default: the endpoints need no credentials.
    pub listen: String,
    /// A Unix socket path to serve on instead of `listen`; empty = use `listen`.
    pub socket: String,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: "127.0.0.1:9464".to_string(),
            socket: String::new(),
        }
    }
}

impl Config {
    /// The client options the configuration asks for.
    pub fn client_options(&self) -> ClientOptions {
        ClientOptions {
            connect_timeout: self.agh.connect_timeout(),
            request_timeout: self.agh.request_timeout(),
            long_poll_timeout: self.agh.long_poll_timeout(),
            max_response_bytes: self.agh.max_response_bytes(),
            retry: RetryOptions {
                initial_backoff: self.retry.initial_backoff(),
                max_backoff: self.retry.max_backoff(),
                read_budget: self.retry.read_budget(),
                terminal_budget: self.retry.terminal_budget(),
            },
        }
    }

    /// The identity headers for every AGH call; values are trimmed as the daemon trims them.
    pub fn identity(&self) -> Identity {
        let workspace = self.agh.workspace_id.trim();
        Identity {
            session_id: self.agh.session_id.trim().to_string(),
            agent: self.agh.agent.trim().to_string(),
            workspace_id: (!workspace.is_empty()).then(|| workspace.to_string()),
        }
    }

    /// Where to reach the daemon, following the AGH CLI's discovery (see [`resolve_endpoint`]).
    pub fn endpoint(&self) -> Result<Endpoint, ResolveEndpointError> {
        resolve_endpoint(&self.agh).map(|resolved| resolved.endpoint)
    }
}

impl AghConfig {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn long_poll_timeout(&self) -> Duration {
        Duration::from_millis(self.long_poll_timeout_ms)
    }

    /// The response body cap as a `usize`, saturating on targets where it would not fit.
    pub fn max_response_bytes(&self) -> usize {
        usize::try_from(self.max_response_bytes).unwrap_or(usize::MAX)
    }
}

impl RetryConfig {
    pub fn initial_backoff(&self) -> Duration {
        Duration::from_millis(self.initial_backoff_ms)
    }

    pub fn max_backoff(&self) -> Duration {
        Duration::from_millis(self.max_backoff_ms)
    }

    pub fn terminal_budget(&self) -> Duration {
        Duration::from_millis(self.terminal_budget_ms)
    }

    pub fn read_budget(&self) -> Duration {
        Duration::from_millis(self.read_budget_ms)
    }
}

impl WorkerConfig {
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_seconds)
    }

    pub fn heartbeat_every(&self) -> Duration {
        Duration::from_secs(self.heartbeat_every_seconds)
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout_seconds)
    }

    /// `None` when the config sets no ceiling (0).
    pub fn max_runtime(&self) -> Option<Duration> {
        (self.max_runtime_seconds > 0).then(|| Duration::from_secs(self.max_runtime_seconds))
    }

    /// `None` when unlimited (0).
    pub fn max_runs(&self) -> Option<u64> {
        (self.max_runs > 0).then_some(self.max_runs)
    }

    /// `None` when the worker never exits for idleness (0).
    pub fn idle_exit(&self) -> Option<Duration> {
        (self.idle_exit_seconds > 0).then(|| Duration::from_secs(self.idle_exit_seconds))
    }

    pub fn identity_probe(&self) -> Duration {
        Duration::from_secs(self.identity_probe_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_trimmed_and_an_empty_workspace_is_not_sent() {
        let mut config = Config::default();
        config.agh.session_id = " sess-0123456789abcdef ".into();
        config.agh.agent = "coder\n".into();
        config.agh.workspace_id = "  ".into();
        assert_eq!(
            config.identity(),
            Identity {
                session_id: "sess-0123456789abcdef".into(),
                agent: "coder".into(),
                workspace_id: None,
            }
        );
        config.agh.workspace_id = "ws-1".into();
        assert_eq!(config.identity().workspace_id.as_deref(), Some("ws-1"));
    }

    #[test]
    fn zero_means_no_limit_for_the_optional_ceilings() {
        let mut worker = WorkerConfig {
            max_runtime_seconds: 0,
            ..WorkerConfig::default()
        };
        assert_eq!(worker.max_runtime(), None);
        assert_eq!(worker.max_runs(), None);
        assert_eq!(worker.idle_exit(), None);
        worker.max_runs = 3;
        worker.idle_exit_seconds = 9;
        assert_eq!(worker.max_runs(), Some(3));
        assert_eq!(worker.idle_exit(), Some(Duration::from_secs(9)));
        assert_eq!(worker.lease(), Duration::from_secs(60));
    }

    #[test]
    fn enum_variant_lists_match_their_serde_spelling() {
        for name in OrphanPolicy::VARIANTS {
            let parsed: OrphanPolicy = serde_json::from_value(serde_json::json!(name))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                serde_json::to_value(parsed).ok(),
                Some(serde_json::json!(name))
            );
        }
        for name in LogFormat::VARIANTS {
            let parsed: LogFormat = serde_json::from_value(serde_json::json!(name))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                serde_json::to_value(parsed).ok(),
                Some(serde_json::json!(name))
            );
        }
    }
}
