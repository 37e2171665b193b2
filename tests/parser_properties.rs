//! Parsers of outside input (AGH's answers and errors, SSE, the Coder Hub's answers and stream
//! frames, configuration files and variables), fed arbitrary bytes and near-misses of what they expect: each gives a
//! typed answer or a typed error, never a panic, and what it keeps stays bounded. The case count
//! comes from `PROPTEST_CASES` (`.ci/run` sets it); a failing case is saved under
//! `proptest-regressions/` and replayed first from then on.
//!
//! Parsers private to their module are tested beside it (`handler/exec/protocol.rs`,
//! `handler/webhook/answer.rs`, `util/sse.rs`); these are the ones reachable from outside.

use std::collections::BTreeMap;
use std::path::PathBuf;

use agh_worker::agentuity::{EventHistory, LoopStateAnswer, Session, StreamMessage, UserList};
use agh_worker::api::types::{AgentContext, ClaimResponse, Me};
use agh_worker::api::{ApiError, MAX_DAEMON_MESSAGE_CHARS};
use agh_worker::config::{ConfigSources, load};
use agh_worker::util::sse::{SseDecoder, SseError};
use proptest::prelude::*;

/// The largest error message the client keeps from an answer body, `…` included.
const MAX_MESSAGE_CHARS: usize = MAX_DAEMON_MESSAGE_CHARS + 1;

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        "[a-z_]{0,12}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("error".to_string()),
                    Just("run".to_string()),
                    Just("task".to_string()),
                    Just("lease".to_string()),
                    Just("session".to_string()),
                    Just("id".to_string()),
                    Just("status".to_string()),
                    "[a-z_]{1,10}",
                ],
                inner,
                0..6
            )
            .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn any_error_answer_becomes_a_classified_error_with_a_bounded_message(
        status in 100u16..600,
        body in prop::collection::vec(any::<u8>(), 0..8192),
    ) {
        let error = ApiError::from_response("heartbeat", status, &body);
        prop_assert_eq!(error.status, Some(status));
        prop_assert!(error.message.chars().count() <= MAX_MESSAGE_CHARS, "{} chars", error.message.len());
        let _ = error.to_string();
    }

    #[test]
    fn a_long_daemon_error_string_is_kept_only_in_part(
        status in 400u16..600,
        error in "[ -~]{0,6000}",
    ) {
        let body = serde_json::to_vec(&serde_json::json!({"error": error})).unwrap();
        let kept = ApiError::from_response("complete", status, &body);
        prop_assert!(kept.message.chars().count() <= MAX_MESSAGE_CHARS);
    }

    #[test]
    fn near_miss_error_envelopes_never_panic(status in 400u16..600, value in json_value()) {
        let body = serde_json::to_vec(&value).unwrap();
        let error = ApiError::from_response("claim-next", status, &body);
        prop_assert!(error.message.chars().count() <= MAX_MESSAGE_CHARS);
    }

    #[test]
    fn answers_of_the_wrong_shape_are_decode_errors_not_panics(value in json_value()) {
        let text = serde_json::to_string(&value).unwrap();
        let _ = serde_json::from_str::<Me>(&text);
        let _ = serde_json::from_str::<AgentContext>(&text);
        let _ = serde_json::from_str::<ClaimResponse>(&text);
    }

    #[test]
    fn coder_hub_answers_of_any_shape_are_decode_errors_not_panics(value in json_value()) {
        let text = serde_json::to_string(&value).unwrap();
        let _ = serde_json::from_str::<Session>(&text);
        let _ = serde_json::from_str::<EventHistory>(&text);
        let _ = serde_json::from_str::<LoopStateAnswer>(&text);
        let _ = serde_json::from_str::<UserList>(&text);
    }

    #[test]
    fn coder_hub_stream_frames_of_any_shape_are_a_message_or_nothing(
        frame in prop_oneof![
            Just("message".to_string()), Just("broadcast".to_string()),
            Just("snapshot".to_string()), Just("presence".to_string()), "[a-z_]{0,12}",
        ],
        data in prop_oneof![
            json_value().prop_map(|v| v.to_string()),
            "[ -~]{0,256}",
            json_value().prop_map(|v| serde_json::json!({"type": "broadcast", "event": "session_complete", "data": v}).to_string()),
        ],
    ) {
        if let Some(message) = StreamMessage::parse(&frame, &data) {
            let _ = message.to_value();
        }
    }

    #[test]
    fn the_sse_decoder_holds_at_most_its_limit_whatever_it_is_fed(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..512), 0..16),
        limit in 16usize..1024,
    ) {
        let mut decoder = SseDecoder::new(limit);
        for chunk in &chunks {
            match decoder.feed(chunk) {
                Ok(events) => {
                    for event in events {
                        prop_assert!(event.data.len() <= limit);
                    }
                }
                Err(SseError::EventTooLarge { limit: said }) => {
                    prop_assert_eq!(said, limit);
                    break;
                }
            }
        }
    }

    #[test]
    fn an_sse_stream_decodes_alike_in_any_chunking(
        lines in prop::collection::vec(
            prop_oneof![
                "data: [ -~]{0,20}",
                "event: [a-z._]{1,12}",
                "id: [0-9]{1,4}",
                ": [ -~]{0,10}",
                "retry: [0-9]{1,5}",
                Just(String::new()),
            ],
            0..24,
        ),
        ending in prop_oneof![Just("\n"), Just("\r\n"), Just("\r")],
        cut in any::<prop::sample::Index>(),
    ) {
        let mut stream = lines.join(ending);
        stream.push_str(ending);
        stream.push_str(ending);
        let bytes = stream.as_bytes();
        let whole = SseDecoder::new(1 << 16).feed(bytes).unwrap();
        let at = cut.index(bytes.len() + 1);
        let mut decoder = SseDecoder::new(1 << 16);
        let mut split = decoder.feed(&bytes[..at]).unwrap();
        split.extend(decoder.feed(&bytes[at..]).unwrap());
        prop_assert_eq!(whole, split);
    }
}

/// A configuration file with `text`, and `env` as the environment.
fn sources(text: &str, env: BTreeMap<String, String>) -> (tempfile::TempDir, ConfigSources) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agh-worker.toml");
    std::fs::write(&file, text).unwrap();
    let sources = ConfigSources {
        file: Some(file),
        default_file: PathBuf::from("/nonexistent/agh-worker.toml"),
        env,
        overrides: Vec::new(),
    };
    (dir, sources)
}

proptest! {
    #![proptest_config(ProptestConfig {
        // Each case writes a file: fewer of them.
        cases: ProptestConfig::default().cases.min(64),
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_configuration_file_loads_or_says_what_is_wrong(
        body in prop::collection::vec(any::<u8>(), 0..2048),
    ) {
        let (_dir, sources) = sources(&String::from_utf8_lossy(&body), BTreeMap::new());
        if let Err(error) = load(&sources) {
            prop_assert!(!error.to_string().is_empty());
        }
    }

    #[test]
    fn near_miss_configuration_files_load_or_say_what_is_wrong(
        entries in prop::collection::vec(
            (
                prop_oneof![
                    Just("[worker]"), Just("[agh]"), Just("[coordination]"), Just("[health]"),
                    Just("[[handlers]]"), Just("[log]"), Just("[retry]"), Just(""),
                ],
                prop_oneof![
                    Just("lease_seconds"), Just("heartbeat_every_seconds"), Just("endpoint"),
                    Just("session_id"), Just("name"), Just("kind"), Just("listen"),
                    Just("level"), Just("program"), Just("orphan_policy"), Just("timeout_ms"),
                ],
                prop_oneof![
                    Just("0".to_string()), Just("-1".to_string()), Just("1e400".to_string()),
                    Just("true".to_string()), Just("\"\"".to_string()), Just("[]".to_string()),
                    Just("{}".to_string()), Just("18446744073709551616".to_string()),
                    "\"[ -~]{0,16}\"",
                ],
            ),
            0..12,
        ),
    ) {
        let text: String = entries
            .iter()
            .map(|(section, key, value)| format!("{section}\n{key} = {value}\n"))
            .collect();
        let (_dir, sources) = sources(&text, BTreeMap::new());
        if let Err(error) = load(&sources) {
            prop_assert!(!error.to_string().is_empty());
        }
    }

    #[test]
    fn any_environment_value_loads_or_names_its_variable(
        key in prop_oneof![
            Just("AGH_WORKER__WORKER__LEASE_SECONDS"),
            Just("AGH_WORKER__AGH__ENDPOINT"),
            Just("AGH_WORKER__HANDLERS"),
            Just("AGH_WORKER__COORDINATION__RECV_BACKOFF_MAX_MS"),
            Just("AGH_WORKER__LOG__LEVEL"),
            Just("AGH_SESSION_ID"),
        ],
        value in prop_oneof!["[ -~]{0,64}", json_value().prop_map(|v| v.to_string())],
    ) {
        let env = BTreeMap::from([(key.to_string(), value)]);
        let (_dir, sources) = sources("", env);
        if let Err(error) = load(&sources) {
            prop_assert!(!error.to_string().is_empty());
        }
    }
}
