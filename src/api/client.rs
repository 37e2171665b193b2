//! `AghClient`, the transport core: over a Unix socket or loopback TCP, it builds requests, sends
//! them under the retry rule of their call kind and decodes the answers; `endpoints.rs` holds the
//! one method per endpoint.
//!
//! Every call carries the identity headers and, when it has a body, a JSON body. Answers are read
//! under a size cap before they are parsed. Retries depend on the kind of call:
//! reads retry retryable failures within a budget; long-polls treat their own deadline as an
//! ordinary answer; claims, heartbeats and spawns are never retried here (the caller decides);
//! terminal calls retry transport-level failures within a bounded budget.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::counters::{ApiRequestCounters, class_of};
use super::endpoint::{Endpoint, Identity};
use super::error::{ApiError, ErrorKind};

/// Header names of the AGH identity.
pub const HEADER_SESSION: &str = "X-AGH-Session-ID";
/// Agent name header.
pub const HEADER_AGENT: &str = "X-AGH-Agent";
/// Optional workspace header.
pub const HEADER_WORKSPACE: &str = "X-AGH-Workspace-ID";

/// Timeouts, caps and retry budgets of the client.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Deadline for establishing a connection.
    pub connect_timeout: Duration,
    /// Deadline for an ordinary call (not a long-poll).
    pub request_timeout: Duration,
    /// Client-side deadline of a long-poll (claim or recv with `wait`); the server has none.
    pub long_poll_timeout: Duration,
    /// Largest answer body accepted; larger answers fail as `ResponseTooLarge`.
    pub max_response_bytes: usize,
    /// Backoff between retries.
    pub retry: RetryOptions,
}

/// Backoff settings shared by every retrying call kind.
#[derive(Clone, Debug)]
pub struct RetryOptions {
    /// First delay.
    pub initial_backoff: Duration,
    /// Largest single delay.
    pub max_backoff: Duration,
    /// Total time reads may spend retrying.
    pub read_budget: Duration,
    /// Total time complete/fail/release may spend retrying.
    pub terminal_budget: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            long_poll_timeout: Duration::from_secs(30),
            max_response_bytes: 8 * 1024 * 1024,
            retry: RetryOptions::default(),
        }
    }
}

impl Default for RetryOptions {
    fn default() -> Self {
        RetryOptions {
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            read_budget: Duration::from_secs(10),
            terminal_budget: Duration::from_secs(30),
        }
    }
}

impl RetryOptions {
    /// Jittered exponential backoff capped at `max_backoff`, whose delays add up to at most `budget`.
    pub fn backoff(&self, budget: Duration) -> impl BackoffBuilder + Clone {
        ExponentialBuilder::default()
            .with_jitter()
            .with_min_delay(self.initial_backoff)
            .with_max_delay(self.max_backoff)
            .with_factor(2.0)
            .without_max_times()
            .with_total_delay(Some(budget))
    }
}

/// How a call may be retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Retry {
    /// Read-only: retry retryable failures within the read budget.
    Read,
    /// Non-idempotent or caller-paced: one attempt.
    Never,
    /// complete/fail/release: retry transport-level failures within the terminal budget.
    Terminal,
}

/// The typed AGH agent API client. Cheap to clone.
#[derive(Clone)]
pub struct AghClient {
    http: reqwest::Client,
    base: String,
    endpoint: Endpoint,
    identity: Identity,
    pub(super) options: ClientOptions,
    /// Where each request's outcome is counted, when someone reads the counts (`/metrics`).
    counters: Option<Arc<ApiRequestCounters>>,
    /// Set once the session is known to be stopping: every later call fails here, unsent.
    /// Shared by the clones, so the loop, the lease tasks and coordination all fall silent.
    silenced: Arc<AtomicBool>,
}

impl std::fmt::Debug for AghClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AghClient")
            .field("endpoint", &self.endpoint)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl AghClient {
    /// Builds a client for `endpoint` speaking as `identity`.
    pub fn new(
        endpoint: Endpoint,
        identity: Identity,
        options: ClientOptions,
    ) -> Result<Self, ApiError> {
        let builder = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .user_agent(concat!("agh-worker/", env!("CARGO_PKG_VERSION")))
            .no_proxy()
            // AGH serves plain HTTP only (loopback or a Unix socket): an empty root store
            // keeps the client from loading the system's certificates for nothing.
            .tls_certs_only([])
            .pool_idle_timeout(Duration::from_secs(50))
            .redirect(reqwest::redirect::Policy::none());
        let (builder, base) = match &endpoint {
            Endpoint::Unix(path) => (builder.unix_socket(path.clone()), "http://unix".to_string()),
            Endpoint::Http(base) => (builder, base.clone()),
        };
        let http = builder.build().map_err(|err| {
            ApiError::local(
                "client",
                ErrorKind::Transport,
                format!("building the HTTP client: {err}"),
            )
        })?;
        Ok(AghClient {
            http,
            base,
            endpoint,
            identity,
            options,
            counters: None,
            silenced: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The same endpoint and connection pool, speaking as `identity`, with a silence of its own
    /// and no request counters: one per attached session of a resident worker.
    pub fn for_identity(&self, identity: Identity) -> Self {
        AghClient {
            http: self.http.clone(),
            base: self.base.clone(),
            endpoint: self.endpoint.clone(),
            identity,
            options: self.options.clone(),
            counters: None,
            silenced: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Counts every request this client (and its clones) makes into `counters`, by call and
    /// outcome class. Each attempt of a retried call counts once.
    pub fn with_request_counters(mut self, counters: Arc<ApiRequestCounters>) -> Self {
        self.counters = Some(counters);
        self
    }

    pub(super) fn count(&self, call: &'static str, class: &'static str) {
        if let Some(counters) = &self.counters {
            counters.record(call, class);
        }
    }

    /// Sends nothing more, from this client or any of its clones: every call fails at once as
    /// `identity_stale`, not retried. For a session AGH is stopping: it answers 401 to every
    /// agent call from then on (a release included), so calling only adds noise and delay.
    pub fn silence(&self) {
        self.silenced.store(true, Ordering::SeqCst);
    }

    /// Whether [`AghClient::silence`] was called.
    pub fn is_silenced(&self) -> bool {
        self.silenced.load(Ordering::SeqCst)
    }

    /// Where this client sends its calls.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Who this client speaks as.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The options in force.
    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    pub(super) async fn get_json<T: DeserializeOwned>(
        &self,
        call: &'static str,
        path: &str,
        retry: Retry,
    ) -> Result<T, ApiError> {
        self.call(
            call,
            retry,
            self.options.request_timeout,
            || self.request(reqwest::Method::GET, path, None::<&()>),
            &[200],
            |_, body| parse(call, body),
        )
        .await
    }

    pub(super) async fn post_json<B: Serialize, T: DeserializeOwned>(
        &self,
        call: &'static str,
        path: &str,
        body: &B,
        ok: &[u16],
        retry: Retry,
    ) -> Result<T, ApiError> {
        self.call(
            call,
            retry,
            self.options.request_timeout,
            || self.request(reqwest::Method::POST, path, Some(body)),
            ok,
            |_, answer| parse(call, answer),
        )
        .await
    }

    /// Sends with the retry rule of the call kind; answers the status and body of a success.
    pub(super) async fn call<T>(
        &self,
        call: &'static str,
        retry: Retry,
        timeout: Duration,
        make_request: impl Fn() -> Result<reqwest::RequestBuilder, ApiError>,
        ok: &[u16],
        decode: impl Fn(u16, &[u8]) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        // Decoding is part of an attempt: an unreadable answer is retried like a lost one.
        let attempt_once = || async {
            let answer = match self.send_once(call, make_request(), timeout).await {
                Ok((status, body)) if ok.contains(&status) => decode(status, &body),
                Ok((status, body)) => Err(ApiError::from_response(call, status, &body)),
                Err(err) => Err(err),
            };
            self.count(call, class_of(&answer));
            answer
        };
        let budget = match retry {
            Retry::Never => return attempt_once().await,
            Retry::Read => self.options.retry.read_budget,
            Retry::Terminal => self.options.retry.terminal_budget,
        };
        let started = Instant::now();
        let mut delays = self.options.retry.backoff(budget).build();
        let mut attempts = 1;
        loop {
            match attempt_once().await {
                Ok(answer) => return Ok(answer),
                Err(mut err) => {
                    err.attempts = attempts;
                    let retry_this = match retry {
                        Retry::Read => err.is_retryable(),
                        // After an unknown outcome the mutation may have committed; only failures
                        // that prove nothing was decided (or a 5xx, re-checked by the 409 rule) repeat.
                        Retry::Terminal => err.is_retryable(),
                        Retry::Never => false,
                    };
                    let Some(delay) = delays.next() else {
                        return Err(err);
                    };
                    if !retry_this || started.elapsed() + delay > budget {
                        return Err(err);
                    }
                    tracing::debug!(call, error = %err, delay_ms = delay.as_millis() as u64, "retrying");
                    tokio::time::sleep(delay).await;
                    attempts += 1;
                }
            }
        }
    }

    /// After [`AghClient::silence`], every call (a stream's opening included) fails here, unsent.
    pub(super) fn refuse_if_silenced(&self, call: &'static str) -> Result<(), ApiError> {
        if self.is_silenced() {
            return Err(ApiError::local(
                call,
                ErrorKind::IdentityStale,
                super::error::NOT_SENT_STOPPING,
            ));
        }
        Ok(())
    }

    /// One HTTP exchange under `timeout`, the body read under the size cap.
    pub(super) async fn send_once(
        &self,
        call: &'static str,
        request: Result<reqwest::RequestBuilder, ApiError>,
        timeout: Duration,
    ) -> Result<(u16, Vec<u8>), ApiError> {
        self.refuse_if_silenced(call)?;
        let request = request?;
        let exchange = async {
            let response = request
                .send()
                .await
                .map_err(|err| transport_error(call, &err))?;
            read_capped(call, response, self.options.max_response_bytes).await
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(ApiError::local(
                call,
                ErrorKind::Timeout,
                format!("no complete answer within {} ms", timeout.as_millis()),
            )),
        }
    }

    pub(super) fn request<B: Serialize>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<reqwest::RequestBuilder, ApiError> {
        let mut builder = self.request_accepting(method, path, "application/json")?;
        if let Some(body) = body {
            let bytes = serde_json::to_vec(body).map_err(|err| {
                ApiError::local(
                    "encode",
                    ErrorKind::Validation,
                    format!("encoding the request body: {err}"),
                )
            })?;
            builder = builder
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(bytes);
        }
        Ok(builder)
    }

    /// A request with the identity headers, accepting `accept`.
    pub(super) fn request_accepting(
        &self,
        method: reqwest::Method,
        path: &str,
        accept: &'static str,
    ) -> Result<reqwest::RequestBuilder, ApiError> {
        let mut builder = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .header(HEADER_SESSION, self.identity.session_id.as_str())
            .header(HEADER_AGENT, self.identity.agent.as_str())
            .header(reqwest::header::ACCEPT, accept);
        if let Some(workspace) = self
            .identity
            .workspace_id
            .as_deref()
            .filter(|w| !w.is_empty())
        {
            builder = builder.header(HEADER_WORKSPACE, workspace);
        }
        Ok(builder)
    }
}

/// The status and the body of an answer, read under the size cap.
pub(super) async fn read_capped(
    call: &'static str,
    mut response: reqwest::Response,
    cap: usize,
) -> Result<(u16, Vec<u8>), ApiError> {
    let status = response.status().as_u16();
    if let Some(length) = response.content_length()
        && length > cap as u64
    {
        return Err(too_large(call, status, cap));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|err| transport_error(call, &err))?
    {
        if body.len() + chunk.len() > cap {
            return Err(too_large(call, status, cap));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, body))
}

pub(super) fn parse<T: DeserializeOwned>(call: &'static str, body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|err| {
        let shown = String::from_utf8_lossy(&body[..body.len().min(120)]).replace('\n', " ");
        ApiError::local(
            call,
            ErrorKind::MalformedBody,
            format!("the answer is not the expected JSON ({err}); it starts with {shown:?}"),
        )
    })
}

fn too_large(call: &'static str, status: u16, cap: usize) -> ApiError {
    let mut err = ApiError::local(
        call,
        ErrorKind::ResponseTooLarge,
        format!("the answer exceeds the {cap}-byte cap (agh.max_response_bytes)"),
    );
    err.status = Some(status);
    err
}

pub(super) fn transport_error(call: &'static str, err: &reqwest::Error) -> ApiError {
    // A connect timeout means the daemon was never reached: that is a transport failure. As a
    // `Timeout` it would read as the ordinary end of a long poll (`DeadlineReached`, an empty
    // recv), hiding an unreachable daemon behind "nothing to do".
    let kind = if err.is_builder() {
        // The request could not even be built (an identity value that is not a valid header,
        // a malformed URL): nothing was sent, and sending again cannot help.
        ErrorKind::Validation
    } else if err.is_timeout() && !err.is_connect() {
        ErrorKind::Timeout
    } else {
        ErrorKind::Transport
    };
    // reqwest's Display omits the root cause (refused, reset, no such file): the chain has it.
    ApiError::local(call, kind, crate::util::error::chain(err))
}

/// An id as one encoded path segment, or a local validation error for ids that cannot be one:
/// empty, `.` or `..` would be removed by URL normalisation (even percent-encoded), so the call
/// would reach another route (`tasks/../complete` is `/api/agent/complete`).
pub(super) fn path_segment(call: &'static str, what: &str, raw: &str) -> Result<String, ApiError> {
    match raw.trim() {
        "" => Err(ApiError::local(
            call,
            ErrorKind::Validation,
            format!("{what} is empty"),
        )),
        "." | ".." => Err(ApiError::local(
            call,
            ErrorKind::Validation,
            format!("{what} {raw:?} is not an id"),
        )),
        _ => Ok(encode_segment(raw)),
    }
}

/// Percent-encodes one path segment; ids are opaque and must not change the route.
pub fn encode_segment(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for byte in raw.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_cannot_escape_their_route() {
        assert_eq!(encode_segment("run-0123abcd"), "run-0123abcd");
        assert_eq!(encode_segment("../me"), "..%2Fme");
        assert_eq!(encode_segment("a b?c"), "a%20b%3Fc");
    }

    #[test]
    fn backoff_delays_grow_but_stay_under_the_cap_and_budget() {
        let options = RetryOptions {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(800),
            read_budget: Duration::from_secs(3),
            terminal_budget: Duration::from_secs(3),
        };
        let delays: Vec<Duration> = options.backoff(Duration::from_secs(3)).build().collect();
        assert!(!delays.is_empty());
        // Jitter may add up to one base delay on top, so a single delay stays under twice the cap.
        assert!(
            delays.iter().all(|d| *d <= Duration::from_millis(1600)),
            "{delays:?}"
        );
        let total: Duration = delays.iter().sum();
        assert!(total <= Duration::from_secs(3), "{total:?}");
    }
}
