//! Decoding and validation of agent API request bodies and query parameters, per AGH's rules:
//! the helpers every request shares here, the requests themselves by what they act on.

mod channels;
mod operator;
mod sessions;
mod tasks;

use serde_json::Value;

pub(crate) use channels::{
    MESSAGE_KINDS, RecvParams, ReplyRequest, SendRequest, is_empty_metadata, validate_channel_name,
    validate_coordination, validate_say_body,
};
pub(crate) use operator::{CancelTaskRequest, PauseTaskRequest, StreamCursor};
pub(crate) use sessions::{SoulValidateRequest, SpawnRequest};
pub(crate) use tasks::{
    ClaimRequest, CompleteRequest, FailRequest, HeartbeatRequest, ReleaseRequest, decode_required,
    lease_duration, validate_payload,
};

/// An empty or all-whitespace body, which Go's JSON decoder reads as EOF.
pub(crate) fn is_blank(body: &[u8]) -> bool {
    body.iter().all(u8::is_ascii_whitespace)
}

/// Decodes a body that must hold one JSON value at most (`Ok(None)` when blank); the
/// error is the detail after the caller's "decode … request: " prefix.
pub(crate) fn single_json_value(body: &[u8]) -> Result<Option<Value>, String> {
    let mut values = serde_json::Deserializer::from_slice(body).into_iter::<Value>();
    let first = match values.next() {
        Some(Ok(value)) => value,
        Some(Err(error)) => return Err(error.to_string()),
        None => return Ok(None),
    };
    if values.next().is_some() {
        return Err("request body must contain a single JSON value".to_owned());
    }
    Ok(Some(first))
}

/// A `claim_token` key at any depth (results and failure metadata must not carry one).
pub(crate) fn contains_claim_token_key(value: &Value) -> bool {
    match value {
        Value::Object(map) => map
            .iter()
            .any(|(key, inner)| key == "claim_token" || contains_claim_token_key(inner)),
        Value::Array(items) => items.iter().any(contains_claim_token_key),
        _ => false,
    }
}

/// A `claim_token` key or an `agh_claim_` string anywhere.
pub(crate) fn contains_claim_material(value: &Value) -> bool {
    match value {
        Value::Object(map) => map.iter().any(|(key, inner)| {
            key == "claim_token" || key.contains("agh_claim_") || contains_claim_material(inner)
        }),
        Value::Array(items) => items.iter().any(contains_claim_material),
        Value::String(text) => text.contains("agh_claim_"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn claim_token_keys_are_found_at_any_depth() {
        assert!(contains_claim_token_key(
            &json!({"a": [{"b": {"claim_token": 1}}]})
        ));
        assert!(!contains_claim_token_key(&json!({"a": "claim_token"})));
        assert!(contains_claim_material(&json!({"a": "agh_claim_xyz"})));
    }
}
