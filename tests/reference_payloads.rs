//! The full example payloads of the rendered AGH API reference (one per endpoint, in
//! `tests/fixtures/reference/`) read into the client's response types with nothing dropped.

use std::collections::BTreeSet;

use agh_worker::api::types::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/reference");

fn fixture(name: &str) -> Value {
    let path = format!("{DIR}/{name}.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{path}: {err}"));
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("{path}: {err}"))
}

/// Every leaf of `value` as a JSON pointer and its value.
fn leaves(value: &Value, pointer: String, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                leaves(inner, format!("{pointer}/{key}"), out);
            }
        }
        Value::Array(items) => {
            for (index, inner) in items.iter().enumerate() {
                leaves(inner, format!("{pointer}/{index}"), out);
            }
        }
        leaf => out.push((pointer, leaf.clone())),
    }
}

/// Reads `raw` as `T` and checks that writing it back keeps every non-null leaf of the
/// reference: a field the type does not model would vanish here.
fn read_without_loss<T: DeserializeOwned + Serialize>(name: &str, raw: Value) -> T {
    let typed: T = serde_json::from_value(raw.clone())
        .unwrap_or_else(|err| panic!("{name} does not read as its response type: {err}"));
    let written = serde_json::to_value(&typed).expect("the type writes back");
    let mut all = Vec::new();
    leaves(&raw, String::new(), &mut all);
    let lost: Vec<String> = all
        .into_iter()
        .filter(|(_, value)| !value.is_null())
        .filter(|(pointer, value)| written.pointer(pointer) != Some(value))
        .map(|(pointer, value)| format!("{pointer} = {value}"))
        .collect();
    assert!(lost.is_empty(), "{name} loses fields: {lost:#?}");
    typed
}

fn read<T: DeserializeOwned + Serialize>(name: &str) -> T {
    read_without_loss(name, fixture(name))
}

/// The fixture with some values replaced by distinctive ones, so a typed field proves it read
/// that exact spot (the reference's placeholders are mostly `"string"` and `0`).
fn marked(name: &str, marks: &[(&str, Value)]) -> Value {
    let mut value = fixture(name);
    for (pointer, mark) in marks {
        *value
            .pointer_mut(pointer)
            .unwrap_or_else(|| panic!("{name} has {pointer}")) = mark.clone();
    }
    value
}

#[test]
fn every_reference_payload_has_a_test_here() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(DIR)
        .expect("fixture directory")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".json"))
        .collect();
    let covered: BTreeSet<String> = [
        "channels",
        "channels_channel_recv",
        "channels_channel_send",
        "channels_reply",
        "context",
        "coordinator_config",
        "me",
        "soul",
        "soul_validate",
        "spawn",
        "tasks_claim-next",
        "tasks_run_id_complete",
        "tasks_run_id_fail",
        "tasks_run_id_heartbeat",
        "tasks_run_id_release",
    ]
    .iter()
    .map(|name| format!("{name}.json"))
    .collect();
    assert_eq!(on_disk, covered);
}

#[test]
fn the_me_payload_reads_with_its_limits_leases_and_lineage() {
    let raw = marked(
        "me",
        &[
            ("/me/limits/max_children", json!(5)),
            ("/me/limits/max_spawn_depth", json!(1)),
            ("/me/active_task_leases/0/run_id", json!("run-held")),
            ("/me/self/session_id", json!("sess-me")),
            ("/me/session/lineage/spawn_depth", json!(1)),
            ("/me/coordinator/default_ttl_seconds", json!(7200)),
        ],
    );
    let me = read_without_loss::<MeResponse>("me", raw).me;
    let limits = me.limits.as_ref().expect("limits");
    assert_eq!(limits.max_children, 5);
    assert_eq!(limits.max_spawn_depth, 1);
    assert_eq!(me.active_task_leases[0].run_id, "run-held");
    assert_eq!(me.active_task_leases[0].status, Some(RunStatus::Queued));
    assert_eq!(me.self_info.session_id, "sess-me");
    let session = me.session.as_ref().expect("session");
    assert_eq!(session.state, Some(SessionState::Starting));
    assert_eq!(session.session_type.as_deref(), Some("user"));
    assert_eq!(session.lineage.as_ref().map(|l| l.spawn_depth), Some(1));
    assert_eq!(
        me.coordinator.as_ref().map(|c| c.default_ttl_seconds),
        Some(7200)
    );
    assert_eq!(me.channels[0].allowed_message_kinds, [MessageKind::Status]);
}

#[test]
fn the_context_payload_reads_with_the_task_bundle_and_its_limits() {
    let raw = marked(
        "context",
        &[
            (
                "/context/task/bundle/limits/max_runtime_seconds",
                json!(900),
            ),
            ("/context/task/bundle/limits/summary_max_bytes", json!(4096)),
            ("/context/task/bundle/current_run/id", json!("run-current")),
            (
                "/context/task/bundle/prior_attempts/0/id",
                json!("run-before"),
            ),
            ("/context/task/bundle/handoff_summary", json!("carry on")),
            (
                "/context/task/lease/lease_until",
                json!("2030-01-01T00:00:00Z"),
            ),
            ("/context/inbox_summary/unread_count", json!(3)),
            (
                "/context/peer_roster/peers/0/peer_id",
                json!("reviewer.sess-peer"),
            ),
            ("/context/limits/max_active_task_leases", json!(1)),
        ],
    );
    let context = read_without_loss::<ContextResponse>("context", raw).context;
    let task = context.task.as_ref().expect("task section");
    assert!(task.available);
    let bundle = task.bundle.as_ref().expect("bundle");
    let limits = bundle.limits.as_ref().expect("bundle limits");
    assert_eq!(limits.max_runtime_seconds, 900);
    assert_eq!(limits.summary_max_bytes, 4096);
    assert_eq!(
        bundle.current_run.as_ref().map(|r| r.id.as_str()),
        Some("run-current")
    );
    assert_eq!(bundle.prior_attempts[0].id, "run-before");
    assert_eq!(bundle.handoff_summary.as_deref(), Some("carry on"));
    assert_eq!(bundle.recent_events.len(), 1);
    assert!(bundle.execution_profile.is_some());
    assert_eq!(
        task.lease.as_ref().and_then(|l| l.lease_until.as_deref()),
        Some("2030-01-01T00:00:00Z")
    );
    assert_eq!(
        context.inbox_summary.as_ref().map(|i| i.unread_count),
        Some(3)
    );
    assert_eq!(
        context
            .peer_roster
            .as_ref()
            .map(|p| p.peers[0].peer_id.as_str()),
        Some("reviewer.sess-peer")
    );
    assert_eq!(
        context.limits.as_ref().map(|l| l.max_active_task_leases),
        Some(1)
    );
    assert!(context.soul.is_some());
}

#[test]
fn the_channels_payload_reads_every_channel_field() {
    let channels = read::<ChannelsResponse>("channels").channels;
    assert_eq!(channels.len(), 1);
    assert_eq!(channels[0].id.as_deref(), Some("string"));
    assert_eq!(
        channels[0].last_activity_at.as_deref(),
        Some("2019-08-24T14:15:22Z")
    );
}

#[test]
fn the_recv_payload_reads_messages_with_their_metadata() {
    let raw = marked(
        "channels_channel_recv",
        &[
            ("/messages/0/message_id", json!("msg-1")),
            ("/messages/0/body", json!({"text": "hello"})),
            ("/messages/0/metadata/message_kind", json!("blocker")),
        ],
    );
    let messages = read_without_loss::<RecvResponse>("channels_channel_recv", raw).messages;
    assert_eq!(messages[0].message_id, "msg-1");
    assert_eq!(messages[0].text(), Some("hello"));
    let metadata = messages[0].metadata.as_ref().expect("metadata");
    assert_eq!(metadata.message_kind, MessageKind::Blocker);
    assert!(metadata.ext.is_some());
}

#[test]
fn the_send_and_reply_payloads_read_as_one_message() {
    for name in ["channels_channel_send", "channels_reply"] {
        let raw = marked(name, &[("/message/message_id", json!("msg-sent"))]);
        let message = read_without_loss::<MessageResponse>(name, raw).message;
        assert_eq!(message.message_id, "msg-sent");
        assert_eq!(message.to_session_id.as_deref(), Some("string"));
    }
}

#[test]
fn the_coordinator_payload_reads_its_defaults() {
    let raw = marked(
        "coordinator_config",
        &[
            ("/coordinator/max_children", json!(5)),
            ("/coordinator/default_ttl_seconds", json!(7200)),
        ],
    );
    let coordinator =
        read_without_loss::<CoordinatorResponse>("coordinator_config", raw).coordinator;
    assert_eq!(coordinator.max_children, 5);
    assert_eq!(coordinator.default_ttl_seconds, 7200);
    assert_eq!(coordinator.source.as_deref(), Some("workspace"));
    assert!(coordinator.enabled);
}

#[test]
fn the_soul_payloads_read_with_status_and_diagnostics() {
    for name in ["soul", "soul_validate"] {
        let raw = marked(
            name,
            &[
                ("/validation_status", json!("invalid")),
                ("/diagnostics/0/line", json!(7)),
            ],
        );
        let soul: Soul = read_without_loss(name, raw);
        assert!(soul.present);
        assert_eq!(soul.validation_status, Some(SoulValidationStatus::Invalid));
        assert_eq!(soul.diagnostics[0].line, Some(7));
        assert_eq!(soul.diagnostics[0].severity.as_deref(), Some("info"));
    }
}

#[test]
fn the_spawn_payload_reads_the_child_and_its_lineage() {
    let raw = marked(
        "spawn",
        &[
            ("/spawn/lineage/spawn_depth", json!(1)),
            ("/spawn/lineage/spawn_role", json!("worker")),
            ("/spawn/session/id", json!("sess-child")),
            ("/spawn/session/type", json!("spawned")),
            ("/spawn/lineage/spawn_budget/max_children", json!(5)),
        ],
    );
    let spawn = read_without_loss::<SpawnResponse>("spawn", raw).spawn;
    let lineage = spawn.lineage.as_ref().expect("lineage");
    assert_eq!(lineage.spawn_depth, 1);
    assert_eq!(lineage.spawn_role.as_deref(), Some("worker"));
    assert_eq!(lineage.auto_stop_on_parent, Some(true));
    assert_eq!(
        lineage.spawn_budget.as_ref().map(|b| b.max_children),
        Some(5)
    );
    assert_eq!(spawn.session.id, "sess-child");
    assert_eq!(spawn.session.session_type.as_deref(), Some("spawned"));
    // Session fields a worker does not model stay available.
    assert!(spawn.session.extra.contains_key("health"));
    assert!(spawn.permissions.is_some());
}

#[test]
fn the_claim_payload_reads_the_task_run_lease_and_channel() {
    let raw = marked(
        "tasks_claim-next",
        &[
            ("/claim/run/id", json!("run-claimed")),
            ("/claim/run/attempt", json!(2)),
            (
                "/claim/run/metadata",
                json!({"soul": {"digest": "sha256:x"}}),
            ),
            ("/claim/task/id", json!("task-claimed")),
            ("/claim/lease/lease_until", json!("2030-01-01T00:05:00Z")),
            ("/claim/coordination_channel/id", json!("run-claimed")),
        ],
    );
    let claim = read_without_loss::<ClaimResponse>("tasks_claim-next", raw).claim;
    assert_eq!(claim.run.id, "run-claimed");
    assert_eq!(claim.run.attempt, Some(2));
    assert_eq!(
        claim.run.metadata,
        Some(json!({"soul": {"digest": "sha256:x"}}))
    );
    assert_eq!(claim.task.id, "task-claimed");
    assert_eq!(claim.task.priority, Some(Priority::Low));
    assert_eq!(
        claim.lease.lease_until.as_deref(),
        Some("2030-01-01T00:05:00Z")
    );
    assert_eq!(
        claim
            .coordination_channel
            .as_ref()
            .and_then(|c| c.id.as_deref()),
        Some("run-claimed")
    );
    assert_eq!(
        claim
            .run
            .claimed_by
            .as_ref()
            .and_then(|b| b.kind.as_deref()),
        Some("human")
    );
}

#[test]
fn the_lease_payloads_of_heartbeat_complete_fail_and_release_read_as_a_lease_summary() {
    for name in [
        "tasks_run_id_heartbeat",
        "tasks_run_id_complete",
        "tasks_run_id_fail",
        "tasks_run_id_release",
    ] {
        let raw = marked(
            name,
            &[
                ("/lease/run_id", json!("run-1")),
                ("/lease/status", json!("completed")),
            ],
        );
        let lease = read_without_loss::<LeaseResponse>(name, raw).lease;
        assert_eq!(lease.run_id, "run-1", "{name}");
        assert_eq!(lease.status, Some(RunStatus::Completed), "{name}");
        assert_eq!(lease.heartbeat_at.as_deref(), Some("2019-08-24T14:15:22Z"));
    }
}
