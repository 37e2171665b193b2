//! Decoding and validation of agent API request bodies and query parameters, per AGH's rules.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::errors::{SimError, Transport};
use super::types::PermissionPolicy;

pub(crate) const MAX_LEASE_SECONDS: i64 = 86_400;
pub(crate) const MAX_RESULT_BYTES: usize = 64 * 1024;
pub(crate) const MESSAGE_KINDS: [&str; 7] = [
    "status",
    "request",
    "reply",
    "blocker",
    "handoff",
    "result",
    "review_request",
];

/// An empty or all-whitespace body, which Go's JSON decoder reads as EOF.
pub(crate) fn is_blank(body: &[u8]) -> bool {
    body.iter().all(u8::is_ascii_whitespace)
}

/// Decodes a body that must hold one JSON value at most (`Ok(None)` when blank); the
/// error is the detail after the caller's "decode … request: " prefix.
fn single_json_value(body: &[u8]) -> Result<Option<Value>, String> {
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

/// `POST /api/agent/tasks/claim-next`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ClaimRequest {
    #[serde(default)]
    pub workspace_id: Option<String>,
    #[serde(default)]
    pub required_capabilities: Vec<String>,
    #[serde(default)]
    pub priority_min: Option<i64>,
    #[serde(default)]
    pub lease_seconds: Option<i64>,
    #[serde(default)]
    pub wait: bool,
}

impl ClaimRequest {
    /// Empty body = `{}`; malformed = 400; bad values = 422.
    pub fn parse(body: &[u8], transport: Transport) -> Result<ClaimRequest, SimError> {
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

    pub fn lease(&self, default_lease: Duration) -> Duration {
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
pub(crate) struct HeartbeatRequest {
    #[serde(default)]
    pub lease_seconds: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct CompleteRequest {
    #[serde(default)]
    pub result: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct FailRequest {
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub metadata: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ReleaseRequest {
    #[serde(default)]
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
pub(crate) fn parse_go_bool(text: &str) -> Option<bool> {
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
    pub fn parse(query: Option<&str>) -> Result<RecvParams, SimError> {
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
#[derive(Debug, Deserialize)]
pub(crate) struct SendRequest {
    #[serde(default)]
    pub body: Option<Value>,
    #[serde(default)]
    pub metadata: Option<Value>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

impl SendRequest {
    pub fn parse(body: &[u8]) -> Result<SendRequest, SimError> {
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
#[derive(Debug, Deserialize)]
pub(crate) struct ReplyRequest {
    #[serde(default)]
    pub reply_to_message_id: String,
    #[serde(default)]
    pub body: Option<Value>,
    #[serde(default)]
    pub metadata: Option<Value>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

impl ReplyRequest {
    pub fn parse(body: &[u8]) -> Result<ReplyRequest, SimError> {
        let request: ReplyRequest = decode_channel_request("reply", body)?;
        if request.reply_to_message_id.trim().is_empty() {
            return Err(SimError::bad_request(
                "network: invalid field: reply_to_message_id is required",
            ));
        }
        Ok(request)
    }
}

/// `POST /api/agent/spawn`, decoded strictly.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SpawnRequest {
    #[serde(default)]
    pub agent_name: String,
    #[serde(default)]
    pub ttl_seconds: i64,
    #[serde(default)]
    pub spawn_role: Option<String>,
    #[serde(default)]
    pub auto_stop_on_parent: Option<bool>,
    #[serde(default)]
    pub permissions: Option<PermissionPolicy>,
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    // Accepted (so strict decoding does not reject them) but ignored, as the daemon does.
    #[serde(default)]
    #[allow(dead_code)]
    pub prompt_overlay: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    pub model: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    pub idempotency_key: Option<String>,
}

impl SpawnRequest {
    pub fn parse(body: &[u8]) -> Result<SpawnRequest, SimError> {
        let invalid = |detail: String| {
            SimError::new(422, format!("session: spawn validation failed: {detail}"))
        };
        let first = single_json_value(body)
            .map_err(|detail| invalid(format!("decode spawn request: {detail}")))?
            .ok_or_else(|| invalid("request body is required".to_owned()))?;
        let request: SpawnRequest = serde_json::from_value(first)
            .map_err(|error| invalid(format!("decode spawn request: {error}")))?;
        if request.agent_name.trim().is_empty() {
            return Err(invalid("agent_name is required".to_owned()));
        }
        if request.ttl_seconds <= 0 {
            return Err(invalid("ttl_seconds must be positive".to_owned()));
        }
        if request
            .spawn_role
            .as_deref()
            .is_some_and(|role| role.trim().eq_ignore_ascii_case("coordinator"))
        {
            return Err(invalid(
                "spawn_role \"coordinator\" is reserved for coordinator sessions".to_owned(),
            ));
        }
        Ok(request)
    }

    pub fn role(&self) -> String {
        match self.spawn_role.as_deref().map(str::trim) {
            Some(role) if !role.is_empty() => role.to_owned(),
            _ => "worker".to_owned(),
        }
    }
}

/// `POST /api/agent/soul/validate` (empty body allowed).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct SoulValidateRequest {
    // The simulator keeps one soul per agent, whatever the workspace.
    #[serde(default)]
    #[allow(dead_code)]
    pub workspace_id: Option<String>,
    #[serde(default)]
    pub agent_name: Option<String>,
    #[serde(default)]
    pub body: Option<String>,
}

impl SoulValidateRequest {
    pub fn parse(body: &[u8]) -> Result<SoulValidateRequest, SimError> {
        let decode_error = |detail: &dyn std::fmt::Display| {
            SimError::bad_request(format!("decode soul validate request: {detail}"))
        };
        let Some(first) = single_json_value(body).map_err(|detail| decode_error(&detail))? else {
            return Ok(SoulValidateRequest::default());
        };
        serde_json::from_value(first).map_err(|error| decode_error(&error))
    }
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
    fn claim_token_keys_are_found_at_any_depth() {
        assert!(contains_claim_token_key(
            &json!({"a": [{"b": {"claim_token": 1}}]})
        ));
        assert!(!contains_claim_token_key(&json!({"a": "claim_token"})));
        assert!(contains_claim_material(&json!({"a": "agh_claim_xyz"})));
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
    fn spawn_decoding_is_strict() {
        let status = |body: &str| {
            SpawnRequest::parse(body.as_bytes())
                .map(|_| ())
                .map_err(|e| e.status)
        };
        assert_eq!(status(r#"{"agent_name":"coder","ttl_seconds":60}"#), Ok(()));
        assert_eq!(
            status(r#"{"agent_name":"coder","ttl_seconds":0}"#),
            Err(422)
        );
        assert_eq!(
            status(r#"{"agent_name":"coder","ttl_seconds":60,"x":1}"#),
            Err(422)
        );
        assert_eq!(
            status(r#"{"agent_name":"coder","ttl_seconds":60,"permissions":{"filesystem":[]}}"#),
            Err(422)
        );
        assert_eq!(
            status(r#"{"agent_name":"coder","ttl_seconds":60,"spawn_role":"Coordinator"}"#),
            Err(422)
        );
        assert_eq!(
            status(r#"{"agent_name":"coder","ttl_seconds":60} {}"#),
            Err(422)
        );
        assert_eq!(status(""), Err(422));
    }

    #[test]
    fn reply_metadata_counts_as_empty_when_all_values_are_blank() {
        assert!(is_empty_metadata(None));
        assert!(is_empty_metadata(Some(&json!({}))));
        assert!(is_empty_metadata(Some(&json!({"task_id": "", "ext": {}}))));
        assert!(!is_empty_metadata(Some(&json!({"message_kind": "reply"}))));
    }
}
