//! The exec handler's line protocol: what a program may write on stdout (progress, result,
//! release, message, reply, spawn) and how the lines it reads on stdin are written.
//!
//! Everything the program writes is untrusted: a line is protocol only when it is a JSON object of
//! a known `type` with the right fields; anything else is log.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::types::Permissions;
use crate::handler::SpawnAnswer;

/// A protocol line from the program, after its `type` was found to be known.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum ProgramLine {
    Progress {
        text: String,
    },
    Result {
        #[serde(default)]
        result: Value,
    },
    Release {
        #[serde(default)]
        reason: Option<String>,
    },
    Message {
        kind: String,
        text: String,
    },
    Reply {
        to: String,
        text: String,
    },
    Spawn {
        agent_name: String,
        #[serde(default)]
        ttl_seconds: Option<i64>,
        #[serde(default)]
        spawn_role: Option<String>,
        // Boxed: the permission lists dwarf every other line type.
        #[serde(default)]
        permissions: Option<Box<Permissions>>,
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        prompt_overlay: Option<String>,
    },
}

const KNOWN_TYPES: &[&str] = &["progress", "result", "release", "message", "reply", "spawn"];

/// Message kinds a program may send with a `message` line (replies have their own line).
pub(super) const SENDABLE_KINDS: &[&str] = &[
    "blocker",
    "handoff",
    "request",
    "result",
    "review_request",
    "status",
];

/// How a stdout line is to be taken.
#[derive(Debug)]
pub(super) enum Parsed {
    Protocol(ProgramLine),
    /// A known type whose fields are wrong: worth a warning, not an action.
    Invalid {
        kind: String,
        error: String,
    },
    Log,
}

pub(super) fn parse_line(raw: &[u8]) -> Parsed {
    let first = raw.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Parsed::Log;
    }
    let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(raw) else {
        return Parsed::Log;
    };
    let Some(kind) = object.get("type").and_then(Value::as_str) else {
        return Parsed::Log;
    };
    if !KNOWN_TYPES.contains(&kind) {
        return Parsed::Log;
    }
    let kind = kind.to_string();
    match serde_json::from_value::<ProgramLine>(Value::Object(object)) {
        Ok(line) => Parsed::Protocol(line),
        Err(err) => Parsed::Invalid {
            kind,
            error: err.to_string(),
        },
    }
}

pub(super) fn spawn_answer_line(answer: &SpawnAnswer) -> String {
    let value = match answer {
        SpawnAnswer::Spawned {
            session_id,
            agent_name,
            ttl_seconds,
            found_after_lost_answer,
        } => json!({
            "type": "spawned",
            "session_id": session_id,
            "agent_name": agent_name,
            "ttl_seconds": ttl_seconds,
            "found_after_lost_answer": found_after_lost_answer,
        }),
        SpawnAnswer::Refused { reason } => json!({"type": "spawn_refused", "reason": reason}),
    };
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_lines_are_recognised_and_everything_else_is_log() {
        assert!(matches!(
            parse_line(br#"{"type":"progress","text":"half"}"#),
            Parsed::Protocol(ProgramLine::Progress { text }) if text == "half"
        ));
        assert!(matches!(
            parse_line(br#"{"type":"result","result":[1,2]}"#),
            Parsed::Protocol(ProgramLine::Result { result }) if result == json!([1, 2])
        ));
        assert!(matches!(
            parse_line(br#"{"type":"release"}"#),
            Parsed::Protocol(ProgramLine::Release { reason: None })
        ));
        assert!(matches!(
            parse_line(br#"{"type":"spawn","agent_name":"a","ttl_seconds":60,"permissions":{"tools":["x"]}}"#),
            Parsed::Protocol(ProgramLine::Spawn { agent_name, ttl_seconds: Some(60), permissions: Some(_), .. }) if agent_name == "a"
        ));
        assert!(matches!(
            parse_line(br#"{"type":"progress"}"#),
            Parsed::Invalid { kind, .. } if kind == "progress"
        ));
        assert!(matches!(
            parse_line(br#"{"type":"progress","text":"x","extra":1}"#),
            Parsed::Protocol(_)
        ));
        for log in [
            &b"plain text"[..],
            br#"{"type":"unknown"}"#,
            br#"{"no_type":1}"#,
            br#"["type"]"#,
            b"{\"type\":\"progress\",\"text\":\"\xff\"}",
            b"{not json",
            b"",
        ] {
            assert!(matches!(parse_line(log), Parsed::Log), "{log:?}");
        }
    }

    #[test]
    fn spawn_answers_are_single_json_lines() {
        let line = spawn_answer_line(&SpawnAnswer::Spawned {
            session_id: "s1".into(),
            agent_name: "helper".into(),
            ttl_seconds: 60,
            found_after_lost_answer: true,
        });
        assert_eq!(
            serde_json::from_str::<Value>(&line).unwrap(),
            json!({"type":"spawned","session_id":"s1","agent_name":"helper","ttl_seconds":60,"found_after_lost_answer":true})
        );
        let line = spawn_answer_line(&SpawnAnswer::Refused {
            reason: "budget\nexceeded".into(),
        });
        assert!(!line.contains('\n'));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_bytes_are_log_or_a_protocol_line_never_a_panic(
                raw in prop::collection::vec(any::<u8>(), 0..2048),
            ) {
                let _ = parse_line(&raw);
            }

            #[test]
            fn a_known_type_with_wrong_fields_is_invalid_or_a_line(
                kind in prop::sample::select(KNOWN_TYPES.to_vec()),
                fields in prop::collection::btree_map(
                    prop_oneof![
                        Just("text"), Just("result"), Just("reason"), Just("kind"), Just("to"),
                        Just("agent_name"), Just("ttl_seconds"), Just("permissions"), Just("name"),
                    ],
                    prop_oneof![
                        Just(Value::Null),
                        any::<i64>().prop_map(Value::from),
                        any::<bool>().prop_map(Value::from),
                        "[ -~]{0,32}".prop_map(Value::from),
                        Just(json!({"allow": ["x"]})),
                        Just(json!([1, "two"])),
                    ],
                    0..5,
                ),
            ) {
                let mut object: serde_json::Map<String, Value> =
                    fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
                object.insert("type".into(), Value::from(kind));
                let raw = serde_json::to_vec(&Value::Object(object)).unwrap();
                match parse_line(&raw) {
                    Parsed::Protocol(_) => {}
                    Parsed::Invalid { kind: said, error } => {
                        prop_assert_eq!(said, kind);
                        prop_assert!(!error.is_empty());
                    }
                    Parsed::Log => prop_assert!(false, "a known type is never mere log"),
                }
            }
        }
    }
}
