//! Finding the daemon as the `agh` CLI does, run as the binary with a clean environment: a
//! simulator served only on the socket that `[daemon] socket` in `$AGH_HOME/config.toml` names
//! (`~` being `$HOME`) is found by a one-shot, by `check` (which says where the path came from) and
//! by a worker; a `config.toml` that does not parse stops them with the file named.

mod support;

use std::path::{Path, PathBuf};

use agh_worker::dev::sim::{SimConfig, SimServer, Simulator, TaskSpec};
use serde_json::{Value, json};
use support::binary::{describe, run_clean as agh_worker};
use support::client_rig::short_tempdir;
use tempfile::TempDir;

/// An AGH daemon (the simulator) whose socket is somewhere only its `config.toml` tells.
struct Daemon {
    user_home: TempDir,
    agh_home: TempDir,
    sim: Simulator,
    _server: SimServer,
    socket: PathBuf,
    config: PathBuf,
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Serves the simulator on `$HOME/run/agh.sock`, named in `$AGH_HOME/config.toml` as
/// `~/run/agh.sock` among other AGH settings; `$AGH_HOME` holds neither `daemon.sock` nor
/// `daemon.json`.
async fn daemon_on_a_configured_socket() -> Daemon {
    let user_home = short_tempdir();
    let agh_home = short_tempdir();
    let run = user_home.path().join("run");
    std::fs::create_dir(&run).unwrap_or_else(|e| panic!("mkdir {}: {e}", run.display()));
    let socket = run.join("agh.sock");
    let sim = Simulator::new(SimConfig::default());
    let server = sim.serve_unix(&socket).await.expect("serve on a socket");
    let config = agh_home.path().join("config.toml");
    write(
        &config,
        "[http]\nhost = \"localhost\"\nport = 2123\n\n\
         [daemon]\nsocket = \"~/run/agh.sock\"\n\n\
         [[agents]]\nname = \"coder\"\ncommand = [\"agent\", \"--acp\"]\n",
    );
    Daemon {
        user_home,
        agh_home,
        sim,
        _server: server,
        socket,
        config,
    }
}

impl Daemon {
    /// What an AGH session hands its agent: `HOME`, `AGH_HOME` and the identity; no endpoint.
    fn session_vars(&self) -> Vec<(&'static str, String)> {
        let session = self.sim.default_session().expect("default session");
        vec![
            ("HOME", self.user_home.path().display().to_string()),
            ("AGH_HOME", self.agh_home.path().display().to_string()),
            ("AGH_SESSION_ID", session.session_id),
            ("AGH_AGENT", session.agent_name),
            (
                "AGH_WORKER__HANDLERS",
                r#"[{"name":"n","kind":"noop"}]"#.into(),
            ),
            // Tests run side by side: each worker's health server takes a free port.
            ("AGH_WORKER__HEALTH__LISTEN", "127.0.0.1:0".into()),
        ]
    }
}

#[tokio::test]
async fn me_finds_the_daemon_on_the_socket_named_only_by_daemon_socket_in_agh_config_toml() {
    let daemon = daemon_on_a_configured_socket().await;
    assert!(!daemon.agh_home.path().join("daemon.sock").exists());
    assert!(!daemon.agh_home.path().join("daemon.json").exists());
    let output = agh_worker(&daemon.session_vars(), &["me"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let me: Value = serde_json::from_slice(&output.stdout).expect("me prints JSON");
    let session = daemon.sim.default_session().expect("default session");
    assert_eq!(
        me["self"]["session_id"],
        json!(session.session_id),
        "{me:#}"
    );
}

#[tokio::test]
async fn check_says_the_endpoint_came_from_daemon_socket_in_that_config_toml() {
    let daemon = daemon_on_a_configured_socket().await;
    let output = agh_worker(&daemon.session_vars(), &["check"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    let expected = format!(
        "✓ AGH endpoint unix:{} (agh config: [daemon] socket in {})",
        daemon.socket.display(),
        daemon.config.display()
    );
    assert!(text.contains(&expected), "no {expected:?} in\n{text}");
    assert!(text.contains("✓ identity accepted by AGH"), "{text}");
}

#[tokio::test]
async fn a_worker_completes_a_run_over_the_socket_named_by_daemon_socket() {
    let daemon = daemon_on_a_configured_socket().await;
    daemon.sim.enqueue_task(TaskSpec::titled("found"));
    let output = agh_worker(&daemon.session_vars(), &["run", "--max-runs", "1"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let ledger = daemon.sim.ledger();
    assert_eq!(ledger.runs_in_status("completed"), 1, "{ledger:#?}");
    assert_eq!(ledger.violations_total, 0, "{ledger:#?}");
}

#[tokio::test]
async fn an_agh_config_toml_that_does_not_parse_stops_the_binary_naming_the_file_and_line() {
    let daemon = daemon_on_a_configured_socket().await;
    write(
        &daemon.config,
        "[http]\nport = 2123\n[daemon\nsocket = \"x\"\n",
    );
    let file = daemon.config.display().to_string();

    let me = agh_worker(&daemon.session_vars(), &["me"]).await;
    assert_eq!(me.status.code(), Some(64), "{}", describe(&me));
    let stderr = String::from_utf8_lossy(&me.stderr);
    assert!(stderr.contains(&file), "{}", describe(&me));
    assert!(stderr.contains("line 3"), "{}", describe(&me));

    let check = agh_worker(&daemon.session_vars(), &["check"]).await;
    assert_eq!(check.status.code(), Some(1), "{}", describe(&check));
    let text = String::from_utf8_lossy(&check.stdout);
    let endpoint_line = text
        .lines()
        .find(|line| line.contains("no AGH endpoint"))
        .unwrap_or_else(|| panic!("no endpoint failure in\n{text}"));
    assert!(endpoint_line.contains('✗'), "{text}");
    assert!(endpoint_line.contains(&file), "{text}");
}
