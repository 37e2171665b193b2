//! Shared rig of the client tests: a simulator served over TCP or a Unix socket, clients for
//! its sessions, and a one-answer server for bodies the simulator cannot produce.

use std::path::PathBuf;
use std::time::Duration;

use agh_worker::api::{AghClient, ClientOptions, Endpoint, Identity, RetryOptions};
use agh_worker::dev::sim::{SessionInfo, SessionSpec, SimConfig, SimServer, Simulator};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The two ways the AGH API is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transport {
    Tcp,
    Unix,
}

/// Writes each listed test (an `async fn(Transport)` in the parent module) once per transport,
/// as `tcp::<name>` and `unix::<name>`; after `paused:`, on paused tokio time.
#[macro_export]
macro_rules! on_both_transports {
    (paused: $($name:ident),* $(,)?) => {
        mod tcp {
            $(
                #[tokio::test(start_paused = true)]
                async fn $name() {
                    super::$name($crate::support::client_rig::Transport::Tcp).await;
                }
            )*
        }
        mod unix {
            $(
                #[tokio::test(start_paused = true)]
                async fn $name() {
                    super::$name($crate::support::client_rig::Transport::Unix).await;
                }
            )*
        }
    };
    ($($name:ident),* $(,)?) => {
        mod tcp {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::support::client_rig::Transport::Tcp).await;
                }
            )*
        }
        mod unix {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::support::client_rig::Transport::Unix).await;
                }
            )*
        }
    };
}

/// Options small enough for tests: short timeouts, quick backoff, small budgets.
pub(crate) fn quick_options() -> ClientOptions {
    ClientOptions {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        long_poll_timeout: Duration::from_secs(10),
        max_response_bytes: 8 * 1024 * 1024,
        retry: RetryOptions {
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(40),
            read_budget: Duration::from_millis(1_000),
            terminal_budget: Duration::from_millis(2_000),
        },
    }
}

/// A simulator served on one transport.
pub(crate) struct Rig {
    pub transport: Transport,
    pub sim: Simulator,
    pub server: SimServer,
    pub endpoint: Endpoint,
    /// Holds the socket directory alive.
    _dir: TempDir,
}

impl Rig {
    pub(crate) async fn start(transport: Transport) -> Rig {
        Rig::start_with(transport, SimConfig::default()).await
    }

    pub(crate) async fn start_with(transport: Transport, config: SimConfig) -> Rig {
        let sim = Simulator::new(config);
        let dir = short_tempdir();
        let (server, endpoint) = super::sim::serve(&sim, transport, dir.path()).await;
        Rig {
            transport,
            sim,
            server,
            endpoint,
            _dir: dir,
        }
    }

    /// The endpoint as the command line spells it.
    pub(crate) fn endpoint_arg(&self) -> String {
        self.endpoint.to_string()
    }

    pub(crate) fn worker(&self) -> SessionInfo {
        self.sim.default_session().expect("the default session")
    }

    /// A session of `agent` in the default workspace, joined to `channel`.
    pub(crate) fn session_on(&self, agent: &str, channel: &str) -> SessionInfo {
        self.sim.create_session(SessionSpec {
            agent_name: agent.to_owned(),
            workspace_id: Some("ws-default".to_owned()),
            channel: Some(channel.to_owned()),
            ..SessionSpec::default()
        })
    }

    pub(crate) fn identity_of(session: &SessionInfo) -> Identity {
        Identity {
            session_id: session.session_id.clone(),
            agent: session.agent_name.clone(),
            workspace_id: None,
        }
    }

    /// A client of the default session.
    pub(crate) fn client(&self) -> AghClient {
        self.client_as(&self.worker())
    }

    pub(crate) fn client_as(&self, session: &SessionInfo) -> AghClient {
        self.client_with(Rig::identity_of(session), quick_options())
    }

    pub(crate) fn client_with(&self, identity: Identity, options: ClientOptions) -> AghClient {
        AghClient::new(self.endpoint.clone(), identity, options).expect("client")
    }

    /// A plain HTTP client for this transport, for requests the typed client never makes.
    pub(crate) fn raw(&self) -> (reqwest::Client, String) {
        match &self.endpoint {
            Endpoint::Unix(path) => (
                reqwest::Client::builder()
                    .unix_socket(path.clone())
                    .build()
                    .expect("unix client"),
                "http://unix".to_owned(),
            ),
            Endpoint::Http(base) => (reqwest::Client::new(), base.clone()),
        }
    }
}

/// A temporary directory with a short path, so socket paths stay well under 100 bytes.
pub(crate) fn short_tempdir() -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix("agh")
        .tempdir_in("/tmp")
        .expect("temporary directory");
    assert!(dir.path().as_os_str().len() < 60, "{:?}", dir.path());
    dir
}

/// A server that answers every connection with the same raw HTTP response, then closes it.
pub(crate) struct CannedServer {
    pub endpoint: Endpoint,
    _dir: Option<TempDir>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CannedServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CannedServer {
    pub(crate) async fn start(
        transport: Transport,
        status_line: &str,
        content_type: &str,
        body: &str,
    ) -> CannedServer {
        let response = format!(
            "HTTP/1.1 {status_line}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes();
        match transport {
            Transport::Tcp => {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                let addr = listener.local_addr().expect("address");
                let task = tokio::spawn(async move {
                    while let Ok((stream, _)) = listener.accept().await {
                        tokio::spawn(answer(stream, response.clone()));
                    }
                });
                CannedServer {
                    endpoint: Endpoint::Http(format!("http://{addr}")),
                    _dir: None,
                    task,
                }
            }
            Transport::Unix => {
                let dir = short_tempdir();
                let path: PathBuf = dir.path().join("canned.sock");
                let listener = tokio::net::UnixListener::bind(&path).expect("bind socket");
                let task = tokio::spawn(async move {
                    while let Ok((stream, _)) = listener.accept().await {
                        tokio::spawn(answer(stream, response.clone()));
                    }
                });
                CannedServer {
                    endpoint: Endpoint::Unix(path),
                    _dir: Some(dir),
                    task,
                }
            }
        }
    }
}

/// Reads the request head (and whatever body arrived with it), then writes the canned answer.
async fn answer<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    response: Vec<u8>,
) {
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buffer[..n]),
        }
    }
    let _ = stream.write_all(&response).await;
    let _ = stream.shutdown().await;
}
