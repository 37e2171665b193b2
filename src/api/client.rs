//! `AghClient`: one method per agent endpoint, over a Unix socket or loopback TCP.
//!
//! Every call carries the identity headers and, when it has a body, a JSON body. Answers are read
//! under a size cap before they are parsed. Retries depend on the kind of call:
//! reads retry retryable failures within a budget; long-polls treat their own deadline as an
//! ordinary answer; claims, heartbeats and spawns are never retried here (the caller decides);
//! terminal calls retry transport-level failures within a bounded budget.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::counters::{ApiRequestCounters, CLASS_DEADLINE, CLASS_OK, class_of};
use super::endpoint::{Endpoint, Identity};
use super::error::{ApiError, ErrorKind};
use super::types::*;

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
enum Retry {
    /// Read-only: retry retryable failures within the read budget.
    Read,
    /// Non-idempotent or caller-paced: one attempt.
    Never,
    /// complete/fail/release: retry transport-level failures within the terminal budget.
    Terminal,
}

/// What a claim-next answered.
#[derive(Clone, Debug, PartialEq)]
pub enum ClaimOutcome {
    /// 200: a run is now leased to this session.
    Claimed(Box<Claim>),
    /// 204: nothing claimable right now.
    NothingToDo,
    /// A waiting claim reached the client's deadline without an answer. Nothing should be
    /// claimed, but a claim committed at the last instant would be lost: check `me` when it matters.
    DeadlineReached,
}

/// Query of `recv`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecvOptions {
    /// Block until a message for the channel is queued (bounded by the long-poll deadline).
    pub wait: bool,
    /// Return at most this many (oldest first).
    pub limit: Option<u32>,
}

/// The answer of the soul endpoints: the soul object, and whether the daemon judged it valid (200) or not (422).
#[derive(Clone, Debug, PartialEq)]
pub struct SoulAnswer {
    pub soul: Soul,
    pub http_status: u16,
}

/// The typed AGH agent API client. Cheap to clone.
#[derive(Clone)]
pub struct AghClient {
    http: reqwest::Client,
    base: String,
    endpoint: Endpoint,
    identity: Identity,
    options: ClientOptions,
    /// Where each request's outcome is counted, when someone reads the counts (`/metrics`).
    counters: Option<Arc<ApiRequestCounters>>,
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
        })
    }

    /// Counts every request this client (and its clones) makes into `counters`, by call and
    /// outcome class. Each attempt of a retried call counts once.
    pub fn with_request_counters(mut self, counters: Arc<ApiRequestCounters>) -> Self {
        self.counters = Some(counters);
        self
    }

    fn count(&self, call: &'static str, class: &'static str) {
        if let Some(counters) = &self.counters {
            counters.record(call, class);
        }
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

    /// `GET /api/agent/me`
    pub async fn me(&self) -> Result<Me, ApiError> {
        let answer: MeResponse = self.get_json("me", "/api/agent/me", Retry::Read).await?;
        Ok(answer.me)
    }

    /// `GET /api/agent/context`
    pub async fn context(&self) -> Result<AgentContext, ApiError> {
        let answer: ContextResponse = self
            .get_json("context", "/api/agent/context", Retry::Read)
            .await?;
        Ok(answer.context)
    }

    /// `GET /api/agent/channels`
    pub async fn channels(&self) -> Result<Vec<CoordinationChannel>, ApiError> {
        let answer: ChannelsResponse = self
            .get_json("channels", "/api/agent/channels", Retry::Read)
            .await?;
        Ok(answer.channels)
    }

    /// `GET /api/agent/channels/{channel}/recv`. A waiting recv that reaches the client's
    /// deadline answers an empty list: that is the ordinary end of a long-poll.
    pub async fn recv(
        &self,
        channel: &str,
        options: RecvOptions,
    ) -> Result<Vec<ChannelMessage>, ApiError> {
        let mut path = format!(
            "/api/agent/channels/{}/recv",
            path_segment("recv", "channel", channel)?
        );
        let mut query = Vec::new();
        if options.wait {
            query.push("wait=true".to_string());
        }
        if let Some(limit) = options.limit {
            query.push(format!("limit={limit}"));
        }
        if !query.is_empty() {
            path.push('?');
            path.push_str(&query.join("&"));
        }
        if options.wait {
            let request = self.request(reqwest::Method::GET, &path, None::<&()>);
            let answer = self
                .send_once("recv", request, self.options.long_poll_timeout)
                .await;
            self.count(
                "recv",
                match &answer {
                    Ok((200, _)) => CLASS_OK,
                    Ok((status, body)) => {
                        ApiError::from_response("recv", *status, body).kind.as_str()
                    }
                    Err(err) if err.kind == ErrorKind::Timeout => CLASS_DEADLINE,
                    Err(err) => err.kind.as_str(),
                },
            );
            match answer {
                Ok((200, body)) => Ok(parse::<RecvResponse>("recv", &body)?.messages),
                Ok((status, body)) => Err(ApiError::from_response("recv", status, &body)),
                Err(err) if err.kind == ErrorKind::Timeout => Ok(Vec::new()),
                Err(err) => Err(err),
            }
        } else {
            let answer: RecvResponse = self.get_json("recv", &path, Retry::Read).await?;
            Ok(answer.messages)
        }
    }

    /// `POST /api/agent/channels/{channel}/send`. Retried only when an idempotency key makes it safe.
    pub async fn send(
        &self,
        channel: &str,
        body: &SendRequest,
    ) -> Result<ChannelMessage, ApiError> {
        let path = format!(
            "/api/agent/channels/{}/send",
            path_segment("send", "channel", channel)?
        );
        let retry = if body.idempotency_key.is_some() {
            Retry::Terminal
        } else {
            Retry::Never
        };
        let answer: MessageResponse = self.post_json("send", &path, body, &[202], retry).await?;
        Ok(answer.message)
    }

    /// `POST /api/agent/channels/reply`. Retried only when an idempotency key makes it safe.
    pub async fn reply(&self, body: &ReplyRequest) -> Result<ChannelMessage, ApiError> {
        let retry = if body.idempotency_key.is_some() {
            Retry::Terminal
        } else {
            Retry::Never
        };
        let answer: MessageResponse = self
            .post_json("reply", "/api/agent/channels/reply", body, &[202], retry)
            .await?;
        Ok(answer.message)
    }

    /// `GET /api/agent/coordinator/config`
    pub async fn coordinator_config(&self) -> Result<CoordinatorConfig, ApiError> {
        let answer: CoordinatorResponse = self
            .get_json(
                "coordinator-config",
                "/api/agent/coordinator/config",
                Retry::Read,
            )
            .await?;
        Ok(answer.coordinator)
    }

    /// `GET /api/agent/soul`: 200 and 422 both carry the soul object.
    pub async fn soul(&self) -> Result<SoulAnswer, ApiError> {
        self.call(
            "soul",
            Retry::Read,
            self.options.request_timeout,
            || self.request(reqwest::Method::GET, "/api/agent/soul", None::<&()>),
            &[200, 422],
            |status, body| self.soul_answer("soul", status, body),
        )
        .await
    }

    /// `POST /api/agent/soul/validate`: 200 valid, 422 invalid; both carry the soul object.
    pub async fn validate_soul(
        &self,
        request: &SoulValidateRequest,
    ) -> Result<SoulAnswer, ApiError> {
        self.call(
            "soul-validate",
            Retry::Read,
            self.options.request_timeout,
            || {
                self.request(
                    reqwest::Method::POST,
                    "/api/agent/soul/validate",
                    Some(request),
                )
            },
            &[200, 422],
            |status, body| self.soul_answer("soul-validate", status, body),
        )
        .await
    }

    fn soul_answer(
        &self,
        call: &'static str,
        status: u16,
        body: &[u8],
    ) -> Result<SoulAnswer, ApiError> {
        // A 422 that is an error envelope rather than a soul object is a real error.
        if status == 422 {
            let value: serde_json::Value = parse(call, body)?;
            if value.get("error").is_some() && value.get("validation_status").is_none() {
                return Err(ApiError::from_response(call, status, body));
            }
        }
        Ok(SoulAnswer {
            soul: parse(call, body)?,
            http_status: status,
        })
    }

    /// `POST /api/agent/spawn`. Never retried: the daemon does not deduplicate spawns.
    pub async fn spawn(&self, request: &SpawnRequest) -> Result<Spawned, ApiError> {
        let answer: SpawnResponse = self
            .post_json("spawn", "/api/agent/spawn", request, &[201], Retry::Never)
            .await?;
        Ok(answer.spawn)
    }

    /// `POST /api/agent/tasks/claim-next`. Never retried here: a retry could hit the one-lease
    /// rule for a claim the first attempt made; the worker loop decides.
    pub async fn claim_next(&self, request: &ClaimRequest) -> Result<ClaimOutcome, ApiError> {
        let outcome = self.claim_next_once(request).await;
        self.count(
            "claim-next",
            match &outcome {
                Ok(ClaimOutcome::DeadlineReached) => CLASS_DEADLINE,
                Ok(_) => CLASS_OK,
                Err(err) => err.kind.as_str(),
            },
        );
        outcome
    }

    async fn claim_next_once(&self, request: &ClaimRequest) -> Result<ClaimOutcome, ApiError> {
        let deadline = if request.wait {
            self.options.long_poll_timeout
        } else {
            self.options.request_timeout
        };
        let http_request = self.request(
            reqwest::Method::POST,
            "/api/agent/tasks/claim-next",
            Some(request),
        );
        match self.send_once("claim-next", http_request, deadline).await {
            Ok((200, body)) => {
                let answer: ClaimResponse = parse("claim-next", &body)?;
                if answer.claim.run.id.is_empty() {
                    return Err(ApiError::local(
                        "claim-next",
                        ErrorKind::MalformedBody,
                        "the claim has no run id",
                    ));
                }
                Ok(ClaimOutcome::Claimed(Box::new(answer.claim)))
            }
            Ok((204, _)) => Ok(ClaimOutcome::NothingToDo),
            Ok((status, body)) => Err(ApiError::from_response("claim-next", status, &body)),
            Err(err) if err.kind == ErrorKind::Timeout && request.wait => {
                Ok(ClaimOutcome::DeadlineReached)
            }
            Err(err) => Err(err),
        }
    }

    /// `POST /api/agent/tasks/{run}/heartbeat`. One attempt: the lease task paces its own retries.
    pub async fn heartbeat(
        &self,
        run_id: &str,
        request: &HeartbeatRequest,
    ) -> Result<LeaseSummary, ApiError> {
        self.lease_call("heartbeat", run_id, request, Retry::Never)
            .await
    }

    /// `POST /api/agent/tasks/{run}/complete`
    pub async fn complete(
        &self,
        run_id: &str,
        request: &CompleteRequest,
    ) -> Result<LeaseSummary, ApiError> {
        self.lease_call("complete", run_id, request, Retry::Terminal)
            .await
    }

    /// `POST /api/agent/tasks/{run}/fail`
    pub async fn fail(
        &self,
        run_id: &str,
        request: &FailRequest,
    ) -> Result<LeaseSummary, ApiError> {
        self.lease_call("fail", run_id, request, Retry::Terminal)
            .await
    }

    /// `POST /api/agent/tasks/{run}/release`
    pub async fn release(
        &self,
        run_id: &str,
        request: &ReleaseRequest,
    ) -> Result<LeaseSummary, ApiError> {
        self.lease_call("release", run_id, request, Retry::Terminal)
            .await
    }

    /// `GET /api/task-runs/{run}`: the daemon's own record of a run, outside the agent API. It
    /// takes the identity headers like an agent call; the worker reads it to learn whether a
    /// terminal call whose answer was lost took effect.
    pub async fn task_run(&self, run_id: &str) -> Result<TaskRunDetail, ApiError> {
        let path = format!(
            "/api/task-runs/{}",
            path_segment("task-run", "run id", run_id)?
        );
        let answer: TaskRunResponse = self.get_json("task-run", &path, Retry::Read).await?;
        Ok(answer.run)
    }

    async fn lease_call<B: Serialize>(
        &self,
        call: &'static str,
        run_id: &str,
        body: &B,
        retry: Retry,
    ) -> Result<LeaseSummary, ApiError> {
        let path = format!(
            "/api/agent/tasks/{}/{call}",
            path_segment(call, "run id", run_id)?
        );
        let answer: LeaseResponse = self.post_json(call, &path, body, &[200], retry).await?;
        Ok(answer.lease)
    }

    async fn get_json<T: DeserializeOwned>(
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

    async fn post_json<B: Serialize, T: DeserializeOwned>(
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
    async fn call<T>(
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

    /// One HTTP exchange under `timeout`, the body read under the size cap.
    async fn send_once(
        &self,
        call: &'static str,
        request: Result<reqwest::RequestBuilder, ApiError>,
        timeout: Duration,
    ) -> Result<(u16, Vec<u8>), ApiError> {
        let request = request?;
        let exchange = async {
            let mut response = request
                .send()
                .await
                .map_err(|err| transport_error(call, &err))?;
            let status = response.status().as_u16();
            let cap = self.options.max_response_bytes;
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

    fn request<B: Serialize>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<reqwest::RequestBuilder, ApiError> {
        let mut builder = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .header(HEADER_SESSION, self.identity.session_id.as_str())
            .header(HEADER_AGENT, self.identity.agent.as_str())
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(workspace) = self
            .identity
            .workspace_id
            .as_deref()
            .filter(|w| !w.is_empty())
        {
            builder = builder.header(HEADER_WORKSPACE, workspace);
        }
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
}

fn parse<T: DeserializeOwned>(call: &'static str, body: &[u8]) -> Result<T, ApiError> {
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

fn transport_error(call: &'static str, err: &reqwest::Error) -> ApiError {
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
fn path_segment(call: &'static str, what: &str, raw: &str) -> Result<String, ApiError> {
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
