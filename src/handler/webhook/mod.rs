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
//!
//! This file delivers a task, retrying what failed before any response; `config` holds the
//! settings and their checks, `signing` the HMAC key and signature, `answer` the reading of the
//! sidecar's answer into an outcome, and `messages` the forwarding of inbound channel messages.

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::Url;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use serde_json::json;
use tokio::sync::mpsc;

use super::{HandlerEvent, Outcome, TaskContext, TaskDocument};
use crate::util::backoff::Backoff;
use crate::util::error;
use crate::util::time::seconds_text;
use answer::answer_outcome;
use config::{Target, process_credentials_dir};
use messages::forward_messages;
use signing::SigningKey;

mod answer;
mod config;
mod messages;
mod signing;

pub use config::{WebhookConfig, WebhookError};

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

/// First pause between delivery attempts that failed before any response; doubled each time,
/// plus up to half again as jitter.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// The longest pause between delivery attempts.
const MAX_BACKOFF: Duration = Duration::from_millis(1000);

const LOG_TARGET: &str = "agh_worker::handler::webhook";

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
        Ok(Err(err)) => Err(format!("{target} does not answer: {}", error::chain(&err))),
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
    let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF).with_jitter(1.0, 1.5);
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
                let why = error::chain(&err);
                let pause = backoff.next_delay();
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
            }
        }
    };
    answer_outcome(response, config.max_response_bytes, &target).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeout_is_the_smaller_of_the_setting_and_the_time_limit() {
        let config = WebhookConfig {
            url: "http://127.0.0.1:1/".into(),
            timeout_seconds: 10,
            ..WebhookConfig::default()
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
}
