//! Errors of the Agentuity client: every error body shape the Hub, Catalyst and the App API are
//! known to answer with, parsed into one typed error that keeps the request trace id.
//!
//! The API key never reaches these values: requests never carry it outside the `Authorization`
//! header, and answer excerpts are scrubbed of it before they are stored (a proxy or a debug
//! endpoint could echo the header back).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

/// How much of an unexpected answer is quoted in an error.
pub(crate) const EXCERPT_CHARS: usize = 300;

/// What kind of failure an HTTP answer was, for callers that decide what to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// 400 or `CODER_INVALID_REQUEST`: the request is wrong; retrying will not help.
    Invalid,
    /// 401/403: the key is wrong or lacks access.
    Unauthorized,
    /// 402: the account must pay (see `upgrade_url`); fatal.
    PaymentRequired,
    /// 426: this client is too old for the server; fatal.
    UpgradeRequired,
    /// 404, 410, `CODER_SESSION_NOT_FOUND`, `CODER_SESSION_ARCHIVED`: the object is gone.
    Gone,
    /// 409 without rate-limit headers, or `CODER_SESSION_CONFLICT`: a real conflict.
    Conflict,
    /// 429, or 409 with rate-limit headers.
    RateLimited,
    /// 421: the request went to the wrong region.
    WrongRegion,
    /// 502/503/504: the service is restarting or overloaded.
    Unavailable,
    /// Another 5xx.
    Server,
    /// Anything else.
    Other,
}

/// One failed HTTP answer, as much of it as is useful to a person or a caller.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiFailure {
    pub method: String,
    /// The request path (never the query string).
    pub path: String,
    pub status: u16,
    /// The machine code (`CODER_SESSION_NOT_FOUND`, ...), when the body had one.
    pub code: Option<String>,
    /// The human message: `error` (a string), then `message`, then the raw text excerpt.
    pub message: String,
    /// Server-side validation issues (`error.name == "ZodError"`), as `path: message` lines.
    pub issues: Vec<String>,
    /// The `x-session-id` response header: the request trace id Agentuity support can look up.
    pub trace_id: Option<String>,
    /// The `x-upgrade-url` header of a 402.
    pub upgrade_url: Option<String>,
    /// The wait the server asked for (`Retry-After`, rate-limit headers).
    pub retry_after: Option<Duration>,
    /// Whether the answer carried rate-limit headers (what makes a 409 a rate limit).
    pub rate_limited: bool,
}

impl ApiFailure {
    /// What kind of failure this is.
    pub fn class(&self) -> ErrorClass {
        match self.code.as_deref() {
            Some("CODER_SESSION_NOT_FOUND" | "CODER_SESSION_ARCHIVED") => return ErrorClass::Gone,
            Some("CODER_SESSION_CONFLICT") => return ErrorClass::Conflict,
            Some("CODER_INVALID_REQUEST") => return ErrorClass::Invalid,
            _ => {}
        }
        match self.status {
            400 | 422 => ErrorClass::Invalid,
            401 | 403 => ErrorClass::Unauthorized,
            402 => ErrorClass::PaymentRequired,
            426 => ErrorClass::UpgradeRequired,
            404 | 410 => ErrorClass::Gone,
            409 if self.rate_limited => ErrorClass::RateLimited,
            409 => ErrorClass::Conflict,
            429 => ErrorClass::RateLimited,
            421 => ErrorClass::WrongRegion,
            502..=504 => ErrorClass::Unavailable,
            500..=599 => ErrorClass::Server,
            _ => ErrorClass::Other,
        }
    }

    /// Parses an error body in any of the known shapes (see the module docs); `text` is the raw
    /// body, already scrubbed of the key.
    pub(crate) fn describe_body(text: &str) -> (Option<String>, String, Vec<String>) {
        let excerpt = || excerpt(text);
        let Ok(Value::Object(body)) = serde_json::from_str::<Value>(text) else {
            return (None, excerpt(), Vec::new());
        };
        let code = body.get("code").and_then(Value::as_str).map(str::to_string);
        let mut issues = Vec::new();
        let mut message = None;
        match body.get("error") {
            Some(Value::String(text)) if !text.is_empty() => message = Some(text.clone()),
            Some(Value::Object(error)) => {
                for issue in error
                    .get("issues")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let path = issue
                        .get("path")
                        .and_then(Value::as_array)
                        .map(|parts| {
                            parts
                                .iter()
                                .map(|p| match p {
                                    Value::String(s) => s.clone(),
                                    other => other.to_string(),
                                })
                                .collect::<Vec<_>>()
                                .join(".")
                        })
                        .unwrap_or_default();
                    let text = issue
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("invalid");
                    issues.push(if path.is_empty() {
                        text.to_string()
                    } else {
                        format!("{path}: {text}")
                    });
                }
                message = error
                    .get("message")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .or_else(|| {
                        error
                            .get("name")
                            .and_then(Value::as_str)
                            .map(|name| format!("{name}: {}", issues.join("; ")))
                    });
            }
            _ => {}
        }
        let message = message
            .or_else(|| {
                body.get("message")
                    .and_then(Value::as_str)
                    .filter(|m| !m.is_empty())
                    .map(str::to_string)
            })
            .or_else(|| code.clone())
            .unwrap_or_else(excerpt);
        (code, message, issues)
    }
}

#[cfg(test)]
impl ApiFailure {
    /// A GET of `path` answered with `status` and nothing more: what tests start from.
    pub(crate) fn answered(status: u16, path: &str) -> Self {
        ApiFailure {
            method: "GET".into(),
            path: path.into(),
            status,
            code: None,
            message: String::new(),
            issues: Vec::new(),
            trace_id: None,
            upgrade_url: None,
            retry_after: None,
            rate_limited: false,
        }
    }
}

/// At most [`EXCERPT_CHARS`] characters of `text`, on one line.
pub(crate) fn excerpt(text: &str) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(EXCERPT_CHARS)
        .collect();
    if text.chars().count() > EXCERPT_CHARS {
        format!("{flat}…")
    } else {
        flat
    }
}

/// Why an Agentuity call or the client's setup failed. Never carries the API key.
#[derive(Debug, thiserror::Error)]
pub enum AgentuityError {
    #[error(
        "no Agentuity API key: set `key` or `key_file`, or AGENTUITY_SDK_KEY in the environment"
    )]
    MissingKey,
    #[error("key and key_file are both set: keep one")]
    BothKeys,
    #[error("key_file {path:?} cannot be read: {source}")]
    KeyFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("key_file {path:?} is empty: put the key in it")]
    EmptyKeyFile { path: PathBuf },
    #[error("the API key has characters an HTTP header cannot carry")]
    BadKey,
    #[error("{what} {value:?} {why}")]
    BadUrl {
        what: &'static str,
        value: String,
        why: String,
    },
    #[error("the HTTP client cannot be built: {0}")]
    Client(String),
    #[error("{method} {path}: {message}")]
    Transport {
        method: String,
        path: String,
        message: String,
        /// Whether it was a timeout (the request may have been processed).
        timeout: bool,
    },
    #[error("{}", describe_failure(.0))]
    Api(Box<ApiFailure>),
    #[error(
        "coder session {id} did not become ready to attach within {}s: {state}",
        waited.as_secs_f64()
    )]
    NotReady {
        id: String,
        waited: Duration,
        /// The last thing known of it: status and availability flags, or the last read's error.
        state: String,
    },
    #[error("{method} {path}: the answer is not what was expected: {message}")]
    Decode {
        method: String,
        path: String,
        message: String,
        trace_id: Option<String>,
    },
}

fn describe_failure(failure: &ApiFailure) -> String {
    let mut text = format!(
        "{} {}: HTTP {}",
        failure.method, failure.path, failure.status
    );
    if let Some(code) = &failure.code
        && *code != failure.message
    {
        text.push_str(&format!(" {code}"));
    }
    text.push_str(&format!(": {}", failure.message));
    if let Some(url) = &failure.upgrade_url {
        text.push_str(&format!(" (upgrade at {url})"));
    }
    if let Some(trace) = &failure.trace_id {
        text.push_str(&format!(" [x-session-id {trace}]"));
    }
    text
}

impl AgentuityError {
    /// The failed answer, when there was one.
    pub fn failure(&self) -> Option<&ApiFailure> {
        match self {
            AgentuityError::Api(failure) => Some(failure),
            _ => None,
        }
    }

    /// The class of a failed answer; `None` for local and transport errors.
    pub fn class(&self) -> Option<ErrorClass> {
        self.failure().map(ApiFailure::class)
    }

    /// The HTTP status of a failed answer.
    pub fn status(&self) -> Option<u16> {
        self.failure().map(|f| f.status)
    }

    /// The `x-session-id` trace id of the answer, when there was one.
    pub fn trace_id(&self) -> Option<&str> {
        match self {
            AgentuityError::Api(failure) => failure.trace_id.as_deref(),
            AgentuityError::Decode { trace_id, .. } => trace_id.as_deref(),
            _ => None,
        }
    }

    /// The session (or agent) no longer exists or is archived.
    pub fn is_gone(&self) -> bool {
        self.class() == Some(ErrorClass::Gone)
    }

    /// Retrying will never help: configuration or account problems.
    pub fn is_fatal(&self) -> bool {
        match self {
            AgentuityError::Api(failure) => matches!(
                failure.class(),
                ErrorClass::Unauthorized
                    | ErrorClass::PaymentRequired
                    | ErrorClass::UpgradeRequired
                    | ErrorClass::Invalid
            ),
            AgentuityError::Transport { .. } => false,
            AgentuityError::Decode { .. } => false,
            AgentuityError::NotReady { .. } => false,
            _ => true,
        }
    }

    /// A request that may or may not have reached the server (a timeout, a reset, a 502/503):
    /// what makes a blind repeat of a create unsafe.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            AgentuityError::Transport { .. } => true,
            AgentuityError::Api(failure) => {
                matches!(
                    failure.class(),
                    ErrorClass::Unavailable | ErrorClass::Server
                )
            }
            _ => false,
        }
    }
}
