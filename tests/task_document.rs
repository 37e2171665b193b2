//! What a handler is given for a run, against the built-in simulator over TCP and a Unix socket:
//! the task's description and metadata, which AGH's claim lacks, read from `GET /api/tasks/{id}`;
//! the run's metadata after an adoption; routing by either metadata; and a run that goes on, told
//! `task_details: "unavailable"`, when the task view cannot be read.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use agh_worker::dev::sim::{
    EnqueuedRun, Fault, FaultKind, Route, SimConfig, SimServer, Simulator, TaskSpec,
};
use agh_worker::handler::exec::ExecConfig;
use agh_worker::handler::webhook::WebhookConfig;
use agh_worker::handler::{HandlerConfig, HandlerKind, HandlerSet, MatchRule, SharedHandlers};
use agh_worker::worker::{ClaimLoop, LogEvents, Shutdown, StatusBoard, WorkerExit, WorkerSettings};
use axum::Json;
use axum::routing::post;
use serde_json::{Value, json};
use support::client_rig::Transport;
use support::recorder::Recorder;
use support::sim;
use tokio::time::timeout;

/// A program that completes its run with the task document it read as the result.
const ECHO_DOCUMENT: &str =
    "#!/bin/sh\nIFS= read -r task\nprintf '{\"type\":\"result\",\"result\":%s}\\n' \"$task\"\n";

struct Rig {
    sim: Simulator,
    _server: SimServer,
    endpoint: agh_worker::api::Endpoint,
    dir: tempfile::TempDir,
}

impl Rig {
    async fn new(via: Transport) -> Rig {
        support::log_capture::show_in_test_output();
        let dir = tempfile::tempdir().expect("temporary directory");
        let sim = Simulator::new(SimConfig::default());
        let (server, endpoint) = sim::serve(&sim, via, dir.path()).await;
        Rig {
            sim,
            _server: server,
            endpoint,
            dir,
        }
    }

    /// A task with a description, its own metadata `{"team": "infra"}`, enqueued with run
    /// metadata `{"lane": "fast"}`.
    fn enqueue(&self) -> EnqueuedRun {
        self.sim.enqueue_task(TaskSpec {
            description: Some("Tag, build and publish.".into()),
            task_metadata: json!({"team": "infra"}),
            metadata: json!({"lane": "fast"}),
            ..TaskSpec::titled("Ship the release")
        })
    }

    /// Runs one run with `handlers` and answers the result it completed with.
    async fn complete_one(&self, handlers: Vec<HandlerConfig>, run: &EnqueuedRun) -> Value {
        let session = self.sim.default_session().expect("default session");
        let worker = Arc::new(ClaimLoop {
            api: Arc::new(Recorder::new(sim::worker_client(&self.endpoint, &session))),
            handlers: Arc::new(SharedHandlers::from(HandlerSet::new(handlers))),
            events: Arc::new(LogEvents),
            settings: WorkerSettings {
                max_runs: Some(1),
                ..sim::worker_settings()
            }
            .into(),
            status: StatusBoard::default(),
            shutdown: Shutdown::default(),
            wake: Default::default(),
        });
        let exit = timeout(Duration::from_secs(15), {
            let worker = worker.clone();
            async move { worker.run().await }
        })
        .await
        .expect("the worker stops in time");
        assert_eq!(exit, WorkerExit::MaxRuns);
        let snapshot = self.sim.run(&run.run_id).expect("the run is known");
        assert_eq!(snapshot.status, "completed", "{snapshot:?}");
        sim::assert_no_violation_and_no_claimed_run(&self.sim);
        snapshot.result.expect("a result")
    }

    fn echo_program(&self) -> std::path::PathBuf {
        let path = self.dir.path().join("echo-document.sh");
        std::fs::write(&path, ECHO_DOCUMENT).expect("write the program");
        make_executable(&path);
        path
    }

    fn exec(&self, name: &str, matches: MatchRule) -> HandlerConfig {
        HandlerConfig {
            name: name.into(),
            kind: HandlerKind::Exec,
            matches,
            exec: Some(ExecConfig {
                program: self.echo_program(),
                kill_grace_ms: 1000,
                ..ExecConfig::default()
            }),
            webhook: None,
            coder: None,
        }
    }
}

fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// A handler of last resort that completes with `{}`: a run routed here was not matched above.
fn fallback() -> HandlerConfig {
    HandlerConfig::noop("fallback", MatchRule::default())
}

fn assert_carries_the_task(document: &Value) {
    assert_eq!(document["task_details"], "read", "{document:#}");
    assert_eq!(document["description"], "Tag, build and publish.");
    assert_eq!(document["task_metadata"], json!({"team": "infra"}));
    assert_eq!(document["run_metadata"]["lane"], "fast");
    assert!(
        document["claim"]["task"].get("description").is_none(),
        "the claim stays as AGH sent it"
    );
}

async fn an_exec_program_reads_the_description_and_both_metadata(via: Transport) {
    let rig = Rig::new(via).await;
    let run = rig.enqueue();
    let document = rig
        .complete_one(vec![rig.exec("echo", MatchRule::default())], &run)
        .await;
    assert_carries_the_task(&document);
}

async fn a_webhook_sidecar_receives_the_description_and_both_metadata(via: Transport) {
    let rig = Rig::new(via).await;
    let sidecar = axum::Router::new().route(
        "/task",
        post(|Json(document): Json<Value>| async move {
            Json(json!({"outcome": "complete", "result": document}))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the sidecar");
    let url = format!("http://{}/task", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, sidecar).await });
    let run = rig.enqueue();
    let webhook = HandlerConfig {
        name: "sidecar".into(),
        kind: HandlerKind::Webhook,
        matches: MatchRule::default(),
        exec: None,
        webhook: Some(WebhookConfig {
            url,
            ..WebhookConfig::default()
        }),
        coder: None,
    };
    let document = rig.complete_one(vec![webhook], &run).await;
    assert_carries_the_task(&document);
}

async fn a_run_routes_by_task_metadata_and_by_run_metadata(via: Transport) {
    let rig = Rig::new(via).await;
    let by_task = MatchRule {
        task_metadata_key: Some("team".into()),
        ..MatchRule::default()
    };
    let run = rig.enqueue();
    let document = rig
        .complete_one(vec![rig.exec("infra", by_task), fallback()], &run)
        .await;
    assert_carries_the_task(&document);
    let not_in_the_run = MatchRule {
        run_metadata_key: Some("team".into()),
        ..MatchRule::default()
    };
    let run = rig.enqueue();
    let result = rig
        .complete_one(vec![rig.exec("infra", not_in_the_run), fallback()], &run)
        .await;
    assert!(
        result.get("task_details").is_none(),
        "the task's metadata is not the run's: {result}"
    );
}

async fn an_adopted_run_still_routes_by_its_run_metadata(via: Transport) {
    let rig = Rig::new(via).await;
    rig.sim
        .inject_fault(Fault::new(Route::ClaimNext, FaultKind::DropAfterCommit, 1));
    let run = rig.enqueue();
    let by_lane = MatchRule {
        run_metadata_key: Some("lane".into()),
        ..MatchRule::default()
    };
    let document = rig
        .complete_one(vec![rig.exec("fast-lane", by_lane), fallback()], &run)
        .await;
    assert_carries_the_task(&document);
    assert_eq!(
        rig.sim.run(&run.run_id).expect("run").claims,
        1,
        "adopted, not claimed again"
    );
    // Rebuilt from the context's run summary: Go's zero times are not passed on as instants.
    let run_doc = &document["claim"]["run"];
    assert!(run_doc.get("started_at").is_none(), "{run_doc}");
    assert_eq!(run_doc["metadata"]["lane"], "fast");
}

async fn a_failed_task_read_leaves_the_document_unavailable_and_the_run_completes(via: Transport) {
    let rig = Rig::new(via).await;
    rig.sim.inject_fault(Fault::new(
        Route::Task,
        FaultKind::Status {
            status: 500,
            error: "store: database is locked".into(),
        },
        100,
    ));
    let run = rig.enqueue();
    let by_task = MatchRule {
        task_metadata_key: Some("team".into()),
        ..MatchRule::default()
    };
    let document = rig
        .complete_one(
            vec![
                rig.exec("infra", by_task),
                rig.exec("any", MatchRule::default()),
            ],
            &run,
        )
        .await;
    assert_eq!(document["task_details"], "unavailable", "{document:#}");
    assert!(document.get("description").is_none());
    assert!(document.get("task_metadata").is_none());
    assert_eq!(
        document["run_metadata"]["lane"], "fast",
        "the claim's own metadata is still there"
    );
    assert!(sim::requests(&rig.sim, Route::Task) >= 1);
}

on_both_transports!(
    an_exec_program_reads_the_description_and_both_metadata,
    a_webhook_sidecar_receives_the_description_and_both_metadata,
    a_run_routes_by_task_metadata_and_by_run_metadata,
    an_adopted_run_still_routes_by_its_run_metadata,
    a_failed_task_read_leaves_the_document_unavailable_and_the_run_completes,
);
