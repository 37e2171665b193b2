//! `agh-worker check`, run as the binary an operator runs: a good deployment passes with ✓ lines
//! and exit 0, a broken configuration lists every problem, an unreachable AGH fails the probe fast,
//! and a coder handler's key is tried against a fake Agentuity.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use agh_worker::dev::sim::{SessionSpec, SimConfig, SimServer, Simulator};
use serde_json::Value;
use support::binary::{describe, run_clean as agh_worker, stdout};
use support::fake_agentuity::FakeAgentuity;
use tempfile::TempDir;

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// A tiny executable for an exec handler entry.
fn handler_program(dir: &Path) -> PathBuf {
    let path = dir.join("handle-task");
    write(&path, "#!/bin/sh\nexit 0\n");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
    path
}

struct Deployment {
    dir: TempDir,
    sim: Simulator,
    _server: SimServer,
    socket: PathBuf,
}

async fn deployment() -> Deployment {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = Simulator::new(SimConfig::default());
    let socket = dir.path().join("daemon.sock");
    let server = sim.serve_unix(&socket).await.expect("serve on a socket");
    Deployment {
        dir,
        sim,
        _server: server,
        socket,
    }
}

#[tokio::test]
async fn a_good_deployment_passes_every_check_and_shows_where_each_value_came_from() {
    let deployment = deployment().await;
    let session = deployment.sim.default_session().expect("default session");
    let program = handler_program(deployment.dir.path());
    let config = deployment.dir.path().join("worker.toml");
    write(
        &config,
        &format!(
            "[agh]\nendpoint = \"unix:{}\"\n\n[worker]\nlease_seconds = 90\n\n\
             [[handlers]]\nname = \"main\"\nkind = \"exec\"\n[handlers.exec]\nprogram = \"{}\"\n\n\
             [[handlers]]\nname = \"smoke\"\nkind = \"noop\"\n",
            deployment.socket.display(),
            program.display()
        ),
    );
    let config_arg = config.display().to_string();
    let home = agh_worker_agent_home(deployment.dir.path(), &session.agent_name);
    let home = home.display().to_string();
    let vars = [
        ("AGH_SESSION_ID", session.session_id.as_str()),
        ("AGH_AGENT", session.agent_name.as_str()),
        ("AGH_WORKER__LOG__LEVEL", "debug"),
        ("AGH_HOME", home.as_str()),
    ];
    let output = agh_worker(
        &vars,
        &[
            "--config",
            &config_arg,
            "check",
            "--set",
            "worker.drain_timeout_seconds=20",
        ],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let text = stdout(&output);
    for expected in [
        "✓ the configuration is valid",
        "(configured: agh.endpoint)",
        &format!("✓ identity accepted by AGH: session {}", session.session_id),
        "workspace ws-default; no active lease",
        "✓ claim filters: this session claims the runs below",
        "workspace: tasks of workspace ws-default only",
        "channel: none, so runs of any coordination channel",
        &format!("pool tasks of agent {}", session.agent_name),
        &format!(
            "✓ way of running: the session of agent {}, an agh-worker agent",
            session.agent_name
        ),
        "✓ handler \"main\" (exec",
        "✓ handler \"smoke\" (noop",
        "All checks passed.",
    ] {
        assert!(text.contains(expected), "no {expected:?} in\n{text}");
    }
    assert!(!text.contains('✗'), "{text}");
    // One value from each layer, each named with its origin.
    let line_of = |key: &str| {
        text.lines()
            .find(|line| line.trim_start().starts_with(&format!("{key} ")))
            .unwrap_or_else(|| panic!("no {key} line in\n{text}"))
            .to_string()
    };
    assert!(
        line_of("worker.lease_seconds").ends_with(&format!("(file {config_arg})")),
        "{text}"
    );
    assert!(
        line_of("log.level").ends_with("(env AGH_WORKER__LOG__LEVEL)"),
        "{text}"
    );
    assert!(
        line_of("agh.session_id").ends_with("(env AGH_SESSION_ID)"),
        "{text}"
    );
    assert!(
        line_of("worker.drain_timeout_seconds").ends_with("(flag)"),
        "{text}"
    );
    assert!(
        line_of("retry.max_backoff_ms").ends_with("(default)"),
        "{text}"
    );

    let json = agh_worker(&vars, &["--config", &config_arg, "--json", "check"]).await;
    assert_eq!(json.status.code(), Some(0), "{}", describe(&json));
    let report: Value = serde_json::from_slice(&json.stdout).expect("check --json prints JSON");
    assert_eq!(report["ok"], Value::Bool(true), "{report:#}");
    let statuses: Vec<&str> = report["checks"]
        .as_array()
        .expect("a checks array")
        .iter()
        .filter_map(|c| c["status"].as_str())
        .collect();
    assert_eq!(statuses, ["pass"; 7], "{report:#}");
}

/// An AGH home under `dir` in which `agent` is an agh-worker agent, as `agh-setup` writes it.
fn agh_worker_agent_home(dir: &Path, agent: &str) -> PathBuf {
    let home = dir.join("agh-home");
    std::fs::create_dir_all(home.join("agents").join(agent)).expect("agent folder");
    write(
        &home.join("config.toml"),
        "[providers.agh-worker]\ncommand = \"/usr/local/bin/agh-worker acp\"\nharness = \"acp\"\n",
    );
    write(
        &home.join("agents").join(agent).join("AGENT.md"),
        &format!("---\nname: {agent}\nprovider: agh-worker\n---\n\nA worker.\n"),
    );
    home
}

#[tokio::test]
async fn a_borrowed_identity_is_warned_about_naming_the_risk_and_the_fix() {
    let deployment = deployment().await;
    let session = deployment.sim.default_session().expect("default session");
    let home = deployment.dir.path().join("agh-home");
    let agent_dir = home.join("agents").join(&session.agent_name);
    std::fs::create_dir_all(&agent_dir).expect("agent folder");
    write(
        &agent_dir.join("AGENT.md"),
        "---\nname: x\nprovider: claude\ncommand: 'claude-code-acp'\n---\n\nAn LLM agent.\n",
    );
    let home = home.display().to_string();
    let endpoint = format!("agh.endpoint=unix:{}", deployment.socket.display());
    let vars = [
        ("AGH_SESSION_ID", session.session_id.as_str()),
        ("AGH_AGENT", session.agent_name.as_str()),
        ("AGH_HOME", home.as_str()),
        ("AGH_WORKER__HANDLERS", r#"[{"name":"n","kind":"noop"}]"#),
    ];
    let output = agh_worker(&vars, &["check", "--set", &endpoint]).await;
    assert_eq!(
        output.status.code(),
        Some(0),
        "a warning is not a failure: {}",
        describe(&output)
    );
    let text = stdout(&output);
    assert!(
        text.contains("! way of running: a borrowed identity"),
        "{text}"
    );
    assert!(text.contains("`claude-code-acp`"), "{text}");
    assert!(
        text.contains("can heartbeat, complete or fail this worker's run"),
        "{text}"
    );
    assert!(text.contains("agh-worker agh-setup --write"), "{text}");
}

#[tokio::test]
async fn a_session_whose_channel_no_run_could_carry_is_warned_about_with_the_fix() {
    let deployment = deployment().await;
    // A channel and no workspace: it claims global tasks only, and those carry no channel.
    let session = deployment.sim.create_session(SessionSpec {
        agent_name: "builder".into(),
        workspace_id: None,
        channel: Some("builders".into()),
        ..SessionSpec::default()
    });
    let vars = [
        ("AGH_SESSION_ID", session.session_id.as_str()),
        ("AGH_AGENT", session.agent_name.as_str()),
        ("AGH_WORKER__HANDLERS", r#"[{"name":"n","kind":"noop"}]"#),
    ];
    let endpoint = format!("agh.endpoint=unix:{}", deployment.socket.display());
    let args = [
        "check",
        "--set",
        &endpoint,
        "--set",
        "worker.required_capabilities=[\"gpu\"]",
    ];
    let output = agh_worker(&vars, &args).await;
    // A warning, not a failure: the worker would run, and idle.
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let text = stdout(&output);
    for expected in [
        "! nothing could ever be claimed by this session",
        "channel: runs whose coordination channel is builders only",
        "workspace: none, so global tasks only",
        "among gpu (the agent's catalog and worker.required_capabilities)",
        "warning: the session has channel builders but no workspace",
        "agh session new --workspace W --channel builders",
        "All checks passed; 1 warning(s) (marked !) need a look.",
    ] {
        assert!(text.contains(expected), "no {expected:?} in\n{text}");
    }
}

#[tokio::test]
async fn an_invalid_configuration_fails_with_exit_1_and_every_problem_listed() {
    let deployment = deployment().await;
    let config = deployment.dir.path().join("worker.toml");
    let missing = deployment.dir.path().join("no-such-handler");
    write(
        &config,
        &format!(
            "[agh]\nendpoint = \"unix:{}\"\n\n[worker]\nlease_seconds = 0\n\n\
             [[handlers]]\nname = \"main\"\nkind = \"exec\"\n[handlers.exec]\nprogram = \"{}\"\n",
            deployment.socket.display(),
            missing.display()
        ),
    );
    let config_arg = config.display().to_string();
    let output = agh_worker::<&str>(&[], &["--config", &config_arg, "check"]).await;
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let text = stdout(&output);
    for expected in [
        "✗ the configuration has",
        "agh.session_id is empty",
        "agh.agent is empty",
        "worker.lease_seconds",
        "handlers[0].exec.program",
        "✗ handler \"main\" (exec",
        "✓ AGH endpoint",
    ] {
        assert!(text.contains(expected), "no {expected:?} in\n{text}");
    }
    // No identity to probe with: said so, not counted as another failure.
    assert!(text.contains("– identity: not probed"), "{text}");
}

#[tokio::test]
async fn a_configuration_that_cannot_be_loaded_exits_64_naming_every_unknown_key() {
    let output = agh_worker(
        &[("AGH_WORKER__WORKER__LEASE_SECS", "30")],
        &["check", "--set", "agh.endpiont=unix:/x.sock"],
    )
    .await;
    assert_eq!(output.status.code(), Some(64), "{}", describe(&output));
    let text = stdout(&output);
    assert!(
        text.contains("✗ the configuration cannot be loaded"),
        "{text}"
    );
    assert!(
        text.contains("did you mean AGH_WORKER__WORKER__LEASE_SECONDS"),
        "{text}"
    );
    assert!(text.contains("did you mean agh.endpoint?"), "{text}");
}

#[tokio::test]
async fn an_unreachable_endpoint_fails_the_probe_quickly_with_exit_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nowhere = format!("unix:{}", dir.path().join("nobody-listens.sock").display());
    let vars = [
        ("AGH_SESSION_ID", "sess-0123456789abcdef"),
        ("AGH_AGENT", "worker"),
        ("AGH_WORKER__HANDLERS", r#"[{"name":"n","kind":"noop"}]"#),
    ];
    let started = Instant::now();
    let output = agh_worker(
        &vars,
        &[
            "check",
            "--endpoint",
            &nowhere,
            "--set",
            "retry.read_budget_ms=0",
            "--set",
            "agh.connect_timeout_ms=200",
            "--set",
            "agh.request_timeout_ms=500",
        ],
    )
    .await;
    let elapsed = started.elapsed();
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let text = stdout(&output);
    assert!(
        text.contains(&format!("✗ AGH did not answer at {nowhere}")),
        "{text}"
    );
    assert!(text.contains("is the AGH daemon running?"), "{text}");
    assert!(text.contains("✓ handler \"n\" (noop"), "{text}");
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
}

#[tokio::test]
async fn a_webhook_handler_passes_when_its_sidecar_answers_and_fails_when_nothing_listens() {
    let deployment = deployment().await;
    let session = deployment.sim.default_session().expect("default session");
    // A sidecar that answers anything; and a port nobody listens on.
    let sidecar = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let answering = format!("http://{}/task", sidecar.local_addr().expect("addr"));
    tokio::spawn(async move {
        let app = axum::Router::new().fallback(|| async { "ok" });
        let _ = axum::serve(sidecar, app).await;
    });
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let silent = format!("http://{}/task", closed.local_addr().expect("addr"));
    drop(closed);
    let config = deployment.dir.path().join("worker.toml");
    write(
        &config,
        &format!(
            "[agh]\nendpoint = \"unix:{}\"\n\n\
             [[handlers]]\nname = \"up\"\nkind = \"webhook\"\n[handlers.webhook]\nurl = \"{answering}\"\n\n\
             [[handlers]]\nname = \"down\"\nkind = \"webhook\"\n[handlers.webhook]\nurl = \"{silent}\"\nconnect_retry_budget_ms = 1000\n",
            deployment.socket.display(),
        ),
    );
    let config_arg = config.display().to_string();
    let vars = [
        ("AGH_SESSION_ID", session.session_id.as_str()),
        ("AGH_AGENT", session.agent_name.as_str()),
    ];
    let output = agh_worker(&vars, &["--config", &config_arg, "check"]).await;
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let text = stdout(&output);
    assert!(
        text.contains("✓ handler \"up\": http://") && text.contains("answers (HTTP 200)"),
        "{text}"
    );
    assert!(
        text.contains("✗ handler \"down\": http://") && text.contains("does not answer"),
        "{text}"
    );
}

const AGENTUITY_KEY: &str = "ag_sdk_CheckKey0123456789abcdefXYZ";

/// `check` (human, then `--json`) of a deployment whose one handler is a coder handler taking its
/// key from AGENTUITY_SDK_KEY, with `agentuity_vars` saying where Agentuity is.
async fn check_coder_handler(agentuity_vars: &[(&str, &str)]) -> (Output, Output) {
    let deployment = deployment().await;
    let session = deployment.sim.default_session().expect("default session");
    let config = deployment.dir.path().join("worker.toml");
    write(
        &config,
        &format!(
            "[agh]\nendpoint = \"unix:{}\"\n\n\
             [[handlers]]\nname = \"coder\"\nkind = \"coder\"\n[handlers.coder]\nworkflow_mode = \"standard\"\n",
            deployment.socket.display(),
        ),
    );
    let config_arg = config.display().to_string();
    let mut vars = vec![
        ("AGH_SESSION_ID", session.session_id.as_str()),
        ("AGH_AGENT", session.agent_name.as_str()),
        ("AGENTUITY_SDK_KEY", AGENTUITY_KEY),
    ];
    vars.extend_from_slice(agentuity_vars);
    let human = agh_worker(&vars, &["--config", &config_arg, "check"]).await;
    let json = agh_worker(&vars, &["--config", &config_arg, "--json", "check"]).await;
    (human, json)
}

fn assert_no_key(output: &Output) {
    let everything = describe(output);
    assert!(
        !everything.contains(AGENTUITY_KEY),
        "the key leaked into check's output: {everything}"
    );
}

fn coder_line(json: &Output) -> Value {
    let report: Value = serde_json::from_slice(&json.stdout).expect("check --json prints JSON");
    report["checks"]
        .as_array()
        .expect("a checks array")
        .iter()
        .find(|c| c["id"] == "coder:coder")
        .cloned()
        .unwrap_or_else(|| panic!("no coder:coder line in {report:#}"))
}

#[tokio::test]
async fn a_coder_key_agentuity_refuses_fails_its_line_with_what_to_do_and_never_shows_the_key() {
    let fake = FakeAgentuity::start().await;
    for _ in 0..2 {
        // The answer echoes the Authorization header, as a debugging proxy might.
        fake.can(
            "GET",
            "/api/hub/sessions",
            401,
            vec![],
            r#"{"message":"invalid api key: {auth}"}"#,
        );
    }
    let (human, json) = check_coder_handler(&[("AGENTUITY_CATALYST_URL", &fake.url)]).await;
    assert_eq!(human.status.code(), Some(1), "{}", describe(&human));
    let text = stdout(&human);
    assert!(
        text.contains(
            "✗ handler \"coder\": Agentuity refused the key (401): set AGENTUITY_SDK_KEY (or handlers.coder.key) to a valid SDK key"
        ),
        "{text}"
    );
    assert!(text.contains("✓ handler \"coder\" (coder"), "{text}");
    assert_eq!(json.status.code(), Some(1), "{}", describe(&json));
    let line = coder_line(&json);
    assert_eq!(line["status"], "fail", "{line:#}");
    // The hub was found through discovery, then the key was tried on it.
    assert_eq!(fake.count("GET", "/coder"), 2);
    assert_eq!(fake.count("GET", "/api/hub/sessions"), 2);
    assert_no_key(&human);
    assert_no_key(&json);
}

#[tokio::test]
async fn a_coder_key_agentuity_accepts_passes_naming_the_hub_it_found() {
    let fake = FakeAgentuity::start().await;
    let (human, json) = check_coder_handler(&[("AGENTUITY_CATALYST_URL", &fake.url)]).await;
    assert_eq!(human.status.code(), Some(0), "{}", describe(&human));
    let text = stdout(&human);
    assert!(
        text.contains(&format!(
            "✓ handler \"coder\": Agentuity accepts the key (Coder Hub {})",
            fake.url
        )),
        "{text}"
    );
    assert_eq!(coder_line(&json)["status"], "pass");
    let read = fake
        .seen()
        .into_iter()
        .find(|s| s.path == "/api/hub/sessions")
        .expect("a session read");
    assert_eq!(read.query, "limit=1");
    assert_eq!(
        read.authorization.as_deref(),
        Some(format!("Bearer {AGENTUITY_KEY}").as_str())
    );
    assert_no_key(&human);
}

#[tokio::test]
async fn credentials_written_into_agentuity_urls_are_refused_and_never_shown_by_check() {
    let fake = FakeAgentuity::start().await;
    let address = fake.url.trim_start_matches("http://").to_string();
    // Written into the configured Catalyst URL: the setting is wrong.
    let catalyst = format!("http://op:cat-s3cret@{address}");
    let (human, json) = check_coder_handler(&[("AGENTUITY_CATALYST_URL", &catalyst)]).await;
    assert_eq!(human.status.code(), Some(1), "{}", describe(&human));
    let text = describe(&human);
    assert!(text.contains("must not carry credentials"), "{text}");
    for output in [&human, &json] {
        let everything = describe(output);
        assert!(!everything.contains("s3cret"), "{everything}");
    }
    // Answered by discovery: the answer is refused, and not shown either.
    fake.lock().discovery_url = Some(format!("http://hub:hub-s3cret@{address}/"));
    let (human, json) = check_coder_handler(&[("AGENTUITY_CATALYST_URL", &fake.url)]).await;
    assert_eq!(human.status.code(), Some(1), "{}", describe(&human));
    for output in [&human, &json] {
        let everything = describe(output);
        assert!(!everything.contains("s3cret"), "{everything}");
    }
}

#[tokio::test]
async fn an_unreachable_coder_hub_fails_its_line_naming_the_url() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let nowhere = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let (human, _json) = check_coder_handler(&[("AGENTUITY_CODER_URL", &nowhere)]).await;
    assert_eq!(human.status.code(), Some(1), "{}", describe(&human));
    let text = stdout(&human);
    assert!(
        text.contains(&format!(
            "✗ handler \"coder\": the Coder Hub at {nowhere} cannot be reached"
        )),
        "{text}"
    );
    assert_no_key(&human);
}

#[tokio::test]
async fn a_secret_file_other_users_can_read_is_warned_about_with_the_chmod_to_run() {
    let deployment = deployment().await;
    let key = deployment.dir.path().join("hook.key");
    write(&key, "s3cret-signing-key\n");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod 644");
    let handlers = serde_json::json!([{
        "name": "hook",
        "kind": "webhook",
        "webhook": {"url": "http://127.0.0.1:9/run", "secret_file": key},
    }])
    .to_string();
    let vars = [
        ("AGH_SESSION_ID", "s-1"),
        ("AGH_AGENT", "builder"),
        ("AGH_WORKER__HANDLERS", handlers.as_str()),
    ];
    let args = [
        "check",
        "--no-probe",
        "--set",
        "agh.endpoint=http://127.0.0.1:9",
    ];
    let shared = agh_worker(&vars, &args).await;
    let text = stdout(&shared);
    assert!(
        text.contains("holds a secret and other users can read it"),
        "{text}"
    );
    assert!(
        text.contains(&format!("chmod 600 {}", key.display())),
        "{text}"
    );
    assert!(
        !text.contains("s3cret-signing-key"),
        "the secret itself is never shown: {text}"
    );

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
    let private = agh_worker(&vars, &args).await;
    let text = stdout(&private);
    assert!(text.contains("is readable"), "{text}");
    assert!(!text.contains("other users can read it"), "{text}");
}
