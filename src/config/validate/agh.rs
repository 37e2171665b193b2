//! The `[agh]` rules: identity values that must be sendable as headers, the endpoint's form, and
//! timeouts that must fit the connection and the lease.

use super::{MAX_SOCKET_PATH_BYTES, how_to_set};
use crate::api::Endpoint;
use crate::config::endpoint::DEFAULT_TCP_PORT;
use crate::config::error::ValidationErrors;
use crate::config::origin::env_var_for;
use crate::config::{AghConfig, WorkerConfig};

/// Context bundles carry prior attempts whose results are each up to 64 KiB.
const MIN_RESPONSE_BYTES: u64 = 1024 * 1024;

/// Header values must be visible ASCII; anything else is refused before it reaches the wire.
fn is_header_safe(value: &str) -> bool {
    value.bytes().all(|b| (0x20..0x7f).contains(&b))
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

pub(super) fn validate_agh(
    agh: &AghConfig,
    worker: &WorkerConfig,
    identity_required: bool,
    errors: &mut ValidationErrors,
) {
    validate_identity_value(
        "agh.session_id",
        "AGH_SESSION_ID",
        "X-AGH-Session-ID",
        &agh.session_id,
        identity_required,
        errors,
    );
    validate_identity_value(
        "agh.agent",
        "AGH_AGENT",
        "X-AGH-Agent",
        &agh.agent,
        identity_required,
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

#[cfg(test)]
mod tests {
    use super::super::tests::{problems, valid};

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
    fn identity_values_must_be_sendable_as_headers() {
        let mut config = valid();
        config.agh.agent = "cödér".into();
        config.agh.workspace_id = "ws\u{7}".into();
        assert_eq!(problems(&config), vec!["agh.agent", "agh.workspace_id"]);
    }
}
