//! The built-in simulator in tests over real sockets: served over loopback TCP or a Unix socket,
//! a client of one of its sessions with short timeouts, worker settings on the same scale, the
//! ledger checks a worker test ends with, and channel messages to inject.

use std::path::Path;
use std::time::Duration;

use agh_worker::api::{AghClient, ClientOptions, Endpoint, Identity, RetryOptions};
use agh_worker::config::OrphanPolicy;
use agh_worker::dev::sim::{MessageSpec, Route, SessionInfo, SimServer, Simulator};
use agh_worker::worker::WorkerSettings;
use serde_json::{Value, json};

use super::client_rig::Transport;

/// Serves `sim` over `transport` (a Unix socket is made in `dir`); answers the server and its
/// endpoint.
pub(crate) async fn serve(
    sim: &Simulator,
    transport: Transport,
    dir: &Path,
) -> (SimServer, Endpoint) {
    let server = match transport {
        Transport::Tcp => sim
            .serve_tcp("127.0.0.1:0".parse().expect("loopback address"))
            .await
            .expect("serve over tcp"),
        Transport::Unix => sim
            .serve_unix(&dir.join("agh.sock"))
            .await
            .expect("serve over a unix socket"),
    };
    let endpoint = match server.socket_path() {
        Some(path) => Endpoint::Unix(path.to_path_buf()),
        None => Endpoint::parse(&server.base_url()).expect("endpoint"),
    };
    (server, endpoint)
}

/// The spawn timeout of a client call in tests: `coordination.spawn_timeout_seconds`' default.
pub(crate) const SPAWN_TIMEOUT: Duration = Duration::from_secs(120);

/// Client options on the scale of [`worker_settings`]: one-second long polls, quick retries.
pub(crate) fn worker_client_options() -> ClientOptions {
    ClientOptions {
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(2),
        long_poll_timeout: Duration::from_secs(1),
        max_response_bytes: 8 * 1024 * 1024,
        retry: RetryOptions {
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(300),
            read_budget: Duration::from_secs(2),
            terminal_budget: Duration::from_secs(3),
        },
    }
}

/// A client of `session` at `endpoint` with [`worker_client_options`].
pub(crate) fn worker_client(endpoint: &Endpoint, session: &SessionInfo) -> AghClient {
    let identity = Identity {
        session_id: session.session_id.clone(),
        agent: session.agent_name.clone(),
        workspace_id: None,
    };
    AghClient::new(endpoint.clone(), identity, worker_client_options()).expect("client")
}

/// Worker settings for runs of a few seconds at most: a 4 s lease renewed every second, quick
/// backoff, a 2 s drain and cancel grace; no run or idle limit.
pub(crate) fn worker_settings() -> WorkerSettings {
    WorkerSettings {
        lease: Duration::from_secs(4),
        heartbeat_every: Duration::from_secs(1),
        claim_wait: true,
        orphan_policy: OrphanPolicy::Adopt,
        drain_timeout: Duration::from_secs(2),
        max_runtime: None,
        max_runs: None,
        idle_exit: None,
        once: false,
        identity_probe: Duration::from_millis(300),
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(500),
        cancel_grace: Duration::from_secs(2),
        poll_interval: Duration::from_millis(100),
        required_capabilities: Vec::new(),
        priority_min: None,
        follow_task_events: true,
    }
}

/// Requests of `route` the simulator answered, whatever the status.
pub(crate) fn requests(sim: &Simulator, route: Route) -> u64 {
    sim.ledger()
        .requests
        .iter()
        .filter(|count| count.route == route.as_str())
        .map(|count| count.count)
        .sum()
}

/// No lease invariant broken and no run left claimed.
pub(crate) fn assert_no_violation_and_no_claimed_run(sim: &Simulator) {
    let ledger = sim.ledger();
    assert_eq!(
        ledger.violations_total, 0,
        "lease invariants broken: {:?}",
        ledger.violations
    );
    assert_eq!(
        ledger.runs_in_status("claimed"),
        0,
        "a run is left claimed: {:?}",
        ledger.runs_by_status
    );
}

/// A message from peer `from` on `channel` with body `{"text": text}`, to inject.
pub(crate) fn message(
    channel: &str,
    from: &str,
    text: &str,
    metadata: Option<Value>,
) -> MessageSpec {
    MessageSpec {
        channel: channel.to_owned(),
        from_peer: from.to_owned(),
        body: json!({ "text": text }),
        metadata,
        ..MessageSpec::default()
    }
}
