//! `ApiError`: every way an AGH call can fail, classified the way a worker must react to it.
//!
//! The daemon's errors are strings: identity errors carry a `diagnostic.code`, lease errors an
//! `AUTONOMY_*` token, the rest a sentinel prefix such as `task: active run lease exists`. Over TCP
//! the text of any 5xx is masked to the reason phrase, so 5xx is classified by status alone.

use std::fmt;

use super::types::{Diagnostic, ErrorBody};
use crate::exit;
use crate::util::redact::redact_claim_tokens;
use crate::util::text::cut_chars;

/// What kind of failure a call met; decides retry, exit code and the worker's reaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// 401 `identity_required`: the session id or agent header is missing.
    IdentityRequired,
    /// 401 `identity_stale`: the session is unknown or not active (stopped, reaped).
    IdentityStale,
    /// 401 `identity_mismatch`: the agent name does not match the session.
    IdentityMismatch,
    /// 403 `identity_unauthorized`: the workspace header does not match the session.
    IdentityUnauthorized,
    /// 503 `identity_lookup_unavailable`: the daemon could not look the session up right now.
    IdentityLookupUnavailable,
    /// 409 `AUTONOMY_LEASE_EXPIRED`: the run's lease passed (or the run already ended).
    LeaseExpired,
    /// 409 `AUTONOMY_NO_ACTIVE_LEASE`: the caller holds no lease on that run.
    NoActiveLease,
    /// 403 `AUTONOMY_FOREIGN_RUN`: the caller holds a lease, but on another run.
    ForeignRun,
    /// 409 `task: active run lease exists` / `AUTONOMY_LEASE_ALREADY_HELD`: one lease per session.
    LeaseAlreadyHeld,
    /// 400/422 request validation.
    Validation,
    /// 413: request (result, metadata or whole body) too large.
    PayloadTooLarge,
    /// 409 `session: spawn limit exceeded`.
    SpawnLimit,
    /// 403 `session: spawn permission denied`.
    SpawnPermission,
    /// 422 `session: spawn validation failed` (or any 422 from spawn).
    SpawnValidation,
    /// 403 other than identity and lease cases (workspace claim, origin, remote access).
    PermissionDenied,
    /// 404 with a JSON error (peer not found, run row vanished).
    NotFound,
    /// 404 plain text: no such route on this daemon (wrong path or an older daemon).
    RouteNotFound,
    /// 409 not covered above (store races such as `invalid status transition`).
    Conflict,
    /// 503 other than identity lookup: a service is not configured or disabled.
    ServiceUnavailable,
    /// 5xx; over TCP its message is masked.
    Server,
    /// Connection refused, reset, dropped mid-answer, socket missing.
    Transport,
    /// The client's own deadline passed (or 408 from the server).
    Timeout,
    /// A 2xx (or error) body that is not the JSON this endpoint answers with.
    MalformedBody,
    /// The answer exceeded the configured response size cap.
    ResponseTooLarge,
    /// A status this client does not expect from this endpoint.
    UnexpectedStatus,
}

impl ErrorKind {
    /// Whether trying the same call again later can succeed.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::IdentityLookupUnavailable
                | ErrorKind::ServiceUnavailable
                | ErrorKind::Server
                | ErrorKind::Transport
                | ErrorKind::Timeout
                | ErrorKind::MalformedBody
        )
    }

    /// True for the answers that mean "this run's lease is no longer ours".
    pub fn is_lease_lost(self) -> bool {
        matches!(
            self,
            ErrorKind::LeaseExpired | ErrorKind::NoActiveLease | ErrorKind::ForeignRun
        )
    }

    /// True for identity failures other than a transient lookup problem.
    pub fn is_identity(self) -> bool {
        matches!(
            self,
            ErrorKind::IdentityRequired
                | ErrorKind::IdentityStale
                | ErrorKind::IdentityMismatch
                | ErrorKind::IdentityUnauthorized
        )
    }

    /// A short, stable, low-cardinality name (logs, metrics labels, CLI output).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::IdentityRequired => "identity_required",
            ErrorKind::IdentityStale => "identity_stale",
            ErrorKind::IdentityMismatch => "identity_mismatch",
            ErrorKind::IdentityUnauthorized => "identity_unauthorized",
            ErrorKind::IdentityLookupUnavailable => "identity_lookup_unavailable",
            ErrorKind::LeaseExpired => "lease_expired",
            ErrorKind::NoActiveLease => "no_active_lease",
            ErrorKind::ForeignRun => "foreign_run",
            ErrorKind::LeaseAlreadyHeld => "lease_already_held",
            ErrorKind::Validation => "validation",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::SpawnLimit => "spawn_limit",
            ErrorKind::SpawnPermission => "spawn_permission",
            ErrorKind::SpawnValidation => "spawn_validation",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::NotFound => "not_found",
            ErrorKind::RouteNotFound => "route_not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::ServiceUnavailable => "service_unavailable",
            ErrorKind::Server => "server_error",
            ErrorKind::Transport => "transport",
            ErrorKind::Timeout => "timeout",
            ErrorKind::MalformedBody => "malformed_body",
            ErrorKind::ResponseTooLarge => "response_too_large",
            ErrorKind::UnexpectedStatus => "unexpected_status",
        }
    }

    /// The process exit code the one-shot commands use for this kind (documented in the README).
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorKind::IdentityRequired
            | ErrorKind::IdentityMismatch
            | ErrorKind::IdentityUnauthorized => exit::IDENTITY,
            ErrorKind::IdentityStale => exit::IDENTITY_STALE,
            ErrorKind::LeaseExpired | ErrorKind::NoActiveLease | ErrorKind::ForeignRun => {
                exit::LEASE
            }
            ErrorKind::LeaseAlreadyHeld | ErrorKind::Conflict => exit::CONFLICT,
            ErrorKind::Validation | ErrorKind::PayloadTooLarge => exit::VALIDATION,
            ErrorKind::SpawnLimit | ErrorKind::SpawnPermission | ErrorKind::SpawnValidation => {
                exit::SPAWN
            }
            ErrorKind::PermissionDenied => exit::PERMISSION,
            ErrorKind::NotFound | ErrorKind::RouteNotFound => exit::NOT_FOUND,
            ErrorKind::IdentityLookupUnavailable
            | ErrorKind::ServiceUnavailable
            | ErrorKind::Server
            | ErrorKind::Transport
            | ErrorKind::Timeout => exit::UNAVAILABLE,
            ErrorKind::MalformedBody
            | ErrorKind::ResponseTooLarge
            | ErrorKind::UnexpectedStatus => exit::PROTOCOL,
        }
    }

    /// What a person should do about it, when there is something to say.
    fn hint(self) -> Option<&'static str> {
        match self {
            ErrorKind::IdentityRequired => Some(
                "set AGH_SESSION_ID and AGH_AGENT (or agh.session_id and agh.agent in the config)",
            ),
            ErrorKind::IdentityStale => Some(
                "the session is stopped or unknown: start or resume it, or use an active session id",
            ),
            ErrorKind::IdentityMismatch => {
                Some("agh.agent must equal the session's agent name: clear stale AGH_AGENT values")
            }
            ErrorKind::IdentityUnauthorized => {
                Some("agh.workspace_id must be the session's workspace, or left empty")
            }
            ErrorKind::Transport => Some(
                "is the AGH daemon running? check agh.endpoint (unix:/path/daemon.sock or http://127.0.0.1:2123)",
            ),
            ErrorKind::RouteNotFound => Some(
                "the daemon does not serve this route: is agh.endpoint an AGH daemon of a compatible version?",
            ),
            _ => None,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The message of a call a silenced client did not send.
pub(super) const NOT_SENT_STOPPING: &str = "not sent: the session is stopping";

/// A failed AGH call.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub struct ApiError {
    /// The classification.
    pub kind: ErrorKind,
    /// The call that failed, e.g. `claim-next`.
    pub call: &'static str,
    /// HTTP status when an answer arrived.
    pub status: Option<u16>,
    /// The daemon's `error` string (claim tokens redacted), or a description of the local failure.
    pub message: String,
    /// The daemon's diagnostic, when it sent one.
    pub diagnostic: Option<Box<Diagnostic>>,
    /// How many times the call was sent (more than 1 after internal retries).
    pub attempts: u32,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.call, self.kind)?;
        if let Some(status) = self.status {
            write!(f, " (HTTP {status})")?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        if self.attempts > 1 {
            write!(f, " [after {} attempts]", self.attempts)?;
        }
        if let Some(hint) = self.kind.hint() {
            write!(f, "; {hint}")?;
        }
        Ok(())
    }
}

impl ApiError {
    /// An error that happened before or instead of an HTTP answer.
    pub fn local(call: &'static str, kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            call,
            status: None,
            message: redact_claim_tokens(&message.into()),
            diagnostic: None,
            attempts: 1,
        }
    }

    /// Whether the call was never sent because the client was silenced: the session is stopping
    /// (see `AghClient::silence`), so nothing is wrong but the stop itself.
    pub fn is_unsent_for_stop(&self) -> bool {
        self.status.is_none()
            && self.attempts <= 1
            && self.kind == ErrorKind::IdentityStale
            && self.message == NOT_SENT_STOPPING
    }

    /// Classifies a non-success answer from its status and raw body.
    pub fn from_response(call: &'static str, status: u16, body: &[u8]) -> Self {
        let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
        let (message, diagnostic, is_json) = match parsed {
            Some(envelope) => (envelope.error, envelope.diagnostic.map(Box::new), true),
            None => (snippet(body), None, false),
        };
        let kind = classify(call, status, &message, diagnostic.as_deref(), is_json);
        // Classified on the whole text, kept only in part: it goes to logs and run failures.
        let message = cut_chars(&redact_claim_tokens(&message), MAX_DAEMON_MESSAGE_CHARS);
        ApiError {
            kind,
            call,
            status: Some(status),
            message,
            diagnostic,
            attempts: 1,
        }
    }

    /// Whether trying again later can succeed.
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }
}

/// Maps a status and the daemon's error text to a kind (agh-protocol.md §2.1, §3.8).
pub fn classify(
    call: &str,
    status: u16,
    message: &str,
    diagnostic: Option<&Diagnostic>,
    is_json: bool,
) -> ErrorKind {
    if let Some(code) = diagnostic.and_then(|d| d.code.as_deref()) {
        match code {
            "identity_required" => return ErrorKind::IdentityRequired,
            "identity_stale" => return ErrorKind::IdentityStale,
            "identity_mismatch" => return ErrorKind::IdentityMismatch,
            "identity_unauthorized" => return ErrorKind::IdentityUnauthorized,
            "identity_lookup_unavailable" => return ErrorKind::IdentityLookupUnavailable,
            _ => {}
        }
    }
    let text = message;
    // Tokens first: they are the daemon's own machine-readable reasons.
    if text.contains("AUTONOMY_LEASE_EXPIRED") {
        return ErrorKind::LeaseExpired;
    }
    if text.contains("AUTONOMY_NO_ACTIVE_LEASE") {
        return ErrorKind::NoActiveLease;
    }
    if text.contains("AUTONOMY_FOREIGN_RUN") {
        return ErrorKind::ForeignRun;
    }
    if text.contains("AUTONOMY_LEASE_ALREADY_HELD") || text.contains("active run lease exists") {
        return ErrorKind::LeaseAlreadyHeld;
    }
    if text.contains("spawn limit exceeded") {
        return ErrorKind::SpawnLimit;
    }
    if text.contains("spawn permission denied") {
        return ErrorKind::SpawnPermission;
    }
    if text.contains("spawn validation failed") {
        return ErrorKind::SpawnValidation;
    }
    match status {
        401 => {
            if text.contains("is required for agent commands") {
                ErrorKind::IdentityRequired
            } else if text.contains("does not match") {
                ErrorKind::IdentityMismatch
            } else {
                // Unknown 401s are handled like a stale identity: stop claiming, probe slowly.
                ErrorKind::IdentityStale
            }
        }
        403 => {
            if text.contains("does not belong to the requested workspace") {
                ErrorKind::IdentityUnauthorized
            } else if call == "spawn" {
                ErrorKind::SpawnPermission
            } else {
                ErrorKind::PermissionDenied
            }
        }
        404 if !is_json => ErrorKind::RouteNotFound,
        404 => ErrorKind::NotFound,
        408 => ErrorKind::Timeout,
        409 => {
            if text.contains("lease expired") {
                ErrorKind::LeaseExpired
            } else if text.contains("invalid claim token") {
                ErrorKind::NoActiveLease
            } else {
                ErrorKind::Conflict
            }
        }
        413 => ErrorKind::PayloadTooLarge,
        400 | 422 if call == "spawn" => ErrorKind::SpawnValidation,
        400 | 422 => ErrorKind::Validation,
        503 => {
            if text.contains("identity") && text.contains("unavailable") {
                ErrorKind::IdentityLookupUnavailable
            } else {
                ErrorKind::ServiceUnavailable
            }
        }
        500..=599 => ErrorKind::Server,
        _ => ErrorKind::UnexpectedStatus,
    }
}

/// The most of the daemon's `error` string an [`ApiError`] keeps.
pub const MAX_DAEMON_MESSAGE_CHARS: usize = 2048;

/// A printable, bounded excerpt of a non-JSON body.
fn snippet(body: &[u8]) -> String {
    const MAX: usize = 200;
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX * 4)]);
    let collapsed: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    cut_chars(&collapsed, MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_call_a_silenced_client_kept_back_counts_as_unsent_for_the_stop() {
        let kept_back = ApiError::local("release", ErrorKind::IdentityStale, NOT_SENT_STOPPING);
        assert!(kept_back.is_unsent_for_stop());
        let refused =
            ApiError::from_response("release", 401, br#"{"error":"session is stopping"}"#);
        assert!(!refused.is_unsent_for_stop());
        let other = ApiError::local("release", ErrorKind::IdentityStale, "no session id");
        assert!(!other.is_unsent_for_stop());
    }

    fn kind(call: &'static str, status: u16, body: &str) -> ErrorKind {
        ApiError::from_response(call, status, body.as_bytes()).kind
    }

    #[test]
    fn identity_errors_are_classified_by_diagnostic_code() {
        let body = r#"{"error":"agent session identity is not active: start or resume the AGH session, then retry","diagnostic":{"code":"identity_stale","category":"session"}}"#;
        assert_eq!(kind("me", 401, body), ErrorKind::IdentityStale);
        let body = r#"{"error":"x","diagnostic":{"code":"identity_lookup_unavailable"}}"#;
        assert_eq!(kind("me", 503, body), ErrorKind::IdentityLookupUnavailable);
        assert!(ErrorKind::IdentityLookupUnavailable.is_retryable());
        assert!(!ErrorKind::IdentityStale.is_retryable());
    }

    #[test]
    fn identity_errors_without_a_diagnostic_are_classified_by_text() {
        let required = r#"{"error":"AGH_SESSION_ID is required for agent commands: run this command from an AGH-managed agent session"}"#;
        assert_eq!(kind("me", 401, required), ErrorKind::IdentityRequired);
        let mismatch = r#"{"error":"AGH_AGENT does not match the daemon session agent: clear stale AGH identity environment variables and retry"}"#;
        assert_eq!(kind("me", 401, mismatch), ErrorKind::IdentityMismatch);
        let workspace = r#"{"error":"agent session does not belong to the requested workspace: use the session workspace"}"#;
        assert_eq!(kind("me", 403, workspace), ErrorKind::IdentityUnauthorized);
    }

    #[test]
    fn lease_errors_are_classified_by_autonomy_token() {
        let expired = r#"{"error":"task: autonomy lease rejected: AUTONOMY_LEASE_EXPIRED: task: lease expired: run \"run-1\" is not an active lease for session \"sess-1\""}"#;
        assert_eq!(kind("heartbeat", 409, expired), ErrorKind::LeaseExpired);
        let none = r#"{"error":"task: autonomy lease rejected: AUTONOMY_NO_ACTIVE_LEASE: task: invalid claim token"}"#;
        assert_eq!(kind("complete", 409, none), ErrorKind::NoActiveLease);
        let foreign = r#"{"error":"task: autonomy lease rejected: AUTONOMY_FOREIGN_RUN: task: permission denied"}"#;
        assert_eq!(kind("fail", 403, foreign), ErrorKind::ForeignRun);
        assert!(ErrorKind::ForeignRun.is_lease_lost());
    }

    #[test]
    fn the_one_lease_conflict_is_recognised_without_its_documented_code() {
        let body = r#"{"error":"task: active run lease exists: session \"sess-1\" already owns an active task-run lease"}"#;
        assert_eq!(kind("claim-next", 409, body), ErrorKind::LeaseAlreadyHeld);
    }

    #[test]
    fn store_races_on_lease_mutations_are_lease_losses() {
        assert_eq!(
            kind("complete", 409, r#"{"error":"task: lease expired"}"#),
            ErrorKind::LeaseExpired
        );
        assert_eq!(
            kind("complete", 409, r#"{"error":"task: invalid claim token"}"#),
            ErrorKind::NoActiveLease
        );
        assert_eq!(
            kind(
                "complete",
                409,
                r#"{"error":"task: invalid status transition"}"#
            ),
            ErrorKind::Conflict
        );
    }

    #[test]
    fn spawn_refusals_are_told_apart() {
        assert_eq!(
            kind(
                "spawn",
                409,
                r#"{"error":"session: spawn limit exceeded: child depth 2 exceeds max_depth 1"}"#
            ),
            ErrorKind::SpawnLimit
        );
        assert_eq!(
            kind(
                "spawn",
                403,
                r#"{"error":"session: spawn permission denied: child tools permission atom \"x\" widens parent permissions"}"#
            ),
            ErrorKind::SpawnPermission
        );
        assert_eq!(
            kind(
                "spawn",
                422,
                r#"{"error":"json: unknown field \"filesystem\""}"#
            ),
            ErrorKind::SpawnValidation
        );
    }

    #[test]
    fn validation_and_size_answers_are_not_retryable() {
        assert_eq!(
            kind(
                "complete",
                422,
                r#"{"error":"task: validation failed: result must not contain claim_token"}"#
            ),
            ErrorKind::Validation
        );
        assert_eq!(
            kind("complete", 413, r#"{"error":"task: payload too large"}"#),
            ErrorKind::PayloadTooLarge
        );
        assert_eq!(
            kind(
                "send",
                400,
                r#"{"error":"network: invalid body: say text is required"}"#
            ),
            ErrorKind::Validation
        );
        assert!(!ErrorKind::Validation.is_retryable());
    }

    #[test]
    fn masked_server_errors_are_retryable() {
        let err = ApiError::from_response("me", 500, br#"{"error":"Internal Server Error"}"#);
        assert_eq!(err.kind, ErrorKind::Server);
        assert!(err.is_retryable());
    }

    #[test]
    fn a_plain_text_404_is_an_unknown_route_and_a_json_404_a_missing_thing() {
        assert_eq!(
            kind("me", 404, "404 page not found"),
            ErrorKind::RouteNotFound
        );
        assert_eq!(
            kind(
                "send",
                404,
                r#"{"error":"network: local peer not found: session=s channel=c"}"#
            ),
            ErrorKind::NotFound
        );
    }

    #[test]
    fn html_error_bodies_become_a_short_single_line_message() {
        let html = format!("<html>\n<body>{}</body></html>", "x".repeat(5000));
        let err = ApiError::from_response("me", 502, html.as_bytes());
        assert_eq!(err.kind, ErrorKind::Server);
        assert!(err.message.chars().count() <= 201);
        assert!(!err.message.contains('\n'));
    }

    #[test]
    fn claim_tokens_never_survive_into_messages() {
        let err = ApiError::from_response(
            "complete",
            409,
            br#"{"error":"bad token agh_claim_AbCdEf0123456789-_xyz in request"}"#,
        );
        assert_eq!(err.message, "bad token agh_claim_[REDACTED] in request");
        assert_eq!(
            redact_claim_tokens("agh_claim_[REDACTED] ok"),
            "agh_claim_[REDACTED] ok"
        );
    }

    #[test]
    fn the_display_names_the_call_the_status_and_what_to_do() {
        let err = ApiError::from_response(
            "me",
            401,
            br#"{"error":"AGH_SESSION_ID is required for agent commands"}"#,
        );
        let text = err.to_string();
        assert!(
            text.starts_with("me: identity_required (HTTP 401)"),
            "{text}"
        );
        assert!(text.contains("set AGH_SESSION_ID"), "{text}");
    }
}
