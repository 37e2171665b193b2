//! Channel requests: `recv` query parameters, `send` and `reply` bodies, channel names and
//! the coordination metadata every channel message carries.

use serde::Deserialize;
use serde_json::Value;

use super::super::errors::SimError;
use super::{contains_claim_material, is_blank};

/// The `message_kind`s AGH accepts on a coordination channel.
pub(crate) const MESSAGE_KINDS: [&str; 7] = [
    "status",
    "request",
    "reply",
    "blocker",
    "handoff",
    "result",
    "review_request",
];

/// A channel name from the path, or the 400 AGH answers for one outside the grammar.
pub(crate) fn validate_channel_name(channel: &str) -> Result<(), SimError> {
    if is_valid_channel_name(channel) {
        Ok(())
    } else {
        Err(SimError::bad_request(format!(
            "network: invalid field: channel={channel}"
        )))
    }
}

/// Channel names: `^[a-z0-9][a-z0-9_-]{0,63}$`.
fn is_valid_channel_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 64
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'-')
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// `recv` query parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecvParams {
    pub wait: bool,
    pub limit: Option<usize>,
}

impl RecvParams {
    pub(crate) fn parse(query: Option<&str>) -> Result<RecvParams, SimError> {
        let mut params = RecvParams {
            wait: false,
            limit: None,
        };
        for pair in query
            .unwrap_or("")
            .split('&')
            .filter(|pair| !pair.is_empty())
        {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "wait" if !value.is_empty() => {
                    params.wait = parse_go_bool(value).ok_or_else(|| {
                        SimError::bad_request(format!("network: invalid field: wait={value}"))
                    })?;
                }
                "limit" if !value.is_empty() => {
                    let limit = value
                        .parse::<i64>()
                        .ok()
                        .filter(|limit| *limit > 0)
                        .ok_or_else(|| {
                            SimError::bad_request(format!("network: invalid field: limit={value}"))
                        })?;
                    params.limit = Some(usize::try_from(limit).unwrap_or(usize::MAX));
                }
                _ => {}
            }
        }
        Ok(params)
    }
}

/// Validates coordination metadata (§5.3); the error text is what AGH answers with 400.
pub(crate) fn validate_coordination(metadata: &Value) -> Result<(), String> {
    const PREFIX: &str = "contract: invalid coordination message metadata";
    let Value::Object(map) = metadata else {
        return Err(format!("{PREFIX}: metadata must be an object"));
    };
    for field in [
        "task_id",
        "run_id",
        "coordination_channel_id",
        "message_kind",
        "correlation_id",
    ] {
        let present = map
            .get(field)
            .and_then(Value::as_str)
            .is_some_and(|text| !text.trim().is_empty());
        if !present {
            return Err(format!("{PREFIX}: {field} is required"));
        }
    }
    let kind = map
        .get("message_kind")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !MESSAGE_KINDS.contains(&kind) {
        return Err(format!("{PREFIX}: message_kind {kind:?} is not supported"));
    }
    if let Some(workflow) = map.get("workflow_id")
        && !workflow.is_string()
        && !workflow.is_null()
    {
        return Err(format!("{PREFIX}: workflow_id must be a string"));
    }
    if let Some(ext) = map.get("ext") {
        if !ext.is_object() && !ext.is_null() {
            return Err(format!("{PREFIX}: ext must be an object"));
        }
        if contains_claim_material(ext) {
            return Err(
                "contract: coordination metadata must not contain raw lease credentials".to_owned(),
            );
        }
    }
    Ok(())
}

/// True when metadata is absent, null, `{}` or has only empty values (reply "inherit").
pub(crate) fn is_empty_metadata(metadata: Option<&Value>) -> bool {
    match metadata {
        None | Some(Value::Null) => true,
        Some(Value::Object(map)) => map.values().all(|value| match value {
            Value::Null => true,
            Value::String(text) => text.trim().is_empty(),
            Value::Object(inner) => inner.is_empty(),
            _ => false,
        }),
        Some(_) => false,
    }
}

/// A network `say` body: an object with a non-empty `text`.
pub(crate) fn validate_say_body(body: Option<&Value>) -> Result<(), SimError> {
    let Some(Value::Object(map)) = body else {
        return Err(SimError::bad_request(
            "network: invalid body: say body must be a JSON object",
        ));
    };
    let has_text = map
        .get("text")
        .and_then(Value::as_str)
        .is_some_and(|text| !text.trim().is_empty());
    if !has_text {
        return Err(SimError::bad_request(
            "network: invalid body: say text is required",
        ));
    }
    if map
        .get("artifacts")
        .is_some_and(|artifacts| !artifacts.is_array() && !artifacts.is_null())
    {
        return Err(SimError::bad_request(
            "network: invalid body: say artifacts must be an array",
        ));
    }
    if map
        .get("intent")
        .is_some_and(|intent| !intent.is_string() && !intent.is_null())
    {
        return Err(SimError::bad_request(
            "network: invalid body: say intent must be a string",
        ));
    }
    Ok(())
}

/// Decodes a send or reply body the way the daemon does: an empty body is EOF, claim-token
/// material anywhere is refused before the fields are read, and every failure is a 400.
fn decode_channel_request<T: serde::de::DeserializeOwned>(
    verb: &str,
    body: &[u8],
) -> Result<T, SimError> {
    let decode_error = |error: &dyn std::fmt::Display| {
        SimError::bad_request(format!("decode agent channel {verb} request: {error}"))
    };
    if is_blank(body) {
        return Err(decode_error(&"EOF"));
    }
    let raw: Value = serde_json::from_slice(body).map_err(|error| decode_error(&error))?;
    if contains_claim_material(&raw) {
        return Err(SimError::bad_request(
            "contract: coordination metadata must not contain raw lease credentials",
        ));
    }
    serde_json::from_value(raw).map_err(|error| decode_error(&error))
}

/// `POST /api/agent/channels/{channel}/send`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct SendRequest {
    pub body: Option<Value>,
    pub metadata: Option<Value>,
    pub idempotency_key: Option<String>,
}

impl SendRequest {
    pub(crate) fn parse(body: &[u8]) -> Result<SendRequest, SimError> {
        let request: SendRequest = decode_channel_request("send", body)?;
        match &request.metadata {
            None | Some(Value::Null) => {
                return Err(SimError::bad_request(
                    "contract: invalid coordination message metadata: metadata is required",
                ));
            }
            Some(metadata) => validate_coordination(metadata).map_err(SimError::bad_request)?,
        }
        Ok(request)
    }
}

/// `POST /api/agent/channels/reply`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ReplyRequest {
    pub reply_to_message_id: String,
    pub body: Option<Value>,
    pub metadata: Option<Value>,
    pub idempotency_key: Option<String>,
}

impl ReplyRequest {
    pub(crate) fn parse(body: &[u8]) -> Result<ReplyRequest, SimError> {
        let request: ReplyRequest = decode_channel_request("reply", body)?;
        if request.reply_to_message_id.trim().is_empty() {
            return Err(SimError::bad_request(
                "network: invalid field: reply_to_message_id is required",
            ));
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn channel_names_follow_the_agh_grammar() {
        assert!(is_valid_channel_name("builders"));
        assert!(is_valid_channel_name("run-abc_1"));
        assert!(!is_valid_channel_name("Builders"));
        assert!(!is_valid_channel_name("-x"));
        assert!(!is_valid_channel_name(""));
        assert!(!is_valid_channel_name(&"a".repeat(65)));
    }

    #[test]
    fn recv_parameters_follow_go_parsing_rules() {
        assert_eq!(
            RecvParams::parse(Some("wait=T&limit=3")),
            Ok(RecvParams {
                wait: true,
                limit: Some(3)
            })
        );
        assert_eq!(
            RecvParams::parse(Some("limit=0")).map_err(|e| e.status),
            Err(400)
        );
        assert_eq!(
            RecvParams::parse(Some("limit=abc")).map_err(|e| e.status),
            Err(400)
        );
        assert_eq!(
            RecvParams::parse(Some("wait=maybe")).map_err(|e| e.status),
            Err(400)
        );
        assert_eq!(
            RecvParams::parse(None),
            Ok(RecvParams {
                wait: false,
                limit: None
            })
        );
    }

    #[test]
    fn coordination_metadata_needs_every_required_field_and_a_known_kind() {
        let valid = json!({"task_id":"t","run_id":"r","coordination_channel_id":"c","message_kind":"status","correlation_id":"x"});
        assert!(validate_coordination(&valid).is_ok());
        let mut missing = valid.clone();
        missing["correlation_id"] = json!("");
        assert!(validate_coordination(&missing).is_err());
        let mut chat = valid.clone();
        chat["message_kind"] = json!("chat");
        assert!(validate_coordination(&chat).is_err());
        let mut ext = valid;
        ext["ext"] = json!({"claim_token": "x"});
        assert!(validate_coordination(&ext).is_err());
    }

    #[test]
    fn reply_metadata_counts_as_empty_when_all_values_are_blank() {
        assert!(is_empty_metadata(None));
        assert!(is_empty_metadata(Some(&json!({}))));
        assert!(is_empty_metadata(Some(&json!({"task_id": "", "ext": {}}))));
        assert!(!is_empty_metadata(Some(&json!({"message_kind": "reply"}))));
    }
}
