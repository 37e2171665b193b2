//! The exec handler against real tiny shell programs: protocol, exit mapping, signals, caps, env.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod support;

use agh_worker::api::types::{ChannelMessage, MessageKind};
use agh_worker::handler::exec::{self, ExecConfig};
use agh_worker::handler::{HandlerEvent, Outcome, SpawnAnswer, TaskDocument};
use serde_json::{Value, json};
use support::handler_fixtures::message;
use tempfile::TempDir;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Generous bound so a broken handler fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(20);
const READY: &str = r#"echo '{"type":"progress","text":"ready"}'"#;

fn document() -> TaskDocument {
    document_titled("Write the report")
}

fn document_titled(title: &str) -> TaskDocument {
    support::handler_fixtures::document("run-1", title)
}

struct Running {
    events: mpsc::Receiver<HandlerEvent>,
    inbound: mpsc::Sender<ChannelMessage>,
    cancel: CancellationToken,
    outcome: JoinHandle<Outcome>,
    dir: TempDir,
}

/// Writes `body` as an executable `sh` script in a fresh directory and runs it as the handler.
/// The script gets the directory as `$TEST_DIR`.
fn start(
    body: &str,
    time_limit: Option<Duration>,
    configure: impl FnOnce(&mut ExecConfig),
) -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    let program = write_script(dir.path(), "handler.sh", body);
    let mut config = ExecConfig {
        program,
        kill_grace_ms: 200,
        ..ExecConfig::default()
    };
    config
        .env
        .insert("TEST_DIR".into(), dir.path().display().to_string());
    configure(&mut config);
    start_with(config, time_limit, dir)
}

fn start_with(config: ExecConfig, time_limit: Option<Duration>, dir: TempDir) -> Running {
    start_document(config, document(), time_limit, dir)
}

fn start_document(
    config: ExecConfig,
    document: TaskDocument,
    time_limit: Option<Duration>,
    dir: TempDir,
) -> Running {
    let (ctx, ends) = support::handler_fixtures::context(document, time_limit);
    let outcome = tokio::spawn(async move {
        exec::run(
            &config,
            ctx,
            &agh_worker::handler::process_groups::ProcessGroups::disabled(),
        )
        .await
    });
    Running {
        events: ends.events,
        inbound: ends.inbound,
        cancel: ends.cancel,
        outcome,
        dir,
    }
}

fn write_script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

impl Running {
    async fn next_event(&mut self) -> HandlerEvent {
        tokio::time::timeout(PATIENCE, self.events.recv())
            .await
            .expect("an event in time")
            .expect("the handler is still running")
    }

    async fn wait_ready(&mut self) {
        match self.next_event().await {
            HandlerEvent::Progress(text) if text == "ready" => {}
            other => panic!("expected the ready progress line, got {other:?}"),
        }
    }

    /// Waits for the outcome, collecting the events sent meanwhile.
    async fn finish(mut self) -> (Outcome, Vec<HandlerEvent>, TempDir) {
        let mut seen = Vec::new();
        let outcome = tokio::time::timeout(PATIENCE, async {
            loop {
                tokio::select! {
                    outcome = &mut self.outcome => break outcome.expect("the handler task"),
                    Some(event) = self.events.recv() => seen.push(event),
                }
            }
        })
        .await
        .expect("an outcome in time");
        while let Ok(event) = self.events.try_recv() {
            seen.push(event);
        }
        (outcome, seen, self.dir)
    }
}

async fn outcome_of(body: &str) -> Outcome {
    start(body, None, |_| {}).finish().await.0
}

fn fail_parts(outcome: Outcome) -> (String, Value) {
    match outcome {
        Outcome::Fail { error, metadata } => (error, metadata.unwrap_or(Value::Null)),
        other => panic!("expected Fail, got {other:?}"),
    }
}

fn read_pid(dir: &Path, name: &str) -> u32 {
    let text = std::fs::read_to_string(dir.join(name)).expect("pid file");
    text.trim().parse().expect("a pid")
}

/// Whether `pid` still runs. A zombie counts as gone: it is dead, only not yet reaped by
/// whichever ancestor inherited it.
fn alive(pid: u32) -> bool {
    let exists = std::process::Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !exists {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_none_or(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')),
        Err(_) => false,
    }
}

/// Asserts `pid` is gone. A SIGKILLed process finishes exiting in the kernel a moment after its
/// pipes close, so a still-running answer is re-checked briefly before failing.
async fn assert_gone(pid: u32) {
    for _ in 0..100 {
        if !alive(pid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("process {pid} outlived the handler");
}

#[tokio::test]
async fn exit_zero_with_a_result_line_completes_with_that_result() {
    let outcome = outcome_of(
        r#"read task
echo '{"type":"result","result":{"summary":"first"}}'
echo '{"type":"result","result":{"summary":"done","n":2}}'
exit 0"#,
    )
    .await;
    assert_eq!(outcome, Outcome::Complete(json!({"summary":"done","n":2})));
}

#[tokio::test]
async fn exit_zero_without_a_result_line_completes_with_the_exit_code_and_stdout_tail() {
    let outcome = outcome_of("read task\necho hello\necho world").await;
    assert_eq!(
        outcome,
        Outcome::Complete(json!({"exit_code": 0, "stdout_tail": "hello\nworld\n"}))
    );
}

#[tokio::test]
async fn the_first_stdin_line_is_the_task_document() {
    let outcome =
        outcome_of(r#"read task; printf '{"type":"result","result":%s}\n' "$task""#).await;
    let Outcome::Complete(result) = outcome else {
        panic!("expected Complete, got {outcome:?}");
    };
    assert_eq!(result["type"], "task");
    assert_eq!(result["run_id"], "run-1");
    assert_eq!(result["task_id"], "task-1");
    assert_eq!(result["attempt"], 2);
    assert_eq!(result["title"], "Write the report");
    assert_eq!(result["claim"]["run"]["id"], "run-1");
}

#[tokio::test]
async fn exit_75_releases_the_run_with_the_stderr_summary() {
    let outcome = outcome_of("read task\necho 'database is busy' >&2\nexit 75").await;
    assert_eq!(
        outcome,
        Outcome::Release("handler exited 75 (temporary failure): database is busy".into())
    );
}

#[tokio::test]
async fn another_exit_code_fails_with_the_last_stderr_line_and_both_tails() {
    let outcome =
        outcome_of("read task\necho 'some log'\necho 'first problem' >&2\necho 'boom' >&2\nexit 3")
            .await;
    let (error, metadata) = fail_parts(outcome);
    assert_eq!(error, "handler exited with status 3: boom");
    assert_eq!(metadata["exit_code"], 3);
    assert_eq!(metadata["stderr_tail"], "first problem\nboom\n");
    assert_eq!(metadata["stdout_tail"], "some log\n");
}

#[tokio::test]
async fn a_release_line_wins_over_the_exit_code() {
    for code in [0, 3] {
        let outcome = outcome_of(&format!(
            r#"read task
echo '{{"type":"result","result":1}}'
echo '{{"type":"release","reason":"needs a GPU host"}}'
exit {code}"#
        ))
        .await;
        assert_eq!(outcome, Outcome::Release("needs a GPU host".into()));
    }
}

#[tokio::test]
async fn a_program_killed_by_a_signal_it_raised_fails_with_the_signal_number() {
    let outcome = outcome_of("read task\nkill -SEGV $$").await;
    let (error, metadata) = fail_parts(outcome);
    assert_eq!(error, "handler was killed by signal 11 (SIGSEGV)");
    assert_eq!(metadata["signal"], 11);
}

#[tokio::test]
async fn progress_message_and_reply_lines_become_events_in_order() {
    let (outcome, events, _dir) = start(
        r#"read task
echo '{"type":"progress","text":"step 1"}'
echo 'plain log line'
echo '{"type":"message","kind":"blocker","text":"waiting on review"}'
echo '{"type":"reply","to":"msg-9","text":"on it"}'
echo '{"type":"message","kind":"gossip","text":"ignored"}'
echo '{"type":"progress","text":"step 2"}'"#,
        None,
        |_| {},
    )
    .finish()
    .await;
    let described: Vec<String> = events
        .iter()
        .map(|event| match event {
            HandlerEvent::Progress(text) => format!("progress {text}"),
            HandlerEvent::Message { kind, text } => format!("message {kind} {text}"),
            HandlerEvent::Reply {
                to_message_id,
                text,
            } => format!("reply {to_message_id} {text}"),
            HandlerEvent::Spawn { .. } => "spawn".into(),
        })
        .collect();
    assert_eq!(
        described,
        [
            "progress step 1",
            "message blocker waiting on review",
            "reply msg-9 on it",
            "progress step 2"
        ]
    );
    assert!(matches!(
        &events[1],
        HandlerEvent::Message {
            kind: MessageKind::Blocker,
            ..
        }
    ));
    let Outcome::Complete(result) = outcome else {
        panic!("expected Complete, got {outcome:?}");
    };
    let log = result["stdout_tail"].as_str().unwrap_or_default();
    assert!(log.starts_with("plain log line\n"), "{log}");
    assert!(log.contains("unknown kind \"gossip\""), "{log}");
}

#[tokio::test]
async fn a_spawn_line_gets_the_spawners_answer_on_stdin() {
    let mut running = start(
        r#"read task
echo '{"type":"spawn","agent_name":"helper","ttl_seconds":60,"spawn_role":"reviewer","permissions":{"tools":["read"]}}'
read answer
printf '{"type":"result","result":%s}\n' "$answer""#,
        None,
        |_| {},
    );
    match running.next_event().await {
        HandlerEvent::Spawn { ask, answer } => {
            assert_eq!(ask.agent_name, "helper");
            assert_eq!(ask.ttl_seconds, Some(60));
            assert_eq!(ask.spawn_role.as_deref(), Some("reviewer"));
            assert_eq!(
                ask.permissions.map(|p| p.tools),
                Some(vec!["read".to_string()])
            );
            answer
                .send(SpawnAnswer::Spawned {
                    session_id: "child-1".into(),
                    agent_name: "helper".into(),
                    ttl_seconds: 60,
                    found_after_lost_answer: false,
                })
                .expect("the handler waits for the answer");
        }
        other => panic!("expected a spawn ask, got {other:?}"),
    }
    let (outcome, _, _dir) = running.finish().await;
    assert_eq!(
        outcome,
        Outcome::Complete(json!({
            "type": "spawned", "session_id": "child-1", "agent_name": "helper", "ttl_seconds": 60,
            "found_after_lost_answer": false
        }))
    );
}

#[tokio::test]
async fn a_spawn_nobody_answers_is_refused_on_stdin() {
    let mut running = start(
        r#"read task
echo '{"type":"spawn","agent_name":"helper"}'
read answer
printf '{"type":"result","result":%s}\n' "$answer""#,
        None,
        |_| {},
    );
    match running.next_event().await {
        HandlerEvent::Spawn { answer, .. } => drop(answer),
        other => panic!("expected a spawn ask, got {other:?}"),
    }
    let (outcome, _, _dir) = running.finish().await;
    assert_eq!(
        outcome,
        Outcome::Complete(json!({"type": "spawn_refused", "reason": "the spawner is not running"}))
    );
}

#[tokio::test]
async fn an_inbound_message_arrives_as_a_stdin_line() {
    let mut running = start(
        &format!(
            r#"read task
{READY}
read line
printf '{{"type":"progress","text":"%s"}}\n' "$(printf '%s' "$line" | sed 's/\\/\\\\/g; s/"/\\"/g')"
printf '{{"type":"result","result":%s}}\n' "$line""#
        ),
        None,
        |_| {},
    );
    running.wait_ready().await;
    running
        .inbound
        .send(message("msg-1", "please also check the tests"))
        .await
        .expect("the handler takes messages");
    let echoed = match running.next_event().await {
        HandlerEvent::Progress(text) => text,
        other => panic!("expected the echoed line, got {other:?}"),
    };
    let (outcome, _, _dir) = running.finish().await;
    let Outcome::Complete(line) = outcome else {
        panic!("expected Complete, got {outcome:?}");
    };
    assert_eq!(
        serde_json::from_str::<Value>(&echoed).ok(),
        Some(line.clone())
    );
    assert_eq!(line["type"], "message");
    assert_eq!(line["message_id"], "msg-1");
    assert_eq!(line["channel_id"], "chan-1");
    assert_eq!(line["from"], "peer-7");
    assert_eq!(line["kind"], "request");
    assert_eq!(line["text"], "please also check the tests");
    assert_eq!(line["body"], json!({"text": "please also check the tests"}));
    assert_eq!(line["metadata"]["correlation_id"], "corr-1");
}

#[tokio::test]
async fn cancel_sends_sigterm_to_the_group_and_leaves_no_process_behind() {
    let mut running = start(
        &format!(
            r#"read task
trap 'echo term > "$TEST_DIR/got-term"; exit 0' TERM
sh -c 'trap "" TERM; exec sleep 30' &
echo $! > "$TEST_DIR/child.pid"
{READY}
wait"#
        ),
        None,
        |_| {},
    );
    running.wait_ready().await;
    let child = read_pid(running.dir.path(), "child.pid");
    running.cancel.cancel();
    let (outcome, _, dir) = running.finish().await;
    let Outcome::Release(reason) = outcome else {
        panic!("expected Release, got {outcome:?}");
    };
    assert!(reason.starts_with("cancelled: "), "{reason}");
    assert!(reason.contains("SIGTERM"), "{reason}");
    assert!(dir.path().join("got-term").exists());
    assert_gone(child).await;
}

#[tokio::test]
async fn a_program_ignoring_sigterm_is_killed_after_the_grace() {
    let mut running = start(
        &format!("read task\ntrap '' TERM\n{READY}\nexec sleep 30"),
        None,
        |config| config.kill_grace_ms = 150,
    );
    running.wait_ready().await;
    running.cancel.cancel();
    let (outcome, _, _dir) = running.finish().await;
    let Outcome::Release(reason) = outcome else {
        panic!("expected Release, got {outcome:?}");
    };
    assert!(reason.starts_with("cancelled: "), "{reason}");
    assert!(reason.contains("SIGKILL"), "{reason}");
}

#[tokio::test]
async fn exceeding_the_time_limit_fails_the_run() {
    let (outcome, _, _dir) = start(
        "read task\necho 'started' >&2\nexec sleep 30",
        Some(Duration::from_millis(300)),
        |_| {},
    )
    .finish()
    .await;
    let (error, metadata) = fail_parts(outcome);
    assert_eq!(error, "handler exceeded its time limit of 0.3 s");
    assert_eq!(metadata["stderr_tail"], "started\n");
    assert_eq!(metadata["stopped_with"], "SIGTERM");
}

#[tokio::test]
async fn a_background_child_is_killed_when_the_program_exits() {
    let (outcome, _, dir) = start(
        r#"read task
sleep 30 &
echo $! > "$TEST_DIR/child.pid"
echo '{"type":"result","result":"left a child"}'"#,
        None,
        |_| {},
    )
    .finish()
    .await;
    assert_eq!(outcome, Outcome::Complete(json!("left a child")));
    assert_gone(read_pid(dir.path(), "child.pid")).await;
}

#[tokio::test]
async fn huge_stdout_keeps_only_the_tail() {
    let (outcome, _, _dir) = start(
        "read task\nseq 1 20000 | sed 's/^/log line /'",
        None,
        |config| config.stdout_cap_bytes = 1024,
    )
    .finish()
    .await;
    let Outcome::Complete(result) = outcome else {
        panic!("expected Complete, got {outcome:?}");
    };
    let tail = result["stdout_tail"].as_str().unwrap_or_default();
    assert!(tail.len() <= 1024, "{} bytes kept", tail.len());
    assert!(tail.ends_with("log line 19999\nlog line 20000\n"), "{tail}");
    assert!(
        tail.starts_with("log line "),
        "the tail starts on a whole line"
    );
}

#[tokio::test]
async fn huge_stderr_keeps_the_tail_and_says_how_much_was_dropped() {
    let (outcome, _, _dir) = start(
        "read task\nseq 1 5000 | sed 's/^/problem /' >&2\nexit 2",
        None,
        |config| config.stderr_cap_bytes = 100,
    )
    .finish()
    .await;
    let (error, metadata) = fail_parts(outcome);
    assert_eq!(error, "handler exited with status 2: problem 5000");
    let tail = metadata["stderr_tail"].as_str().unwrap_or_default();
    assert!(
        tail.len() <= 100 && tail.ends_with("problem 5000\n"),
        "{tail}"
    );
    assert!(metadata["stderr_dropped_bytes"].as_u64().unwrap_or(0) > 40_000);
    assert!(metadata.get("stdout_dropped_bytes").is_none());
}

#[tokio::test]
async fn a_line_longer_than_the_limit_is_cut_and_logged_with_a_warning() {
    let (outcome, _, _dir) = start(
        r#"read task
printf '{"type":"result","result":"'
head -c 5000 /dev/zero | tr '\0' 'x'
echo '"}'
echo '{"type":"progress","text":"still reading"}'"#,
        None,
        |config| config.max_line_bytes = 100,
    )
    .finish()
    .await;
    let Outcome::Complete(result) = outcome else {
        panic!("expected Complete, got {outcome:?}");
    };
    assert_eq!(
        result["exit_code"], 0,
        "the cut result line is not a result"
    );
    let tail = result["stdout_tail"].as_str().unwrap_or_default();
    assert!(tail.contains("longer than 100 bytes"), "{tail}");
    let cut = tail
        .lines()
        .find(|line| line.starts_with("{\"type\""))
        .unwrap_or_default();
    assert_eq!(cut.len(), 100);
}

#[tokio::test]
async fn non_utf8_output_is_kept_lossily() {
    let outcome = outcome_of(
        r"read task
printf 'out \377\376 bytes\n'
printf 'err \377 bytes\n' >&2
exit 4",
    )
    .await;
    let (error, metadata) = fail_parts(outcome);
    assert_eq!(error, "handler exited with status 4: err \u{fffd} bytes");
    assert_eq!(metadata["stdout_tail"], "out \u{fffd}\u{fffd} bytes\n");
}

#[tokio::test]
async fn the_environment_holds_only_allowed_variables() {
    // SAFETY: set once, before any handler in this binary reads these names; Rust's own env
    // access is serialised and nothing in this test binary reads the environment from C.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var("MY_API_KEY", "worker-secret");
        std::env::set_var("AGH_WORKER__AGH__SESSION_ID", "worker-config");
        std::env::set_var("EXEC_TEST_VISIBLE", "visible");
        std::env::set_var("EXEC_TEST_NOT_LISTED", "hidden");
    }
    let (outcome, _, _dir) = start("read task\nenv", Some(Duration::from_secs(90)), |config| {
        config.pass_env = [
            "PATH",
            "MY_API_KEY",
            "AGH_WORKER__AGH__SESSION_ID",
            "EXEC_TEST_VISIBLE",
            "AGENTUITY_SDK_KEY",
        ]
        .map(String::from)
        .to_vec();
        config.env.insert("EXTRA_TOKEN".into(), "explicit".into());
    })
    .finish()
    .await;
    let Outcome::Complete(result) = outcome else {
        panic!("expected Complete, got {outcome:?}");
    };
    let listing = result["stdout_tail"].as_str().unwrap_or_default();
    let vars: Vec<(&str, &str)> = listing
        .lines()
        .filter_map(|line| line.split_once('='))
        .collect();
    let names: BTreeSet<&str> = vars.iter().map(|(name, _)| *name).collect();
    let value = |wanted: &str| {
        vars.iter()
            .find(|(name, _)| *name == wanted)
            .map(|(_, value)| *value)
    };
    assert_eq!(value("AGH_WORKER_RUN_ID"), Some("run-1"));
    assert_eq!(value("AGH_WORKER_TASK_ID"), Some("task-1"));
    assert_eq!(value("AGH_WORKER_ATTEMPT"), Some("2"));
    assert_eq!(value("AGH_WORKER_DEADLINE_SECONDS"), Some("90"));
    assert_eq!(value("AGH_WORKER_COORDINATION_CHANNEL"), Some("chan-1"));
    assert_eq!(value("EXEC_TEST_VISIBLE"), Some("visible"));
    assert_eq!(value("EXTRA_TOKEN"), Some("explicit"));
    assert!(value("PATH").is_some());
    for refused in [
        "MY_API_KEY",
        "AGH_WORKER__AGH__SESSION_ID",
        "EXEC_TEST_NOT_LISTED",
        "HOME",
    ] {
        assert!(!names.contains(refused), "{refused} leaked: {listing}");
    }
    assert!(!listing.contains("worker-secret"));
    // Whatever else is there, the shell made up itself.
    let expected: BTreeSet<&str> = [
        "AGH_WORKER_RUN_ID",
        "AGH_WORKER_TASK_ID",
        "AGH_WORKER_ATTEMPT",
        "AGH_WORKER_DEADLINE_SECONDS",
        "AGH_WORKER_COORDINATION_CHANNEL",
        "EXEC_TEST_VISIBLE",
        "EXTRA_TOKEN",
        "PATH",
        "TEST_DIR",
        "PWD",
        "OLDPWD",
        "SHLVL",
        "_",
    ]
    .into();
    let unexpected: Vec<&&str> = names.difference(&expected).collect();
    assert!(
        unexpected.is_empty(),
        "unexpected variables: {unexpected:?}"
    );
}

#[tokio::test]
async fn a_missing_program_fails_with_what_to_fix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("no-such-handler");
    let config = ExecConfig {
        program: missing.clone(),
        ..ExecConfig::default()
    };
    let (outcome, _, _) = start_with(config, None, dir).finish().await;
    let (error, _) = fail_parts(outcome);
    assert_eq!(
        error,
        format!(
            "exec handler: cannot start \"{}\": No such file or directory (os error 2): check handlers[].exec.program",
            missing.display()
        )
    );
}

#[tokio::test]
async fn a_program_that_is_not_executable_fails_with_what_to_fix() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let program = write_script(dir.path(), "plain.sh", "exit 0");
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let config = ExecConfig {
        program,
        ..ExecConfig::default()
    };
    assert!(config.problems("handlers[0].exec")[0].contains("not executable"));
    let (outcome, _, _) = start_with(config, None, dir).finish().await;
    let (error, _) = fail_parts(outcome);
    assert!(error.contains("Permission denied"), "{error}");
    assert!(error.ends_with("check handlers[].exec.program"), "{error}");
}

#[tokio::test]
async fn a_missing_working_directory_fails_with_what_to_fix() {
    let (outcome, _, _) = start("exit 0", None, |config| {
        config.working_dir = Some("/definitely/not/a/dir".into());
    })
    .finish()
    .await;
    let (error, _) = fail_parts(outcome);
    assert!(error.contains("\"/definitely/not/a/dir\""), "{error}");
    assert!(
        error.ends_with("check handlers[].exec.working_dir"),
        "{error}"
    );
}

#[tokio::test]
async fn the_working_directory_is_the_configured_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wanted = dir.path().canonicalize().expect("canonical");
    let outcome = start(
        r#"read task; printf '{"type":"result","result":"%s"}\n' "$(pwd -P)""#,
        None,
        |config| config.working_dir = Some(wanted.clone()),
    )
    .finish()
    .await
    .0;
    assert_eq!(
        outcome,
        Outcome::Complete(json!(wanted.display().to_string()))
    );
}

#[tokio::test]
async fn a_program_that_never_reads_stdin_still_completes() {
    let mut running = start(
        &format!(
            "exec 0<&-\n{READY}\nread nothing\necho '{{\"type\":\"result\",\"result\":\"ok\"}}'"
        ),
        None,
        |_| {},
    );
    running.wait_ready().await;
    for n in 0..3 {
        let _ = running.inbound.send(message(&format!("m{n}"), "hi")).await;
    }
    let (outcome, _, _dir) = running.finish().await;
    assert_eq!(outcome, Outcome::Complete(json!("ok")));
}

#[tokio::test]
async fn a_run_cancelled_before_it_starts_starts_nothing() {
    let running = start("touch \"$TEST_DIR/started\"", None, |_| {});
    running.cancel.cancel();
    let (outcome, _, dir) = running.finish().await;
    assert!(
        matches!(outcome, Outcome::Release(ref r) if r.starts_with("cancelled: ")),
        "{outcome:?}"
    );
    // The test runtime is single-threaded: the handler first runs after the cancel above.
    assert!(!dir.path().join("started").exists());
}

async fn run_example(title: &str) -> (Outcome, Vec<HandlerEvent>) {
    let config = ExecConfig {
        program: Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/exec-handler.sh"),
        ..ExecConfig::default()
    };
    assert_eq!(config.problems("handlers[0].exec"), Vec::<String>::new());
    let dir = tempfile::tempdir().expect("tempdir");
    let (outcome, events, _) = start_document(config, document_titled(title), None, dir)
        .finish()
        .await;
    (outcome, events)
}

#[tokio::test]
async fn the_example_handler_completes_an_ordinary_task_with_a_summary() {
    let (outcome, events) = run_example("Write the \"report\"").await;
    assert_eq!(
        outcome,
        Outcome::Complete(json!({"summary": "handled: Write the \"report\"", "run_id": "run-1"}))
    );
    assert!(matches!(
        events.first(),
        Some(HandlerEvent::Progress(text)) if text == "started: Write the \"report\""
    ));
}

#[tokio::test]
async fn the_example_handler_fails_and_releases_when_the_title_says_so() {
    let (outcome, _) = run_example("Please FAIL this").await;
    let (error, metadata) = fail_parts(outcome);
    assert_eq!(
        error,
        "handler exited with status 1: example handler: the task title asks for a failure"
    );
    assert_eq!(metadata["exit_code"], 1);
    let (outcome, _) = run_example("release me").await;
    assert_eq!(
        outcome,
        Outcome::Release(
            "handler exited 75 (temporary failure): example handler: the task title asks to release the run"
                .into()
        )
    );
}
