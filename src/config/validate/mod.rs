//! [`Config::validate`]: every cross-field and range rule, each problem reported with its fix.
//!
//! The `[agh]` rules (identity headers, the endpoint, timeouts against the lease) are in `agh`;
//! this file holds the entry point and the rules of the other sections.

mod agh;

use super::error::ValidationErrors;
use super::origin::env_var_for;
use super::{
    AcpConfig, Config, CoordinationConfig, HealthConfig, LogConfig, RetryConfig, WorkerConfig,
};
use agh::validate_agh;

/// AGH refuses longer leases (`lease_seconds exceeds 86400`).
const MAX_LEASE_SECONDS: u64 = 86_400;
/// The highest task priority weight (urgent); a higher minimum would never claim anything.
const MAX_PRIORITY_WEIGHT: u64 = 40;
/// AGH's limit for one capability id.
const MAX_CAPABILITY_BYTES: usize = 128;
/// The most sessions one resident worker may serve: each is a claim loop with its own handler.
const MAX_SLOTS: u64 = 1024;
/// `sun_path` holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH_BYTES: usize = 107;

/// "set AGH_WORKER__X__Y or x.y in the file": how to change `key`.
fn how_to_set(key: &str) -> String {
    format!("set {} or {key} in the file", env_var_for(key))
}

impl Config {
    /// Checks every rule and reports all problems at once.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::default();
        // A resident worker has no identity of its own: each attached session brings one.
        let identity_required = self.attach.socket_path().is_none();
        validate_agh(&self.agh, &self.worker, identity_required, &mut errors);
        validate_retry(&self.retry, &mut errors);
        validate_worker(&self.worker, &mut errors);
        validate_log(&self.log, &mut errors);
        validate_health(&self.health, &mut errors);
        validate_coordination(&self.coordination, &mut errors);
        validate_acp(&self.acp, &mut errors);
        validate_socket_path(
            "attach.socket",
            self.attach.socket_path(),
            "/run/agh-worker/attach.sock",
            &mut errors,
        );
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
    check_ranges(
        &[(
            "worker.max_slots",
            worker.max_slots,
            1,
            MAX_SLOTS,
            "a resident worker with no slot serves nobody",
        )],
        errors,
    );
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
    } else {
        validate_socket_path(
            "health.socket",
            Some(socket.into()),
            "/run/agh-worker/health.sock",
            errors,
        );
    }
}

/// A Unix socket path setting: absolute (a relative one would depend on the working directory)
/// and short enough for a socket address.
fn validate_socket_path(
    key: &str,
    path: Option<std::path::PathBuf>,
    example: &str,
    errors: &mut ValidationErrors,
) {
    let Some(path) = path else {
        return;
    };
    let length = path.as_os_str().len();
    if !path.is_absolute() {
        errors.push(
            key,
            format!(
                "{key} ({:?}) is not an absolute path: use one such as \"{example}\" (a relative path would depend on the working directory)",
                path.display().to_string()
            ),
        );
    } else if length > MAX_SOCKET_PATH_BYTES {
        errors.push(
            key,
            format!(
                "{key} is {length} bytes, longer than a Unix socket address can hold ({MAX_SOCKET_PATH_BYTES}): use a shorter path"
            ),
        );
    }
}

/// Range rules: (key, value, lowest, highest, why the lowest), each out-of-range value reported.
fn check_ranges(rules: &[(&str, u64, u64, u64, &str)], errors: &mut ValidationErrors) {
    for &(key, value, low, high, why) in rules {
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

/// Range rules of `[acp]`.
fn validate_acp(acp: &AcpConfig, errors: &mut ValidationErrors) {
    let rules: [(&str, u64, u64, u64, &str); 2] = [
        (
            "acp.lease_seconds",
            acp.lease_seconds,
            6,
            MAX_LEASE_SECONDS,
            "heartbeats every third of the lease need whole seconds",
        ),
        (
            "acp.log_file_max_bytes",
            acp.log_file_max_bytes,
            64 * 1024,
            u64::MAX,
            "a smaller file holds too little to be worth keeping",
        ),
    ];
    check_ranges(&rules, errors);
}

/// Range rules of `[coordination]`: (key, value, lowest, highest, why the lowest).
fn validate_coordination(coordination: &CoordinationConfig, errors: &mut ValidationErrors) {
    let rules: [(&str, u64, u64, u64, &str); 5] = [
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
        (
            "coordination.spawn_timeout_seconds",
            coordination.spawn_timeout_seconds,
            1,
            3_600,
            "0 would give up on every spawn at once",
        ),
    ];
    check_ranges(&rules, errors);
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

    pub(super) fn valid() -> Config {
        let mut config = Config::default();
        config.agh.session_id = "sess-0123456789abcdef".into();
        config.agh.agent = "coder".into();
        config.agh.home = "/home/op/.agh".into();
        config
    }

    pub(super) fn problems(config: &Config) -> Vec<String> {
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
