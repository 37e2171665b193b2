//! Making handler outcomes acceptable to the daemon: no `claim_token` keys, no raw claim tokens,
//! results and metadata within 64 KiB (with an explicit truncation marker), a non-empty error.

use serde_json::{Map, Value, json};

use crate::util::redact::redact_claim_tokens;

/// The daemon's cap for a `complete` result and for `fail` metadata, in bytes of JSON.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;
/// The longest failure message sent; longer ones keep their start and end.
pub const MAX_ERROR_CHARS: usize = 4096;

/// Removes every `claim_token` key at any depth and redacts `agh_claim_…` strings.
pub fn sanitize(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(key, _)| key != "claim_token")
                .map(|(key, value)| (key, sanitize(value)))
                .collect::<Map<String, Value>>(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(sanitize).collect()),
        Value::String(text) => Value::String(redact_claim_tokens(&text)),
        other => other,
    }
}

/// Sanitises `value` and, when its JSON exceeds `max_bytes`, replaces it by a marker object that
/// says so and keeps as much of the original JSON text as fits.
pub fn cap(value: Value, max_bytes: usize) -> Value {
    let value = sanitize(value);
    let text = serde_json::to_string(&value).unwrap_or_default();
    if text.len() <= max_bytes {
        return value;
    }
    let original_bytes = text.len();
    // The marker's own JSON (keys, escapes of the preview) must fit too; shrink until it does.
    let mut budget = max_bytes.saturating_sub(256);
    loop {
        let preview = prefix_at_char_boundary(&text, budget);
        let marker = json!({
            "truncated": true,
            "original_bytes": original_bytes,
            "note": "the handler's output exceeded the daemon's 64 KiB limit; this is its beginning",
            "preview": preview,
        });
        let size = serde_json::to_string(&marker)
            .map(|s| s.len())
            .unwrap_or(usize::MAX);
        if size <= max_bytes || budget == 0 {
            return marker;
        }
        budget = budget.saturating_sub((size - max_bytes).max(64));
    }
}

/// A non-empty, bounded failure message.
pub fn failure_message(error: &str) -> String {
    let trimmed = redact_claim_tokens(error.trim());
    if trimmed.is_empty() {
        return "the handler failed without saying why".to_string();
    }
    let chars = trimmed.chars().count();
    if chars <= MAX_ERROR_CHARS {
        return trimmed;
    }
    let head: String = trimmed.chars().take(MAX_ERROR_CHARS / 2).collect();
    let tail: String = trimmed
        .chars()
        .skip(chars - MAX_ERROR_CHARS / 2 + 20)
        .collect();
    format!("{head} […] {tail}")
}

fn prefix_at_char_boundary(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_token_keys_are_removed_at_every_depth() {
        let value =
            json!({"a": {"claim_token": "x", "b": [{"claim_token": 1, "c": 2}]}, "claim_token": 3});
        assert_eq!(sanitize(value), json!({"a": {"b": [{"c": 2}]}}));
    }

    #[test]
    fn raw_claim_tokens_in_strings_are_redacted() {
        let value = json!({"log": "used agh_claim_abcdefABCDEF0123456789_-xyz here"});
        assert_eq!(
            sanitize(value),
            json!({"log": "used agh_claim_[REDACTED] here"})
        );
    }

    #[test]
    fn small_results_pass_unchanged() {
        let value = json!({"summary": "done", "n": 3});
        assert_eq!(cap(value.clone(), MAX_PAYLOAD_BYTES), value);
    }

    #[test]
    fn oversize_results_become_a_truncation_marker_within_the_cap() {
        let big = json!({"log": "é".repeat(100_000)});
        let capped = cap(big, MAX_PAYLOAD_BYTES);
        let text = serde_json::to_string(&capped).unwrap();
        assert!(text.len() <= MAX_PAYLOAD_BYTES, "{}", text.len());
        assert_eq!(capped["truncated"], json!(true));
        assert!(capped["original_bytes"].as_u64().unwrap() > 100_000);
        assert!(
            capped["preview"]
                .as_str()
                .unwrap()
                .starts_with("{\"log\":\"éé")
        );
    }

    #[test]
    fn results_full_of_escapes_still_fit() {
        let big = json!({"q": "\"\\\n".repeat(50_000)});
        let capped = cap(big, MAX_PAYLOAD_BYTES);
        assert!(serde_json::to_string(&capped).unwrap().len() <= MAX_PAYLOAD_BYTES);
    }

    #[test]
    fn failure_messages_are_never_blank_and_bounded() {
        assert_eq!(
            failure_message("   "),
            "the handler failed without saying why"
        );
        let long = failure_message(&"x".repeat(10_000));
        assert!(long.chars().count() <= MAX_ERROR_CHARS);
        assert!(long.contains("[…]"));
    }
}
