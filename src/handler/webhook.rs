//! The `webhook` handler, the sidecar case: POST the task document to a local agent and let its
//! JSON answer decide the outcome.
//!
//! The agent runs beside the worker (on loopback or behind a Unix socket) and does the work; the
//! worker keeps the lease alive and makes the single terminal call. See the README, "The webhook
//! handler", for the contract the sidecar implements.
//!
//! Delivery is at-least-once only where nothing was answered: a transport failure before the
//! status line arrives is retried within a small budget with the same `Idempotency-Key`, and
//! nothing is ever retried once a response started. Everything the sidecar answers is untrusted:
//! bodies are read with a size cap and only excerpts of them reach errors and logs. The signing
//! key never appears in `Debug` output, logs or errors.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{StatusCode, Url};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::{HandlerEvent, Outcome, TaskContext, TaskDocument};
use crate::api::types::ChannelMessage;

/// The key that lets a sidecar drop a duplicate delivery: `<run_id>:<attempt>`.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// The run id of the task being delivered.
pub const RUN_ID_HEADER: &str = "x-agh-worker-run-id";
/// The task id of the task being delivered.
pub const TASK_ID_HEADER: &str = "x-agh-worker-task-id";
/// The attempt number of the run being delivered.
pub const ATTEMPT_HEADER: &str = "x-agh-worker-attempt";
/// On a forwarded channel message: its message id.
pub const MESSAGE_ID_HEADER: &str = "x-agh-worker-message-id";
/// `sha256=<hex HMAC-SHA256 of the exact body>`, when a secret is configured.
pub const SIGNATURE_HEADER: &str = "x-agh-worker-signature";
/// systemd's `LoadCredential=` directory; a relative `secret_file` is resolved against it.
pub const CREDENTIALS_DIRECTORY_VAR: &str = "CREDENTIALS_DIRECTORY";

/// Headers the worker sets itself; a configured header of the same name would contradict them.
const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "transfer-encoding",
    "connection",
    "host",
    IDEMPOTENCY_KEY_HEADER,
];
/// Every `X-AGH-Worker-*` header belongs to the worker, including ones added later.
const RESERVED_HEADER_PREFIX: &str = "x-agh-worker-";

/// How much of an unexpected answer is quoted in the error and the fail metadata.
const EXCERPT_BYTES: usize = 512;
/// First pause between delivery attempts that failed before any response; doubled each time.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_millis(1000);
/// Forwarded messages in flight at once; more are dropped (logged) rather than queued without end.
const MESSAGE_POSTS_IN_FLIGHT: usize = 8;
/// A forwarded message that takes longer than this is abandoned (logged): it is not retried anyway.
const MESSAGE_POST_TIMEOUT: Duration = Duration::from_secs(10);

const LOG_TARGET: &str = "agh_worker::handler::webhook";

type HmacSha256 = Hmac<Sha256>;

/// Configuration of one webhook handler (`handlers[].webhook`).
#[derive(Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// Where the task document is POSTed: `http://127.0.0.1:PORT/path`, or `unix:/path/to.sock`
    /// (then `path` is the request path). Local only: https is refused.
    pub url: String,
    /// The request path when `url` is a Unix socket; default `/`.
    pub path: Option<String>,
    /// Longest wait for the answer, in seconds; the run's own time limit applies when smaller.
    pub timeout_seconds: u64,
    /// Key for the `X-AGH-Worker-Signature` HMAC. Never printed.
    pub secret: Option<String>,
    /// A file holding the key (trailing newlines ignored); relative paths are resolved against
    /// `$CREDENTIALS_DIRECTORY` when set (systemd `LoadCredential=`).
    pub secret_file: Option<PathBuf>,
    /// Where inbound channel messages for the run are POSTed while it runs: an `http://` URL, or
    /// a path (`/messages`) on the same sidecar. Unset: messages are only logged.
    pub messages_url: Option<String>,
    /// How long transport failures before any response (connection refused, reset before the
    /// status line) are retried, in milliseconds.
    pub connect_retry_budget_ms: u64,
    /// Largest answer accepted, in bytes.
    pub max_response_bytes: usize,
    /// Extra static headers sent with every request (e.g. an `Authorization` the sidecar expects).
    pub headers: BTreeMap<String, String>,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            url: String::new(),
            path: None,
            timeout_seconds: 3600,
            secret: None,
            secret_file: None,
            messages_url: None,
            connect_retry_budget_ms: 5000,
            max_response_bytes: 1024 * 1024,
            headers: BTreeMap::new(),
        }
    }
}

/// Written by hand so that the secret, and header values that may carry credentials, never reach
/// a log line or an error through `{:?}`.
impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: BTreeMap<&str, &str> = self
            .headers
            .keys()
            .map(|name| (name.as_str(), "<redacted>"))
            .collect();
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .field("path", &self.path)
            .field("timeout_seconds", &self.timeout_seconds)
            .field(
                "secret",
                &format_args!(
                    "{}",
                    if self.secret.is_some() {
                        "<redacted>"
                    } else {
                        "None"
                    }
                ),
            )
            .field("secret_file", &self.secret_file)
            .field("messages_url", &self.messages_url)
            .field("connect_retry_budget_ms", &self.connect_retry_budget_ms)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("headers", &headers)
            .finish()
    }
}

/// Why a webhook configuration cannot be used. Never carries the secret.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("url is empty: set it to http://127.0.0.1:PORT/PATH or unix:/path/to.sock")]
    MissingUrl,
    #[error("{key} {value:?} {why}")]
    BadUrl {
        key: &'static str,
        value: String,
        why: String,
    },
    #[error("path is set but url is not a unix: socket: put the path into the http:// url instead")]
    PathWithoutSocket,
    #[error("secret and secret_file are both set: keep one")]
    BothSecrets,
    #[error("secret is empty: set a key or remove it")]
    EmptySecret,
    #[error("secret_file {path:?} cannot be read: {source}")]
    SecretFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("secret_file {path:?} is empty: put the key in it")]
    EmptySecretFile { path: PathBuf },
    #[error("headers.{name}: {why}")]
    BadHeader { name: String, why: String },
    #[error("the HTTP client cannot be built: {0}")]
    Client(#[source] reqwest::Error),
}

/// Where requests go.
#[derive(Clone, Debug, PartialEq)]
enum Target {
    /// Plain HTTP over TCP.
    Tcp(Url),
    /// HTTP over a Unix socket; `url` carries the path (its host is a placeholder).
    Unix { socket: PathBuf, url: Url },
}

impl Target {
    fn url(&self) -> &Url {
        match self {
            Target::Tcp(url) | Target::Unix { url, .. } => url,
        }
    }

    /// The URL as the operator wrote it, for messages.
    fn describe(&self) -> String {
        match self {
            Target::Tcp(url) => url.to_string(),
            Target::Unix { socket, url } => {
                format!("unix:{} (path {})", socket.display(), url.path())
            }
        }
    }
}

impl WebhookConfig {
    /// Every problem with this configuration, each naming the key under `path`
    /// (e.g. `handlers[0].webhook`) and saying what to change. Empty when it is usable.
    /// A relative `secret_file` is resolved against `$CREDENTIALS_DIRECTORY` of this process.
    pub fn problems(&self, path: &str) -> Vec<String> {
        self.problems_with_credentials(path, process_credentials_dir().as_deref())
    }

    /// [`problems`](Self::problems) with the credentials directory given rather than read from
    /// the environment.
    pub fn problems_with_credentials(
        &self,
        path: &str,
        credentials_dir: Option<&Path>,
    ) -> Vec<String> {
        let mut problems = Vec::new();
        let target = self.target();
        if let Err(err) = &target {
            problems.push(format!("{path}.{err}"));
        }
        if let Ok(target) = &target
            && let Err(err) = self.messages_target(target)
        {
            problems.push(format!("{path}.{err}"));
        }
        if let Err(err) = self.signing_key(credentials_dir) {
            problems.push(format!("{path}.{err}"));
        }
        if let Err(err) = self.extra_headers() {
            problems.push(format!("{path}.{err}"));
        }
        if self.timeout_seconds == 0 {
            problems.push(format!(
                "{path}.timeout_seconds is 0: no answer could arrive in time; use at least 1 (default 3600)"
            ));
        }
        if self.max_response_bytes == 0 {
            problems.push(format!(
                "{path}.max_response_bytes is 0: no answer would fit; use at least 1024 (default 1048576)"
            ));
        }
        problems
    }

    /// Where a relative or absolute `secret_file` points, given the credentials directory.
    pub fn secret_file_path(&self, credentials_dir: Option<&Path>) -> Option<PathBuf> {
        let file = self.secret_file.as_ref()?;
        Some(match credentials_dir {
            Some(dir) if file.is_relative() => dir.join(file),
            _ => file.clone(),
        })
    }

    /// The signing key, from `secret` or the file; `None` when requests are not signed.
    fn signing_key(
        &self,
        credentials_dir: Option<&Path>,
    ) -> Result<Option<SigningKey>, WebhookError> {
        match (&self.secret, self.secret_file_path(credentials_dir)) {
            (Some(_), Some(_)) => Err(WebhookError::BothSecrets),
            (Some(secret), None) if secret.is_empty() => Err(WebhookError::EmptySecret),
            (Some(secret), None) => Ok(Some(SigningKey(secret.as_bytes().to_vec()))),
            (None, Some(path)) => {
                let mut bytes =
                    std::fs::read(&path).map_err(|source| WebhookError::SecretFile {
                        path: path.clone(),
                        source,
                    })?;
                // Files written by `echo` or an editor end with a newline that is not part of the key.
                while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    bytes.pop();
                }
                if bytes.is_empty() {
                    return Err(WebhookError::EmptySecretFile { path });
                }
                Ok(Some(SigningKey(bytes)))
            }
            (None, None) => Ok(None),
        }
    }

    fn target(&self) -> Result<Target, WebhookError> {
        let url = self.url.trim();
        if url.is_empty() {
            return Err(WebhookError::MissingUrl);
        }
        let bad = |why: &str| WebhookError::BadUrl {
            key: "url",
            value: url.to_string(),
            why: why.to_string(),
        };
        if let Some(socket) = url.strip_prefix("unix:") {
            let socket = Path::new(socket);
            if !socket.is_absolute() {
                return Err(bad(
                    "is not an absolute socket path: write unix:/path/to.sock",
                ));
            }
            let request_path = self.path.as_deref().unwrap_or("/");
            if !request_path.starts_with('/') {
                return Err(WebhookError::BadUrl {
                    key: "path",
                    value: request_path.to_string(),
                    why: "does not start with /: write e.g. path = \"/task\"".to_string(),
                });
            }
            if cfg!(not(unix)) {
                return Err(bad("needs Unix sockets, which this system does not have"));
            }
            // The host is never resolved: every connection goes to the socket.
            let url = Url::parse(&format!("http://localhost{request_path}")).map_err(|err| {
                WebhookError::BadUrl {
                    key: "path",
                    value: request_path.to_string(),
                    why: format!("is not a request path ({err})"),
                }
            })?;
            return Ok(Target::Unix {
                socket: socket.to_path_buf(),
                url,
            });
        }
        if self.path.is_some() {
            return Err(WebhookError::PathWithoutSocket);
        }
        let parsed = http_url(url).map_err(|why| bad(&why))?;
        Ok(Target::Tcp(parsed))
    }

    /// Where forwarded messages go, given the task target.
    fn messages_target(&self, target: &Target) -> Result<Option<Url>, WebhookError> {
        let Some(raw) = self.messages_url.as_deref().map(str::trim) else {
            return Ok(None);
        };
        let bad = |why: &str| WebhookError::BadUrl {
            key: "messages_url",
            value: raw.to_string(),
            why: why.to_string(),
        };
        if raw.starts_with('/') {
            // A path: the same sidecar, whatever the transport.
            return target
                .url()
                .join(raw)
                .map(Some)
                .map_err(|err| bad(&format!("is not a request path ({err})")));
        }
        if matches!(target, Target::Unix { .. }) {
            return Err(bad(
                "must be a path such as /messages when url is a unix: socket (it is sent over the same socket)",
            ));
        }
        http_url(raw).map(Some).map_err(|why| bad(&why))
    }

    /// The configured extra headers, checked.
    fn extra_headers(&self) -> Result<HeaderMap, WebhookError> {
        let mut map = HeaderMap::new();
        for (name, value) in &self.headers {
            let bad = |why: &str| WebhookError::BadHeader {
                name: name.clone(),
                why: why.to_string(),
            };
            let header =
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad("is not a header name"))?;
            if RESERVED_HEADERS.contains(&header.as_str())
                || header.as_str().starts_with(RESERVED_HEADER_PREFIX)
            {
                return Err(bad("is set by the worker itself: remove it"));
            }
            // The value is not quoted: it may be a credential.
            let mut value = HeaderValue::from_str(value).map_err(|_| {
                bad("has a value that cannot be sent in a header (control characters or non-ASCII)")
            })?;
            value.set_sensitive(true);
            map.insert(header, value);
        }
        Ok(map)
    }
}

/// Parses an `http://` URL and refuses what this build cannot or should not do with it.
fn http_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw)
        .map_err(|err| format!("is not a URL ({err}): write http://HOST:PORT/PATH"))?;
    match url.scheme() {
        "http" => {}
        "https" => {
            return Err(
                "uses https, but the webhook handler talks to a sidecar on this host: point it at \
                 http:// on loopback, or at a unix: socket (a remote agent belongs behind its own \
                 local proxy)"
                    .to_string(),
            );
        }
        other => {
            return Err(format!(
                "has scheme {other:?}: use http://HOST:PORT/PATH or unix:/path/to.sock"
            ));
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("has no host: write http://127.0.0.1:PORT/PATH".to_string());
    }
    if !url.username().is_empty() || url.password().is_some() {
        // A URL ends up in logs and errors; credentials in it would leak there.
        return Err(
            "carries credentials: remove them from the URL and use headers or secret".to_string(),
        );
    }
    Ok(url)
}

fn process_credentials_dir() -> Option<PathBuf> {
    std::env::var_os(CREDENTIALS_DIRECTORY_VAR)
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
}

/// The HMAC key; its `Debug` never shows it.
#[derive(Clone)]
struct SigningKey(Vec<u8>);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

impl SigningKey {
    /// `sha256=<hex>` over exactly these bytes.
    fn sign(&self, body: &[u8]) -> Option<HeaderValue> {
        // HMAC accepts keys of any length, so this cannot fail; no panic either way.
        let mut mac = HmacSha256::new_from_slice(&self.0).ok()?;
        mac.update(body);
        let digest = mac.finalize().into_bytes();
        HeaderValue::from_str(&format!("sha256={}", hex(&digest))).ok()
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

/// Everything a run needs, resolved once from the configuration.
struct Prepared {
    client: reqwest::Client,
    target: Target,
    messages: Option<Url>,
    headers: HeaderMap,
    key: Option<SigningKey>,
}

fn prepare(
    config: &WebhookConfig,
    credentials_dir: Option<&Path>,
) -> Result<Prepared, WebhookError> {
    let target = config.target()?;
    let messages = config.messages_target(&target)?;
    let headers = config.extra_headers()?;
    let key = config.signing_key(credentials_dir)?;
    let builder = reqwest::Client::builder()
        // A sidecar is local: a proxy from the environment must not see the task or the signature.
        .no_proxy()
        // A redirect would re-send (or drop) the body somewhere unconfigured; it is an answer.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("agh-worker/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_millis(
            config.connect_retry_budget_ms.max(1000),
        ));
    #[cfg(unix)]
    let builder = match &target {
        Target::Unix { socket, .. } => builder.unix_socket(socket.clone()),
        Target::Tcp(_) => builder,
    };
    let client = builder.build().map_err(WebhookError::Client)?;
    Ok(Prepared {
        client,
        target,
        messages,
        headers,
        key,
    })
}

/// Whether the webhook answers at all, for `agh-worker check`: a `GET` of its URL, where any
/// HTTP status counts as an answer. No task is sent.
pub async fn probe(config: &WebhookConfig, timeout: Duration) -> Result<String, String> {
    let prepared =
        prepare(config, process_credentials_dir().as_deref()).map_err(|err| err.to_string())?;
    let target = prepared.target.describe();
    let request = prepared.client.get(prepared.target.url().clone());
    match tokio::time::timeout(timeout, request.send()).await {
        Ok(Ok(response)) => Ok(format!(
            "{target} answers (HTTP {})",
            response.status().as_u16()
        )),
        Ok(Err(err)) => Err(format!("{target} does not answer: {}", error_chain(&err))),
        Err(_) => Err(format!(
            "{target} did not answer within {}",
            seconds_text(timeout)
        )),
    }
}

/// Runs one task through the webhook. A relative `secret_file` is resolved against this
/// process's `$CREDENTIALS_DIRECTORY`.
pub async fn run(config: &WebhookConfig, ctx: TaskContext) -> Outcome {
    run_with_credentials(config, ctx, process_credentials_dir().as_deref()).await
}

/// [`run`] with the credentials directory given rather than read from the environment.
pub async fn run_with_credentials(
    config: &WebhookConfig,
    ctx: TaskContext,
    credentials_dir: Option<&Path>,
) -> Outcome {
    if ctx.cancel.is_cancelled() {
        return Outcome::Release(
            "cancelled: the run was stopped before the webhook was called".into(),
        );
    }
    let prepared = match prepare(config, credentials_dir) {
        Ok(prepared) => prepared,
        Err(err) => {
            // A broken setting: every worker with this config would fail the same way.
            return Outcome::Fail {
                error: format!("webhook handler: {err}: check handlers[].webhook"),
                metadata: None,
            };
        }
    };
    let body = match serde_json::to_vec(&*ctx.document) {
        Ok(body) => body,
        Err(err) => {
            return Outcome::Fail {
                error: format!("webhook handler: the task document cannot be encoded: {err}"),
                metadata: None,
            };
        }
    };
    let limit = effective_timeout(config, ctx.time_limit);
    let target = prepared.target.describe();
    tracing::debug!(
        target: LOG_TARGET,
        run_id = %ctx.document.run_id,
        url = %target,
        timeout_ms = limit.as_millis() as u64,
        "delivering the task to the webhook"
    );

    let TaskContext {
        document,
        cancel,
        events,
        mut inbound,
        ..
    } = ctx;
    let exchange = deliver(config, &prepared, &document, body, &events);
    let forwarding = forward_messages(&prepared, &document, &mut inbound);
    tokio::select! {
        biased;
        // Dropping the exchange drops the request: the connection closes and the sidecar sees it.
        () = cancel.cancelled() => Outcome::Release(
            "cancelled: the worker stopped the run; the webhook request was aborted".into(),
        ),
        answered = tokio::time::timeout(limit, exchange) => match answered {
            Ok(outcome) => outcome,
            Err(_) => Outcome::Fail {
                error: format!("the webhook did not answer within {} s", seconds_text(limit)),
                metadata: Some(json!({
                    "url": target,
                    "timeout_seconds": limit.as_secs_f64(),
                })),
            },
        },
        never = forwarding => match never {},
    }
}

/// The smaller of the configured timeout and the run's time limit.
fn effective_timeout(config: &WebhookConfig, time_limit: Option<Duration>) -> Duration {
    let configured = Duration::from_secs(config.timeout_seconds);
    time_limit.map_or(configured, |limit| limit.min(configured))
}

/// `3`, `0.3`, `1.25`: whole seconds plainly, fractions without trailing zeros.
fn seconds_text(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        return duration.as_secs().to_string();
    }
    let text = format!("{:.3}", duration.as_secs_f64());
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The headers every request of this run carries.
fn run_headers(document: &TaskDocument) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::new();
    let value = |what: &str, text: String| {
        HeaderValue::from_str(&text)
            .map_err(|_| format!("the {what} {text:?} cannot be sent in an HTTP header"))
    };
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(
        IDEMPOTENCY_KEY_HEADER,
        value(
            "idempotency key",
            format!("{}:{}", document.run_id, document.attempt),
        )?,
    );
    headers.insert(RUN_ID_HEADER, value("run id", document.run_id.clone())?);
    headers.insert(TASK_ID_HEADER, value("task id", document.task_id.clone())?);
    headers.insert(
        ATTEMPT_HEADER,
        value("attempt", document.attempt.to_string())?,
    );
    Ok(headers)
}

/// Sends the document and turns the answer into the outcome. Retries only what failed before a
/// response started; the caller bounds the whole exchange by the deadline.
async fn deliver(
    config: &WebhookConfig,
    prepared: &Prepared,
    document: &TaskDocument,
    body: Vec<u8>,
    events: &mpsc::Sender<HandlerEvent>,
) -> Outcome {
    let mut headers = match run_headers(document) {
        Ok(headers) => headers,
        Err(error) => {
            return Outcome::Fail {
                error: format!("webhook handler: {error}"),
                metadata: None,
            };
        }
    };
    headers.extend(prepared.headers.clone());
    if let Some(key) = &prepared.key
        && let Some(signature) = key.sign(&body)
    {
        headers.insert(SIGNATURE_HEADER, signature);
    }
    let target = prepared.target.describe();
    let budget = Duration::from_millis(config.connect_retry_budget_ms);
    let started = Instant::now();
    let mut backoff = FIRST_BACKOFF;
    let mut attempts: u32 = 0;
    let response = loop {
        attempts += 1;
        let sent = prepared
            .client
            .post(prepared.target.url().clone())
            .headers(headers.clone())
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(response) => break response,
            Err(err) => {
                // `send` resolves once the status line and headers are in, so an error here means
                // no response started: the sidecar may or may not have seen the request, and the
                // idempotency key lets it drop a duplicate. Retried within the budget only.
                let why = error_chain(&err);
                let pause = backoff
                    + Duration::from_millis(fastrand::u64(0..=backoff.as_millis() as u64 / 2));
                if started.elapsed() + pause > budget {
                    tracing::warn!(
                        target: LOG_TARGET,
                        run_id = %document.run_id,
                        url = %target,
                        attempts,
                        "the webhook could not be reached: {why}"
                    );
                    // Nothing was answered, so the sidecar did not take the work: most likely it is
                    // down or restarting. Giving the run back keeps its attempt for when it (or
                    // another worker's sidecar) can; failing would burn attempts on an outage.
                    return Outcome::Release(format!(
                        "the webhook at {target} could not be reached ({attempts} attempts in {} ms): {why}",
                        started.elapsed().as_millis()
                    ));
                }
                if attempts == 1 {
                    // Visible to operators as a status line: a sidecar still starting is normal,
                    // one that never comes up is not.
                    let _ = events.try_send(HandlerEvent::Progress(format!(
                        "waiting for the webhook at {target}: {why}"
                    )));
                }
                tracing::debug!(
                    target: LOG_TARGET,
                    run_id = %document.run_id,
                    url = %target,
                    attempts,
                    retry_in_ms = pause.as_millis() as u64,
                    "the webhook is not reachable yet: {why}"
                );
                tokio::time::sleep(pause).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    };
    answer_outcome(response, config.max_response_bytes, &target).await
}

/// Turns a response into the outcome. From here on nothing is retried: the sidecar answered.
async fn answer_outcome(response: reqwest::Response, cap: usize, target: &str) -> Outcome {
    let status = response.status();
    if !status.is_success() {
        let body = read_capped(response, EXCERPT_BYTES + 1, true)
            .await
            .unwrap_or_default();
        let excerpt = excerpt(&body);
        if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
            // 503 and 429 say "not now" without taking the work: the run goes back to the queue
            // with its attempt intact, for this worker later or another one. Failing would spend
            // an attempt on a sidecar that never tried.
            return Outcome::Release(format!(
                "the sidecar is busy/unavailable (HTTP {}){}",
                status.as_u16(),
                if excerpt.is_empty() {
                    String::new()
                } else {
                    format!(": {excerpt}")
                }
            ));
        }
        return Outcome::Fail {
            error: format!(
                "the webhook answered HTTP {}{}",
                status_text(status),
                if excerpt.is_empty() {
                    String::new()
                } else {
                    format!(": {excerpt}")
                }
            ),
            metadata: Some(json!({
                "url": target,
                "status": status.as_u16(),
                "body_excerpt": excerpt,
            })),
        };
    }
    let body = match read_capped(response, cap, false).await {
        Ok(body) => body,
        Err(ReadError::TooLarge) => {
            return Outcome::Fail {
                error: format!(
                    "the webhook's answer is larger than max_response_bytes ({cap} bytes)"
                ),
                metadata: Some(json!({"url": target, "status": status.as_u16()})),
            };
        }
        Err(ReadError::Transport(why)) => {
            return Outcome::Fail {
                error: format!("the webhook's answer was cut off: {why}"),
                metadata: Some(json!({"url": target, "status": status.as_u16()})),
            };
        }
    };
    match serde_json::from_slice::<Answer>(&body) {
        Ok(Answer::Complete { result }) => Outcome::Complete(result),
        Ok(Answer::Fail { error, metadata }) => Outcome::Fail {
            error: error
                .filter(|e| !e.trim().is_empty())
                .unwrap_or_else(|| "the webhook answered fail without an error".into()),
            metadata: metadata.filter(|m| !m.is_null()),
        },
        Ok(Answer::Release { reason }) => Outcome::Release(
            reason
                .filter(|r| !r.trim().is_empty())
                .unwrap_or_else(|| "the webhook released the run without a reason".into()),
        ),
        Err(err) => {
            let excerpt = excerpt(&body);
            Outcome::Fail {
                error: format!(
                    "the webhook answered HTTP {} but not with an outcome ({err}); expected \
                     {{\"outcome\":\"complete\"|\"fail\"|\"release\",…}}, got: {excerpt}",
                    status.as_u16()
                ),
                metadata: Some(json!({
                    "url": target,
                    "status": status.as_u16(),
                    "body_excerpt": excerpt,
                })),
            }
        }
    }
}

/// The sidecar's answer.
#[derive(Deserialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
enum Answer {
    Complete {
        #[serde(default)]
        result: Value,
    },
    Fail {
        #[serde(default)]
        error: Option<String>,
        #[serde(default)]
        metadata: Option<Value>,
    },
    Release {
        #[serde(default)]
        reason: Option<String>,
    },
}

#[derive(Debug)]
enum ReadError {
    TooLarge,
    Transport(String),
}

/// Reads the body up to `cap` bytes. With `truncate`, stops quietly at the cap (for excerpts);
/// otherwise a longer body is an error.
async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
    truncate: bool,
) -> Result<Vec<u8>, ReadError> {
    if !truncate
        && let Some(length) = response.content_length()
        && length > cap as u64
    {
        return Err(ReadError::TooLarge);
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > cap {
                    if truncate {
                        body.extend_from_slice(&chunk[..cap - body.len()]);
                        return Ok(body);
                    }
                    return Err(ReadError::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(err) if truncate => {
                tracing::debug!(target: LOG_TARGET, "reading an error answer failed: {}", error_chain(&err));
                return Ok(body);
            }
            Err(err) => return Err(ReadError::Transport(error_chain(&err))),
        }
    }
}

/// The start of a body as text, for errors: at most [`EXCERPT_BYTES`], marked when cut.
fn excerpt(body: &[u8]) -> String {
    let cut = body.len() > EXCERPT_BYTES;
    let text = String::from_utf8_lossy(&body[..body.len().min(EXCERPT_BYTES)]);
    let text = text.trim();
    if cut {
        format!("{text}…")
    } else {
        text.to_string()
    }
}

fn status_text(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

/// An error with its causes, which is where reqwest keeps "connection refused".
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}

/// Forwards inbound messages while the exchange runs; never returns (the exchange decides when the
/// run ends, and dropping this aborts posts still in flight: nothing outlives the run).
async fn forward_messages(
    prepared: &Prepared,
    document: &TaskDocument,
    inbound: &mut mpsc::Receiver<ChannelMessage>,
) -> std::convert::Infallible {
    let mut posts = JoinSet::new();
    let shared = prepared.messages.as_ref().map(|url| {
        Arc::new(MessagePoster {
            client: prepared.client.clone(),
            url: url.clone(),
            headers: prepared.headers.clone(),
            key: prepared.key.clone(),
            run_id: document.run_id.clone(),
            task_id: document.task_id.clone(),
        })
    });
    loop {
        tokio::select! {
            message = inbound.recv() => {
                let Some(message) = message else { break };
                let Some(poster) = &shared else {
                    tracing::debug!(
                        target: LOG_TARGET,
                        run_id = %document.run_id,
                        message_id = %message.message_id,
                        kind = message.metadata.as_ref().map(|m| m.message_kind.as_str()),
                        text = message.text(),
                        "inbound message (no messages_url: not forwarded)"
                    );
                    continue;
                };
                if posts.len() >= MESSAGE_POSTS_IN_FLIGHT {
                    tracing::warn!(
                        target: LOG_TARGET,
                        run_id = %document.run_id,
                        message_id = %message.message_id,
                        "inbound message dropped: {MESSAGE_POSTS_IN_FLIGHT} forwards are still in flight"
                    );
                    continue;
                }
                posts.spawn(Arc::clone(poster).post(message));
            }
            Some(_) = posts.join_next(), if !posts.is_empty() => {}
        }
    }
    while posts.join_next().await.is_some() {}
    std::future::pending().await
}

/// What a forwarded message needs, owned so each post can run as its own task.
struct MessagePoster {
    client: reqwest::Client,
    url: Url,
    headers: HeaderMap,
    key: Option<SigningKey>,
    run_id: String,
    task_id: String,
}

impl MessagePoster {
    /// One POST, not retried; a failure is logged and otherwise ignored.
    async fn post(self: Arc<Self>, message: ChannelMessage) {
        // The same shape as the exec handler's stdin message lines, so a sidecar and a program
        // read messages alike.
        let body = json!({
            "type": "message",
            "message_id": message.message_id,
            "channel_id": message.channel_id,
            "from": message.from_session_id,
            "kind": message.metadata.as_ref().map(|m| m.message_kind.as_str()),
            "text": message.text(),
            "body": message.body,
            "metadata": message.metadata,
        })
        .to_string()
        .into_bytes();
        let mut headers = self.headers.clone();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, text) in [
            (RUN_ID_HEADER, &self.run_id),
            (TASK_ID_HEADER, &self.task_id),
            (MESSAGE_ID_HEADER, &message.message_id),
        ] {
            if let Ok(value) = HeaderValue::from_str(text) {
                headers.insert(name, value);
            }
        }
        if let Some(key) = &self.key
            && let Some(signature) = key.sign(&body)
        {
            headers.insert(SIGNATURE_HEADER, signature);
        }
        let sent = tokio::time::timeout(
            MESSAGE_POST_TIMEOUT,
            self.client
                .post(self.url.clone())
                .headers(headers)
                .body(body)
                .send(),
        )
        .await;
        match sent {
            Ok(Ok(response)) if response.status().is_success() => {
                tracing::debug!(target: LOG_TARGET, run_id = %self.run_id, message_id = %message.message_id, "message forwarded");
            }
            Ok(Ok(response)) => tracing::warn!(
                target: LOG_TARGET,
                run_id = %self.run_id,
                message_id = %message.message_id,
                url = %self.url,
                "forwarding a message: the sidecar answered HTTP {}",
                status_text(response.status())
            ),
            Ok(Err(err)) => tracing::warn!(
                target: LOG_TARGET,
                run_id = %self.run_id,
                message_id = %message.message_id,
                url = %self.url,
                "forwarding a message failed: {}",
                error_chain(&err)
            ),
            Err(_) => tracing::warn!(
                target: LOG_TARGET,
                run_id = %self.run_id,
                message_id = %message.message_id,
                url = %self.url,
                "forwarding a message took longer than {} s: abandoned",
                MESSAGE_POST_TIMEOUT.as_secs()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> WebhookConfig {
        WebhookConfig {
            url: url.into(),
            ..WebhookConfig::default()
        }
    }

    #[test]
    fn debug_output_never_shows_the_secret_or_header_values() {
        let mut config = config("http://127.0.0.1:9/task");
        config.secret = Some("hunter2-very-secret".into());
        config
            .headers
            .insert("Authorization".into(), "Bearer token-value-xyz".into());
        let text = format!("{config:?}");
        assert!(text.contains("secret: <redacted>"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains("token-value-xyz"), "{text}");
        assert!(text.contains("Authorization"), "{text}");
        assert!(!format!("{:?}", SigningKey(b"hunter2".to_vec())).contains("hunter2"));
    }

    #[test]
    fn loopback_http_and_unix_sockets_are_accepted() {
        assert!(
            config("http://127.0.0.1:8080/task")
                .problems("w")
                .is_empty()
        );
        let mut unix = config("unix:/run/agent.sock");
        unix.path = Some("/task".into());
        unix.messages_url = Some("/messages".into());
        assert!(unix.problems("w").is_empty(), "{:?}", unix.problems("w"));
        assert_eq!(
            unix.target().ok().map(|t| t.url().to_string()),
            Some("http://localhost/task".to_string())
        );
    }

    #[test]
    fn problems_name_the_key_and_what_to_do() {
        let cases: &[(WebhookConfig, &str)] = &[
            (config(""), "w.url is empty"),
            (
                config("https://agent.local/task"),
                "talks to a sidecar on this host",
            ),
            (config("ftp://agent/task"), "has scheme \"ftp\""),
            (
                config("http://user:pw@127.0.0.1/task"),
                "carries credentials",
            ),
            (config("unix:run/agent.sock"), "absolute socket path"),
            (
                WebhookConfig {
                    path: Some("/task".into()),
                    ..config("http://127.0.0.1:1/")
                },
                "w.path is set but url is not a unix: socket",
            ),
            (
                WebhookConfig {
                    secret: Some("a".into()),
                    secret_file: Some("/etc/hook.key".into()),
                    ..config("http://127.0.0.1:1/")
                },
                "w.secret and secret_file are both set",
            ),
            (
                WebhookConfig {
                    secret_file: Some("/nonexistent/hook.key".into()),
                    ..config("http://127.0.0.1:1/")
                },
                "w.secret_file \"/nonexistent/hook.key\" cannot be read",
            ),
            (
                WebhookConfig {
                    messages_url: Some("http://127.0.0.1:1/messages".into()),
                    ..config("unix:/run/agent.sock")
                },
                "w.messages_url \"http://127.0.0.1:1/messages\" must be a path",
            ),
            (
                WebhookConfig {
                    headers: BTreeMap::from([("X-AGH-Worker-Run-ID".into(), "x".into())]),
                    ..config("http://127.0.0.1:1/")
                },
                "w.headers.X-AGH-Worker-Run-ID: is set by the worker itself",
            ),
            (
                WebhookConfig {
                    timeout_seconds: 0,
                    ..config("http://127.0.0.1:1/")
                },
                "w.timeout_seconds is 0",
            ),
        ];
        for (config, expected) in cases {
            let problems = config.problems_with_credentials("w", None);
            assert!(
                problems.iter().any(|p| p.contains(expected)),
                "{expected:?} not in {problems:?}"
            );
        }
    }

    #[test]
    fn problems_never_quote_the_secret_or_header_values() {
        let config = WebhookConfig {
            secret: Some("hunter2".into()),
            secret_file: Some("/x".into()),
            headers: BTreeMap::from([("Bad Name".into(), "token-xyz".into())]),
            ..config("http://127.0.0.1:1/")
        };
        let text = config.problems_with_credentials("w", None).join("\n");
        assert!(
            !text.contains("hunter2") && !text.contains("token-xyz"),
            "{text}"
        );
    }

    #[test]
    fn the_timeout_is_the_smaller_of_the_setting_and_the_time_limit() {
        let config = WebhookConfig {
            timeout_seconds: 10,
            ..config("http://127.0.0.1:1/")
        };
        assert_eq!(effective_timeout(&config, None), Duration::from_secs(10));
        assert_eq!(
            effective_timeout(&config, Some(Duration::from_millis(300))),
            Duration::from_millis(300)
        );
        assert_eq!(
            effective_timeout(&config, Some(Duration::from_secs(60))),
            Duration::from_secs(10)
        );
        assert_eq!(seconds_text(Duration::from_millis(300)), "0.3");
        assert_eq!(seconds_text(Duration::from_secs(3600)), "3600");
        assert_eq!(seconds_text(Duration::from_millis(1250)), "1.25");
    }

    #[test]
    fn signatures_are_lowercase_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        let key = SigningKey(b"Jefe".to_vec());
        let signature = key.sign(b"what do ya want for nothing?");
        assert_eq!(
            signature.as_ref().and_then(|v| v.to_str().ok()),
            Some("sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        );
    }

    #[test]
    fn excerpts_are_cut_and_marked() {
        assert_eq!(excerpt(b"  short  "), "short");
        let long = vec![b'a'; EXCERPT_BYTES + 10];
        let cut = excerpt(&long);
        assert!(cut.ends_with('…') && cut.len() == EXCERPT_BYTES + '…'.len_utf8());
    }
}
