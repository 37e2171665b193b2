//! Starting a run's session: adopt one already made for the run (recorded in the run's metadata,
//! or found by its `agh-run:<run_id>` tag) or create one. A create whose fate is unknown is never
//! repeated blindly: the run's tag is looked up first.

use serde_json::Value;
use tokio::time::Instant;

use super::hub::early;
use super::request::run_tag;
use super::{LOG_TARGET, Run};
use crate::agentuity::{AgentuityError, ListSessions};
use crate::handler::Outcome;

/// Creates attempted when each one's fate was unknown (each preceded by a lookup).
const CREATE_ATTEMPTS: u32 = 3;

impl Run<'_> {
    /// A session already made for this run (run metadata, then the tag), else a new one.
    pub(super) async fn adopt_or_create(&mut self) -> Result<String, Outcome> {
        let remembered = self
            .document()
            .claim
            .run
            .metadata
            .as_ref()
            .and_then(|m| m.get("coder_session_id"))
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .map(str::to_string);
        if let Some(id) = remembered {
            match self.client.get_session(&id).await {
                Ok(session) if !session.is_over() => {
                    return Ok(self.adopted(id, "run metadata").await);
                }
                Ok(_) => {
                    tracing::info!(target: LOG_TARGET, session_id = %id, "the run's recorded coder session is over; looking further")
                }
                Err(err) if err.is_gone() => {
                    tracing::info!(target: LOG_TARGET, session_id = %id, "the run's recorded coder session is gone; looking further")
                }
                Err(err) => {
                    return Err(early(
                        self.config,
                        format!("reading the run's coder session {id}"),
                        &err,
                    ));
                }
            }
        }
        let body = self.config.session_body(self.document());
        let mut last_error = None;
        for attempt in 1..=CREATE_ATTEMPTS {
            match self.find_for_run().await {
                Ok(Some(id)) => return Ok(self.adopted(id, "its agh-run tag").await),
                Ok(None) => {}
                Err(err) => {
                    return Err(early(
                        self.config,
                        "looking for this run's coder session".into(),
                        &err,
                    ));
                }
            }
            match self.client.create_session(&body).await {
                Ok(created) => {
                    let id = created.session_id;
                    self.session_id = Some(id.clone());
                    self.created_at = Some(Instant::now());
                    tracing::info!(target: LOG_TARGET, session_id = %id, "created a coder session");
                    self.progress(format!("session {id} created"), true).await;
                    return Ok(id);
                }
                Err(err) if err.outcome_unknown() => {
                    // The create may have happened: look for it before trying again.
                    tracing::warn!(target: LOG_TARGET, error = %err, attempt, "creating the coder session had an unknown outcome; looking it up before trying again");
                    last_error = Some(err);
                    tokio::time::sleep(self.poll).await;
                }
                Err(err) => {
                    return Err(early(
                        self.config,
                        "creating the coder session".into(),
                        &err,
                    ));
                }
            }
        }
        // A last look: the last create may have made the session after all.
        if let Ok(Some(id)) = self.find_for_run().await {
            return Ok(self.adopted(id, "its agh-run tag").await);
        }
        Err(Outcome::Release(format!(
            "coder: creating the coder session kept failing ({CREATE_ATTEMPTS} attempts){}",
            last_error.map(|e| format!(": {e}")).unwrap_or_default()
        )))
    }

    async fn adopted(&mut self, id: String, how: &str) -> String {
        tracing::info!(target: LOG_TARGET, session_id = %id, how, "adopted an existing coder session");
        self.session_id = Some(id.clone());
        self.progress(format!("adopted session {id} (found by {how})"), true)
            .await;
        id
    }

    /// A live session tagged with this run. List items carry tags but no `metadata` (the SDK's
    /// list schema has none), so the tag is what is matched.
    pub(super) async fn find_for_run(&self) -> Result<Option<String>, AgentuityError> {
        let tag = run_tag(&self.document().run_id);
        let page = self
            .client
            .list_sessions(&ListSessions {
                search: Some(tag.clone()),
                include_archived: true,
                limit: Some(50),
                offset: None,
            })
            .await?;
        Ok(page
            .sessions
            .into_iter()
            .filter(|s| s.tags.contains(&tag))
            // A session already over was finished (or archived) by an earlier holder of the
            // run; its outcome was reported then.
            .filter(|s| !s.is_over())
            .find_map(|s| s.session_id))
    }
}
