//! The simulator's record of AGH's stop, over real HTTP: the calls made with a stopping
//! session's identity (and whether the agent's stdin had closed by then), and the agent's pid.
//! The agent is a shell script that answers the handshake, then waits on FIFOs, so the test
//! knows without sleeping when stdin has closed and decides when the agent exits.

use std::io::{Read as _, Write as _};
use std::path::Path;

use agh_worker::dev::sim::acp::AgentProvider;
use agh_worker::dev::sim::{Route, SessionSpec, SimConfig, Simulator};

const AGENT: &str = "scripted";

async fn me(client: &reqwest::Client, base: &str, session_id: &str) -> u16 {
    client
        .get(format!("{base}/api/agent/me"))
        .header("x-agh-session-id", session_id)
        .header("x-agh-agent", AGENT)
        .send()
        .await
        .expect("the simulator answers")
        .status()
        .as_u16()
}

fn mkfifo(path: &Path) {
    let made = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo runs");
    assert!(made.success(), "mkfifo {}", path.display());
}

#[tokio::test]
async fn calls_with_a_stopping_sessions_identity_are_recorded_with_their_time_after_the_close() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let closed = dir.path().join("closed.fifo");
    let release = dir.path().join("release.fifo");
    mkfifo(&closed);
    mkfifo(&release);
    let pid_file = dir.path().join("agent.pid");
    let script = dir.path().join("agent.sh");
    std::fs::write(
        &script,
        format!(
            r#"echo $$ > '{pid}'
read -r line; echo '{{"jsonrpc":"2.0","id":0,"result":{{"protocolVersion":1}}}}'
read -r line; echo '{{"jsonrpc":"2.0","id":1,"result":{{"sessionId":"acp-1"}}}}'
cat > /dev/null
echo closed > '{closed}'
read -r go < '{release}'
"#,
            pid = pid_file.display(),
            closed = closed.display(),
            release = release.display(),
        ),
    )
    .expect("the agent script");
    let sim = Simulator::new(SimConfig {
        create_default_session: false,
        ..SimConfig::default()
    });
    let server = sim
        .serve_tcp("127.0.0.1:0".parse().expect("loopback"))
        .await
        .expect("serve over tcp");
    sim.set_agent_provider(AgentProvider {
        command: format!("/bin/sh '{}'", script.display()),
        agents: vec![AGENT.into()],
        ..AgentProvider::default()
    });
    let session = sim
        .start_agent_session(
            SessionSpec::for_agent(AGENT, Some("ws-default")),
            dir.path(),
        )
        .await
        .expect("the scripted agent answers the handshake");
    let written_pid: u32 = std::fs::read_to_string(&pid_file)
        .expect("the agent wrote its pid before answering")
        .trim()
        .parse()
        .expect("a pid");
    assert_eq!(sim.agent_pid(&session.session_id), Some(written_pid));

    let client = reqwest::Client::new();
    let base = server.base_url();
    assert_eq!(me(&client, &base, &session.session_id).await, 200);
    assert_eq!(sim.calls_after_stop(), (Vec::new(), 0), "before any stop");

    let stopping = tokio::spawn({
        let sim = sim.clone();
        let session_id = session.session_id.clone();
        async move { sim.stop_agent_session(&session_id).await }
    });
    // The agent writes here once its stdin has reached its end.
    tokio::task::spawn_blocking(move || {
        let mut seen = String::new();
        std::fs::File::open(&closed)
            .and_then(|mut fifo| fifo.read_to_string(&mut seen))
            .expect("the agent says its stdin closed");
    })
    .await
    .expect("the reader ends");
    assert_eq!(
        me(&client, &base, &session.session_id).await,
        401,
        "a stopping session's identity is stale"
    );
    tokio::task::spawn_blocking(move || {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&release)
            .and_then(|mut fifo| fifo.write_all(b"go\n"))
            .expect("the agent is released");
    })
    .await
    .expect("the writer ends");
    let stop = stopping
        .await
        .expect("the stop task ends")
        .expect("the session stops");
    assert!(stop.exited_by_itself, "{stop:?}");

    let (calls, total) = sim.calls_after_stop();
    assert_eq!(total, 1, "{calls:?}");
    assert_eq!(calls[0].session_id, session.session_id);
    assert_eq!(calls[0].route, Route::Me);
    let after_close = calls[0]
        .since_stdin_closed
        .expect("the call came after stdin closed");
    assert!(calls[0].since_stop >= after_close, "{calls:?}");
    server.shutdown().await;
}
