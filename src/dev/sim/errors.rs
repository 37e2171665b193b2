//! The AGH error envelope: the simulated daemon's typed errors, identity diagnostics and
//! claim-token redaction.

use serde_json::{Value, json};

// The daemon redacts claim tokens in its error messages exactly as the client does.
pub(crate) use crate::util::redact::redact_claim_tokens;

/// Which transport a request came in on; decides 5xx masking and the body cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    Tcp,
    Unix,
}

impl Transport {
    /// The name AGH uses in error strings and `origin.kind`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "http",
            Transport::Unix => "uds",
        }
    }
}

/// The error the simulated daemon answers an agent API request with: status, `error` text and
/// the optional `diagnostic` (named apart from the client's `api::ApiError`, which decodes it).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{status}: {message}")]
pub(crate) struct SimError {
    pub status: u16,
    pub message: String,
    pub diagnostic: Option<Value>,
}

impl SimError {
    pub(crate) fn new(status: u16, message: impl Into<String>) -> SimError {
        SimError {
            status,
            message: message.into(),
            diagnostic: None,
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> SimError {
        SimError::new(400, message)
    }

    pub(crate) fn task_validation(detail: impl std::fmt::Display) -> SimError {
        SimError::new(422, format!("task: validation failed: {detail}"))
    }

    pub(crate) fn payload_too_large(what: &str, limit: usize) -> SimError {
        SimError::new(
            413,
            format!("task: payload too large: {what} exceeds {limit} bytes"),
        )
    }

    pub(crate) fn body_too_large() -> SimError {
        SimError::new(413, "request body too large")
    }

    pub(crate) fn no_active_lease(session_id: &str, run_id: &str) -> SimError {
        SimError::new(
            409,
            format!(
                "task: autonomy lease rejected: AUTONOMY_NO_ACTIVE_LEASE: task: invalid claim token: session {session_id:?} holds no active lease for run {run_id:?}"
            ),
        )
    }

    pub(crate) fn foreign_run(session_id: &str, run_id: &str) -> SimError {
        SimError::new(
            403,
            format!(
                "task: autonomy lease rejected: AUTONOMY_FOREIGN_RUN: task: permission denied: run {run_id:?} is not leased by session {session_id:?}"
            ),
        )
    }

    pub(crate) fn lease_expired(session_id: &str, run_id: &str) -> SimError {
        SimError::new(
            409,
            format!(
                "task: autonomy lease rejected: AUTONOMY_LEASE_EXPIRED: task: lease expired: run {run_id:?} is not an active lease for session {session_id:?}"
            ),
        )
    }

    /// The envelope as sent: over TCP a status ≥ 500 shows only the reason phrase.
    pub(crate) fn envelope(&self, transport: Transport) -> Value {
        let message = if transport == Transport::Tcp && self.status >= 500 {
            reason_phrase(self.status).to_owned()
        } else {
            redact_claim_tokens(&self.message)
        };
        match &self.diagnostic {
            Some(diagnostic) => json!({ "error": message, "diagnostic": diagnostic }),
            None => json!({ "error": message }),
        }
    }
}

/// The identity failures the simulator can produce (`identity_lookup_unavailable` needs a
/// failing session store, which the simulator does not have; inject a 503 fault instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IdentityFailure {
    SessionIdMissing,
    AgentMissing,
    UnknownSession,
    InactiveSession,
    AgentMismatch,
    WorkspaceMismatch,
}

impl IdentityFailure {
    pub(super) fn into_error(self) -> SimError {
        const FROM_SESSION: &str = "run this command from an AGH-managed agent session";
        const RESUME: &str = "start or resume the AGH session, then retry";
        let (status, code, message, hint) = match self {
            IdentityFailure::SessionIdMissing => (
                401,
                "identity_required",
                "AGH_SESSION_ID is required for agent commands",
                FROM_SESSION,
            ),
            IdentityFailure::AgentMissing => (
                401,
                "identity_required",
                "AGH_AGENT is required for agent commands",
                FROM_SESSION,
            ),
            IdentityFailure::UnknownSession => (
                401,
                "identity_stale",
                "agent session identity is not known to the daemon",
                RESUME,
            ),
            IdentityFailure::InactiveSession => (
                401,
                "identity_stale",
                "agent session identity is not active",
                RESUME,
            ),
            IdentityFailure::AgentMismatch => (
                401,
                "identity_mismatch",
                "AGH_AGENT does not match the daemon session agent",
                "clear stale AGH identity environment variables and retry",
            ),
            IdentityFailure::WorkspaceMismatch => (
                403,
                "identity_unauthorized",
                "agent session does not belong to the requested workspace",
                "use the session workspace or start a session in the requested workspace",
            ),
        };
        SimError {
            status,
            message: format!("{message}: {hint}"),
            diagnostic: Some(json!({
                "id": format!("agentidentity.{code}"),
                "code": code,
                "severity": "error",
                "category": "session",
                "title": "Agent identity error",
                "message": message,
                "suggested_command": hint,
                "data_freshness": "live",
            })),
        }
    }
}

pub(crate) fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        413 => "Request Entity Too Large",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_tokens_in_error_text_are_redacted() {
        assert_eq!(
            redact_claim_tokens(r#"token "agh_claim_abc-DEF_123" rejected"#),
            r#"token "agh_claim_[REDACTED]" rejected"#
        );
        assert_eq!(redact_claim_tokens("nothing here"), "nothing here");
    }

    #[test]
    fn server_errors_are_masked_over_tcp_but_not_over_the_socket() {
        let error = SimError::new(500, "store: disk on fire");
        assert_eq!(
            error.envelope(Transport::Tcp),
            json!({"error": "Internal Server Error"})
        );
        assert_eq!(
            error.envelope(Transport::Unix),
            json!({"error": "store: disk on fire"})
        );
    }

    #[test]
    fn identity_errors_carry_a_diagnostic_and_a_hint() {
        let error = IdentityFailure::AgentMismatch.into_error();
        assert_eq!(error.status, 401);
        assert_eq!(
            error.message,
            "AGH_AGENT does not match the daemon session agent: clear stale AGH identity environment variables and retry"
        );
        let diagnostic = error
            .diagnostic
            .expect("identity errors carry a diagnostic");
        assert_eq!(diagnostic["id"], "agentidentity.identity_mismatch");
        assert_eq!(diagnostic["category"], "session");
    }
}
