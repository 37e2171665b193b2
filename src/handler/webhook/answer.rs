//! The sidecar's answer to a delivered task, turned into the run's outcome: an outcome document
//! on success, release on 503/429, fail on anything else. Bodies are read with a size cap and only
//! excerpts of them reach errors and logs.

use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::LOG_TARGET;
use crate::handler::Outcome;
use crate::util::error;
use crate::util::text::cut_chars;

/// How much of an unexpected answer is quoted in the error and the fail metadata.
const EXCERPT_BYTES: usize = 512;

/// Turns a response into the outcome. From here on nothing is retried: the sidecar answered.
pub(super) async fn answer_outcome(
    response: reqwest::Response,
    cap: usize,
    target: &str,
) -> Outcome {
    let status = response.status();
    if !status.is_success() {
        let body = read_capped(response, EXCERPT_BYTES + 1, true)
            .await
            .unwrap_or_default();
        let excerpt = excerpt(&body);
        if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
            // 503 and 429 say "not now" without taking the work: the run goes back to the queue
            // with its attempt intact, for this worker later or another one. Failing would spend
            // an attempt on a sidecar that never tried.
            return Outcome::Release(format!(
                "the sidecar is busy/unavailable (HTTP {}){}",
                status.as_u16(),
                if excerpt.is_empty() {
                    String::new()
                } else {
                    format!(": {excerpt}")
                }
            ));
        }
        return Outcome::Fail {
            error: format!(
                "the webhook answered HTTP {}{}",
                status_text(status),
                if excerpt.is_empty() {
                    String::new()
                } else {
                    format!(": {excerpt}")
                }
            ),
            metadata: Some(json!({
                "url": target,
                "status": status.as_u16(),
                "body_excerpt": excerpt,
            })),
        };
    }
    let body = match read_capped(response, cap, false).await {
        Ok(body) => body,
        Err(ReadError::TooLarge) => {
            return Outcome::Fail {
                error: format!(
                    "the webhook's answer is larger than max_response_bytes ({cap} bytes)"
                ),
                metadata: Some(json!({"url": target, "status": status.as_u16()})),
            };
        }
        Err(ReadError::Transport(why)) => {
            return Outcome::Fail {
                error: format!("the webhook's answer was cut off: {why}"),
                metadata: Some(json!({"url": target, "status": status.as_u16()})),
            };
        }
    };
    body_outcome(status, &body, target)
}

/// The outcome a successful answer's body names; anything but an outcome document fails the
/// run, quoting an excerpt.
fn body_outcome(status: StatusCode, body: &[u8], target: &str) -> Outcome {
    match serde_json::from_slice::<Answer>(body) {
        Ok(Answer::Complete { result }) => Outcome::Complete(result),
        Ok(Answer::Fail { error, metadata }) => Outcome::Fail {
            error: error
                .filter(|e| !e.trim().is_empty())
                .unwrap_or_else(|| "the webhook answered fail without an error".into()),
            metadata: metadata.filter(|m| !m.is_null()),
        },
        Ok(Answer::Release { reason }) => Outcome::Release(
            reason
                .filter(|r| !r.trim().is_empty())
                .unwrap_or_else(|| "the webhook released the run without a reason".into()),
        ),
        Err(err) => {
            let excerpt = excerpt(body);
            // serde quotes what it did not expect (an unknown outcome, whole): cut it too.
            let err = cut_chars(&err.to_string(), EXCERPT_BYTES);
            Outcome::Fail {
                error: format!(
                    "the webhook answered HTTP {} but not with an outcome ({err}); expected \
                     {{\"outcome\":\"complete\"|\"fail\"|\"release\",…}}, got: {excerpt}",
                    status.as_u16()
                ),
                metadata: Some(json!({
                    "url": target,
                    "status": status.as_u16(),
                    "body_excerpt": excerpt,
                })),
            }
        }
    }
}

/// The sidecar's answer.
#[derive(Deserialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
enum Answer {
    Complete {
        #[serde(default)]
        result: Value,
    },
    Fail {
        #[serde(default)]
        error: Option<String>,
        #[serde(default)]
        metadata: Option<Value>,
    },
    Release {
        #[serde(default)]
        reason: Option<String>,
    },
}

#[derive(Debug)]
enum ReadError {
    TooLarge,
    Transport(String),
}

/// Reads the body up to `cap` bytes. With `truncate`, stops quietly at the cap (for excerpts);
/// otherwise a longer body is an error.
async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
    truncate: bool,
) -> Result<Vec<u8>, ReadError> {
    if !truncate
        && let Some(length) = response.content_length()
        && length > cap as u64
    {
        return Err(ReadError::TooLarge);
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > cap {
                    if truncate {
                        body.extend_from_slice(&chunk[..cap - body.len()]);
                        return Ok(body);
                    }
                    return Err(ReadError::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(err) if truncate => {
                tracing::debug!(target: LOG_TARGET, "reading an error answer failed: {}", error::chain(&err));
                return Ok(body);
            }
            Err(err) => return Err(ReadError::Transport(error::chain(&err))),
        }
    }
}

/// The start of a body as text, for errors: at most [`EXCERPT_BYTES`], marked when cut.
fn excerpt(body: &[u8]) -> String {
    let cut = body.len() > EXCERPT_BYTES;
    let text = String::from_utf8_lossy(&body[..body.len().min(EXCERPT_BYTES)]);
    let text = text.trim();
    if cut {
        format!("{text}…")
    } else {
        text.to_string()
    }
}

pub(super) fn status_text(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_cut_and_marked() {
        assert_eq!(excerpt(b"  short  "), "short");
        let long = vec![b'a'; EXCERPT_BYTES + 10];
        let cut = excerpt(&long);
        assert!(cut.ends_with('…') && cut.len() == EXCERPT_BYTES + '…'.len_utf8());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn outcome_text(outcome: &Outcome) -> usize {
            match outcome {
                Outcome::Complete(_) => 0,
                Outcome::Fail { error, .. } => error.len(),
                Outcome::Release(reason) => reason.len(),
            }
        }

        proptest! {
            #[test]
            fn any_body_is_an_outcome_and_an_unexpected_one_is_quoted_only_in_part(
                body in prop::collection::vec(any::<u8>(), 0..4096),
            ) {
                let outcome = body_outcome(StatusCode::OK, &body, "http://sidecar");
                prop_assert!(outcome_text(&outcome) <= 2 * EXCERPT_BYTES + 512);
            }

            #[test]
            fn near_miss_outcome_documents_are_outcomes_with_bounded_errors(
                outcome in prop_oneof![
                    Just("complete".to_string()), Just("fail".to_string()),
                    Just("release".to_string()), Just("COMPLETE".to_string()),
                    "[a-z]{0,3000}",
                ],
                field in prop_oneof![Just("result"), Just("error"), Just("reason"), Just("metadata")],
                value in prop_oneof![
                    Just(serde_json::Value::Null),
                    any::<i64>().prop_map(serde_json::Value::from),
                    "[ -~]{0,64}".prop_map(serde_json::Value::from),
                ],
            ) {
                let body = serde_json::to_vec(&json!({"outcome": outcome, field: value})).unwrap();
                let outcome = body_outcome(StatusCode::OK, &body, "http://sidecar");
                prop_assert!(outcome_text(&outcome) <= 2 * EXCERPT_BYTES + 512);
            }
        }
    }
}
