//! `agh-worker check`'s probe of a coder handler: resolves the Hub and makes one cheap
//! authenticated read, without retries, to say whether Agentuity accepts the key.

use std::time::Duration;

use super::config::CoderConfig;
use super::hub::refused_key_reason;
use crate::agentuity::{
    AgentuityClient, AgentuityError, Env, ErrorClass, ListSessions, RetryPolicy,
};
use crate::util::redact::without_userinfo;

/// Why `agh-worker check`'s probe of a coder handler failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeFailure {
    /// What is wrong and what to do, naming the URL tried; never the key.
    pub problem: String,
    /// The error as Agentuity or the network gave it (scrubbed of the key by the client).
    pub detail: String,
}

/// `agh-worker check`'s probe: resolves the Hub URL (the configured one, else discovery through
/// Catalyst) and makes one cheap authenticated read (a one-session page), each within `timeout`
/// and without retries. Answers what was found, or what is wrong and what to do.
pub async fn probe(
    config: &CoderConfig,
    env: &Env,
    timeout: Duration,
) -> Result<String, ProbeFailure> {
    let mut settings = config.client.clone();
    settings.request_timeout_seconds = timeout.as_secs().max(1);
    let retry = RetryPolicy {
        retries: 0,
        unavailable_budget: Duration::ZERO,
        max_server_wait: Duration::ZERO,
        ..RetryPolicy::default()
    };
    let client =
        AgentuityClient::with_retry(&settings, env, retry).map_err(|err| ProbeFailure {
            problem: "the Agentuity client cannot be set up".into(),
            detail: without_userinfo(&err.to_string()),
        })?;
    let failed = |err: AgentuityError, what: &str| ProbeFailure {
        problem: match (&err, err.status()) {
            _ if err.class() == Some(ErrorClass::Unauthorized) => {
                refused_key_reason(config, err.status())
            }
            (_, Some(status)) => format!("{what} answered HTTP {status}"),
            (AgentuityError::Transport { .. }, None) => format!("{what} cannot be reached"),
            (_, None) => format!("{what} gave an answer that is not what was expected"),
        },
        detail: without_userinfo(&err.to_string()),
    };
    let late = |what: &str| ProbeFailure {
        problem: format!("{what} did not answer within {} s", timeout.as_secs_f64()),
        detail: "check the network path to Agentuity, or handlers.coder.hub_url / catalyst_url"
            .into(),
    };
    // A URL configured with `user:password@` is shown without it.
    let discovery = format!(
        "the Agentuity discovery at {}/coder",
        without_userinfo(client.catalyst_url())
    );
    let hub = match tokio::time::timeout(timeout, client.hub_url()).await {
        Ok(Ok(hub)) => without_userinfo(&hub),
        Ok(Err(err)) => return Err(failed(err, &discovery)),
        Err(_) => return Err(late(&discovery)),
    };
    let one = ListSessions {
        limit: Some(1),
        ..ListSessions::default()
    };
    let reading = format!("the Coder Hub at {hub}");
    match tokio::time::timeout(timeout, client.list_sessions(&one)).await {
        Ok(Ok(_)) => Ok(format!("Agentuity accepts the key (Coder Hub {hub})")),
        Ok(Err(err)) => Err(failed(err, &reading)),
        Err(_) => Err(late(&reading)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agentuity::ClientSettings;

    #[tokio::test]
    async fn the_probe_refuses_credentials_written_into_a_hub_url_without_showing_them() {
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = closed.local_addr().expect("address");
        drop(closed);
        let config = CoderConfig {
            client: ClientSettings {
                key: Some("ag_probe_key".into()),
                hub_url: Some(format!("http://op:hub-s3cret@{address}")),
                catalyst_url: Some(format!("http://op:cat-s3cret@{address}")),
                ..ClientSettings::default()
            },
            ..CoderConfig::default()
        };
        let failure = probe(&config, &Env::new(), Duration::from_secs(5))
            .await
            .expect_err("credentials in the urls");
        assert_eq!(failure.problem, "the Agentuity client cannot be set up");
        assert!(
            failure.detail.contains("must not carry credentials"),
            "{}",
            failure.detail
        );
        let debug = format!("{config:?} {:?}", config.client);
        for shown in [&failure.problem, &failure.detail, &debug] {
            assert!(!shown.contains("s3cret"), "{shown}");
        }
    }
}
