//! The Agentuity client as a coder run uses it, and what its errors mean: every answer tells the
//! handler's health whether Agentuity accepts the key, and a refused key or an account problem is
//! explained with what to do about it.

use serde_json::Value;

use super::config::CoderConfig;
use crate::agentuity::{
    AgentuityClient, AgentuityError, CreatedSession, ErrorClass, EventHistory, ListSessions,
    LoopStateAnswer, Replay, Session, SessionPage, SessionStream,
};
use crate::handler::Outcome;
use crate::handler::health::HandlerHealthReporter;

/// What to tell a person whose key Agentuity refused (401) or denied access (403): where the key
/// came from and what to do. Never the key itself.
pub fn refused_key_reason(config: &CoderConfig, status: Option<u16>) -> String {
    let fix = |wanted: &str| {
        if config.client.key.is_some() {
            format!("set handlers.coder.key to {wanted}")
        } else if let Some(file) = &config.client.key_file {
            format!(
                "put {wanted} in handlers.coder.key_file ({})",
                file.display()
            )
        } else {
            format!("set AGENTUITY_SDK_KEY (or handlers.coder.key) to {wanted}")
        }
    };
    match status {
        Some(403) => format!(
            "Agentuity denied the key access (403): {}{}",
            fix("an SDK key with access to the Coder Hub"),
            if config.client.org_id.is_some() {
                ", and check handlers.coder.org_id"
            } else {
                ""
            }
        ),
        status => format!(
            "Agentuity refused the key ({}): {}",
            status.unwrap_or(401),
            fix("a valid SDK key")
        ),
    }
}

/// An error as a run reports it: an account or key problem also says what to do about it.
pub(super) fn explain(config: &CoderConfig, err: &AgentuityError) -> String {
    match err.class() {
        Some(ErrorClass::Unauthorized) => {
            format!("{err} — {}", refused_key_reason(config, err.status()))
        }
        Some(ErrorClass::PaymentRequired) => {
            format!("{err} — the Agentuity account needs a plan or credit for Coder sessions")
        }
        Some(ErrorClass::UpgradeRequired) => format!(
            "{err} — the Coder Hub no longer accepts this agh-worker version: upgrade agh-worker"
        ),
        _ => err.to_string(),
    }
}

/// The client as a run uses it: every answer also tells the handler's health whether
/// Agentuity accepts the key.
pub(super) struct Hub<'a> {
    pub(super) client: &'a AgentuityClient,
    pub(super) health: &'a HandlerHealthReporter,
    pub(super) config: &'a CoderConfig,
}

/// What a call's refusal says about: the key itself, or one session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CallScope {
    /// Calls every run makes whatever session it works on: discovery, listing, creating.
    Key,
    /// Calls on one session (read, archive, resume, loop, replay, events).
    Session,
}

/// The path of Catalyst's Hub discovery, which any call may make first.
const DISCOVERY_PATH: &str = "/coder";

/// Whether `err` says Agentuity refuses the key: any 401, and a 403 on a key-level call. A 403
/// on one session's call (a session the key may not touch) says nothing of the key as a whole,
/// so it fails the run (when fatal) without marking the handler unhealthy.
fn refuses_key(scope: CallScope, err: &AgentuityError) -> bool {
    if err.class() != Some(ErrorClass::Unauthorized) {
        return false;
    }
    match err.status() {
        Some(403) => {
            scope == CallScope::Key || err.failure().is_some_and(|f| f.path == DISCOVERY_PATH)
        }
        _ => true,
    }
}

impl Hub<'_> {
    fn seen<T>(
        &self,
        scope: CallScope,
        answer: Result<T, AgentuityError>,
    ) -> Result<T, AgentuityError> {
        match &answer {
            Ok(_) => self.health.healthy(),
            Err(err) if refuses_key(scope, err) => self
                .health
                .unhealthy(refused_key_reason(self.config, err.status())),
            Err(_) => {}
        }
        answer
    }

    pub(super) async fn create_session(
        &self,
        body: &Value,
    ) -> Result<CreatedSession, AgentuityError> {
        self.seen(CallScope::Key, self.client.create_session(body).await)
    }

    pub(super) async fn get_session(&self, id: &str) -> Result<Session, AgentuityError> {
        self.seen(CallScope::Session, self.client.get_session(id).await)
    }

    pub(super) async fn list_sessions(
        &self,
        params: &ListSessions,
    ) -> Result<SessionPage, AgentuityError> {
        self.seen(CallScope::Key, self.client.list_sessions(params).await)
    }

    pub(super) async fn archive_session(&self, id: &str) -> Result<Value, AgentuityError> {
        self.seen(CallScope::Session, self.client.archive_session(id).await)
    }

    pub(super) async fn resume_session(&self, id: &str) -> Result<Value, AgentuityError> {
        self.seen(CallScope::Session, self.client.resume_session(id).await)
    }

    pub(super) async fn loop_state(&self, id: &str) -> Result<LoopStateAnswer, AgentuityError> {
        self.seen(CallScope::Session, self.client.loop_state(id).await)
    }

    pub(super) async fn replay(&self, id: &str) -> Result<Replay, AgentuityError> {
        self.seen(CallScope::Session, self.client.replay(id).await)
    }

    pub(super) async fn session_events(
        &self,
        id: &str,
        subscribe: &[String],
    ) -> Result<SessionStream, AgentuityError> {
        self.seen(
            CallScope::Session,
            self.client.session_events(id, subscribe).await,
        )
    }

    pub(super) async fn event_history(
        &self,
        id: &str,
        limit: Option<u32>,
        before_id: Option<i64>,
    ) -> Result<EventHistory, AgentuityError> {
        self.seen(
            CallScope::Session,
            self.client.event_history(id, limit, before_id).await,
        )
    }
}

/// The outcome of an error before any session is being followed: a setting or account problem
/// fails the run; anything that may pass (the Hub restarting, the network) gives it back.
pub(super) fn early(config: &CoderConfig, context: String, err: &AgentuityError) -> Outcome {
    if err.is_fatal() {
        Outcome::Fail {
            error: format!("coder: {context}: {}", explain(config, err)),
            metadata: None,
        }
    } else {
        Outcome::Release(format!("coder: {context}: {err}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agentuity::{ApiFailure, ClientSettings};

    fn answered(status: u16, path: &str) -> AgentuityError {
        AgentuityError::Api(Box::new(ApiFailure::answered(status, path)))
    }

    #[test]
    fn only_key_level_refusals_say_the_key_is_refused() {
        let session = "/api/hub/session/codesess_1/archive";
        assert!(refuses_key(CallScope::Session, &answered(401, session)));
        assert!(!refuses_key(CallScope::Session, &answered(403, session)));
        assert!(refuses_key(
            CallScope::Key,
            &answered(403, "/api/hub/sessions")
        ));
        // A session call that had to discover the Hub first was refused by the discovery.
        assert!(refuses_key(
            CallScope::Session,
            &answered(403, DISCOVERY_PATH)
        ));
        assert!(!refuses_key(
            CallScope::Key,
            &answered(500, "/api/hub/sessions")
        ));
    }

    #[test]
    fn a_refused_key_is_explained_by_where_the_key_came_from() {
        let with_client = |client: ClientSettings| CoderConfig {
            client,
            ..CoderConfig::default()
        };
        let inline = with_client(ClientSettings {
            key: Some("ag_inline_secret".into()),
            ..ClientSettings::default()
        });
        let from_file = with_client(ClientSettings {
            key_file: Some("agentuity-key".into()),
            ..ClientSettings::default()
        });
        let from_env = CoderConfig::default();
        assert_eq!(
            refused_key_reason(&inline, Some(401)),
            "Agentuity refused the key (401): set handlers.coder.key to a valid SDK key"
        );
        assert_eq!(
            refused_key_reason(&from_file, Some(401)),
            "Agentuity refused the key (401): put a valid SDK key in handlers.coder.key_file (agentuity-key)"
        );
        assert_eq!(
            refused_key_reason(&from_env, Some(401)),
            "Agentuity refused the key (401): set AGENTUITY_SDK_KEY (or handlers.coder.key) to a valid SDK key"
        );
        let denied = refused_key_reason(
            &with_client(ClientSettings {
                org_id: Some("org_1".into()),
                ..ClientSettings::default()
            }),
            Some(403),
        );
        assert!(
            denied.starts_with("Agentuity denied the key access (403)")
                && denied.contains("handlers.coder.org_id"),
            "{denied}"
        );
        assert!(!refused_key_reason(&inline, Some(401)).contains("ag_inline_secret"));
    }
}
