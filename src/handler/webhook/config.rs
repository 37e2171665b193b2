//! A webhook handler's configuration (`handlers[].webhook`): where the sidecar listens, the
//! signing secret, extra headers and limits, and the checks `agh-worker check` reports.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use reqwest::Url;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

use super::{CREDENTIALS_DIRECTORY_VAR, IDEMPOTENCY_KEY_HEADER};

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
pub(super) enum Target {
    /// Plain HTTP over TCP.
    Tcp(Url),
    /// HTTP over a Unix socket; `url` carries the path (its host is a placeholder).
    Unix { socket: PathBuf, url: Url },
}

impl Target {
    pub(super) fn url(&self) -> &Url {
        match self {
            Target::Tcp(url) | Target::Unix { url, .. } => url,
        }
    }

    /// The URL as the operator wrote it, for messages.
    pub(super) fn describe(&self) -> String {
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

    pub(super) fn target(&self) -> Result<Target, WebhookError> {
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
    pub(super) fn messages_target(&self, target: &Target) -> Result<Option<Url>, WebhookError> {
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
    pub(super) fn extra_headers(&self) -> Result<HeaderMap, WebhookError> {
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

pub(super) fn process_credentials_dir() -> Option<PathBuf> {
    std::env::var_os(CREDENTIALS_DIRECTORY_VAR)
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
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
        assert!(!format!("{:?}", config.signing_key(None)).contains("hunter2"));
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
}
