//! Task-run requests: `claim-next` and the lease calls (heartbeat, complete, fail, release),
//! with the lease-length, capability and result-payload rules.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::super::errors::{SimError, Transport};
use super::{contains_claim_token_key, is_blank};

const MAX_LEASE_SECONDS: i64 = 86_400;
const MAX_RESULT_BYTES: usize = 64 * 1024;

/// `POST /api/agent/tasks/claim-next`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ClaimRequest {
    pub workspace_id: Option<String>,
    pub required_capabilities: Vec<String>,
    pub priority_min: Option<i64>,
    pub lease_seconds: Option<i64>,
    pub wait: bool,
}

impl ClaimRequest {
    /// Empty body = `{}`; malformed = 400; bad values = 422.
    pub(crate) fn parse(body: &[u8], transport: Transport) -> Result<ClaimRequest, SimError> {
        let request: ClaimRequest = if is_blank(body) {
            ClaimRequest::default()
        } else {
            serde_json::from_slice(body).map_err(|error| {
                SimError::bad_request(format!(
                    "task: validation failed: {}: decode agent task claim request: {error}",
                    transport.as_str()
                ))
            })?
        };
        lease_duration(request.lease_seconds, Duration::from_secs(300))?;
        if request.priority_min.is_some_and(|min| min < 0) {
            return Err(SimError::task_validation(
                "priority_min must be non-negative",
            ));
        }
        for (index, capability) in request.required_capabilities.iter().enumerate() {
            validate_capability(index, capability)?;
        }
        Ok(request)
    }

    pub(crate) fn lease(&self, default_lease: Duration) -> Duration {
        lease_duration(self.lease_seconds, default_lease).unwrap_or(default_lease)
    }
}

fn validate_capability(index: usize, capability: &str) -> Result<(), SimError> {
    if capability.trim().is_empty() {
        return Err(SimError::task_validation(format!(
            "required_capabilities[{index}] is required"
        )));
    }
    if capability.len() > 128 {
        return Err(SimError::task_validation(format!(
            "required_capabilities[{index}] exceeds 128 bytes"
        )));
    }
    if capability.chars().any(|c| c.is_whitespace() || c == ',') {
        return Err(SimError::task_validation(format!(
            "required_capabilities[{index}] must not contain whitespace or commas"
        )));
    }
    Ok(())
}

/// 0 or absent = the default lease; negative or above 86 400 s = 422.
pub(crate) fn lease_duration(
    lease_seconds: Option<i64>,
    default_lease: Duration,
) -> Result<Duration, SimError> {
    match lease_seconds {
        None | Some(0) => Ok(default_lease),
        Some(seconds) if seconds < 0 => Err(SimError::task_validation(
            "lease_seconds must be non-negative",
        )),
        Some(seconds) if seconds > MAX_LEASE_SECONDS => Err(SimError::task_validation(format!(
            "lease_seconds exceeds {MAX_LEASE_SECONDS}"
        ))),
        Some(seconds) => Ok(Duration::from_secs(seconds.unsigned_abs())),
    }
}

/// Lease mutations need a JSON body (`{}` at least); an empty body is 400.
pub(crate) fn decode_required<T: for<'de> Deserialize<'de>>(
    body: &[u8],
    operation: &str,
    transport: Transport,
) -> Result<T, SimError> {
    let decode_error = |detail: String| {
        SimError::bad_request(format!(
            "task: validation failed: {}: decode agent task {operation} request: {detail}",
            transport.as_str()
        ))
    };
    if is_blank(body) {
        return Err(decode_error("EOF".to_owned()));
    }
    serde_json::from_slice(body).map_err(|error| decode_error(error.to_string()))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct HeartbeatRequest {
    pub lease_seconds: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct CompleteRequest {
    pub result: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct FailRequest {
    pub error: Option<String>,
    pub metadata: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ReleaseRequest {
    pub reason: Option<String>,
}

/// Result and failure metadata: no `claim_token` key at any depth (422), at most 64 KiB (413).
pub(crate) fn validate_payload(what: &str, payload: Option<&Value>) -> Result<(), SimError> {
    let Some(payload) = payload else {
        return Ok(());
    };
    if contains_claim_token_key(payload) {
        return Err(SimError::task_validation(format!(
            "{what} must not contain claim_token"
        )));
    }
    let size = serde_json::to_vec(payload)
        .map(|bytes| bytes.len())
        .unwrap_or(0);
    if size > MAX_RESULT_BYTES {
        return Err(SimError::payload_too_large(what, MAX_RESULT_BYTES));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_empty_claim_body_means_defaults() {
        let request = ClaimRequest::parse(b"", Transport::Unix).expect("empty body is allowed");
        assert!(!request.wait);
        assert_eq!(
            request.lease(Duration::from_secs(300)),
            Duration::from_secs(300)
        );
    }

    #[test]
    fn lease_seconds_above_a_day_or_negative_are_rejected_with_422() {
        let error = ClaimRequest::parse(br#"{"lease_seconds":86401}"#, Transport::Tcp)
            .expect_err("too long");
        assert_eq!(error.status, 422);
        assert!(error.message.contains("lease_seconds exceeds 86400"));
        let error =
            ClaimRequest::parse(br#"{"lease_seconds":-1}"#, Transport::Tcp).expect_err("negative");
        assert_eq!(error.status, 422);
    }

    #[test]
    fn malformed_claim_json_is_a_400() {
        let error = ClaimRequest::parse(b"{nope", Transport::Unix).expect_err("malformed");
        assert_eq!(error.status, 400);
        assert!(error.message.contains("decode agent task claim request"));
    }

    #[test]
    fn capabilities_with_spaces_or_commas_are_rejected() {
        for body in [
            r#"{"required_capabilities":["a b"]}"#,
            r#"{"required_capabilities":["a,b"]}"#,
            r#"{"required_capabilities":[""]}"#,
        ] {
            let error = ClaimRequest::parse(body.as_bytes(), Transport::Unix).expect_err(body);
            assert_eq!(error.status, 422, "{body}");
        }
    }

    #[test]
    fn oversized_results_are_413_and_claim_tokens_are_422() {
        let big = json!({"blob": "x".repeat(70_000)});
        assert_eq!(
            validate_payload("result", Some(&big)).map_err(|e| e.status),
            Err(413)
        );
        let token = json!({"claim_token": "x"});
        assert_eq!(
            validate_payload("result", Some(&token)).map_err(|e| e.status),
            Err(422)
        );
    }
}
