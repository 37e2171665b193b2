//! The operator's task requests (cancel, pause, resume: `internal/api/contract/tasks.go`
//! ~692-696, 767-776) and the task stream's cursor (`after_sequence`, and `Last-Event-ID`, which
//! wins: `internal/api/core/parsers.go` ~315-322, 555-573).

use serde::Deserialize;
use serde_json::Value;

use super::super::errors::{SimError, Transport};
use super::single_json_value;

/// `POST /api/tasks/{id}/cancel` (an optional body) and `…/resume` (its `reason` is ignored).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct CancelTaskRequest {
    pub reason: Option<String>,
    #[allow(dead_code)]
    pub metadata: Option<Value>,
}

impl CancelTaskRequest {
    /// Decodes an optional body (blank = no reason).
    pub(crate) fn parse(body: &[u8], action: &str, transport: Transport) -> Result<Self, SimError> {
        let decode_error = |detail: String| {
            SimError::bad_request(format!(
                "task: validation failed: {}: decode {action} task request: {detail}",
                transport.as_str()
            ))
        };
        match single_json_value(body).map_err(decode_error)? {
            None => Ok(CancelTaskRequest::default()),
            Some(value) => {
                serde_json::from_value(value).map_err(|err| decode_error(err.to_string()))
            }
        }
    }
}

/// `POST /api/tasks/{id}/pause`: a body is required (gin's `ShouldBindJSON`).
#[derive(Debug, Deserialize)]
pub(crate) struct PauseTaskRequest {
    #[serde(default)]
    pub reason: String,
}

impl PauseTaskRequest {
    pub(crate) fn parse(body: &[u8], transport: Transport) -> Result<Self, SimError> {
        let decode_error = |detail: String| {
            SimError::bad_request(format!(
                "task: validation failed: {}: decode pause task request: {detail}",
                transport.as_str()
            ))
        };
        match single_json_value(body).map_err(decode_error)? {
            None => Err(decode_error("EOF".to_owned())),
            Some(value) => {
                serde_json::from_value(value).map_err(|err| decode_error(err.to_string()))
            }
        }
    }
}

/// Where a task stream resumes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StreamCursor {
    pub after_sequence: Option<i64>,
    pub last_event_id: Option<i64>,
}

impl StreamCursor {
    /// From the query and the `Last-Event-ID` header; a value that is not a number is a 400.
    pub(crate) fn parse(
        query: Option<&str>,
        last_event_id: Option<&str>,
    ) -> Result<Self, SimError> {
        let number =
            |what: &str, raw: &str| {
                raw.trim().parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                SimError::bad_request(format!(
                    "task: validation failed: {what} must be a non-negative integer: {raw:?}"
                ))
            })
            };
        let mut cursor = StreamCursor::default();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            if let Some(("after_sequence", value)) = pair.split_once('=')
                && !value.is_empty()
            {
                cursor.after_sequence = Some(number("after_sequence", value)?);
            }
        }
        if let Some(raw) = last_event_id.map(str::trim).filter(|raw| !raw.is_empty()) {
            cursor.last_event_id = Some(number("Last-Event-ID", raw)?);
        }
        Ok(cursor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_cursor_reads_the_query_and_the_header() {
        assert_eq!(
            StreamCursor::parse(Some("after_sequence=7"), Some(" 9 ")),
            Ok(StreamCursor {
                after_sequence: Some(7),
                last_event_id: Some(9)
            })
        );
        assert_eq!(StreamCursor::parse(None, None), Ok(StreamCursor::default()));
        assert!(
            StreamCursor::parse(Some("after_sequence=x"), None).is_err_and(|e| e.status == 400)
        );
    }

    #[test]
    fn a_pause_needs_a_body_and_a_cancel_does_not() {
        assert!(PauseTaskRequest::parse(b"", Transport::Unix).is_err_and(|e| e.status == 400));
        assert_eq!(
            PauseTaskRequest::parse(br#"{"reason":"incident"}"#, Transport::Unix).map(|r| r.reason),
            Ok("incident".to_owned())
        );
        assert_eq!(
            CancelTaskRequest::parse(b"", "cancel", Transport::Tcp).map(|r| r.reason),
            Ok(None)
        );
    }
}
