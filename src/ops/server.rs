//! The local operations HTTP server: `/healthz` and `/readyz` (the rules of [`super::health`]),
//! `/status` (JSON of the live state) and `/metrics` (the text of [`super::metrics`]), on a TCP
//! address or a Unix socket.
//!
//! One way only: the worker loop and its lease tasks write the [`StatusBoard`] and the client
//! counts its requests; this server only reads them. It needs no credentials and shows none
//! (identity ids and the endpoint, never a token or key), and serves on loopback or a Unix socket.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

// The status board keeps tokio's clock (see `worker::status`).
use tokio::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::health::{
    HandlerProblem, HealthTimings, Liveness, NotReady, Readiness, liveness, readiness, unix_seconds,
};
use super::metrics::{self, METRICS_CONTENT_TYPE};
use crate::api::{ApiRequestCounters, Endpoint, Identity};
use crate::assembly::Worker;
use crate::config::{Config, HealthConfig};
use crate::util::redact::without_userinfo;
use crate::worker::{Shutdown, StatusBoard, WorkerStatus};

/// The crate version, as `/status` and `agh_worker_build_info` report it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Who and where the worker is, as `/status` shows it: ids and the endpoint, never a secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HealthInfo {
    pub version: String,
    pub session_id: String,
    pub agent: String,
    pub workspace_id: Option<String>,
    pub endpoint: String,
}

impl HealthInfo {
    pub fn new(identity: &Identity, endpoint: &Endpoint) -> Self {
        HealthInfo {
            version: VERSION.to_string(),
            session_id: identity.session_id.clone(),
            agent: identity.agent.clone(),
            workspace_id: identity.workspace_id.clone(),
            endpoint: without_userinfo(&endpoint.to_string()),
        }
    }
}

/// Everything the handlers read.
#[derive(Clone, Debug)]
pub struct HealthState {
    status: StatusBoard,
    shutdown: Shutdown,
    timings: HealthTimings,
    info: HealthInfo,
    api_requests: Option<Arc<ApiRequestCounters>>,
    started: Instant,
    started_at: SystemTime,
}

impl HealthState {
    /// Reads `status` and `shutdown`; uptime counts from now.
    pub fn new(
        status: StatusBoard,
        shutdown: Shutdown,
        timings: HealthTimings,
        info: HealthInfo,
    ) -> Self {
        HealthState {
            status,
            shutdown,
            timings,
            info,
            api_requests: None,
            started: Instant::now(),
            started_at: SystemTime::now(),
        }
    }

    /// Also exports the client's request counts (`agh_worker_api_requests_total`).
    pub fn with_api_requests(mut self, counters: Arc<ApiRequestCounters>) -> Self {
        self.api_requests = Some(counters);
        self
    }

    /// The `/healthz` answer now.
    pub fn liveness(&self) -> Liveness {
        liveness(&self.status.snapshot(), Instant::now(), &self.timings)
    }

    /// The `/readyz` answer now.
    pub fn readiness(&self) -> Readiness {
        readiness(
            &self.status.snapshot(),
            self.shutdown.is_stopping(),
            Instant::now(),
            &self.timings,
        )
    }

    /// The `/status` body now.
    pub fn status_json(&self) -> serde_json::Value {
        let snapshot = self.status.snapshot();
        let now = Instant::now();
        let ready = readiness(&snapshot, self.shutdown.is_stopping(), now, &self.timings);
        let alive = liveness(&snapshot, now, &self.timings);
        let body = StatusBody {
            version: &self.info.version,
            identity: IdentityBody {
                session_id: &self.info.session_id,
                agent: &self.info.agent,
                workspace_id: self.info.workspace_id.as_deref(),
            },
            endpoint: &self.info.endpoint,
            ready: ready.is_ready(),
            not_ready_reasons: &ready.reasons,
            unhealthy_handlers: &ready.unhealthy_handlers,
            healthy: alive.is_ok(),
            lease_seconds_left: snapshot.current.as_ref().map(|run| {
                run.lease_deadline
                    .duration_since(SystemTime::now())
                    .map_or(0.0, |left| left.as_secs_f64())
            }),
            last_contact_seconds_ago: ready.last_contact_seconds_ago,
            last_tick_seconds_ago: alive.last_tick_seconds_ago,
            started_at: unix_seconds(self.started_at),
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            worker: &snapshot,
        };
        to_json(&body)
    }

    /// The `/metrics` body now.
    pub fn metrics_text(&self) -> String {
        metrics::render(
            &self.status,
            self.shutdown.is_stopping(),
            &self.timings,
            self.api_requests.as_deref(),
            self.started.elapsed(),
        )
    }
}

#[derive(Serialize)]
struct IdentityBody<'a> {
    session_id: &'a str,
    agent: &'a str,
    workspace_id: Option<&'a str>,
}

/// `/status`: the worker's own snapshot (state, identity_ok, current run, last contact,
/// children, counters) flattened in, plus who and where it is. Every time is unix seconds.
#[derive(Serialize)]
struct StatusBody<'a> {
    version: &'a str,
    identity: IdentityBody<'a>,
    endpoint: &'a str,
    ready: bool,
    not_ready_reasons: &'a [NotReady],
    unhealthy_handlers: &'a [HandlerProblem],
    healthy: bool,
    lease_seconds_left: Option<f64>,
    last_contact_seconds_ago: Option<f64>,
    last_tick_seconds_ago: f64,
    started_at: f64,
    uptime_seconds: f64,
    #[serde(flatten)]
    worker: &'a WorkerStatus,
}

/// What the four routes answer from: one worker's [`HealthState`], or a resident worker's
/// slots (`attach::resident`).
pub trait HealthView: Send + Sync + 'static {
    /// `/healthz`: whether it passes, and its body.
    fn liveness_answer(&self) -> (bool, serde_json::Value);
    /// `/readyz`: whether it passes, and its body.
    fn readiness_answer(&self) -> (bool, serde_json::Value);
    /// The `/status` body.
    fn status_json(&self) -> serde_json::Value;
    /// The `/metrics` body.
    fn metrics_text(&self) -> String;
}

impl HealthView for HealthState {
    fn liveness_answer(&self) -> (bool, serde_json::Value) {
        let answer = self.liveness();
        (answer.is_ok(), to_json(&answer))
    }

    fn readiness_answer(&self) -> (bool, serde_json::Value) {
        let answer = self.readiness();
        (answer.is_ready(), to_json(&answer))
    }

    fn status_json(&self) -> serde_json::Value {
        HealthState::status_json(self)
    }

    fn metrics_text(&self) -> String {
        HealthState::metrics_text(self)
    }
}

/// A body as JSON; one that cannot be encoded says so instead.
pub fn to_json(body: &impl Serialize) -> serde_json::Value {
    serde_json::to_value(body).unwrap_or_else(
        |err| serde_json::json!({"error": format!("the answer could not be encoded: {err}")}),
    )
}

/// The routes.
pub fn router(view: impl HealthView) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .with_state(Arc::new(view) as Arc<dyn HealthView>)
}

type Shared = State<Arc<dyn HealthView>>;

async fn healthz(State(state): Shared) -> Response {
    let (passes, body) = state.liveness_answer();
    probe_answer(passes, body)
}

async fn readyz(State(state): Shared) -> Response {
    let (passes, body) = state.readiness_answer();
    probe_answer(passes, body)
}

/// A probe's JSON body, 200 when it passes and 503 when it does not.
fn probe_answer(passes: bool, body: impl Serialize) -> Response {
    let code = if passes {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body)).into_response()
}

async fn status(State(state): Shared) -> Response {
    axum::Json(state.status_json()).into_response()
}

async fn metrics(State(state): Shared) -> Response {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        state.metrics_text(),
    )
        .into_response()
}

/// Where the health server listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HealthListen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl HealthListen {
    /// The listener `[health]` asks for; `Ok(None)` when it is disabled. The error names the key.
    pub fn from_config(config: &HealthConfig) -> Result<Option<Self>, String> {
        if !config.enabled {
            return Ok(None);
        }
        let socket = config.socket.trim();
        if !socket.is_empty() {
            return Ok(Some(HealthListen::Unix(PathBuf::from(socket))));
        }
        config
            .listen
            .trim()
            .parse()
            .map(|addr| Some(HealthListen::Tcp(addr)))
            .map_err(|err| format!("health.listen ({:?}): {err}", config.listen))
    }

    /// The config key that chose this listener, for error messages.
    pub fn config_key(&self) -> &'static str {
        match self {
            HealthListen::Tcp(_) => "health.listen",
            HealthListen::Unix(_) => "health.socket",
        }
    }
}

impl std::fmt::Display for HealthListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HealthListen::Tcp(addr) => write!(f, "http://{addr}"),
            HealthListen::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// A running health server.
#[derive(Debug)]
pub struct HealthServer {
    local_addr: Option<SocketAddr>,
    socket_path: Option<PathBuf>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl HealthServer {
    /// The bound TCP address (the real port when `:0` was asked for).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// The Unix socket served on.
    pub fn socket_path(&self) -> Option<&Path> {
        self.socket_path.as_deref()
    }

    /// Stops serving, waits for open answers to finish, removes the socket file.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
        if let Some(path) = &self.socket_path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Starts the `[health]` server of `worker`, unless disabled; logs where it listens. An error
/// names the key to change (the listener cannot be bound, or the setting is not usable).
pub async fn start_for(
    config: &Config,
    worker: &Worker,
    shutdown: &Shutdown,
) -> Result<Option<HealthServer>, String> {
    use super::health::HealthTimings;
    let client = worker.client();
    let state = HealthState::new(
        worker.status_board().clone(),
        shutdown.clone(),
        HealthTimings::from_config(config),
        HealthInfo::new(client.identity(), client.endpoint()),
    )
    .with_api_requests(worker.request_counters().clone());
    start_configured(&config.health, state).await
}

/// Starts the server `[health]` asks for on `view`, unless disabled; logs where it listens. An
/// error names the key to change.
pub async fn start_configured(
    health: &HealthConfig,
    view: impl HealthView,
) -> Result<Option<HealthServer>, String> {
    let listen = match HealthListen::from_config(health) {
        Ok(Some(listen)) => listen,
        Ok(None) => return Ok(None),
        Err(err) => return Err(err.to_string()),
    };
    match start(&listen, view).await {
        Ok(server) => {
            // The bound address, not the configured one: `:0` picks a free port.
            let serving = server
                .local_addr()
                .map(|addr| format!("http://{addr}"))
                .unwrap_or_else(|| listen.to_string());
            tracing::info!(listen = %serving, "health server listening: /healthz /readyz /status /metrics");
            Ok(Some(server))
        }
        Err(err) => Err(format!(
            "cannot serve health on {listen} ({}): {err}; choose another {} or set health.enabled = false",
            listen.config_key(),
            listen.config_key()
        )),
    }
}

/// Binds `listen` and serves `state` on it until [`HealthServer::stop`]. Binding happens before
/// this returns, so a port in use is reported to the caller at start-up.
pub async fn start(listen: &HealthListen, state: impl HealthView) -> std::io::Result<HealthServer> {
    let app = router(state);
    let stop = CancellationToken::new();
    let (task, local_addr, socket_path) = match listen {
        HealthListen::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            let local_addr = listener.local_addr()?;
            (serve(listener, app, &stop), Some(local_addr), None)
        }
        HealthListen::Unix(path) => {
            remove_stale_socket(path)?;
            let listener = tokio::net::UnixListener::bind(path)?;
            (serve(listener, app, &stop), None, Some(path.clone()))
        }
    };
    Ok(HealthServer {
        local_addr,
        socket_path,
        stop,
        task,
    })
}

/// Serves `app` on a bound listener until `stop` is cancelled.
fn serve<L>(listener: L, app: Router, stop: &CancellationToken) -> JoinHandle<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let shutdown = stop.clone().cancelled_owned();
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %err, "the health server stopped");
        }
    })
}

/// A socket file left by a worker that died is in the way of binding; anything else at that
/// path is not ours to delete.
pub fn remove_stale_socket(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path),
        Ok(_) => Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            ),
        )),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_default_health_is_served_on_loopback_only() {
        match HealthListen::from_config(&HealthConfig::default()) {
            Ok(Some(HealthListen::Tcp(addr))) => {
                assert!(addr.ip().is_loopback(), "{addr}");
            }
            other => panic!("expected a TCP listener, got {other:?}"),
        }
    }

    #[test]
    fn credentials_in_an_endpoint_url_are_not_shown() {
        assert_eq!(
            without_userinfo("http://op:s3cret@127.0.0.1:2123"),
            "http://[REDACTED]@127.0.0.1:2123"
        );
        assert_eq!(
            without_userinfo("http://127.0.0.1:2123"),
            "http://127.0.0.1:2123"
        );
        assert_eq!(
            without_userinfo("unix:/run/agh/daemon.sock"),
            "unix:/run/agh/daemon.sock"
        );
    }
}
