//! The health server against the simulator over real HTTP: every endpoint during a run,
//! readiness through a drain and a stale identity, metrics moving as runs finish, a Unix
//! socket, and the `run` command's wiring (served, disabled, address in use).

mod support;

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agh_worker::api::{
    AghClient, ApiRequestCounters, ClientOptions, Endpoint, Identity, RetryOptions,
};
use agh_worker::dev::sim::{Route, SessionState, SimConfig, SimServer, Simulator, TaskSpec};
use agh_worker::handler::{Handler, HandlerSet, MatchRule, Outcome, SharedHandlers, TaskContext};
use agh_worker::ops::health::HealthTimings;
use agh_worker::ops::server::{self, HealthInfo, HealthListen, HealthServer, HealthState};
use agh_worker::worker::{
    ClaimLoop, LogEvents, Shutdown, StatusBoard, WorkerExit, WorkerSettings, WorkerState,
};
use serde_json::{Value, json};
use support::sim;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Bound on every wait, so a broken build fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(20);
/// Pause between polls of a bounded wait.
const POLL: Duration = Duration::from_millis(20);

/// Completes at once, except titles starting with "slow", which wait for `release` (or a cancel).
struct TestHandlers {
    release: CancellationToken,
}

impl Handler for TestHandlers {
    fn run(&self, context: TaskContext) -> impl Future<Output = Outcome> + Send {
        let release = self.release.clone();
        async move {
            if context.document.title.starts_with("slow") {
                tokio::select! {
                    _ = release.cancelled() => {}
                    _ = context.cancel.cancelled() => {
                        return Outcome::Release("cancelled".into());
                    }
                }
            }
            Outcome::Complete(json!({"title": context.document.title}))
        }
    }
}

/// A drain long enough for the slow run of the drain test to finish within it.
fn settings() -> WorkerSettings {
    WorkerSettings {
        drain_timeout: Duration::from_secs(30),
        identity_probe: Duration::from_millis(200),
        ..sim::worker_settings()
    }
}

fn client_options() -> ClientOptions {
    let base = sim::worker_client_options();
    ClientOptions {
        retry: RetryOptions {
            max_backoff: Duration::from_millis(500),
            terminal_budget: Duration::from_secs(5),
            ..base.retry
        },
        ..base
    }
}

/// A worker on the simulator with its health server.
struct Rig {
    sim: Simulator,
    server: SimServer,
    session_id: String,
    status: StatusBoard,
    shutdown: Shutdown,
    release: CancellationToken,
    worker: JoinHandle<WorkerExit>,
    health: HealthServer,
    http: reqwest::Client,
    base: String,
}

impl Rig {
    async fn start() -> Rig {
        Rig::start_on(&HealthListen::Tcp(SocketAddr::from((
            Ipv4Addr::LOCALHOST,
            0,
        ))))
        .await
    }

    async fn start_on(listen: &HealthListen) -> Rig {
        let sim = Simulator::new(SimConfig::default());
        let server = sim
            .serve_tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await
            .expect("simulator");
        let session = sim.default_session().expect("default session");
        let endpoint = Endpoint::parse(&server.base_url()).expect("endpoint");
        let identity = Identity {
            session_id: session.session_id.clone(),
            agent: session.agent_name.clone(),
            workspace_id: None,
        };
        let requests = Arc::new(ApiRequestCounters::default());
        let client = AghClient::new(endpoint.clone(), identity.clone(), client_options())
            .expect("client")
            .with_request_counters(requests.clone());
        let status = StatusBoard::default();
        let shutdown = Shutdown::default();
        let release = CancellationToken::new();
        let settings = settings();
        let state = HealthState::new(
            status.clone(),
            shutdown.clone(),
            HealthTimings::from_parts(&settings, &client_options()),
            HealthInfo::new(&identity, &endpoint),
        )
        .with_api_requests(requests);
        let health = server::start(listen, state).await.expect("health server");
        let (http, base) = match listen {
            HealthListen::Tcp(_) => (
                reqwest::Client::new(),
                format!("http://{}", health.local_addr().expect("tcp address")),
            ),
            HealthListen::Unix(path) => (
                reqwest::Client::builder()
                    .unix_socket(path.clone())
                    .build()
                    .expect("unix client"),
                "http://localhost".to_string(),
            ),
        };
        let worker = ClaimLoop {
            api: Arc::new(client),
            handlers: Arc::new(SharedHandlers::from(HandlerSet::default().with_in_process(
                "test",
                MatchRule::default(),
                TestHandlers {
                    release: release.clone(),
                },
            ))),
            events: Arc::new(LogEvents),
            settings: settings.into(),
            status: status.clone(),
            shutdown: shutdown.clone(),
            wake: Default::default(),
        };
        let worker = tokio::spawn(async move { worker.run().await });
        Rig {
            sim,
            server,
            session_id: session.session_id,
            status,
            shutdown,
            release,
            worker,
            health,
            http,
            base,
        }
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let code = response.status().as_u16();
        (code, response.text().await.expect("body"))
    }

    async fn get_json(&self, path: &str) -> (u16, Value) {
        let (code, body) = self.get(path).await;
        let value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET {path} is not JSON ({e}): {body}"));
        (code, value)
    }

    /// Polls `path` until `accept` holds for its answer; panics with the last answer otherwise.
    async fn wait_for(&self, path: &str, what: &str, accept: impl Fn(u16, &str) -> bool) -> String {
        let until = Instant::now() + PATIENCE;
        loop {
            let (code, body) = self.get(path).await;
            if accept(code, &body) {
                return body;
            }
            assert!(
                Instant::now() < until,
                "waited {PATIENCE:?} for {what}; {path} answered {code}: {body}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    async fn wait_until_ready(&self) {
        self.wait_for("/readyz", "readiness", |code, _| code == 200)
            .await;
    }

    async fn wait_for_run_in_hand(&self) -> Value {
        let body = self
            .wait_for("/status", "a run in hand", |_, body| {
                serde_json::from_str::<Value>(body)
                    .is_ok_and(|v| v["current"]["run_id"].is_string())
            })
            .await;
        serde_json::from_str(&body).expect("status JSON")
    }

    /// Drains, lets any slow handler finish, and waits for the loop and both servers to end.
    async fn stop(self) {
        self.shutdown.drain.cancel();
        self.release.cancel();
        let exit = tokio::time::timeout(PATIENCE, self.worker)
            .await
            .expect("the worker stops in time")
            .expect("the worker task");
        assert_eq!(exit, WorkerExit::Shutdown);
        self.health.stop().await;
        self.server.shutdown().await;
    }
}

/// The value of the series `series` (name with its labels, exactly as exported).
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
}

#[tokio::test]
async fn every_endpoint_answers_while_a_run_is_in_hand() {
    let rig = Rig::start().await;
    let run = rig
        .sim
        .enqueue_task(TaskSpec::titled("slow: hold the lease"));
    let status = rig.wait_for_run_in_hand().await;

    assert_eq!(status["current"]["run_id"], json!(run.run_id));
    assert_eq!(status["current"]["task_id"], json!(run.task_id));
    assert_eq!(status["current"]["handler"], json!("test"));
    assert_eq!(status["state"], json!("running"));
    assert_eq!(status["identity"]["session_id"], json!(rig.session_id));
    assert_eq!(status["identity"]["agent"], json!("worker"));
    assert_eq!(status["endpoint"], json!(rig.server.base_url()));
    assert_eq!(status["version"], json!(env!("CARGO_PKG_VERSION")));
    let lease_deadline = status["current"]["lease_deadline"]
        .as_f64()
        .expect("lease deadline in unix seconds");
    let last_contact = status["last_contact"].as_f64().expect("last contact");
    assert!(lease_deadline > last_contact, "{status}");
    assert!(status["counters"]["runs_claimed"].as_u64() >= Some(1));
    assert!(status["uptime_seconds"].as_f64().is_some());
    assert!(status["children"].is_array());

    let (code, health) = rig.get_json("/healthz").await;
    assert_eq!(code, 200, "{health}");
    assert_eq!(health["status"], json!("ok"));
    assert!(health["last_tick_seconds_ago"].as_f64().is_some());

    rig.wait_until_ready().await;
    let (code, ready) = rig.get_json("/readyz").await;
    assert_eq!(code, 200, "{ready}");
    assert_eq!(ready["reasons"], json!([]));

    let (code, metrics) = rig.get("/metrics").await;
    assert_eq!(code, 200);
    assert_eq!(metric(&metrics, "agh_worker_runs_in_flight"), Some(1.0));
    assert_eq!(
        metric(
            &metrics,
            "agh_worker_runs_claimed_total{origin=\"claimed\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(&metrics, "agh_worker_state{state=\"running\"}"),
        Some(1.0)
    );
    assert!(
        metric(
            &metrics,
            "agh_worker_api_requests_total{endpoint=\"claim-next\",class=\"ok\"}"
        ) >= Some(1.0),
        "{metrics}"
    );
    assert!(metrics.contains(&format!(
        "agh_worker_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    )));

    rig.release.cancel();
    rig.wait_for("/metrics", "the run to complete", |_, text| {
        metric(
            text,
            "agh_worker_runs_finished_total{outcome=\"completed\"}",
        ) == Some(1.0)
    })
    .await;
    let (_, status) = rig.get_json("/status").await;
    assert_eq!(status["current"], Value::Null);
    rig.stop().await;
}

#[tokio::test]
async fn readiness_drops_while_draining_and_the_slow_run_still_finishes() {
    let rig = Rig::start().await;
    let run = rig.sim.enqueue_task(TaskSpec::titled("slow: drain me"));
    rig.wait_for_run_in_hand().await;
    rig.wait_until_ready().await;

    rig.shutdown.drain.cancel();
    let (code, ready) = rig.get_json("/readyz").await;
    assert_eq!(code, 503, "{ready}");
    assert_eq!(ready["status"], json!("not_ready"));
    assert!(
        ready["reasons"]
            .as_array()
            .is_some_and(|r| r.contains(&json!("draining"))),
        "{ready}"
    );
    // Still alive while draining: only readiness drops.
    let (code, _) = rig.get("/healthz").await;
    assert_eq!(code, 200);
    let (_, status) = rig.get_json("/status").await;
    assert_eq!(status["ready"], json!(false));
    assert_eq!(status["current"]["run_id"], json!(run.run_id));

    rig.release.cancel();
    rig.wait_for("/status", "the drained run to complete", |_, body| {
        serde_json::from_str::<Value>(body)
            .is_ok_and(|v| v["counters"]["runs_completed"] == json!(1))
    })
    .await;
    assert_eq!(
        rig.sim.run(&run.run_id).map(|r| r.status),
        Some("completed".to_string())
    );
    let (code, _) = rig.get("/readyz").await;
    assert_eq!(code, 503);
    rig.stop().await;
}

#[tokio::test]
async fn readiness_drops_while_the_identity_is_stale_and_returns_when_active_again() {
    let rig = Rig::start().await;
    rig.wait_until_ready().await;

    assert!(
        rig.sim
            .set_session_state(&rig.session_id, SessionState::Stopped)
    );
    let body = rig
        .wait_for("/readyz", "readiness to drop", |code, _| code == 503)
        .await;
    let ready: Value = serde_json::from_str(&body).expect("JSON");
    assert!(
        ready["reasons"]
            .as_array()
            .is_some_and(|r| r.contains(&json!("identity_not_valid"))),
        "{ready}"
    );
    assert_eq!(rig.status.snapshot().state, WorkerState::IdentityStale);
    let (_, status) = rig.get_json("/status").await;
    assert_eq!(status["identity_ok"], json!(false));
    let (_, metrics) = rig.get("/metrics").await;
    assert_eq!(metric(&metrics, "agh_worker_identity_ok"), Some(0.0));
    assert_eq!(metric(&metrics, "agh_worker_ready"), Some(0.0));
    assert_eq!(
        metric(&metrics, "agh_worker_state{state=\"identity_stale\"}"),
        Some(1.0)
    );
    assert!(
        metric(
            &metrics,
            "agh_worker_api_requests_total{endpoint=\"claim-next\",class=\"identity_stale\"}"
        ) >= Some(1.0),
        "the rejected claim is counted by its error class: {metrics}"
    );
    // Alive all along: the loop keeps probing.
    let (code, _) = rig.get("/healthz").await;
    assert_eq!(code, 200);

    assert!(
        rig.sim
            .set_session_state(&rig.session_id, SessionState::Active)
    );
    rig.wait_until_ready().await;
    let (_, metrics) = rig.get("/metrics").await;
    assert_eq!(metric(&metrics, "agh_worker_identity_ok"), Some(1.0));
    rig.stop().await;
}

#[tokio::test]
async fn an_idle_worker_in_long_polls_stays_ready_past_the_contact_threshold() {
    let rig = Rig::start().await;
    rig.wait_until_ready().await;
    // Contact threshold here: max(2 × 1 s heartbeat, 1 s long poll + 2 s request) = 3 s. Watch
    // readiness across more than that with no work queued: empty long polls keep it.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let (code, body) = rig.get("/readyz").await;
        assert_eq!(code, 200, "an idle worker lost readiness: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, metrics) = rig.get("/metrics").await;
    assert!(
        metric(
            &metrics,
            "agh_worker_api_requests_total{endpoint=\"claim-next\",class=\"deadline\"}"
        ) >= Some(2.0),
        "{metrics}"
    );
    rig.stop().await;
}

#[tokio::test]
async fn metrics_move_as_runs_finish() {
    let rig = Rig::start().await;
    rig.sim.enqueue_task(TaskSpec::titled("first"));
    let before = rig
        .wait_for("/metrics", "the first run to complete", |_, text| {
            metric(
                text,
                "agh_worker_runs_finished_total{outcome=\"completed\"}",
            ) == Some(1.0)
        })
        .await;
    let count = |text: &str, series: &str| metric(text, series).unwrap_or(-1.0);
    assert_eq!(
        count(&before, "agh_worker_handler_duration_seconds_count"),
        1.0
    );
    assert_eq!(
        count(&before, "agh_worker_claim_to_start_seconds_count"),
        1.0
    );

    for title in ["second", "third"] {
        rig.sim.enqueue_task(TaskSpec::titled(title));
    }
    let after = rig
        .wait_for("/metrics", "two more runs to complete", |_, text| {
            metric(
                text,
                "agh_worker_runs_finished_total{outcome=\"completed\"}",
            ) == Some(3.0)
        })
        .await;
    assert_eq!(
        count(&after, "agh_worker_handler_duration_seconds_count"),
        3.0
    );
    assert_eq!(
        count(&after, "agh_worker_claim_to_start_seconds_count"),
        3.0
    );
    assert_eq!(
        count(&after, "agh_worker_runs_claimed_total{origin=\"claimed\"}"),
        3.0
    );
    assert_eq!(
        count(
            &after,
            "agh_worker_api_requests_total{endpoint=\"complete\",class=\"ok\"}"
        ),
        3.0
    );
    assert_eq!(
        count(
            &after,
            "agh_worker_handler_duration_seconds_bucket{le=\"+Inf\"}"
        ),
        3.0
    );
    assert_eq!(count(&after, "agh_worker_runs_in_flight"), 0.0);
    assert_eq!(
        count(&after, "agh_worker_runs_finished_total{outcome=\"failed\"}"),
        0.0
    );
    assert_eq!(
        count(&after, "agh_worker_leases_lost_total{reason=\"rejected\"}"),
        0.0
    );
    assert!(after.trim_end().ends_with("# EOF"));
    rig.stop().await;
}

#[tokio::test]
async fn a_lease_the_daemon_takes_away_is_counted_as_lost_and_rejected() {
    let rig = Rig::start().await;
    let run = rig
        .sim
        .enqueue_task(TaskSpec::titled("slow: lose my lease"));
    rig.wait_for_run_in_hand().await;
    assert!(rig.sim.expire_lease(&run.run_id));
    // The next heartbeat (every second here) is answered "lease expired".
    let text = rig
        .wait_for("/metrics", "the lease loss to be counted", |_, text| {
            metric(
                text,
                "agh_worker_runs_finished_total{outcome=\"lease_lost\"}",
            ) == Some(1.0)
        })
        .await;
    assert_eq!(
        metric(&text, "agh_worker_leases_lost_total{reason=\"rejected\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "agh_worker_leases_lost_total{reason=\"deadline\"}"),
        Some(0.0)
    );
    assert_eq!(
        metric(&text, "agh_worker_heartbeats_total{result=\"failed\"}"),
        Some(1.0)
    );
    assert!(
        metric(
            &text,
            "agh_worker_api_requests_total{endpoint=\"heartbeat\",class=\"lease_expired\"}"
        ) == Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "agh_worker_runs_finished_total{outcome=\"completed\"}"
        ),
        Some(0.0)
    );
    rig.stop().await;
}

#[tokio::test]
async fn healthz_answers_503_once_the_loop_stops_ticking() {
    // No worker writes this board, so its last tick only ages. Tiny intervals make the
    // threshold 2 × 10 ms + 10 ms.
    let status = StatusBoard::default();
    let timings = HealthTimings {
        long_poll: Duration::from_millis(10),
        request_timeout: Duration::from_millis(10),
        heartbeat_every: Duration::from_millis(10),
        max_backoff: Duration::from_millis(10),
        identity_probe: Duration::from_millis(10),
    };
    let state = HealthState::new(
        status.clone(),
        Shutdown::default(),
        timings,
        HealthInfo::new(
            &Identity {
                session_id: "sess-1".into(),
                agent: "worker".into(),
                workspace_id: None,
            },
            &Endpoint::Http("http://127.0.0.1:1".into()),
        ),
    );
    let server = server::start(
        &HealthListen::Tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
        state,
    )
    .await
    .expect("health server");
    let url = format!("http://{}/healthz", server.local_addr().expect("address"));
    let http = reqwest::Client::new();
    let until = Instant::now() + PATIENCE;
    let body: Value = loop {
        let response = http.get(&url).send().await.expect("GET /healthz");
        if response.status().as_u16() == 503 {
            let text = response.text().await.expect("body");
            break serde_json::from_str(&text).expect("JSON");
        }
        assert!(Instant::now() < until, "/healthz never went stale");
        tokio::time::sleep(POLL).await;
    };
    assert_eq!(body["status"], json!("stale"));
    assert!(
        body["last_tick_seconds_ago"].as_f64() > Some(0.03),
        "{body}"
    );

    status.tick();
    let response = http.get(&url).send().await.expect("GET /healthz");
    assert_eq!(response.status().as_u16(), 200);
    server.stop().await;
}

#[tokio::test]
async fn health_is_served_over_a_unix_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("health.sock");
    // A stale socket from an earlier run is replaced.
    drop(std::os::unix::net::UnixListener::bind(&path).expect("stale socket"));
    let rig = Rig::start_on(&HealthListen::Unix(path.clone())).await;
    assert_eq!(rig.health.socket_path(), Some(path.as_path()));
    rig.wait_until_ready().await;
    let (code, health) = rig.get_json("/healthz").await;
    assert_eq!(code, 200, "{health}");
    let (code, status) = rig.get_json("/status").await;
    assert_eq!(code, 200);
    assert_eq!(status["state"], json!("idle"));
    let (code, metrics) = rig.get("/metrics").await;
    assert_eq!(code, 200);
    assert!(metrics.contains("agh_worker_ready 1"), "{metrics}");
    rig.stop().await;
    assert!(!path.exists(), "the socket file is removed at stop");
}

#[tokio::test]
async fn a_health_socket_path_held_by_another_file_is_not_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("health.sock");
    std::fs::write(&path, "not a socket").expect("file");
    let state = HealthState::new(
        StatusBoard::default(),
        Shutdown::default(),
        HealthTimings::from_parts(&settings(), &client_options()),
        HealthInfo::new(
            &Identity {
                session_id: "sess-1".into(),
                agent: "worker".into(),
                workspace_id: None,
            },
            &Endpoint::Http("http://127.0.0.1:1".into()),
        ),
    );
    let err = server::start(&HealthListen::Unix(path.clone()), state)
        .await
        .expect_err("a regular file is in the way");
    assert!(err.to_string().contains("not a socket"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&path).ok().as_deref(),
        Some("not a socket")
    );
}

/// `agh-worker run` on the simulator with `[health]` from `health_env`.
struct Process {
    child: tokio::process::Child,
    _home: tempfile::TempDir,
}

fn spawn_worker(server: &SimServer, sim: &Simulator, health_env: &[(&str, &str)]) -> Process {
    let home = tempfile::tempdir().expect("home");
    let config = home.path().join("agh-worker.toml");
    std::fs::write(&config, "").expect("empty config file");
    let session = sim.default_session().expect("session");
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_agh-worker"));
    command
        .arg("--config")
        .arg(&config)
        .arg("run")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("AGH_SESSION_ID", &session.session_id)
        .env("AGH_AGENT", &session.agent_name)
        .env("AGH_WORKER__AGH__ENDPOINT", server.base_url())
        .env("AGH_WORKER__AGH__LONG_POLL_TIMEOUT_MS", "1000")
        .env("AGH_WORKER__HANDLERS", r#"[{"name":"noop","kind":"noop"}]"#)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    for (key, value) in health_env {
        command.env(key, value);
    }
    Process {
        child: command.spawn().expect("agh-worker binary"),
        _home: home,
    }
}

impl Process {
    /// SIGTERM, then the exit code within the patience bound.
    async fn terminate(mut self) -> i32 {
        let pid = self.child.id().expect("running");
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(sent.success());
        self.exit_code().await
    }

    async fn exit_code(&mut self) -> i32 {
        let status = tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .expect("the worker exits in time")
            .expect("wait");
        status.code().unwrap_or(-1)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

async fn sim_server() -> (Simulator, SimServer) {
    let sim = Simulator::new(SimConfig::default());
    let server = sim
        .serve_tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .expect("simulator");
    (sim, server)
}

#[tokio::test]
async fn the_run_command_serves_health_on_the_configured_address() {
    let (sim, server) = sim_server().await;
    let listen = format!("127.0.0.1:{}", free_port());
    let process = spawn_worker(&server, &sim, &[("AGH_WORKER__HEALTH__LISTEN", &listen)]);
    let http = reqwest::Client::new();
    let until = Instant::now() + PATIENCE;
    loop {
        if let Ok(response) = http.get(format!("http://{listen}/readyz")).send().await
            && response.status().as_u16() == 200
        {
            break;
        }
        assert!(
            Instant::now() < until,
            "the worker never became ready on {listen}"
        );
        tokio::time::sleep(POLL).await;
    }
    let metrics = http
        .get(format!("http://{listen}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("body");
    assert!(
        metrics.contains("agh_worker_api_requests_total{endpoint=\"me\",class=\"ok\"}"),
        "the run command counts its requests: {metrics}"
    );
    assert_eq!(process.terminate().await, 0);
    assert!(
        tokio::net::TcpStream::connect(&listen).await.is_err(),
        "the health server stops with the worker"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn the_run_command_opens_no_listener_when_health_is_disabled() {
    let (sim, server) = sim_server().await;
    let listen = format!("127.0.0.1:{}", free_port());
    let process = spawn_worker(
        &server,
        &sim,
        &[
            ("AGH_WORKER__HEALTH__LISTEN", &listen),
            ("AGH_WORKER__HEALTH__ENABLED", "false"),
        ],
    );
    // Once its claim waits on the simulator the worker is fully up.
    tokio::time::timeout(PATIENCE, sim.wait_for_waiters(Route::ClaimNext, 1))
        .await
        .expect("the worker claims");
    assert!(
        tokio::net::TcpStream::connect(&listen).await.is_err(),
        "nothing listens on {listen}"
    );
    assert_eq!(process.terminate().await, 0);
    server.shutdown().await;
}

#[tokio::test]
async fn a_health_address_in_use_stops_the_worker_with_exit_64_naming_the_key() {
    let (sim, server) = sim_server().await;
    let taken = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let listen = taken.local_addr().expect("address").to_string();
    let mut process = spawn_worker(&server, &sim, &[("AGH_WORKER__HEALTH__LISTEN", &listen)]);
    assert_eq!(process.exit_code().await, 64);
    let mut stderr = String::new();
    if let Some(mut pipe) = process.child.stderr.take() {
        use tokio::io::AsyncReadExt;
        pipe.read_to_string(&mut stderr).await.expect("stderr");
    }
    assert!(stderr.contains("health.listen"), "{stderr}");
    assert!(stderr.contains(&listen), "{stderr}");
    assert_eq!(sim.ledger().runs_in_status("running"), 0);
    drop(taken);
    server.shutdown().await;
}
