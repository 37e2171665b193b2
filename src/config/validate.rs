//! [`Config::validate`]: every cross-field and range rule, each problem reported with its fix.

use super::endpoint::DEFAULT_TCP_PORT;
use super::error::ValidationErrors;
use super::origin::env_var_for;
use super::{
    AghConfig, Config, CoordinationConfig, HealthConfig, LogConfig, RetryConfig, WorkerConfig,
};
use crate::api::Endpoint;

/// AGH refuses longer leases (`lease_seconds exceeds 86400`).
const MAX_LEASE_SECONDS: u64 = 86_400;
/// Context bundles carry prior attempts whose results are each up to 64 KiB.
const MIN_RESPONSE_BYTES: u64 = 1024 * 1024;
/// The highest task priority weight (urgent); a higher minimum would never claim anything.
const MAX_PRIORITY_WEIGHT: u64 = 40;
/// AGH's limit for one capability id.
const MAX_CAPABILITY_BYTES: usize = 128;
/// `sun_path` holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH_BYTES: usize = 107;

/// "set AGH_WORKER__X__Y or x.y in the file": how to change `key`.
fn how_to_set(key: &str) -> String {
    format!("set {} or {key} in the file", env_var_for(key))
}

/// Header values must be visible ASCII; anything else is refused before it reaches the wire.
fn is_header_safe(value: &str) -> bool {
    value.bytes().all(|b| (0x20..0x7f).contains(&b))
}

impl Config {
    /// Checks every rule and reports all problems at once.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::default();
        validate_agh(&self.agh, &self.worker, &mut errors);
        validate_retry(&self.retry, &mut errors);
        validate_worker(&self.worker, &mut errors);
        validate_log(&self.log, &mut errors);
        validate_health(&self.health, &mut errors);
        validate_coordination(&self.coordination, &mut errors);
        for (key, problem) in crate::handler::table::table_problems(&self.handlers) {
            errors.push(&key, problem);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

fn validate_identity_value(
    key: &str,
    agh_var: &str,
    header: &str,
    value: &str,
    required: bool,
    errors: &mut ValidationErrors,
) {
    let value = value.trim();
    if value.is_empty() {
        if required {
            errors.push(
                key,
                format!(
                    "{key} is empty: set {agh_var} (or {}, or {key} in the file)",
                    env_var_for(key)
                ),
            );
        }
    } else if !is_header_safe(value) {
        errors.push(
            key,
            format!(
                "{key} contains characters that cannot be sent in the {header} header: use printable ASCII only"
            ),
        );
    }
}

fn validate_agh(agh: &AghConfig, worker: &WorkerConfig, errors: &mut ValidationErrors) {
    validate_identity_value(
        "agh.session_id",
        "AGH_SESSION_ID",
        "X-AGH-Session-ID",
        &agh.session_id,
        true,
        errors,
    );
    validate_identity_value(
        "agh.agent",
        "AGH_AGENT",
        "X-AGH-Agent",
        &agh.agent,
        true,
        errors,
    );
    validate_identity_value(
        "agh.workspace_id",
        "AGH_WORKER__AGH__WORKSPACE_ID",
        "X-AGH-Workspace-ID",
        &agh.workspace_id,
        false,
        errors,
    );

    if agh.endpoint.trim().is_empty() {
        if agh.home.trim().is_empty() {
            errors.push(
                "agh.home",
                "agh.home is empty and HOME is not set, so the daemon cannot be found: set AGH_HOME (or AGH_WORKER__AGH__HOME), or set agh.endpoint".to_string(),
            );
        }
    } else {
        match Endpoint::parse(&agh.endpoint) {
            Err(e) => errors.push("agh.endpoint", format!("agh.endpoint is invalid: {e}")),
            Ok(Endpoint::Unix(path)) if path.as_os_str().len() > MAX_SOCKET_PATH_BYTES => {
                errors.push(
                    "agh.endpoint",
                    format!(
                        "agh.endpoint socket path is {} bytes, longer than a Unix socket address can hold ({MAX_SOCKET_PATH_BYTES}): use a shorter path or http://127.0.0.1:{DEFAULT_TCP_PORT}",
                        path.as_os_str().len()
                    ),
                );
            }
            Ok(_) => {}
        }
    }

    for (key, value) in [
        ("agh.connect_timeout_ms", agh.connect_timeout_ms),
        ("agh.request_timeout_ms", agh.request_timeout_ms),
        ("agh.long_poll_timeout_ms", agh.long_poll_timeout_ms),
    ] {
        if value == 0 {
            errors.push(
                key,
                format!(
                    "{key} is 0, so every call would time out at once: {} to a positive number of milliseconds",
                    how_to_set(key)
                ),
            );
        }
    }
    if agh.connect_timeout_ms > agh.request_timeout_ms && agh.request_timeout_ms > 0 {
        errors.push(
            "agh.connect_timeout_ms",
            format!(
                "agh.connect_timeout_ms ({}) is longer than agh.request_timeout_ms ({}), which includes connecting: lower it to at most {}",
                agh.connect_timeout_ms, agh.request_timeout_ms, agh.request_timeout_ms
            ),
        );
    }
    // A heartbeat sent on schedule must be answered or abandoned while the lease still holds,
    // or a hung daemon turns one slow call into a lost lease. Only checked when the heartbeat
    // itself is valid, so one mistake is not reported twice.
    let heartbeat_is_valid = worker.heartbeat_every_seconds >= 1
        && worker.heartbeat_every_seconds <= worker.lease_seconds / 2;
    let renew_window_ms = worker
        .lease_seconds
        .saturating_sub(worker.heartbeat_every_seconds)
        .saturating_mul(1000);
    if heartbeat_is_valid && agh.request_timeout_ms > renew_window_ms {
        errors.push(
            "agh.request_timeout_ms",
            format!(
                "agh.request_timeout_ms ({}) is longer than the time a heartbeat has before the lease ends (worker.lease_seconds - worker.heartbeat_every_seconds = {renew_window_ms} ms): lower it to at most {renew_window_ms} or raise worker.lease_seconds",
                agh.request_timeout_ms
            ),
        );
    }
    if agh.max_response_bytes < MIN_RESPONSE_BYTES {
        errors.push(
            "agh.max_response_bytes",
            format!(
                "agh.max_response_bytes ({}) is too small for task contexts, which can carry several 64 KiB results: set it to at least {MIN_RESPONSE_BYTES} (default 8388608)",
                agh.max_response_bytes
            ),
        );
    }
}

fn validate_retry(retry: &RetryConfig, errors: &mut ValidationErrors) {
    if retry.initial_backoff_ms == 0 {
        errors.push(
            "retry.initial_backoff_ms",
            format!(
                "retry.initial_backoff_ms is 0, which retries in a hot loop: {} to a positive number (default 200)",
                how_to_set("retry.initial_backoff_ms")
            ),
        );
    }
    if retry.max_backoff_ms < retry.initial_backoff_ms {
        errors.push(
            "retry.max_backoff_ms",
            format!(
                "retry.max_backoff_ms ({}) is below retry.initial_backoff_ms ({}): raise it to at least {}",
                retry.max_backoff_ms, retry.initial_backoff_ms, retry.initial_backoff_ms
            ),
        );
    }
    if retry.terminal_budget_ms == 0 {
        errors.push(
            "retry.terminal_budget_ms",
            format!(
                "retry.terminal_budget_ms is 0, so one dropped connection would leave a finished run to expire: {} to a positive number (default 30000)",
                how_to_set("retry.terminal_budget_ms")
            ),
        );
    }
}

fn validate_worker(worker: &WorkerConfig, errors: &mut ValidationErrors) {
    let lease = worker.lease_seconds;
    if !(1..=MAX_LEASE_SECONDS).contains(&lease) {
        errors.push(
            "worker.lease_seconds",
            format!(
                "worker.lease_seconds ({lease}) is out of range: AGH accepts 1 to {MAX_LEASE_SECONDS}; {}",
                how_to_set("worker.lease_seconds")
            ),
        );
    }
    let heartbeat = worker.heartbeat_every_seconds;
    if heartbeat == 0 {
        errors.push(
            "worker.heartbeat_every_seconds",
            format!(
                "worker.heartbeat_every_seconds is 0: {} to at most half of worker.lease_seconds",
                how_to_set("worker.heartbeat_every_seconds")
            ),
        );
    } else if heartbeat > lease / 2 {
        // Half the lease leaves room for one failed renewal to be retried before it runs out.
        let fix = if lease / 2 == 0 {
            format!("raise worker.lease_seconds to at least {}", heartbeat * 2)
        } else {
            format!(
                "lower it to at most {} or raise worker.lease_seconds to at least {}",
                lease / 2,
                heartbeat.saturating_mul(2)
            )
        };
        errors.push(
            "worker.heartbeat_every_seconds",
            format!(
                "worker.heartbeat_every_seconds ({heartbeat}) is too close to worker.lease_seconds ({lease}): a missed heartbeat would lose the lease; {fix}"
            ),
        );
    }
    if worker.identity_probe_seconds == 0 {
        errors.push(
            "worker.identity_probe_seconds",
            format!(
                "worker.identity_probe_seconds is 0, which would probe a stale identity in a hot loop: {} to a positive number (default 5)",
                how_to_set("worker.identity_probe_seconds")
            ),
        );
    }
    if worker.priority_min > MAX_PRIORITY_WEIGHT {
        errors.push(
            "worker.priority_min",
            format!(
                "worker.priority_min ({}) is above the highest task priority weight ({MAX_PRIORITY_WEIGHT}, urgent), so nothing would ever be claimed: use 0, 10 (low), 20 (medium), 30 (high) or 40 (urgent)",
                worker.priority_min
            ),
        );
    }
    for (i, capability) in worker.required_capabilities.iter().enumerate() {
        let problem = if capability.is_empty() {
            Some("is empty".to_string())
        } else if capability.len() > MAX_CAPABILITY_BYTES {
            Some(format!(
                "is {} bytes, more than AGH's {MAX_CAPABILITY_BYTES}",
                capability.len()
            ))
        } else if capability
            .chars()
            .any(|c| c.is_whitespace() || c == ',' || c.is_control())
        {
            Some(format!(
                "({capability:?}) contains whitespace or a comma, which AGH refuses"
            ))
        } else {
            None
        };
        if let Some(problem) = problem {
            errors.push(
                "worker.required_capabilities",
                format!("worker.required_capabilities[{i}] {problem}: fix or remove it"),
            );
        }
    }
}

fn validate_health(health: &HealthConfig, errors: &mut ValidationErrors) {
    if !health.enabled {
        return;
    }
    let socket = health.socket.trim();
    if socket.is_empty() {
        if health
            .listen
            .trim()
            .parse::<std::net::SocketAddr>()
            .is_err()
        {
            errors.push(
                "health.listen",
                format!(
                    "health.listen ({:?}) is not an address and port such as \"127.0.0.1:9464\": fix it, set health.socket to serve on a Unix socket, or set health.enabled = false",
                    health.listen
                ),
            );
        }
    } else if !socket.starts_with('/') {
        errors.push(
            "health.socket",
            format!(
                "health.socket ({socket:?}) is not an absolute path: use one such as \"/run/agh-worker/health.sock\" (a relative path would depend on the working directory)"
            ),
        );
    } else if socket.len() > MAX_SOCKET_PATH_BYTES {
        errors.push(
            "health.socket",
            format!(
                "health.socket is {} bytes, longer than a Unix socket address can hold ({MAX_SOCKET_PATH_BYTES}): use a shorter path",
                socket.len()
            ),
        );
    }
}

/// Range rules of `[coordination]`: (key, value, lowest, highest, why the lowest).
fn validate_coordination(coordination: &CoordinationConfig, errors: &mut ValidationErrors) {
    let rules: [(&str, u64, u64, u64, &str); 4] = [
        (
            "coordination.progress_interval_ms",
            coordination.progress_interval_ms,
            100,
            3_600_000,
            "faster progress would flood the channel",
        ),
        (
            "coordination.recv_backoff_max_ms",
            coordination.recv_backoff_max_ms,
            250,
            300_000,
            "a shorter pause re-reads a stuck message in a near-hot loop",
        ),
        (
            "coordination.network_disabled_probe_seconds",
            coordination.network_disabled_probe_seconds,
            1,
            86_400,
            "0 would probe a disabled network in a hot loop",
        ),
        (
            "coordination.max_child_ttl_seconds",
            coordination.max_child_ttl_seconds,
            1,
            604_800,
            "AGH refuses a TTL of 0",
        ),
    ];
    for (key, value, low, high, why) in rules {
        if !(low..=high).contains(&value) {
            errors.push(
                key,
                format!(
                    "{key} ({value}) is out of range: use {low} to {high} ({why} below {low}); {}",
                    how_to_set(key)
                ),
            );
        }
    }
}

const LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];

fn validate_log(log: &LogConfig, errors: &mut ValidationErrors) {
    let level = log.level.trim();
    let is_plain_level = LEVELS.contains(&level.to_ascii_lowercase().as_str());
    // A bare word that is not a level parses as a target filter and silently logs nothing
    // useful (`verbose` means "everything from target verbose"), so only directives with
    // `=` or `,` are handed to the filter parser.
    let is_directive = (level.contains('=') || level.contains(','))
        && tracing_subscriber::EnvFilter::try_new(level).is_ok();
    if !is_plain_level && !is_directive {
        errors.push(
            "log.level",
            format!(
                "log.level ({:?}) is not a level or a filter: use one of {} or a filter such as \"info,agh_worker=debug\"",
                log.level,
                LEVELS.join(", ")
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> Config {
        let mut config = Config::default();
        config.agh.session_id = "sess-0123456789abcdef".into();
        config.agh.agent = "coder".into();
        config.agh.home = "/home/op/.agh".into();
        config
    }

    fn problems(config: &Config) -> Vec<String> {
        match config.validate() {
            Ok(()) => Vec::new(),
            Err(errors) => errors.keys().into_iter().map(str::to_string).collect(),
        }
    }

    #[test]
    fn the_defaults_with_an_identity_and_a_home_are_valid() {
        assert_eq!(valid().validate(), Ok(()));
    }

    #[test]
    fn coordination_values_outside_their_ranges_are_refused_with_the_key() {
        let mut config = valid();
        config.coordination.progress_interval_ms = 10;
        config.coordination.recv_backoff_max_ms = 0;
        config.coordination.network_disabled_probe_seconds = 0;
        config.coordination.max_child_ttl_seconds = 0;
        assert_eq!(
            problems(&config),
            vec![
                "coordination.progress_interval_ms",
                "coordination.recv_backoff_max_ms",
                "coordination.network_disabled_probe_seconds",
                "coordination.max_child_ttl_seconds",
            ]
        );
        let mut config = valid();
        config.coordination.recv_backoff_max_ms = 250;
        config.coordination.progress_interval_ms = 100;
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn a_missing_identity_says_which_variables_to_set() {
        let mut config = valid();
        config.agh.session_id.clear();
        config.agh.agent = "  ".into();
        let Err(errors) = config.validate() else {
            panic!("an empty identity must be refused");
        };
        let text = errors.to_string();
        assert!(text.contains(
            "agh.session_id is empty: set AGH_SESSION_ID (or AGH_WORKER__AGH__SESSION_ID, or agh.session_id in the file)"
        ), "{text}");
        assert!(text.contains("agh.agent is empty: set AGH_AGENT"), "{text}");
        assert_eq!(text.lines().count(), 2, "one problem per line: {text}");
    }

    #[test]
    fn validate_collects_every_problem_at_once() {
        let mut config = valid();
        config.agh.session_id.clear();
        config.agh.endpoint = "tcp://localhost".into();
        config.agh.connect_timeout_ms = 0;
        config.agh.max_response_bytes = 1000;
        config.retry.initial_backoff_ms = 0;
        config.worker.lease_seconds = 0;
        config.worker.heartbeat_every_seconds = 0;
        config.log.level = "verbose".into();
        assert_eq!(
            problems(&config),
            vec![
                "agh.session_id",
                "agh.endpoint",
                "agh.connect_timeout_ms",
                "agh.max_response_bytes",
                "retry.initial_backoff_ms",
                "worker.lease_seconds",
                "worker.heartbeat_every_seconds",
                "log.level",
            ]
        );
    }

    #[test]
    fn the_lease_must_be_between_one_second_and_a_day() {
        let mut config = valid();
        config.worker.lease_seconds = 86_401;
        assert!(problems(&config).contains(&"worker.lease_seconds".to_string()));
        config.worker.lease_seconds = 86_400;
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn a_heartbeat_above_half_the_lease_is_refused_with_the_bound() {
        let mut config = valid();
        config.worker.heartbeat_every_seconds = 31;
        let Err(errors) = config.validate() else {
            panic!("heartbeat 31 s with a 60 s lease must be refused");
        };
        assert_eq!(errors.keys(), vec!["worker.heartbeat_every_seconds"]);
        assert!(errors.to_string().contains("at most 30"), "{errors}");
        config.worker.heartbeat_every_seconds = 30;
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn a_request_timeout_longer_than_the_renewal_window_is_refused() {
        let mut config = valid();
        config.worker.lease_seconds = 10;
        config.worker.heartbeat_every_seconds = 5;
        assert_eq!(problems(&config), vec!["agh.request_timeout_ms"]);
        config.agh.request_timeout_ms = 5_000;
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn a_bad_heartbeat_is_not_also_reported_as_a_bad_request_timeout() {
        let mut config = valid();
        config.worker.lease_seconds = 10;
        config.worker.heartbeat_every_seconds = 9;
        assert_eq!(problems(&config), vec!["worker.heartbeat_every_seconds"]);
    }

    #[test]
    fn an_endpoint_needs_a_known_form_and_otherwise_a_home() {
        let mut config = valid();
        config.agh.endpoint = "unix:/run/agh/daemon.sock".into();
        config.agh.home.clear();
        assert_eq!(config.validate(), Ok(()));
        config.agh.endpoint = format!("unix:/{}", "x".repeat(200));
        assert_eq!(problems(&config), vec!["agh.endpoint"]);
        config.agh.endpoint.clear();
        assert_eq!(problems(&config), vec!["agh.home"]);
    }

    #[test]
    fn capabilities_follow_the_rules_agh_enforces() {
        let mut config = valid();
        config.worker.required_capabilities = vec![
            "skill:rust".into(),
            String::new(),
            "two words".into(),
            "a,b".into(),
            "x".repeat(129),
        ];
        let Err(errors) = config.validate() else {
            panic!("bad capabilities must be refused");
        };
        let text = errors.to_string();
        for index in ["[1]", "[2]", "[3]", "[4]"] {
            assert!(text.contains(index), "{index} missing from {text}");
        }
        assert!(!text.contains("[0]"), "{text}");
    }

    #[test]
    fn a_priority_minimum_above_urgent_is_refused() {
        let mut config = valid();
        config.worker.priority_min = 41;
        assert_eq!(problems(&config), vec!["worker.priority_min"]);
    }

    #[test]
    fn log_levels_and_filters_are_accepted_but_bare_words_are_not() {
        let mut config = valid();
        for good in [
            "info",
            "DEBUG",
            "off",
            "info,agh_worker=debug",
            "agh_worker=trace",
        ] {
            config.log.level = good.into();
            assert_eq!(config.validate(), Ok(()), "{good}");
        }
        config.log.level = "verbose".into();
        assert_eq!(problems(&config), vec!["log.level"]);
    }

    #[test]
    fn the_health_address_must_parse_unless_a_socket_or_off_is_chosen() {
        let mut config = valid();
        config.health.listen = "localhost".into();
        assert_eq!(problems(&config), vec!["health.listen"]);
        config.health.socket = "/run/agh-worker/health.sock".into();
        assert!(problems(&config).is_empty());
        config.health.socket = "health.sock".into();
        assert_eq!(problems(&config), vec!["health.socket"]);
        config.health.socket = format!("/{}", "s".repeat(MAX_SOCKET_PATH_BYTES));
        assert_eq!(problems(&config), vec!["health.socket"]);
        config.health.enabled = false;
        assert!(problems(&config).is_empty());
    }

    #[test]
    fn identity_values_must_be_sendable_as_headers() {
        let mut config = valid();
        config.agh.agent = "cödér".into();
        config.agh.workspace_id = "ws\u{7}".into();
        assert_eq!(problems(&config), vec!["agh.agent", "agh.workspace_id"]);
    }

    #[test]
    fn backoff_bounds_and_terminal_budget_are_checked() {
        let mut config = valid();
        config.retry.max_backoff_ms = 100;
        config.retry.terminal_budget_ms = 0;
        assert_eq!(
            problems(&config),
            vec!["retry.max_backoff_ms", "retry.terminal_budget_ms"]
        );
    }
}
