//! When the client sends a request again, and after how long (research notes §7): network
//! errors, 501s and rate limits a few times with a doubling pause; 502/503 ("service
//! restarting") within a time budget; a wait the server asks for (`Retry-After` and the
//! rate-limit headers) honoured up to a bound.

use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{HeaderMap, RETRY_AFTER};

use super::error::{ApiFailure, ErrorClass};
use crate::util::backoff::Backoff;

const RATE_LIMIT_RESET_HEADER: &str = "x-ratelimit-reset";
const RATE_LIMIT_RETRY_AFTER_HEADER: &str = "x-ratelimit-retry-after";

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
pub(super) enum Repeat {
    /// Reads and idempotent writes: retried after network errors and 502/503.
    Safe,
    /// Creates: only retried when the server certainly did not act (rate limits, wrong region).
    /// The caller looks for the object before trying again.
    Never,
}

/// The retries of one call so far, and the pause the policy allows before the next.
#[derive(Debug)]
pub(super) struct Retries<'a> {
    policy: &'a RetryPolicy,
    repeat: Repeat,
    started: Instant,
    /// Pauses taken after network errors, rate limits and 501s.
    retries: u32,
    /// Pauses taken after 502/503.
    unavailable: u32,
}

impl<'a> Retries<'a> {
    pub(super) fn new(policy: &'a RetryPolicy, repeat: Repeat) -> Self {
        Retries {
            policy,
            repeat,
            started: Instant::now(),
            retries: 0,
            unavailable: 0,
        }
    }

    /// The pause before sending again after a network error; `None`: give up.
    pub(super) fn after_network_error(&mut self) -> Option<Duration> {
        if self.repeat != Repeat::Safe || self.retries >= self.policy.retries {
            return None;
        }
        let delay = self.doubling();
        self.retries += 1;
        Some(delay)
    }

    /// The pause before sending again after a failed answer; `None`: give up.
    pub(super) fn after_failure(&mut self, failure: &ApiFailure) -> Option<Duration> {
        let policy = self.policy;
        let safe = self.repeat == Repeat::Safe;
        let may_retry = self.retries < policy.retries;
        match failure.class() {
            ErrorClass::RateLimited if may_retry => {
                let delay = failure.retry_after.unwrap_or_else(|| self.doubling());
                self.retries += 1;
                (delay <= policy.max_server_wait).then_some(delay)
            }
            ErrorClass::Unavailable if safe && matches!(failure.status, 502 | 503) => {
                let delay = failure.retry_after.unwrap_or_else(|| {
                    backoff(
                        policy.unavailable_delay,
                        self.unavailable,
                        policy.unavailable_cap,
                    )
                });
                self.unavailable += 1;
                (self.started.elapsed() + delay <= policy.unavailable_budget).then_some(delay)
            }
            ErrorClass::Server if safe && failure.status == 501 && may_retry => {
                let delay = self.doubling();
                self.retries += 1;
                Some(delay)
            }
            _ => None,
        }
    }

    /// The pause after network errors, rate limits and 501s: doubling from `base_delay`.
    fn doubling(&self) -> Duration {
        backoff(self.policy.base_delay, self.retries, Duration::MAX)
    }
}

/// Whether an answer carries rate-limit headers (what makes a 409 a rate limit).
pub(super) fn rate_limited(headers: &HeaderMap) -> bool {
    headers.contains_key(RETRY_AFTER)
        || headers.contains_key(RATE_LIMIT_RESET_HEADER)
        || headers.contains_key(RATE_LIMIT_RETRY_AFTER_HEADER)
}

/// A header's trimmed text; `None` when absent, blank or not text.
pub(super) fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The wait a server asked for: `Retry-After` (seconds or an HTTP date),
/// `X-RateLimit-Retry-After` (seconds), or `X-RateLimit-Reset` (Unix seconds).
pub(super) fn server_wait(headers: &HeaderMap) -> Option<Duration> {
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

/// `base × 2^attempt` (the exponent stops at 16), capped, times a jitter in 0.5–1.
fn backoff(base: Duration, attempt: u32, cap: Duration) -> Duration {
    let cap = cap.min(base.saturating_mul(1 << 16));
    Backoff::new(base.min(cap), cap)
        .with_jitter(0.5, 1.0)
        .delay_after(attempt)
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

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

    fn failure(status: u16, retry_after: Option<Duration>) -> ApiFailure {
        ApiFailure {
            retry_after,
            ..ApiFailure::answered(status, "/api/hub/sessions")
        }
    }

    #[test]
    fn a_create_is_sent_again_after_a_rate_limit_but_not_after_a_network_error_or_a_503() {
        let policy = RetryPolicy::default();
        let mut create = Retries::new(&policy, Repeat::Never);
        assert_eq!(create.after_network_error(), None);
        assert_eq!(create.after_failure(&failure(503, None)), None);
        assert_eq!(
            create.after_failure(&failure(429, Some(Duration::from_secs(2)))),
            Some(Duration::from_secs(2))
        );
    }

    #[test]
    fn network_errors_rate_limits_and_501s_share_one_count_of_retries() {
        let policy = RetryPolicy {
            retries: 3,
            ..RetryPolicy::default()
        };
        let mut read = Retries::new(&policy, Repeat::Safe);
        assert!(read.after_network_error().is_some());
        assert!(read.after_failure(&failure(429, None)).is_some());
        assert!(read.after_failure(&failure(501, None)).is_some());
        assert_eq!(read.after_network_error(), None);
        assert_eq!(read.after_failure(&failure(429, None)), None);
        assert_eq!(read.after_failure(&failure(500, None)), None);
    }

    #[test]
    fn a_server_wait_past_the_bound_or_an_unavailable_past_the_budget_is_not_waited_for() {
        let policy = RetryPolicy {
            max_server_wait: Duration::from_secs(5),
            unavailable_budget: Duration::from_secs(1),
            ..RetryPolicy::default()
        };
        let mut read = Retries::new(&policy, Repeat::Safe);
        assert_eq!(
            read.after_failure(&failure(429, Some(Duration::from_secs(6)))),
            None
        );
        assert_eq!(
            read.after_failure(&failure(503, Some(Duration::from_secs(2)))),
            None
        );
        assert_eq!(
            read.after_failure(&failure(502, Some(Duration::from_millis(10)))),
            Some(Duration::from_millis(10))
        );
    }
}
