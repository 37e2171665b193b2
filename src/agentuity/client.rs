//! The Agentuity HTTP client: key and URL resolution, headers, retries, error parsing.
//!
//! Hub calls go to `{hub}/api/hub/…`, where `{hub}` is the explicit URL, else
//! `AGENTUITY_CODER_URL`, else what `GET {catalyst}/coder` answers (cached for the client's life).
//! The Sessions API lives on Catalyst (`/session`) and the App API (`/cli/session/{id}/logs`), and
//! wraps its answers in `{success, data}`. Environment values come in through an [`Env`] map so
//! that tests never depend on the process environment.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{Method, Url};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::OnceCell;

use super::error::{AgentuityError, ApiFailure, ErrorClass, excerpt};
use super::types::{
    CreatedSession, EventHistory, GitHubAccountList, GitHubRepoList, ListAgentSessions, ListAgents,
    ListConnectable, ListParticipants, ListSessions, ListUsers, LoopStateAnswer, ParticipantList,
    Replay, SavedSkill, SavedSkillList, Session, SessionPage, SkillBucket, SkillBucketList,
    UserList, Workspace, WorkspaceList,
};

/// Environment variables the client reads (through an [`Env`] map).
pub const SDK_KEY_VAR: &str = "AGENTUITY_SDK_KEY";
pub const CLI_KEY_VAR: &str = "AGENTUITY_CLI_KEY";
pub const CODER_URL_VAR: &str = "AGENTUITY_CODER_URL";
pub const REGION_VAR: &str = "AGENTUITY_REGION";
pub const CATALYST_URL_VAR: &str = "AGENTUITY_CATALYST_URL";
pub const TRANSPORT_URL_VAR: &str = "AGENTUITY_TRANSPORT_URL";
pub const API_URL_VAR: &str = "AGENTUITY_API_URL";
/// systemd's `LoadCredential=` directory; a relative `key_file` is resolved against it.
pub const CREDENTIALS_DIRECTORY_VAR: &str = "CREDENTIALS_DIRECTORY";

/// The org header the SDK sends on Catalyst and Hub calls.
pub const ORG_HEADER: &str = "x-agentuity-orgid";
/// The request trace id on answers.
pub const TRACE_HEADER: &str = "x-session-id";
const REGION_HEADER: &str = "x-agentuity-region";
const UPGRADE_URL_HEADER: &str = "x-upgrade-url";
const RATE_LIMIT_RESET_HEADER: &str = "x-ratelimit-reset";
const RATE_LIMIT_RETRY_AFTER_HEADER: &str = "x-ratelimit-retry-after";

/// The region used when neither the config nor `AGENTUITY_REGION` names one.
pub const DEFAULT_REGION: &str = "usc";

/// Characters left as they are in a path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Environment values, by name. Build it with [`process_env`] in the daemon, by hand in tests.
pub type Env = BTreeMap<String, String>;

/// The variables of this process the client may read.
pub fn process_env() -> Env {
    std::env::vars()
        .filter(|(name, _)| name.starts_with("AGENTUITY_") || name == CREDENTIALS_DIRECTORY_VAR)
        .collect()
}

/// How to reach Agentuity (shared by the handler config and the operator commands).
#[derive(Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientSettings {
    /// The API key. Never printed. Prefer `key_file` or `AGENTUITY_SDK_KEY`.
    pub key: Option<String>,
    /// A file holding the key; relative paths are resolved against `$CREDENTIALS_DIRECTORY`.
    pub key_file: Option<PathBuf>,
    /// Sent as `x-agentuity-orgid` when set.
    pub org_id: Option<String>,
    /// The Catalyst region (`usc`, `usw`, …; `local`); else `AGENTUITY_REGION`, else `usc`.
    pub region: Option<String>,
    /// The Coder Hub base URL; else `AGENTUITY_CODER_URL`, else discovery. `http://` is accepted
    /// here (tests, local proxies).
    pub hub_url: Option<String>,
    /// The Catalyst base URL; else `AGENTUITY_CATALYST_URL`/`AGENTUITY_TRANSPORT_URL`, else the region's.
    pub catalyst_url: Option<String>,
    /// The App API base URL (session logs); else `AGENTUITY_API_URL`, else `https://api.agentuity.com`.
    pub api_url: Option<String>,
    /// Longest wait for one HTTP answer, in seconds (0 = 30).
    pub request_timeout_seconds: u64,
}

/// Written by hand so the key never reaches a log line through `{:?}`.
impl fmt::Debug for ClientSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSettings")
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .field("key_file", &self.key_file)
            .field("org_id", &self.org_id)
            .field("region", &self.region)
            .field("hub_url", &shown_url(self.hub_url.as_deref()))
            .field("catalyst_url", &shown_url(self.catalyst_url.as_deref()))
            .field("api_url", &shown_url(self.api_url.as_deref()))
            .field("request_timeout_seconds", &self.request_timeout_seconds)
            .finish()
    }
}

/// A configured URL as `Debug` shows it: credentials written into it are not shown.
fn shown_url(url: Option<&str>) -> Option<String> {
    url.map(crate::util::redact::without_userinfo)
}

impl ClientSettings {
    /// Problems a config check can report, each a sentence naming `path` keys.
    pub fn problems(&self, path: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if self.key.is_some() && self.key_file.is_some() {
            problems.push(format!("{path}.key and key_file are both set: keep one"));
        }
        if self.key.as_deref().is_some_and(|k| k.trim().is_empty()) {
            problems.push(format!("{path}.key is empty: set it or remove it"));
        }
        for (name, value) in [
            ("hub_url", &self.hub_url),
            ("catalyst_url", &self.catalyst_url),
            ("api_url", &self.api_url),
        ] {
            if let Some(value) = value
                && let Err(err) = normalize_url(name, value)
            {
                problems.push(format!("{path}.{err}"));
            }
        }
        problems
    }

    /// The key: `key`, else `key_file`, else `AGENTUITY_SDK_KEY`, else `AGENTUITY_CLI_KEY`.
    pub fn resolve_key(&self, env: &Env) -> Result<String, AgentuityError> {
        match (&self.key, &self.key_file) {
            (Some(_), Some(_)) => Err(AgentuityError::BothKeys),
            (Some(key), None) if !key.trim().is_empty() => Ok(key.trim().to_string()),
            (Some(_), None) => Err(AgentuityError::MissingKey),
            (None, Some(file)) => {
                let path = resolve_credential(file, env);
                let text =
                    std::fs::read_to_string(&path).map_err(|source| AgentuityError::KeyFile {
                        path: path.clone(),
                        source,
                    })?;
                let key = text.trim();
                if key.is_empty() {
                    return Err(AgentuityError::EmptyKeyFile { path });
                }
                Ok(key.to_string())
            }
            (None, None) => env
                .get(SDK_KEY_VAR)
                .or_else(|| env.get(CLI_KEY_VAR))
                .map(|k| k.trim().to_string())
                .filter(|k| !k.is_empty())
                .ok_or(AgentuityError::MissingKey),
        }
    }

    /// The region in force.
    pub fn region(&self, env: &Env) -> String {
        self.region
            .clone()
            .or_else(|| env.get(REGION_VAR).cloned())
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| DEFAULT_REGION.to_string())
    }
}

fn resolve_credential(file: &Path, env: &Env) -> PathBuf {
    match env.get(CREDENTIALS_DIRECTORY_VAR) {
        Some(dir) if file.is_relative() => Path::new(dir).join(file),
        _ => file.to_path_buf(),
    }
}

/// The Catalyst URL of a region (SDK `buildRegionalURL`).
pub fn catalyst_url_for_region(region: &str) -> String {
    match region {
        "local" | "l" => "https://catalyst.agentuity.io".to_string(),
        region => format!("https://catalyst-{region}.agentuity.cloud"),
    }
}

/// A URL checked for a scheme and host, without its trailing `/`.
fn normalize_url(what: &'static str, value: &str) -> Result<String, AgentuityError> {
    let bad = |why: &str| AgentuityError::BadUrl {
        what,
        // The value is echoed to say which one is wrong, but never with credentials in it.
        value: crate::util::redact::without_userinfo(value),
        why: why.to_string(),
    };
    let url = Url::parse(value.trim()).map_err(|err| bad(&format!("is not a URL: {err}")))?;
    // reqwest would send them as basic auth beside the key, to whoever the URL names.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "must not carry credentials (user:password@): the key goes in key, key_file or AGENTUITY_SDK_KEY",
        ));
    }
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad(
            "must start with https:// (or http:// for a local proxy)",
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("has no host"));
    }
    if url.query().is_some() {
        return Err(bad("must not have a query string"));
    }
    Ok(value.trim().trim_end_matches('/').to_string())
}

/// How the client retries (research notes §7).
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Retries after a network error, a 501 or a rate limit.
    pub retries: u32,
    /// First pause after a network error; doubled each time, with jitter.
    pub base_delay: Duration,
    /// How long 502/503 ("service restarting") keep being retried.
    pub unavailable_budget: Duration,
    /// First pause after a 502/503; doubled each time up to `unavailable_cap`.
    pub unavailable_delay: Duration,
    pub unavailable_cap: Duration,
    /// The longest server-requested wait (`Retry-After`) honoured; longer ones fail at once.
    pub max_server_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: 3,
            base_delay: Duration::from_millis(100),
            unavailable_budget: Duration::from_secs(30),
            unavailable_delay: Duration::from_secs(1),
            unavailable_cap: Duration::from_secs(5),
            max_server_wait: Duration::from_secs(60),
        }
    }
}

/// Whether a request may be sent again when its fate is unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Repeat {
    /// Reads and idempotent writes: retried after network errors and 502/503.
    Safe,
    /// Creates: only retried when the server certainly did not act (rate limits, wrong region).
    /// The caller looks for the object before trying again.
    Never,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Base {
    Catalyst,
    Api,
}

/// The API key; its `Debug` never shows it.
#[derive(Clone)]
struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A typed client of the Coder Hub and the Sessions API.
#[derive(Debug)]
pub struct AgentuityClient {
    http: reqwest::Client,
    key: Secret,
    org_id: Option<String>,
    explicit_hub: Option<String>,
    catalyst: String,
    api: String,
    hub: OnceCell<String>,
    retry: RetryPolicy,
    /// Where a 421's regional retry goes, `{region}` replaced; `None`: the region's Catalyst.
    regional_template: Option<String>,
}

impl AgentuityClient {
    /// Builds a client from settings and the environment (see the module docs for precedence).
    pub fn new(settings: &ClientSettings, env: &Env) -> Result<Self, AgentuityError> {
        Self::with_retry(settings, env, RetryPolicy::default())
    }

    /// Like [`AgentuityClient::new`] with a retry policy of its own (tests use short pauses).
    pub fn with_retry(
        settings: &ClientSettings,
        env: &Env,
        retry: RetryPolicy,
    ) -> Result<Self, AgentuityError> {
        let key = settings.resolve_key(env)?;
        HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| AgentuityError::BadKey)?;
        let explicit_hub = match settings.hub_url.clone() {
            Some(url) => Some(normalize_url("hub_url", &url)?),
            None => match env.get(CODER_URL_VAR).filter(|u| !u.trim().is_empty()) {
                Some(url) => Some(normalize_url(CODER_URL_VAR, url)?),
                None => None,
            },
        };
        let catalyst = match settings
            .catalyst_url
            .clone()
            .map(|u| ("catalyst_url", u))
            .or_else(|| {
                env.get(CATALYST_URL_VAR)
                    .map(|u| (CATALYST_URL_VAR, u.clone()))
            })
            .or_else(|| {
                env.get(TRANSPORT_URL_VAR)
                    .map(|u| (TRANSPORT_URL_VAR, u.clone()))
            })
            .filter(|(_, u)| !u.trim().is_empty())
        {
            Some((what, url)) => normalize_url(what, &url)?,
            None => catalyst_url_for_region(&settings.region(env)),
        };
        let region = settings.region(env);
        let api = match settings
            .api_url
            .clone()
            .map(|u| ("api_url", u))
            .or_else(|| env.get(API_URL_VAR).map(|u| (API_URL_VAR, u.clone())))
            .filter(|(_, u)| !u.trim().is_empty())
        {
            Some((what, url)) => normalize_url(what, &url)?,
            None if matches!(region.as_str(), "local" | "l") => {
                "https://api.agentuity.io".to_string()
            }
            None => "https://api.agentuity.com".to_string(),
        };
        let timeout = match settings.request_timeout_seconds {
            0 => Duration::from_secs(30),
            seconds => Duration::from_secs(seconds),
        };
        let http = reqwest::Client::builder()
            .user_agent(concat!("agh-worker/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .timeout(timeout)
            // A redirect could carry the Authorization header to another host.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|err| AgentuityError::Client(err.to_string()))?;
        Ok(AgentuityClient {
            http,
            key: Secret(key),
            org_id: settings.org_id.clone().filter(|o| !o.trim().is_empty()),
            explicit_hub,
            catalyst,
            api,
            hub: OnceCell::new(),
            retry,
            regional_template: None,
        })
    }

    /// Sends a 421's regional retry to `template` (`{region}` replaced) instead of the region's
    /// Catalyst: for local proxies and tests.
    pub fn with_regional_catalyst(mut self, template: &str) -> Self {
        self.regional_template = Some(template.trim_end_matches('/').to_string());
        self
    }

    /// The Catalyst base URL in force.
    pub fn catalyst_url(&self) -> &str {
        &self.catalyst
    }

    /// The Hub base URL: explicit, from the environment, or discovered once.
    pub async fn hub_url(&self) -> Result<String, AgentuityError> {
        if let Some(url) = &self.explicit_hub {
            return Ok(url.clone());
        }
        self.hub
            .get_or_try_init(|| self.discover_hub_url())
            .await
            .cloned()
    }

    /// `GET {catalyst}/coder` → `{url}`. A discovered URL must be HTTPS unless Catalyst itself
    /// was reached over plain HTTP (a local proxy or a test).
    pub async fn discover_hub_url(&self) -> Result<String, AgentuityError> {
        let (answer, trace_id) = self
            .call(
                self.catalyst.clone(),
                Method::GET,
                "/coder",
                &[],
                None,
                Repeat::Safe,
            )
            .await?;
        let decode = |message: String| AgentuityError::Decode {
            method: "GET".into(),
            path: "/coder".into(),
            message,
            trace_id: trace_id.clone(),
        };
        let url = answer
            .get("url")
            .and_then(Value::as_str)
            .filter(|u| !u.trim().is_empty())
            .ok_or_else(|| decode("no `url` in the answer".into()))?;
        let url =
            normalize_url("the discovered hub url", url).map_err(|e| decode(e.to_string()))?;
        if !url.starts_with("https://") && !self.catalyst.starts_with("http://") {
            return Err(decode(format!("the hub url {url:?} is not https")));
        }
        Ok(url)
    }

    // ---- Coder Hub: sessions ----

    /// `POST /hub/session`. Never repeated when its fate is unknown (no idempotency key exists):
    /// the caller must look the session up (by tag) before trying again.
    pub async fn create_session(&self, body: &Value) -> Result<CreatedSession, AgentuityError> {
        self.hub_typed(Method::POST, "/session", &[], Some(body), Repeat::Never)
            .await
    }

    pub async fn get_session(&self, id: &str) -> Result<Session, AgentuityError> {
        self.hub_typed(
            Method::GET,
            &format!("/session/{}", seg(id)),
            &[],
            None,
            Repeat::Safe,
        )
        .await
    }

    pub async fn list_sessions(
        &self,
        params: &ListSessions,
    ) -> Result<SessionPage, AgentuityError> {
        let mut query = Vec::new();
        if let Some(search) = &params.search {
            query.push(("search", search.clone()));
        }
        if params.include_archived {
            query.push(("includeArchived", "true".to_string()));
        }
        push_opt(&mut query, "limit", params.limit);
        push_opt(&mut query, "offset", params.offset);
        let value = self
            .hub_value(Method::GET, "/sessions", &query, None, Repeat::Safe)
            .await?;
        Ok(SessionPage::from_value(value))
    }

    /// `PATCH /hub/session/{id}` (label, tags, agents, visibility, metadata).
    pub async fn update_session(&self, id: &str, body: &Value) -> Result<Value, AgentuityError> {
        self.hub_value(
            Method::PATCH,
            &format!("/session/{}", seg(id)),
            &[],
            Some(body),
            Repeat::Safe,
        )
        .await
    }

    /// `POST /hub/session/{id}/archive`: stops the runtime, keeps the transcript.
    pub async fn archive_session(&self, id: &str) -> Result<Value, AgentuityError> {
        self.hub_value(
            Method::POST,
            &format!("/session/{}/archive", seg(id)),
            &[],
            None,
            Repeat::Safe,
        )
        .await
    }

    /// `POST /hub/session/{id}/resume`: wakes a paused sandbox.
    pub async fn resume_session(&self, id: &str) -> Result<Value, AgentuityError> {
        self.hub_value(
            Method::POST,
            &format!("/session/{}/resume", seg(id)),
            &[],
            None,
            Repeat::Safe,
        )
        .await
    }

    /// `DELETE /hub/session/{id}`: permanent; loses the transcript and the usage.
    pub async fn delete_session(&self, id: &str) -> Result<Value, AgentuityError> {
        self.hub_value(
            Method::DELETE,
            &format!("/session/{}", seg(id)),
            &[],
            None,
            Repeat::Safe,
        )
        .await
    }

    pub async fn loop_state(&self, id: &str) -> Result<LoopStateAnswer, AgentuityError> {
        self.hub_typed(
            Method::GET,
            &format!("/session/{}/loop", seg(id)),
            &[],
            None,
            Repeat::Safe,
        )
        .await
    }

    /// The whole transcript (what the Hub answers without paging parameters).
    pub async fn replay(&self, id: &str) -> Result<Replay, AgentuityError> {
        self.replay_page(id, None, None).await
    }

    /// `GET /hub/session/{id}/replay?limit&offset`: the SDK forwards both; whether the Hub pages
    /// the transcript is not documented.
    pub async fn replay_page(
        &self,
        id: &str,
        limit: Option<u32>,
        offset: Option<u32>,
    ) -> Result<Replay, AgentuityError> {
        let mut query = Vec::new();
        push_opt(&mut query, "limit", limit);
        push_opt(&mut query, "offset", offset);
        self.hub_typed(
            Method::GET,
            &format!("/session/{}/replay", seg(id)),
            &query,
            None,
            Repeat::Safe,
        )
        .await
    }

    /// `GET /hub/session/{id}/participants`, typed, with every parameter the seeds name.
    pub async fn list_participants(
        &self,
        id: &str,
        params: &ListParticipants,
    ) -> Result<ParticipantList, AgentuityError> {
        let mut query = Vec::new();
        push_opt(&mut query, "limit", params.limit);
        if params.include_disconnected {
            query.push(("includeDisconnected", "true".to_string()));
        }
        push_opt(&mut query, "offset", params.offset);
        self.hub_typed(
            Method::GET,
            &format!("/session/{}/participants", seg(id)),
            &query,
            None,
            Repeat::Safe,
        )
        .await
    }

    /// `GET /hub/session/{id}/events/history?limit&beforeId`: events older than `before_id`.
    pub async fn event_history(
        &self,
        id: &str,
        limit: Option<u32>,
        before_id: Option<i64>,
    ) -> Result<EventHistory, AgentuityError> {
        let mut query = Vec::new();
        push_opt(&mut query, "limit", limit);
        push_opt(&mut query, "beforeId", before_id);
        self.hub_typed(
            Method::GET,
            &format!("/session/{}/events/history", seg(id)),
            &query,
            None,
            Repeat::Safe,
        )
        .await
    }

    /// `GET /hub/users?search&limit&offset`: `search` matches display names.
    pub async fn search_users(&self, params: &ListUsers) -> Result<UserList, AgentuityError> {
        let mut query = Vec::new();
        push_opt(&mut query, "search", params.search.as_ref());
        push_opt(&mut query, "limit", params.limit);
        push_opt(&mut query, "offset", params.offset);
        self.hub_typed(Method::GET, "/users", &query, None, Repeat::Safe)
            .await
    }

    /// `POST /hub/session/builder`: a Lead + agent-builder session that designs, edits or
    /// publishes a custom agent (`mode`, `sourceSessionId`, `targetAgentId`/`targetAgentSlug`,
    /// `label`, `prompt`, `visibility`). Never repeated when its fate is unknown, like
    /// [`Self::create_session`].
    pub async fn create_builder_session(
        &self,
        body: &Value,
    ) -> Result<CreatedSession, AgentuityError> {
        self.hub_typed(
            Method::POST,
            "/session/builder",
            &[],
            Some(body),
            Repeat::Never,
        )
        .await
    }

    /// The sessions a remote client can attach to, the way the SDK's `listConnectableSessions`
    /// finds them: it lists with `includeArchived=true` (and `search`, but no paging, so the Hub's
    /// default page is what gets filtered), keeps only sandbox sessions that are not history-only
    /// and are either in the `running` bucket or in the `paused` bucket with the runtime still
    /// available or able to be woken ([`Session::is_connectable`]), then applies `offset` and
    /// `limit` to what is left. `total` counts the connectable sessions.
    pub async fn list_connectable_sessions(
        &self,
        params: &ListConnectable,
    ) -> Result<SessionPage, AgentuityError> {
        let page = self
            .list_sessions(&ListSessions {
                search: params.search.clone(),
                include_archived: true,
                limit: None,
                offset: None,
            })
            .await?;
        let connectable: Vec<Session> = page
            .sessions
            .into_iter()
            .filter(Session::is_connectable)
            .collect();
        let total = connectable.len() as u64;
        let offset = params.offset.unwrap_or(0) as usize;
        let limit = params.limit.map_or(usize::MAX, |l| l as usize);
        Ok(SessionPage {
            sessions: connectable.into_iter().skip(offset).take(limit).collect(),
            total: Some(total),
        })
    }

    /// Makes a session attachable (SDK `prepareSessionForRemoteAttach`): reads it; answers it at
    /// once when its runtime is up ([`Session::runtime_ready`]) or when it is over (history only:
    /// nothing to wake, the caller sees [`Session::is_over`]); otherwise resumes it as soon as the
    /// Hub says it can be woken, and reads it every `poll_interval` until the runtime is up.
    /// `timeout` bounds the whole wait, each call included: past it the answer is
    /// [`AgentuityError::NotReady`], naming the last status seen. A read that fails while waiting
    /// is logged and polling goes on (the Hub answers 404 for a moment while a sandbox wakes); so
    /// does a refused resume (the session may be waking already), which is tried again on the next
    /// read that still says it can be woken. Only a refused key or account ends the wait early.
    /// Waits on tokio time.
    pub async fn prepare_session_for_remote_attach(
        &self,
        id: &str,
        timeout: Duration,
        poll_interval: Duration,
    ) -> Result<Session, AgentuityError> {
        let started = tokio::time::Instant::now();
        let deadline = started + timeout;
        let not_ready = |session: Option<&Session>, last_error: Option<&str>| {
            let mut state = match session {
                Some(session) => format!(
                    "status {}, runtimeAvailable {}, wakeAvailable {}",
                    session.status_str(),
                    flag(session.runtime_available),
                    flag(session.wake_available),
                ),
                None => "the session was not read".to_string(),
            };
            if let Some(error) = last_error {
                state.push_str(&format!("; the last call failed: {error}"));
            }
            AgentuityError::NotReady {
                id: id.to_string(),
                waited: tokio::time::Instant::now() - started,
                state,
            }
        };
        let mut session = match tokio::time::timeout_at(deadline, self.get_session(id)).await {
            Ok(read) => read?,
            Err(_) => return Err(not_ready(None, Some("no answer within the timeout"))),
        };
        if session.is_over() || session.runtime_ready() {
            return Ok(session);
        }
        let mut resumed = false;
        let mut last_error: Option<String> = None;
        loop {
            // A session still starting may only become wakeable later; wake it when it does.
            if !resumed && session.wake_available == Some(true) {
                match tokio::time::timeout_at(deadline, self.resume_session(id)).await {
                    Ok(Ok(_)) => resumed = true,
                    // A 400 may only say the session is waking already.
                    Ok(Err(err)) if err.is_fatal() && err.class() != Some(ErrorClass::Invalid) => {
                        return Err(err);
                    }
                    Ok(Err(err)) => {
                        tracing::debug!(session = id, error = %err, "agentuity: a resume while waiting to attach failed; polling on");
                        last_error = Some(format!("resume: {err}"));
                    }
                    Err(_) => {}
                }
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(not_ready(Some(&session), last_error.as_deref()));
            }
            tokio::time::sleep(poll_interval.min(deadline - now)).await;
            match tokio::time::timeout_at(deadline, self.get_session(id)).await {
                Ok(Ok(read)) => {
                    session = read;
                    last_error = None;
                    if session.is_over() || session.runtime_ready() {
                        return Ok(session);
                    }
                }
                Ok(Err(err)) if err.is_fatal() => return Err(err),
                Ok(Err(err)) => {
                    tracing::debug!(session = id, error = %err, "agentuity: a read while waiting to attach failed; polling on");
                    last_error = Some(err.to_string());
                }
                Err(_) => last_error = Some("a read did not answer within the timeout".into()),
            }
        }
    }

    // ---- Coder Hub: workspaces, skills, GitHub ----

    /// `POST /hub/workspaces` (`name`, `description`, `scope`, `repos`, `savedSkillIds`,
    /// `skillBucketIds`); answers the workspace out of `{"workspace": …}`. Never repeated when
    /// its fate is unknown.
    pub async fn create_workspace(&self, body: &Value) -> Result<Workspace, AgentuityError> {
        self.hub_typed_in(
            Method::POST,
            "/workspaces",
            &[],
            Some(body),
            Repeat::Never,
            Some("workspace"),
        )
        .await
    }

    pub async fn list_workspaces(&self) -> Result<WorkspaceList, AgentuityError> {
        self.hub_typed(Method::GET, "/workspaces", &[], None, Repeat::Safe)
            .await
    }

    /// `GET /hub/workspaces/{id}`; answers the workspace out of `{"workspace": …}`.
    pub async fn get_workspace(&self, id: &str) -> Result<Workspace, AgentuityError> {
        self.hub_typed_in(
            Method::GET,
            &format!("/workspaces/{}", seg(id)),
            &[],
            None,
            Repeat::Safe,
            Some("workspace"),
        )
        .await
    }

    /// `DELETE /hub/workspaces/{id}`; the Hub answers `{"ok": true}`.
    pub async fn delete_workspace(&self, id: &str) -> Result<Value, AgentuityError> {
        self.hub_value(
            Method::DELETE,
            &format!("/workspaces/{}", seg(id)),
            &[],
            None,
            Repeat::Safe,
        )
        .await
    }

    /// `POST /hub/skills/library` (`repo`, `skillId`, `name`, optional `description`, `url`,
    /// `source`, `content`); answers the saved skill out of `{"skill": …}`.
    pub async fn save_skill(&self, body: &Value) -> Result<SavedSkill, AgentuityError> {
        self.hub_typed_in(
            Method::POST,
            "/skills/library",
            &[],
            Some(body),
            Repeat::Never,
            Some("skill"),
        )
        .await
    }

    pub async fn list_saved_skills(&self) -> Result<SavedSkillList, AgentuityError> {
        self.hub_typed(Method::GET, "/skills/library", &[], None, Repeat::Safe)
            .await
    }

    /// `DELETE /hub/skills/library/{id}`, `id` being the library record id.
    pub async fn delete_saved_skill(&self, id: &str) -> Result<Value, AgentuityError> {
        self.hub_value(
            Method::DELETE,
            &format!("/skills/library/{}", seg(id)),
            &[],
            None,
            Repeat::Safe,
        )
        .await
    }

    /// `POST /hub/skills/buckets` (`name`, `description`, `savedSkillIds`); answers the bucket
    /// out of `{"bucket": …}`.
    pub async fn create_skill_bucket(&self, body: &Value) -> Result<SkillBucket, AgentuityError> {
        self.hub_typed_in(
            Method::POST,
            "/skills/buckets",
            &[],
            Some(body),
            Repeat::Never,
            Some("bucket"),
        )
        .await
    }

    pub async fn list_skill_buckets(&self) -> Result<SkillBucketList, AgentuityError> {
        self.hub_typed(Method::GET, "/skills/buckets", &[], None, Repeat::Safe)
            .await
    }

    pub async fn delete_skill_bucket(&self, id: &str) -> Result<Value, AgentuityError> {
        self.hub_value(
            Method::DELETE,
            &format!("/skills/buckets/{}", seg(id)),
            &[],
            None,
            Repeat::Safe,
        )
        .await
    }

    /// `GET /hub/github/accounts`: whether GitHub is connected and the accounts its App
    /// installations reach.
    pub async fn list_github_accounts(&self) -> Result<GitHubAccountList, AgentuityError> {
        self.hub_typed(Method::GET, "/github/accounts", &[], None, Repeat::Safe)
            .await
    }

    /// `GET /hub/github/repos?accountId=`: the repositories of one account of
    /// [`Self::list_github_accounts`].
    pub async fn list_github_repos(
        &self,
        account_id: &str,
    ) -> Result<GitHubRepoList, AgentuityError> {
        self.hub_typed(
            Method::GET,
            "/github/repos",
            &[("accountId", account_id.to_string())],
            None,
            Repeat::Safe,
        )
        .await
    }

    // ---- Coder Hub: custom agents ----

    /// `GET /hub/agents?includeArchived=true` when asked.
    pub async fn list_agents(&self, params: &ListAgents) -> Result<Value, AgentuityError> {
        let mut query = Vec::new();
        if params.include_archived {
            query.push(("includeArchived", "true".to_string()));
        }
        self.hub_value(Method::GET, "/agents", &query, None, Repeat::Safe)
            .await
    }

    pub async fn create_agent(&self, body: &Value) -> Result<Value, AgentuityError> {
        self.hub_value(Method::POST, "/agents", &[], Some(body), Repeat::Never)
            .await
    }

    pub async fn get_agent(&self, id_or_slug: &str) -> Result<Value, AgentuityError> {
        self.hub_value(
            Method::GET,
            &format!("/agents/{}", seg(id_or_slug)),
            &[],
            None,
            Repeat::Safe,
        )
        .await
    }

    pub async fn update_agent(
        &self,
        id_or_slug: &str,
        body: &Value,
    ) -> Result<Value, AgentuityError> {
        self.hub_value(
            Method::PATCH,
            &format!("/agents/{}", seg(id_or_slug)),
            &[],
            Some(body),
            Repeat::Safe,
        )
        .await
    }

    pub async fn publish_agent(&self, id_or_slug: &str) -> Result<Value, AgentuityError> {
        self.hub_value(
            Method::POST,
            &format!("/agents/{}/publish", seg(id_or_slug)),
            &[],
            None,
            Repeat::Never,
        )
        .await
    }

    pub async fn archive_agent(&self, id_or_slug: &str) -> Result<Value, AgentuityError> {
        self.hub_value(
            Method::POST,
            &format!("/agents/{}/archive", seg(id_or_slug)),
            &[],
            None,
            Repeat::Safe,
        )
        .await
    }

    pub async fn agent_versions(&self, id_or_slug: &str) -> Result<Value, AgentuityError> {
        self.hub_value(
            Method::GET,
            &format!("/agents/{}/versions", seg(id_or_slug)),
            &[],
            None,
            Repeat::Safe,
        )
        .await
    }

    // ---- Sessions API (agent executions; `{success,data}` envelope) ----

    /// `GET {catalyst}/session`.
    pub async fn list_agent_sessions(
        &self,
        params: &ListAgentSessions,
    ) -> Result<Value, AgentuityError> {
        let mut query: Vec<(&str, String)> = Vec::new();
        push_opt(&mut query, "limit", params.limit);
        push_opt(&mut query, "offset", params.offset);
        for (name, value) in &params.filters {
            query.push((name.as_str(), value.clone()));
        }
        self.enveloped(Base::Catalyst, "/session", &query).await
    }

    /// `GET {catalyst}/session/{id}`: `{session, agents, eval_runs, route}`.
    pub async fn get_agent_session(&self, id: &str) -> Result<Value, AgentuityError> {
        self.enveloped(Base::Catalyst, &format!("/session/{}", seg(id)), &[])
            .await
    }

    /// `GET {api}/cli/session/{id}/logs`: `[{body, severity, timestamp}]`.
    pub async fn agent_session_logs(&self, id: &str) -> Result<Value, AgentuityError> {
        self.enveloped(Base::Api, &format!("/cli/session/{}/logs", seg(id)), &[])
            .await
    }

    // ---- plumbing ----

    async fn enveloped(
        &self,
        base: Base,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Value, AgentuityError> {
        let (value, trace_id) = self
            .call(
                self.base_url(base).await?,
                Method::GET,
                path,
                query,
                None,
                Repeat::Safe,
            )
            .await?;
        match value.get("success").and_then(Value::as_bool) {
            Some(true) => Ok(value.get("data").cloned().unwrap_or(Value::Null)),
            Some(false) => {
                let (code, message, issues) =
                    ApiFailure::describe_body(&self.scrub(&value.to_string()));
                Err(AgentuityError::Api(Box::new(ApiFailure {
                    method: "GET".into(),
                    path: path.into(),
                    status: 200,
                    code,
                    message,
                    issues,
                    trace_id,
                    upgrade_url: None,
                    retry_after: None,
                    rate_limited: false,
                })))
            }
            // Tolerate an unwrapped answer.
            None => Ok(value),
        }
    }

    async fn hub_value(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        repeat: Repeat,
    ) -> Result<Value, AgentuityError> {
        let path = format!("/api/hub{path}");
        let base = self.hub_url().await?;
        Ok(self.call(base, method, &path, query, body, repeat).await?.0)
    }

    async fn hub_typed<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        repeat: Repeat,
    ) -> Result<T, AgentuityError> {
        self.hub_typed_in(method, path, query, body, repeat, None)
            .await
    }

    /// Like `hub_typed`, for answers that wrap their object in one field (`{"workspace": {…}}`);
    /// an unwrapped answer is accepted too.
    async fn hub_typed_in<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        repeat: Repeat,
        wrapper: Option<&str>,
    ) -> Result<T, AgentuityError> {
        let path = format!("/api/hub{path}");
        let (mut value, trace_id) = self
            .call(
                self.hub_url().await?,
                method.clone(),
                &path,
                query,
                body,
                repeat,
            )
            .await?;
        if let Some(field) = wrapper
            && let Some(inner @ Value::Object(_)) = value.get_mut(field)
        {
            value = inner.take();
        }
        serde_json::from_value(value).map_err(|err| AgentuityError::Decode {
            method: method.to_string(),
            path,
            message: err.to_string(),
            trace_id,
        })
    }

    /// The base of a Sessions API call (Hub calls resolve the Hub URL themselves).
    async fn base_url(&self, base: Base) -> Result<String, AgentuityError> {
        match base {
            Base::Catalyst => Ok(self.catalyst.clone()),
            Base::Api => Ok(self.api.clone()),
        }
    }

    /// Replaces the key wherever an answer echoes it.
    fn scrub(&self, text: &str) -> String {
        if self.key.0.is_empty() {
            text.to_string()
        } else {
            text.replace(&self.key.0, "<redacted>")
        }
    }

    /// Sends one request with the retry rules; answers the parsed JSON body (`null` when empty)
    /// and the trace id.
    async fn call(
        &self,
        mut base_url: String,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        repeat: Repeat,
    ) -> Result<(Value, Option<String>), AgentuityError> {
        let started = Instant::now();
        let mut retries = 0u32;
        let mut unavailable = 0u32;
        let mut region_retried = false;
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", self.key.0))
            .map_err(|_| AgentuityError::BadKey)?;
        auth.set_sensitive(true);
        loop {
            let mut url =
                Url::parse(&format!("{base_url}{path}")).map_err(|err| AgentuityError::BadUrl {
                    what: "request url",
                    value: format!("{base_url}{path}"),
                    why: err.to_string(),
                })?;
            if !query.is_empty() {
                url.query_pairs_mut()
                    .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
            }
            let mut request = self
                .http
                .request(method.clone(), url)
                .header(AUTHORIZATION, auth.clone())
                .header(ACCEPT, "application/json");
            if let Some(org) = &self.org_id {
                request = request.header(ORG_HEADER, org.as_str());
            }
            if let Some(body) = body {
                request = request
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.to_string());
            }
            let transport = |err: reqwest::Error| AgentuityError::Transport {
                method: method.to_string(),
                path: path.to_string(),
                // reqwest errors name the URL, which never carries the key; scrub anyway.
                message: self.scrub(&err.to_string()),
                timeout: err.is_timeout(),
            };
            let answer = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let headers = response.headers().clone();
                    match response.text().await {
                        Ok(text) => Ok((status, headers, text)),
                        Err(err) => Err(transport(err)),
                    }
                }
                Err(err) => Err(transport(err)),
            };
            let (status, headers, text) = match answer {
                Ok(answer) => answer,
                Err(err) => {
                    if repeat == Repeat::Safe && retries < self.retry.retries {
                        let delay = backoff(self.retry.base_delay, retries, Duration::MAX);
                        retries += 1;
                        tracing::debug!(error = %err, delay_ms = delay.as_millis() as u64, "agentuity: retrying after a network error");
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                    return Err(err);
                }
            };
            let trace_id = header_str(&headers, TRACE_HEADER);
            if status.is_success() {
                if text.trim().is_empty() {
                    return Ok((Value::Null, trace_id));
                }
                return serde_json::from_str(&text)
                    .map(|value| (value, trace_id.clone()))
                    .map_err(|err| AgentuityError::Decode {
                        method: method.to_string(),
                        path: path.to_string(),
                        message: format!("{err}: {}", excerpt(&self.scrub(&text))),
                        trace_id,
                    });
            }
            let (code, message, issues) = ApiFailure::describe_body(&self.scrub(&text));
            let rate_limited = headers.contains_key(RETRY_AFTER)
                || headers.contains_key(RATE_LIMIT_RESET_HEADER)
                || headers.contains_key(RATE_LIMIT_RETRY_AFTER_HEADER);
            let failure = ApiFailure {
                method: method.to_string(),
                path: path.to_string(),
                status: status.as_u16(),
                code,
                message,
                issues,
                trace_id,
                upgrade_url: header_str(&headers, UPGRADE_URL_HEADER),
                retry_after: server_wait(&headers),
                rate_limited,
            };
            let class = failure.class();
            // One regional retry, only for Catalyst (SDK-api: hosts named catalyst).
            if class == ErrorClass::WrongRegion
                && !region_retried
                && (base_url == self.catalyst || host_is_catalyst(&base_url))
                && let Some(region) = header_str(&headers, REGION_HEADER)
                    .filter(|r| r.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
            {
                region_retried = true;
                base_url = match &self.regional_template {
                    Some(template) => template.replace("{region}", &region),
                    None => catalyst_url_for_region(&region),
                };
                tracing::info!(
                    region,
                    "agentuity: wrong region; retrying once in the region named"
                );
                continue;
            }
            let delay = match class {
                ErrorClass::RateLimited if retries < self.retry.retries => {
                    let delay = failure
                        .retry_after
                        .unwrap_or_else(|| backoff(self.retry.base_delay, retries, Duration::MAX));
                    (delay <= self.retry.max_server_wait).then_some(delay)
                }
                ErrorClass::Unavailable
                    if repeat == Repeat::Safe && matches!(status.as_u16(), 502 | 503) =>
                {
                    let delay = failure.retry_after.unwrap_or_else(|| {
                        backoff(
                            self.retry.unavailable_delay,
                            unavailable,
                            self.retry.unavailable_cap,
                        )
                    });
                    (started.elapsed() + delay <= self.retry.unavailable_budget).then_some(delay)
                }
                ErrorClass::Server
                    if repeat == Repeat::Safe
                        && status.as_u16() == 501
                        && retries < self.retry.retries =>
                {
                    Some(backoff(self.retry.base_delay, retries, Duration::MAX))
                }
                _ => None,
            };
            match delay {
                Some(delay) => {
                    if class == ErrorClass::Unavailable {
                        unavailable += 1;
                    } else {
                        retries += 1;
                    }
                    tracing::debug!(
                        status = status.as_u16(),
                        delay_ms = delay.as_millis() as u64,
                        trace_id = failure.trace_id.as_deref(),
                        "agentuity: retrying"
                    );
                    tokio::time::sleep(delay).await;
                }
                None => return Err(AgentuityError::Api(Box::new(failure))),
            }
        }
    }
}

fn host_is_catalyst(url: &str) -> bool {
    Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(|h| h.contains("catalyst")))
        .unwrap_or(false)
}

fn seg(id: &str) -> String {
    utf8_percent_encode(id, SEGMENT).to_string()
}

fn push_opt<'a, T: ToString>(query: &mut Vec<(&'a str, String)>, name: &'a str, value: Option<T>) {
    if let Some(value) = value {
        query.push((name, value.to_string()));
    }
}

/// An availability flag as the Hub would write it, `unknown` when left out.
fn flag(value: Option<bool>) -> &'static str {
    match value {
        Some(true) => "true",
        Some(false) => "false",
        None => "unknown",
    }
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The wait a server asked for: `Retry-After` (seconds or an HTTP date),
/// `X-RateLimit-Retry-After` (seconds), or `X-RateLimit-Reset` (Unix seconds).
fn server_wait(headers: &HeaderMap) -> Option<Duration> {
    let now = SystemTime::now();
    if let Some(value) = header_str(headers, RETRY_AFTER.as_str()) {
        if let Ok(seconds) = value.parse::<f64>()
            && seconds.is_finite()
            && seconds >= 0.0
        {
            return Some(Duration::from_secs_f64(seconds.min(86_400.0)));
        }
        if let Ok(at) = httpdate::parse_http_date(&value) {
            return Some(at.duration_since(now).unwrap_or_default());
        }
    }
    if let Some(seconds) = header_str(headers, RATE_LIMIT_RETRY_AFTER_HEADER)
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
    {
        return Some(Duration::from_secs_f64(seconds.min(86_400.0)));
    }
    let reset = header_str(headers, RATE_LIMIT_RESET_HEADER)?
        .parse::<u64>()
        .ok()?;
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(reset);
    Some(at.duration_since(now).unwrap_or_default())
}

/// `base × 2^attempt`, capped, times a jitter in 0.5–1.
fn backoff(base: Duration, attempt: u32, cap: Duration) -> Duration {
    let raw = base.saturating_mul(2u32.saturating_pow(attempt.min(16)));
    raw.min(cap).mul_f64(0.5 + fastrand::f64() * 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            if let Ok(value) = HeaderValue::from_str(value) {
                map.insert(*name, value);
            }
        }
        map
    }

    #[test]
    fn retry_after_is_read_as_seconds_an_http_date_or_a_rate_limit_header() {
        assert_eq!(
            server_wait(&headers(&[("retry-after", "2".into())])),
            Some(Duration::from_secs(2))
        );
        let later = SystemTime::now() + Duration::from_secs(30);
        let wait = server_wait(&headers(&[("retry-after", httpdate::fmt_http_date(later))]))
            .expect("a date");
        assert!(
            wait > Duration::from_secs(25) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        assert_eq!(
            server_wait(&headers(&[("x-ratelimit-retry-after", "1.5".into())])),
            Some(Duration::from_millis(1500))
        );
        let reset = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
            + 10;
        let wait =
            server_wait(&headers(&[("x-ratelimit-reset", reset.to_string())])).expect("a reset");
        assert!(wait <= Duration::from_secs(10), "{wait:?}");
        assert_eq!(
            server_wait(&headers(&[("retry-after", "soon".into())])),
            None
        );
    }

    #[test]
    fn backoff_doubles_with_jitter_and_respects_its_cap() {
        for attempt in 0..5 {
            let delay = backoff(Duration::from_millis(100), attempt, Duration::from_secs(1));
            let full = Duration::from_millis(100 * 2u64.pow(attempt)).min(Duration::from_secs(1));
            assert!(delay >= full / 2 && delay <= full, "{attempt}: {delay:?}");
        }
    }

    #[test]
    fn regions_map_to_catalyst_hosts() {
        assert_eq!(
            catalyst_url_for_region("usc"),
            "https://catalyst-usc.agentuity.cloud"
        );
        assert_eq!(
            catalyst_url_for_region("local"),
            "https://catalyst.agentuity.io"
        );
        let env: Env = [(REGION_VAR.to_string(), "usw".to_string())].into();
        assert_eq!(ClientSettings::default().region(&env), "usw");
        assert_eq!(
            ClientSettings::default().region(&Env::new()),
            DEFAULT_REGION
        );
    }

    #[test]
    fn a_relative_key_file_is_read_from_the_credentials_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("agentuity.key"), "ag_from_file\n").expect("write");
        let env: Env = [(
            CREDENTIALS_DIRECTORY_VAR.to_string(),
            dir.path().display().to_string(),
        )]
        .into();
        let settings = ClientSettings {
            key_file: Some("agentuity.key".into()),
            ..Default::default()
        };
        assert_eq!(settings.resolve_key(&env).expect("key"), "ag_from_file");
        let both = ClientSettings {
            key: Some("k".into()),
            key_file: Some("agentuity.key".into()),
            ..Default::default()
        };
        assert!(matches!(
            both.resolve_key(&env),
            Err(AgentuityError::BothKeys)
        ));
        assert_eq!(both.problems("c").len(), 1);
    }

    #[test]
    fn ids_are_escaped_in_paths() {
        assert_eq!(seg("codesess_1"), "codesess_1");
        assert_eq!(seg("a/b?c"), "a%2Fb%3Fc");
    }
}
