//! The Agentuity HTTP client: construction, Hub discovery and the one request path every
//! endpoint goes through (headers, the key kept out of everything it writes, error parsing, the
//! regional retry and the retry rules of [`super::retry`]).
//!
//! Hub calls go to `{hub}/api/hub/…`, where `{hub}` is the explicit URL, else
//! `AGENTUITY_CODER_URL`, else what `GET {catalyst}/coder` answers (cached for the client's life).
//! The Sessions API lives on Catalyst (`/session`) and the App API (`/cli/session/{id}/logs`), and
//! wraps its answers in `{success, data}`. The endpoints are in [`super::hub`] (what the coder
//! handler calls) and [`super::admin`] (what the operator commands call).

use std::fmt;
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::OnceCell;

use super::error::{AgentuityError, ApiFailure, ErrorClass, excerpt};
use super::retry::{Repeat, Retries, RetryPolicy, header_str, rate_limited, server_wait};
use super::settings::{ClientSettings, Env, catalyst_url_for_region, normalize_url};

/// The org header the SDK sends on Catalyst and Hub calls.
pub(super) const ORG_HEADER: &str = "x-agentuity-orgid";
/// The request trace id on answers.
pub(super) const TRACE_HEADER: &str = "x-session-id";
const REGION_HEADER: &str = "x-agentuity-region";
const UPGRADE_URL_HEADER: &str = "x-upgrade-url";

/// Characters left as they are in a path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Where a Sessions API call goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Base {
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

/// The `User-Agent` of every request: the SDK sends `Agentuity SDK/<version>`; this names the
/// worker and its version instead, so the service's client-version checks can tell them apart.
pub(super) const USER_AGENT: &str = concat!("agh-worker/", env!("CARGO_PKG_VERSION"));

/// A typed client of the Coder Hub and the Sessions API.
#[derive(Debug)]
pub struct AgentuityClient {
    http: reqwest::Client,
    /// For event streams: no overall timeout (a stream stays open for the session's life);
    /// the follower notices silence itself.
    streaming: reqwest::Client,
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
        let explicit_hub = settings.resolve_hub_url(env)?;
        let catalyst = settings.resolve_catalyst_url(env)?;
        let api = settings.resolve_api_url(env)?;
        let timeout = match settings.request_timeout_seconds {
            0 => Duration::from_secs(30),
            seconds => Duration::from_secs(seconds),
        };
        let builder = || {
            reqwest::Client::builder()
                .user_agent(USER_AGENT)
                .connect_timeout(Duration::from_secs(10))
                // A redirect could carry the Authorization header to another host.
                .redirect(reqwest::redirect::Policy::none())
        };
        let built = |client: reqwest::Result<reqwest::Client>| {
            client.map_err(|err| AgentuityError::Client(err.to_string()))
        };
        let http = built(builder().timeout(timeout).build())?;
        let streaming = built(builder().build())?;
        Ok(AgentuityClient {
            http,
            streaming,
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

    // ---- what the endpoints call ----

    /// `GET {hub}/api/hub{path}`, decoded as `T` (a `Value` keeps the answer as sent).
    pub(super) async fn hub_get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, AgentuityError> {
        self.hub_call(Method::GET, path, query, None, Repeat::Safe, None)
            .await
    }

    /// A change that may be sent again (`PATCH`, `DELETE`, an idempotent `POST`); the answer as
    /// sent.
    pub(super) async fn hub_change(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, AgentuityError> {
        self.hub_call(method, path, &[], body, Repeat::Safe, None)
            .await
    }

    /// A `POST` that creates: never sent again when its fate is unknown (no idempotency key
    /// exists), so the caller looks for the object before trying again. `wrapper`: as for
    /// [`Self::hub_call`].
    pub(super) async fn hub_create<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&Value>,
        wrapper: Option<&str>,
    ) -> Result<T, AgentuityError> {
        self.hub_call(Method::POST, path, &[], body, Repeat::Never, wrapper)
            .await
    }

    /// One Hub call, `{hub}/api/hub{path}`, its answer decoded as `T`. `wrapper` names the field
    /// some answers wrap their object in (`{"workspace": {…}}`); an unwrapped answer is accepted
    /// too.
    pub(super) async fn hub_call<T: DeserializeOwned>(
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

    /// A Sessions API read: unwraps `{success, data}`; `success: false` is a failure.
    pub(super) async fn enveloped(
        &self,
        base: Base,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Value, AgentuityError> {
        let base_url = match base {
            Base::Catalyst => self.catalyst.clone(),
            Base::Api => self.api.clone(),
        };
        let (value, trace_id) = self
            .call(base_url, Method::GET, path, query, None, Repeat::Safe)
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

    // ---- the transport ----

    /// The headers of every request, as the SDK sends them: `Content-Type` and `Accept` (also on
    /// GETs and body-less POSTs), the key, the org when one is set.
    fn headers(&self, accept: &'static str) -> Result<HeaderMap, AgentuityError> {
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", self.key.0))
            .map_err(|_| AgentuityError::BadKey)?;
        auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, auth);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(ACCEPT, HeaderValue::from_static(accept));
        if let Some(org) = &self.org_id {
            let org = HeaderValue::from_str(org).map_err(|_| AgentuityError::BadUrl {
                what: "org_id",
                value: org.clone(),
                why: "has characters an HTTP header cannot carry".into(),
            })?;
            headers.insert(ORG_HEADER, org);
        }
        Ok(headers)
    }

    /// Opens `GET {hub}/api/hub{path}` as an event stream (`Accept: text/event-stream`), as the
    /// SDK's `CoderSSEClient` does: the key and the org also go in the query (`api_key`,
    /// `org_id`), since browsers' `EventSource` cannot send headers and the Hub is documented to
    /// read them there; the `Authorization` header goes too. Not retried: the follower reopens
    /// the stream with its own backoff. A refusal is the failure the Hub answered.
    pub(super) async fn open_stream(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<reqwest::Response, AgentuityError> {
        let path = format!("/api/hub{path}");
        let base_url = self.hub_url().await?;
        let mut url =
            Url::parse(&format!("{base_url}{path}")).map_err(|err| AgentuityError::BadUrl {
                what: "request url",
                value: format!("{base_url}{path}"),
                why: err.to_string(),
            })?;
        {
            let mut pairs = url.query_pairs_mut();
            pairs.extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
            pairs.append_pair("api_key", &self.key.0);
            if let Some(org) = &self.org_id {
                pairs.append_pair("org_id", org);
            }
        }
        let mut headers = self.headers("text/event-stream")?;
        // A stream request has no body: the SDK's SSE client sends only `Accept`.
        headers.remove(CONTENT_TYPE);
        let response = self
            .streaming
            .get(url)
            .headers(headers)
            .send()
            .await
            .map_err(|err| AgentuityError::Transport {
                method: "GET".into(),
                path: path.clone(),
                timeout: err.is_timeout(),
                // The URL carries the key in its query: reqwest's message names the URL.
                message: self.scrub(&err.without_url().to_string()),
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        let (code, message, issues) = ApiFailure::describe_body(&self.scrub(&text));
        Err(AgentuityError::Api(Box::new(ApiFailure {
            method: "GET".into(),
            path,
            status: status.as_u16(),
            code,
            message,
            issues,
            trace_id: header_str(&headers, TRACE_HEADER),
            upgrade_url: header_str(&headers, UPGRADE_URL_HEADER),
            retry_after: server_wait(&headers),
            rate_limited: rate_limited(&headers),
        })))
    }

    /// Replaces the key wherever an answer echoes it.
    pub(super) fn scrub(&self, text: &str) -> String {
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
        let mut retries = Retries::new(&self.retry, repeat);
        let mut region_retried = false;
        let headers = self.headers("application/json")?;
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
                .headers(headers.clone());
            if let Some(body) = body {
                request = request.body(body.to_string());
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
                Err(err) => match retries.after_network_error() {
                    Some(delay) => {
                        tracing::debug!(error = %err, delay_ms = delay.as_millis() as u64, "agentuity: retrying after a network error");
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                    None => return Err(err),
                },
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
                rate_limited: rate_limited(&headers),
            };
            // One regional retry, only for Catalyst (SDK-api: hosts named catalyst).
            if failure.class() == ErrorClass::WrongRegion
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
            match retries.after_failure(&failure) {
                Some(delay) => {
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

/// An id as one path segment.
pub(super) fn seg(id: &str) -> String {
    utf8_percent_encode(id, SEGMENT).to_string()
}

/// Adds `name=value` to a query when the value is set.
pub(super) fn push_opt<'a, T: ToString>(
    query: &mut Vec<(&'a str, String)>,
    name: &'a str,
    value: Option<T>,
) {
    if let Some(value) = value {
        query.push((name, value.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_escaped_in_paths() {
        assert_eq!(seg("codesess_1"), "codesess_1");
        assert_eq!(seg("a/b?c"), "a%2Fb%3Fc");
    }
}
