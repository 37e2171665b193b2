//! The container case: the binary configured by environment variables alone — no file, and not
//! even PATH or HOME (distroless images and `env -i` have neither) — against an in-process
//! simulator, over the Unix socket a container gets mounted and over loopback TCP.

mod support;

use std::path::Path;

use agh_worker::dev::sim::{SimConfig, SimServer, Simulator, TaskSpec};
use support::binary::{describe, run_clean as run_env_only};

const NOOP_HANDLERS: &str = r#"[{"name":"n","kind":"noop"}]"#;

fn identity_vars(sim: &Simulator) -> Vec<(&'static str, String)> {
    let session = sim
        .default_session()
        .expect("the simulator has a default session");
    vec![
        ("AGH_SESSION_ID", session.session_id),
        ("AGH_AGENT", session.agent_name),
        ("AGH_WORKER__HANDLERS", NOOP_HANDLERS.to_string()),
        // Tests run side by side: each worker's health server takes a free port.
        ("AGH_WORKER__HEALTH__LISTEN", "127.0.0.1:0".to_string()),
    ]
}

/// Enqueues two tasks, runs `run --max-runs 2` with `endpoint`, and checks both completed cleanly.
async fn two_runs_complete(sim: &Simulator, _server: &SimServer, endpoint: String) {
    sim.enqueue_task(TaskSpec::titled("first"));
    sim.enqueue_task(TaskSpec::titled("second"));
    let mut vars = identity_vars(sim);
    vars.push(("AGH_WORKER__AGH__ENDPOINT", endpoint));
    let output = run_env_only(&vars, &["run", "--max-runs", "2"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let ledger = sim.ledger();
    assert_eq!(ledger.runs_in_status("completed"), 2, "{ledger:#?}");
    assert_eq!(ledger.violations_total, 0, "{ledger:#?}");
}

fn socket_in(dir: &Path) -> std::path::PathBuf {
    dir.join("daemon.sock")
}

#[tokio::test]
async fn a_worker_with_only_agh_variables_completes_runs_over_a_mounted_socket_without_path_or_home()
 {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = Simulator::new(SimConfig::default());
    let socket = socket_in(dir.path());
    let server = sim.serve_unix(&socket).await.expect("serve on a socket");
    two_runs_complete(&sim, &server, format!("unix:{}", socket.display())).await;
}

#[tokio::test]
async fn a_worker_with_only_agh_variables_completes_runs_over_loopback_tcp() {
    let sim = Simulator::new(SimConfig::default());
    let server = sim
        .serve_tcp(([127, 0, 0, 1], 0).into())
        .await
        .expect("serve on loopback");
    let base = server.base_url();
    two_runs_complete(&sim, &server, base).await;
}

#[tokio::test]
async fn without_an_endpoint_or_a_home_the_worker_exits_64_and_names_both_fixes() {
    let sim = Simulator::new(SimConfig::default());
    let output = run_env_only(&identity_vars(&sim), &["run", "--max-runs", "1"]).await;
    assert_eq!(output.status.code(), Some(64), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("AGH_HOME"), "{}", describe(&output));
    assert!(stderr.contains("agh.endpoint"), "{}", describe(&output));
}
