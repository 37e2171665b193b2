//! The redaction guarantee, end to end: runs whose titles, metadata, progress, logs and results
//! carry `agh_claim_…` tokens and API-key-shaped strings go through the real worker (config
//! loader, exec handler, JSON logs at debug, health server) against the simulator, and neither
//! a raw claim token nor a secret from the worker's own environment or configuration shows up in
//! the logs, `/status` or `/metrics`, nor any worker secret in the handler's environment.
//!
//! One test in this file: it sets process environment variables and installs the global log
//! subscriber, which only one test per binary may do.

mod support;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agh_worker::api::ApiRequestCounters;
use agh_worker::config::{self, ConfigSources};
use agh_worker::dev::sim::{SimConfig, Simulator, TaskSpec};
use agh_worker::handler::{HandlerSet, SharedHandlers};
use agh_worker::ops::health::HealthTimings;
use agh_worker::ops::server::{self, HealthInfo, HealthListen, HealthState};
use agh_worker::worker::{ClaimLoop, LogEvents, Shutdown, StatusBoard, WorkerExit, WorkerSettings};
use serde_json::{Value, json};
use support::log_capture::Capture;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

const PATIENCE: Duration = Duration::from_secs(30);

/// Secrets in the worker's own environment: none may reach the handler, the logs or `/status`.
const WORKER_SECRETS: &[(&str, &str)] = &[
    (
        "AGENTUITY_SDK_KEY",
        "sk-live-WorkerSdkKey0123456789abcdefABCDEF",
    ),
    (
        "OPENAI_API_KEY",
        "sk-proj-WorkerOpenAi0123456789abcdefABCDEF",
    ),
    ("AGH_TOKEN", "agh-secret-WorkerAghToken0123456789"),
    (
        "DATABASE_URL",
        "postgres://op:pw-WorkerDbPassword0123456789@db.internal/agh",
    ),
];

/// Given to the handler on purpose (`exec.env`): it may be in the handler's environment, never
/// in the logs or `/status`.
const HANDLER_SECRET: &str = "sk-live-HandlerOnlyKey0123456789abcdefXYZ";

/// Claim tokens planted in task data and handler output; only `agh_claim_[REDACTED]` may appear.
const TITLE_TOKEN: &str = "agh_claim_TitleToken0123456789abcdefABCDEF";
const META_TOKEN: &str = "agh_claim_MetaToken0123456789abcdef-_XYZ";

/// The handler: reports progress and a plain log line with claim tokens, dumps its environment
/// into its result, and for a "fail" title fails with a token in its message.
const HANDLER: &str = r#"#!/bin/sh
IFS= read -r task || exit 1
echo "plain stdout line agh_claim_StdoutToken0123456789abcdef sdk=${AGENTUITY_SDK_KEY:-unset}"
echo "stderr line agh_claim_StderrToken0123456789abcdef" >&2
printf '{"type":"progress","text":"progress with agh_claim_ProgressToken0123456789abcdef"}\n'
case "$task" in
*'"title":"fail'*)
    echo "giving up: agh_claim_FailToken0123456789abcdef" >&2
    exit 1
    ;;
esac
env_dump=$(env | sed 's/[\\"]/_/g' | tr '\n' ';')
printf '{"type":"result","result":{"env":"%s","echo":"agh_claim_ResultToken0123456789abcdef"}}\n' "$env_dump"
"#;

/// Every `agh_claim_` in `text` is followed by `[REDACTED]`.
fn assert_no_raw_claim_token(place: &str, text: &str) {
    for (at, _) in text.match_indices("agh_claim_") {
        let rest = &text[at + "agh_claim_".len()..];
        assert!(
            rest.starts_with("[REDACTED]"),
            "a raw claim token in {place}: …{}…",
            &text[at..(at + 60).min(text.len())]
        );
    }
}

fn assert_no_secret(place: &str, text: &str, secrets: &[&str]) {
    for secret in secrets {
        if let Some(at) = text.find(secret) {
            let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
            let line_end = text[at..].find('\n').map_or(text.len(), |i| at + i);
            panic!(
                "{secret} leaked into {place}, in: {}",
                &text[line_start..line_end.min(line_start + 2000)]
            );
        }
    }
}

fn write_handler(dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("handler.sh");
    std::fs::write(&path, HANDLER).expect("write handler");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

#[test]
fn no_claim_token_or_worker_secret_reaches_logs_status_or_the_handler_environment() {
    let capture = Capture::default();
    tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("debug"))
        .with(agh_worker::ops::logging::json_layer(capture.clone()))
        .init();
    for (name, value) in WORKER_SECRETS {
        // SAFETY: this is the only test of this binary and no runtime or other thread of it
        // has started yet, so nothing reads the environment concurrently.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var(name, value)
        };
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(scenario(capture));
}

async fn scenario(capture: Capture) {
    let dir = tempfile::tempdir().expect("tempdir");
    let handler = write_handler(dir.path());
    let sim = Simulator::new(SimConfig::default());
    let server = sim
        .serve_tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .expect("simulator");
    let session = sim.default_session().expect("session");

    // The configuration comes from the environment the way `agh-worker run` reads it.
    let asking_for_secrets = [
        "PATH",
        "HOME",
        "AGENTUITY_SDK_KEY",
        "OPENAI_API_KEY",
        "AGH_TOKEN",
        "AGH_WORKER__HANDLERS",
    ];
    let handlers = |pass_env: &[&str]| {
        json!([{
            "name": "env-dump",
            "kind": "exec",
            "exec": {
                "program": handler,
                "pass_env": pass_env,
                "env": {"HANDLER_API_KEY": HANDLER_SECRET},
                "kill_grace_ms": 500
            }
        }])
    };
    let mut env: BTreeMap<String, String> = WORKER_SECRETS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.extend([
        ("HOME".into(), dir.path().display().to_string()),
        ("AGH_SESSION_ID".into(), session.session_id.clone()),
        ("AGH_AGENT".into(), session.agent_name.clone()),
        ("AGH_WORKER__AGH__ENDPOINT".into(), server.base_url()),
        (
            "AGH_WORKER__AGH__LONG_POLL_TIMEOUT_MS".into(),
            "1000".into(),
        ),
        ("AGH_WORKER__WORKER__LEASE_SECONDS".into(), "10".into()),
        (
            "AGH_WORKER__WORKER__HEARTBEAT_EVERY_SECONDS".into(),
            "1".into(),
        ),
        ("AGH_WORKER__AGH__REQUEST_TIMEOUT_MS".into(), "2000".into()),
    ]);
    let sources = |handlers: Value| {
        let mut env = env.clone();
        env.insert("AGH_WORKER__HANDLERS".into(), handlers.to_string());
        ConfigSources {
            file: None,
            default_file: dir.path().join("no-such-file.toml"),
            env,
            overrides: Vec::new(),
        }
    };
    // A table that passes the worker's secrets through is refused at load, naming them only.
    let refused = config::load(&sources(handlers(&asking_for_secrets)))
        .expect_err("passing secrets through is refused")
        .to_string();
    for name in ["AGENTUITY_SDK_KEY", "OPENAI_API_KEY", "AGH_TOKEN"] {
        assert!(refused.contains(name), "{refused}");
    }
    assert_no_secret("the configuration error", &refused, &[HANDLER_SECRET]);
    for (_, value) in WORKER_SECRETS {
        assert!(!refused.contains(value), "{value} in {refused}");
    }
    let mut config = config::load(&sources(handlers(&["PATH", "HOME"])))
        .expect("config")
        .config;
    // Should a table ever skip validation, the exec handler still refuses them when it runs.
    if let Some(exec) = config.handlers[0].exec.as_mut() {
        exec.pass_env = asking_for_secrets.iter().map(|s| s.to_string()).collect();
    }

    let requests = Arc::new(ApiRequestCounters::default());
    let client = agh_worker::app::build_client(&config)
        .expect("client")
        .with_request_counters(requests.clone());
    let status = StatusBoard::default();
    let shutdown = Shutdown::default();
    let state = HealthState::new(
        status.clone(),
        shutdown.clone(),
        HealthTimings::from_config(&config),
        HealthInfo::new(client.identity(), client.endpoint()),
    )
    .with_api_requests(requests);
    let health_server = server::start(
        &HealthListen::Tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
        state,
    )
    .await
    .expect("health server");
    let health_base = format!("http://{}", health_server.local_addr().expect("address"));

    let done = sim.enqueue_task(TaskSpec {
        title: format!("deploy with sk-live-TitleKey0123456789abcdef and {TITLE_TOKEN}"),
        metadata: json!({
            "api_key": "sk-live-MetadataKey0123456789abcdef",
            "claim": META_TOKEN,
            "nested": {"note": format!("token {META_TOKEN} inside")}
        }),
        ..TaskSpec::default()
    });
    let failed = sim.enqueue_task(TaskSpec {
        title: format!("fail loudly with {TITLE_TOKEN}"),
        metadata: json!({"AGENTUITY_SDK_KEY": "sk-live-MetadataSdk0123456789abcdef"}),
        ..TaskSpec::default()
    });

    let worker = ClaimLoop {
        api: Arc::new(client),
        handlers: Arc::new(SharedHandlers::new(HandlerSet::new(
            config.handlers.clone(),
        ))),
        events: Arc::new(LogEvents),
        settings: WorkerSettings::from_config(&config).into(),
        status: status.clone(),
        shutdown: shutdown.clone(),
        wake: Default::default(),
    };
    let running = tokio::spawn(async move { worker.run().await });

    let until = Instant::now() + PATIENCE;
    let (done_run, failed_run) = loop {
        let done_run = sim.run(&done.run_id).filter(|r| r.status == "completed");
        let failed_run = sim.run(&failed.run_id).filter(|r| r.status == "failed");
        if let (Some(done_run), Some(failed_run)) = (done_run, failed_run) {
            break (done_run, failed_run);
        }
        assert!(
            Instant::now() < until,
            "the runs did not finish: {:?} {:?}",
            sim.run(&done.run_id),
            sim.run(&failed.run_id)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let http = reqwest::Client::new();
    let mut served = String::new();
    for path in ["/status", "/metrics", "/readyz", "/healthz"] {
        let body = http
            .get(format!("{health_base}{path}"))
            .send()
            .await
            .expect("GET")
            .text()
            .await
            .expect("body");
        served.push_str(&body);
        served.push('\n');
    }

    shutdown.drain.cancel();
    let exit = tokio::time::timeout(PATIENCE, running)
        .await
        .expect("the worker stops")
        .expect("the worker task");
    assert_eq!(exit, WorkerExit::Shutdown);
    health_server.stop().await;
    server.shutdown().await;

    let worker_secrets: Vec<&str> = WORKER_SECRETS.iter().map(|(_, v)| *v).collect();
    let mut every_secret = worker_secrets.clone();
    every_secret.push(HANDLER_SECRET);

    // The handler's environment, as it dumped it into its result.
    let result = done_run.result.clone().unwrap_or(Value::Null);
    let handler_env = result["env"].as_str().unwrap_or_default().to_string();
    assert!(
        handler_env.contains(&format!("AGH_WORKER_RUN_ID={}", done.run_id)),
        "the dump is the handler's environment: {handler_env}"
    );
    assert!(
        handler_env.contains(HANDLER_SECRET),
        "exec.env reaches the handler: {handler_env}"
    );
    assert_no_secret("the handler's environment", &handler_env, &worker_secrets);
    assert!(
        !handler_env.contains("AGH_WORKER__"),
        "the worker's configuration variables reach the handler: {handler_env}"
    );
    // What the daemon stored: tokens redacted before the terminal calls.
    let stored = format!("{} {:?}", result, failed_run.error);
    assert_no_raw_claim_token("the results sent to AGH", &stored);

    let logs = capture.text();
    assert_no_raw_claim_token("the logs", &logs);
    assert_no_secret("the logs", &logs, &every_secret);
    assert_no_raw_claim_token("the health endpoints", &served);
    assert_no_secret("the health endpoints", &served, &every_secret);
    assert!(
        logs.contains("agh_claim_[REDACTED]"),
        "the planted tokens were logged redacted, so the check above saw them"
    );
    assert!(
        logs.contains("pass_env entry refused"),
        "the refused pass_env entries are reported by name"
    );

    // JSON lines carry the run's span fields, also from the handler's own task.
    let lines: Vec<Value> = logs
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    assert!(
        lines.len() > 10,
        "expected JSON log lines, got: {logs:.2000}"
    );
    let in_run = |value: &Value, message_part: &str| {
        value["span"]["run_id"] == json!(done.run_id)
            && value["span"]["task_id"] == json!(done.task_id)
            && value["span"]["attempt"] == json!(1)
            && value["message"]
                .as_str()
                .is_some_and(|m| m.contains(message_part))
    };
    for message in [
        "run in hand",
        "handler started",
        "program started",
        "run finished",
    ] {
        assert!(
            lines.iter().any(|line| in_run(line, message)),
            "no {message:?} line carries the run's span fields"
        );
    }
}
