//! The local operations HTTP surface: `/healthz` (the loop is alive), `/readyz` (the worker can
//! take work), `/status` (JSON of the live state) and `/metrics` (Prometheus text).
//!
//! One way only: the worker loop and its lease tasks write the [`StatusBoard`] and the client
//! counts its requests; this server only reads them. It needs no credentials and shows none
//! (identity ids and the endpoint, never a token or key), and serves on loopback or a Unix socket.
//!
//! The rules, as pure functions so they are tested without a server:
//! - **healthy** ([`liveness`]): the loop ticked within [`HealthTimings::liveness_threshold`].
//! - **ready** ([`readiness`]): identity valid, not draining or stopped, AGH contact within
//!   [`HealthTimings::contact_threshold`], and no handler unhealthy (a handler is unhealthy from a
//!   problem only a person can fix, such as Agentuity refusing a coder handler's key, until a run
//!   with it succeeds). An idle worker's open long-poll claim counts as contact when it ends with
//!   nothing to do, so an idle healthy worker stays ready.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

// The status board keeps tokio's clock (see `worker::status`).
use tokio::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{ApiRequestCounters, ClientOptions, Endpoint, Identity};
use crate::config::{Config, HealthConfig};
use crate::util::redact::without_userinfo;
use crate::worker::{
    Shutdown, StatusBoard, UnhealthyHandler, WorkerSettings, WorkerState, WorkerStatus,
};

/// The crate version, as `/status` and `agh_worker_build_info` report it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Content type of `/metrics`: prometheus-client writes the OpenMetrics text format, which
/// Prometheus scrapes natively.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The intervals the health rules are derived from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthTimings {
    /// Client deadline of a long-poll claim (`agh.long_poll_timeout_ms`).
    pub long_poll: Duration,
    /// Deadline of an ordinary call (`agh.request_timeout_ms`).
    pub request_timeout: Duration,
    /// Time between heartbeats (`worker.heartbeat_every_seconds`).
    pub heartbeat_every: Duration,
    /// Longest backoff pause of the loop (`retry.max_backoff_ms`).
    pub max_backoff: Duration,
    /// Pause between probes of a stale identity (`worker.identity_probe_seconds`).
    pub identity_probe: Duration,
}

impl HealthTimings {
    /// The timings of the configuration.
    pub fn from_config(config: &Config) -> Self {
        HealthTimings {
            long_poll: config.agh.long_poll_timeout(),
            request_timeout: config.agh.request_timeout(),
            heartbeat_every: config.worker.heartbeat_every(),
            max_backoff: config.retry.max_backoff(),
            identity_probe: config.worker.identity_probe(),
        }
    }

    /// The timings of a worker built from its parts (tests, the demo).
    pub fn from_parts(settings: &WorkerSettings, client: &ClientOptions) -> Self {
        HealthTimings {
            long_poll: client.long_poll_timeout,
            request_timeout: client.request_timeout,
            heartbeat_every: settings.heartbeat_every,
            max_backoff: settings.max_backoff,
            identity_probe: settings.identity_probe,
        }
    }

    /// How long the loop may go without a tick before `/healthz` says stale: twice the longest
    /// wait the loop legitimately makes between ticks (a long-poll claim, a heartbeat interval
    /// while a run is in hand, a backoff pause, an identity probe pause), plus one request
    /// timeout for the call in flight at its end. Defaults: 2 × 30 s + 10 s = 70 s.
    pub fn liveness_threshold(&self) -> Duration {
        let longest_wait = self
            .long_poll
            .max(self.heartbeat_every)
            .max(self.max_backoff)
            .max(self.identity_probe);
        longest_wait * 2 + self.request_timeout
    }

    /// How old the last AGH contact may be for `/readyz`: twice the heartbeat interval, but at
    /// least one long-poll plus a request timeout, because an idle worker hears nothing from the
    /// daemon while its claim waits. Defaults: max(40 s, 30 s + 10 s) = 40 s.
    pub fn contact_threshold(&self) -> Duration {
        (self.heartbeat_every * 2).max(self.long_poll + self.request_timeout)
    }
}

/// What `/healthz` answers.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Liveness {
    /// `ok` or `stale`.
    pub status: &'static str,
    pub last_tick_seconds_ago: f64,
    pub threshold_seconds: f64,
}

impl Liveness {
    pub fn is_ok(&self) -> bool {
        self.status == "ok"
    }
}

/// The liveness rule: the loop ticked within the threshold.
pub fn liveness(status: &WorkerStatus, now: Instant, timings: &HealthTimings) -> Liveness {
    let age = now.saturating_duration_since(status.last_tick);
    let threshold = timings.liveness_threshold();
    Liveness {
        status: if age <= threshold { "ok" } else { "stale" },
        last_tick_seconds_ago: age.as_secs_f64(),
        threshold_seconds: threshold.as_secs_f64(),
    }
}

/// Why the worker is not ready; stable, low-cardinality codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotReady {
    /// The identity was rejected (session stopped or unknown), or has not been checked yet.
    IdentityNotValid,
    /// A shutdown began: no new work is taken.
    Draining,
    /// The loop has ended.
    Stopped,
    /// No answer from AGH within the contact threshold (or never).
    NoRecentContact,
    /// A handler cannot work until a person acts (`unhealthy_handlers` says which and why).
    HandlerUnhealthy,
}

/// An unhealthy handler as `/readyz` and `/status` show it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HandlerProblem {
    pub name: String,
    /// What is wrong and what to do; never a secret.
    pub reason: String,
    /// When it became unhealthy, in unix seconds.
    pub since: f64,
    pub since_seconds_ago: f64,
}

impl HandlerProblem {
    fn new(handler: &UnhealthyHandler, now: Instant) -> Self {
        HandlerProblem {
            name: handler.name.clone(),
            reason: handler.reason.clone(),
            since: unix_seconds(handler.since),
            since_seconds_ago: now
                .saturating_duration_since(handler.since_instant)
                .as_secs_f64(),
        }
    }
}

/// What `/readyz` answers.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: &'static str,
    /// Empty when ready.
    pub reasons: Vec<NotReady>,
    pub state: WorkerState,
    pub last_contact_seconds_ago: Option<f64>,
    pub contact_threshold_seconds: f64,
    /// Handlers that cannot work until a person acts, by name; empty when all can.
    pub unhealthy_handlers: Vec<HandlerProblem>,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.reasons.is_empty()
    }
}

/// The readiness rule: identity valid, not stopping, AGH heard from recently, and every handler
/// healthy.
/// `stopping` is the shutdown signal itself, so readiness drops the moment a drain begins,
/// before the loop has noticed it.
pub fn readiness(
    status: &WorkerStatus,
    stopping: bool,
    now: Instant,
    timings: &HealthTimings,
) -> Readiness {
    let mut reasons = Vec::new();
    if !status.identity_ok {
        reasons.push(NotReady::IdentityNotValid);
    }
    if status.state == WorkerState::Stopped {
        reasons.push(NotReady::Stopped);
    } else if stopping || status.state == WorkerState::Draining {
        reasons.push(NotReady::Draining);
    }
    let contact_age = status
        .last_contact_instant
        .map(|at| now.saturating_duration_since(at));
    let threshold = timings.contact_threshold();
    if contact_age.is_none_or(|age| age > threshold) {
        reasons.push(NotReady::NoRecentContact);
    }
    if !status.unhealthy_handlers.is_empty() {
        reasons.push(NotReady::HandlerUnhealthy);
    }
    Readiness {
        status: if reasons.is_empty() {
            "ready"
        } else {
            "not_ready"
        },
        reasons,
        state: status.state,
        last_contact_seconds_ago: contact_age.map(|age| age.as_secs_f64()),
        contact_threshold_seconds: threshold.as_secs_f64(),
        unhealthy_handlers: status
            .unhealthy_handlers
            .iter()
            .map(|handler| HandlerProblem::new(handler, now))
            .collect(),
    }
}

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
        serde_json::to_value(&body).unwrap_or_else(
            |err| serde_json::json!({"error": format!("the status could not be encoded: {err}")}),
        )
    }

    /// The `/metrics` body now.
    pub fn metrics_text(&self) -> String {
        render_metrics(self)
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

fn unix_seconds(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

type Labels = Vec<(&'static str, &'static str)>;

/// A counter family with one series per label set, each set to its value.
fn counters(
    registry: &mut Registry,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Labels, u64)>,
) {
    let family = Family::<Labels, Counter>::default();
    for (labels, value) in series {
        family.get_or_create(&labels).inc_by(value);
    }
    registry.register(name, help, family);
}

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let counter = Counter::<u64>::default();
    counter.inc_by(value);
    registry.register(name, help, counter);
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let gauge = Gauge::<i64>::default();
    gauge.set(value);
    registry.register(name, help, gauge);
}

const WORKER_STATES: [(WorkerState, &str); 7] = [
    (WorkerState::Starting, "starting"),
    (WorkerState::Idle, "idle"),
    (WorkerState::Running, "running"),
    (WorkerState::BackingOff, "backing_off"),
    (WorkerState::IdentityStale, "identity_stale"),
    (WorkerState::Draining, "draining"),
    (WorkerState::Stopped, "stopped"),
];

/// Builds the metrics from the live state on each scrape: counters are copied from the status
/// board (the worker keeps them), the histograms are the board's own (observed at record time).
pub fn render_metrics(state: &HealthState) -> String {
    let snapshot = state.status.snapshot();
    let now = Instant::now();
    let c = &snapshot.counters;
    let mut registry = Registry::with_prefix("agh_worker");

    registry.register(
        "build",
        "Build information of this agh-worker",
        Info::new(vec![("version", VERSION)]),
    );
    counters(
        &mut registry,
        "runs_claimed",
        "Runs taken on: from a claim, or adopted as an orphaned lease at start-up",
        [
            (vec![("origin", "claimed")], c.runs_claimed),
            (vec![("origin", "adopted")], c.runs_adopted),
        ],
    );
    counters(
        &mut registry,
        "runs_finished",
        "Runs that ended, by outcome",
        [
            (vec![("outcome", "completed")], c.runs_completed),
            (vec![("outcome", "failed")], c.runs_failed),
            (vec![("outcome", "released")], c.runs_released),
            (vec![("outcome", "lease_lost")], c.leases_lost),
            (
                vec![("outcome", "terminal_call_failed")],
                c.terminal_call_failures,
            ),
        ],
    );
    counters(
        &mut registry,
        "heartbeats",
        "Lease renewals, by result",
        [
            (vec![("result", "ok")], c.heartbeats_ok),
            (vec![("result", "failed")], c.heartbeats_failed),
        ],
    );
    counters(
        &mut registry,
        "leases_lost",
        "Leases lost: rejected by the daemon, or given up as renewals failed until the deadline",
        [
            (vec![("reason", "rejected")], c.leases_lost_rejected),
            (vec![("reason", "deadline")], c.leases_lost_deadline),
        ],
    );
    counter(
        &mut registry,
        "claim_errors",
        "Claim-next calls that failed",
        c.claim_errors,
    );
    counters(
        &mut registry,
        "channel_messages",
        "Channel messages routed to handlers (received) and sent for them (sent)",
        [
            (vec![("direction", "received")], c.messages_received),
            (vec![("direction", "sent")], c.messages_sent),
        ],
    );
    counter(
        &mut registry,
        "channel_message_send_failures",
        "Channel messages a handler asked for that could not be sent",
        c.message_send_failures,
    );
    counters(
        &mut registry,
        "spawns",
        "Child sessions asked for by handlers, by result",
        [
            (vec![("result", "created")], c.spawns_created),
            (vec![("result", "refused")], c.spawns_refused),
        ],
    );
    if let Some(requests) = &state.api_requests {
        counters(
            &mut registry,
            "api_requests",
            "AGH API requests (each attempt), by endpoint and outcome class: ok, deadline (a long-poll that ended empty) or an error class",
            requests
                .snapshot()
                .into_iter()
                .map(|(call, class, count)| (vec![("endpoint", call), ("class", class)], count)),
        );
    }

    gauge(
        &mut registry,
        "runs_in_flight",
        "Runs in hand now (0 or 1)",
        i64::from(snapshot.current.is_some()),
    );
    gauge(
        &mut registry,
        "children",
        "Live child sessions created by this worker's handlers",
        i64::try_from(snapshot.children.len()).unwrap_or(i64::MAX),
    );
    let ready = readiness(&snapshot, state.shutdown.is_stopping(), now, &state.timings);
    gauge(
        &mut registry,
        "ready",
        "1 when /readyz answers 200",
        i64::from(ready.is_ready()),
    );
    gauge(
        &mut registry,
        "healthy",
        "1 when /healthz answers 200",
        i64::from(liveness(&snapshot, now, &state.timings).is_ok()),
    );
    gauge(
        &mut registry,
        "identity_ok",
        "1 while AGH accepts the worker's session identity",
        i64::from(snapshot.identity_ok),
    );
    let handlers = Family::<Vec<(&'static str, String)>, Gauge>::default();
    for (name, healthy) in state.status.handler_health().handlers() {
        handlers
            .get_or_create(&vec![("handler", name)])
            .set(i64::from(healthy));
    }
    registry.register(
        "handler_healthy",
        "1 per configured handler that can work, 0 while it cannot until a person acts (see /readyz)",
        handlers,
    );
    let states = Family::<Labels, Gauge>::default();
    for (value, name) in WORKER_STATES {
        states
            .get_or_create(&vec![("state", name)])
            .set(i64::from(snapshot.state == value));
    }
    registry.register(
        "state",
        "The worker loop's state (1 for the current one)",
        states,
    );
    if let Some(age) = ready.last_contact_seconds_ago {
        let gauge = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        gauge.set(age);
        registry.register_with_unit(
            "last_contact_age",
            "Time since AGH last answered",
            Unit::Seconds,
            gauge,
        );
    }
    let uptime = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    uptime.set(state.started.elapsed().as_secs_f64());
    registry.register_with_unit("uptime", "Time since start", Unit::Seconds, uptime);

    let histograms = state.status.histograms();
    registry.register_with_unit(
        "claim_to_start",
        "Claim answer to handler start",
        Unit::Seconds,
        histograms.start_latency.clone(),
    );
    registry.register_with_unit(
        "handler_duration",
        "Handler run time, start to return",
        Unit::Seconds,
        histograms.handler_duration.clone(),
    );

    let mut text = String::new();
    if let Err(err) = encode(&mut text, &registry) {
        // Writing to a String cannot fail; say so in the body rather than panic if it ever does.
        text = format!("# the metrics could not be encoded: {err}\n");
    }
    text
}

/// The routes.
pub fn router(state: HealthState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .with_state(Arc::new(state))
}

type Shared = State<Arc<HealthState>>;

async fn healthz(State(state): Shared) -> Response {
    let answer = state.liveness();
    let code = if answer.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(answer)).into_response()
}

async fn readyz(State(state): Shared) -> Response {
    let answer = state.readiness();
    let code = if answer.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(answer)).into_response()
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

/// Binds `listen` and serves `state` on it until [`HealthServer::stop`]. Binding happens before
/// this returns, so a port in use is reported to the caller at start-up.
pub async fn start(listen: &HealthListen, state: HealthState) -> std::io::Result<HealthServer> {
    let app = router(state);
    let stop = CancellationToken::new();
    let shutdown = stop.clone().cancelled_owned();
    match listen {
        HealthListen::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            let local_addr = listener.local_addr()?;
            let task = tokio::spawn(async move {
                if let Err(err) = axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await
                {
                    tracing::error!(error = %err, "the health server stopped");
                }
            });
            Ok(HealthServer {
                local_addr: Some(local_addr),
                socket_path: None,
                stop,
                task,
            })
        }
        HealthListen::Unix(path) => {
            remove_stale_socket(path)?;
            let listener = tokio::net::UnixListener::bind(path)?;
            let task = tokio::spawn(async move {
                if let Err(err) = axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await
                {
                    tracing::error!(error = %err, "the health server stopped");
                }
            });
            Ok(HealthServer {
                local_addr: None,
                socket_path: Some(path.clone()),
                stop,
                task,
            })
        }
    }
}

/// A socket file left by a worker that died is in the way of binding; anything else at that
/// path is not ours to delete.
fn remove_stale_socket(path: &Path) -> std::io::Result<()> {
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

    fn timings() -> HealthTimings {
        HealthTimings {
            long_poll: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
            heartbeat_every: Duration::from_secs(20),
            max_backoff: Duration::from_secs(10),
            identity_probe: Duration::from_secs(5),
        }
    }

    fn ready_status() -> WorkerStatus {
        let board = StatusBoard::default();
        board.set_state(WorkerState::Idle);
        board.contact();
        board.identity_confirmed();
        board.snapshot()
    }

    #[test]
    fn the_default_thresholds_are_seventy_and_forty_seconds() {
        assert_eq!(timings().liveness_threshold(), Duration::from_secs(70));
        assert_eq!(timings().contact_threshold(), Duration::from_secs(40));
        let mut slow_heartbeat = timings();
        slow_heartbeat.heartbeat_every = Duration::from_secs(60);
        assert_eq!(slow_heartbeat.contact_threshold(), Duration::from_secs(120));
        assert_eq!(
            slow_heartbeat.liveness_threshold(),
            Duration::from_secs(130)
        );
    }

    #[test]
    fn healthz_is_stale_once_the_loop_has_not_ticked_for_longer_than_the_threshold() {
        let status = ready_status();
        let threshold = timings().liveness_threshold();
        let fresh = liveness(&status, status.last_tick + threshold, &timings());
        assert!(fresh.is_ok(), "{fresh:?}");
        let old = liveness(
            &status,
            status.last_tick + threshold + Duration::from_secs(1),
            &timings(),
        );
        assert_eq!(old.status, "stale");
        assert!(old.last_tick_seconds_ago > threshold.as_secs_f64());
    }

    #[test]
    fn an_idle_worker_with_recent_contact_is_ready() {
        let status = ready_status();
        let answer = readiness(&status, false, Instant::now(), &timings());
        assert!(answer.is_ready(), "{answer:?}");
        assert_eq!(answer.status, "ready");
    }

    #[test]
    fn readiness_lists_every_reason_it_is_not_ready() {
        let mut status = ready_status();
        status.identity_ok = false;
        let late = status.last_contact_instant.unwrap_or_else(Instant::now)
            + timings().contact_threshold()
            + Duration::from_secs(1);
        let answer = readiness(&status, true, late, &timings());
        assert_eq!(
            answer.reasons,
            vec![
                NotReady::IdentityNotValid,
                NotReady::Draining,
                NotReady::NoRecentContact
            ]
        );
        assert_eq!(answer.status, "not_ready");
        status.identity_ok = true;
        status.state = WorkerState::Stopped;
        let answer = readiness(&status, true, Instant::now(), &timings());
        assert_eq!(answer.reasons, vec![NotReady::Stopped]);
    }

    #[test]
    fn a_worker_that_never_reached_the_daemon_is_not_ready() {
        let status = StatusBoard::default().snapshot();
        let answer = readiness(&status, false, Instant::now(), &timings());
        assert_eq!(
            answer.reasons,
            vec![NotReady::IdentityNotValid, NotReady::NoRecentContact]
        );
        assert_eq!(answer.last_contact_seconds_ago, None);
    }

    #[test]
    fn an_unhealthy_handler_makes_the_worker_not_ready_and_is_named_with_its_reason() {
        let board = StatusBoard::default();
        board.set_state(WorkerState::Idle);
        board.contact();
        board.identity_confirmed();
        board
            .handler_health()
            .configure([("coder", false), ("exec", false)]);
        let coder = board.handler_health().reporter("coder");
        coder.unhealthy("Agentuity refused the key (401): set AGENTUITY_SDK_KEY");
        let status = board.snapshot();
        let later = status.unhealthy_handlers[0].since_instant + Duration::from_secs(7);
        let answer = readiness(&status, false, later, &timings());
        assert_eq!(answer.reasons, vec![NotReady::HandlerUnhealthy]);
        assert_eq!(answer.status, "not_ready");
        assert_eq!(answer.unhealthy_handlers.len(), 1);
        let problem = &answer.unhealthy_handlers[0];
        assert_eq!(problem.name, "coder");
        assert!(
            problem.reason.contains("refused the key (401)"),
            "{problem:?}"
        );
        assert_eq!(problem.since_seconds_ago, 7.0);
        let body = serde_json::to_value(&answer).unwrap_or_default();
        assert_eq!(body["reasons"], serde_json::json!(["handler_unhealthy"]));
        assert_eq!(body["unhealthy_handlers"][0]["name"], "coder");

        coder.healthy();
        let answer = readiness(&board.snapshot(), false, Instant::now(), &timings());
        assert!(answer.is_ready(), "{answer:?}");
        assert!(answer.unhealthy_handlers.is_empty());
    }

    #[test]
    fn the_handler_health_gauge_has_one_series_per_configured_handler() {
        let board = StatusBoard::default();
        board
            .handler_health()
            .configure([("coder", false), ("exec", false)]);
        board
            .handler_health()
            .reporter("coder")
            .unhealthy("refused");
        let state = HealthState::new(
            board,
            Shutdown::default(),
            timings(),
            HealthInfo {
                version: VERSION.into(),
                session_id: "sess-1".into(),
                agent: "worker".into(),
                workspace_id: None,
                endpoint: "http://127.0.0.1:1".into(),
            },
        );
        let text = state.metrics_text();
        for line in [
            "agh_worker_handler_healthy{handler=\"coder\"} 0",
            "agh_worker_handler_healthy{handler=\"exec\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
        let status = state.status_json();
        let reasons = status["not_ready_reasons"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(reasons.contains(&"handler_unhealthy".into()), "{status}");
        assert_eq!(status["unhealthy_handlers"][0]["reason"], "refused");
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

    #[test]
    fn metrics_carry_every_documented_family_with_the_prefix() {
        let board = StatusBoard::default();
        board.record_start_latency(Duration::from_millis(3));
        board.record_handler_duration(Duration::from_millis(250));
        board.run_ended(crate::worker::RunEnd::Completed);
        let requests = Arc::new(ApiRequestCounters::default());
        requests.record("claim-next", "ok");
        let state = HealthState::new(
            board,
            Shutdown::default(),
            timings(),
            HealthInfo {
                version: VERSION.into(),
                session_id: "sess-1".into(),
                agent: "worker".into(),
                workspace_id: None,
                endpoint: "http://127.0.0.1:1".into(),
            },
        )
        .with_api_requests(requests);
        let text = state.metrics_text();
        for line in [
            &format!("agh_worker_build_info{{version=\"{VERSION}\"}} 1") as &str,
            "agh_worker_runs_finished_total{outcome=\"completed\"} 1",
            "agh_worker_runs_claimed_total{origin=\"claimed\"} 0",
            "agh_worker_heartbeats_total{result=\"ok\"} 0",
            "agh_worker_leases_lost_total{reason=\"deadline\"} 0",
            "agh_worker_api_requests_total{endpoint=\"claim-next\",class=\"ok\"} 1",
            "agh_worker_claim_to_start_seconds_count 1",
            "agh_worker_handler_duration_seconds_count 1",
            "agh_worker_runs_in_flight 0",
            "agh_worker_state{state=\"starting\"} 1",
            "agh_worker_channel_messages_total{direction=\"sent\"} 0",
            "agh_worker_spawns_total{result=\"refused\"} 0",
            "agh_worker_claim_errors_total 0",
            "# EOF",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
    }
}
