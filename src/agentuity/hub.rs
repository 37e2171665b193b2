//! The Coder Hub endpoints the coder handler runs a task with: create a session, read it, find
//! it again by tag, follow its loop state and events, read its transcript, wake and archive it.

use reqwest::Method;
use serde_json::Value;

use super::core::{AgentuityClient, push_opt, seg};
use super::error::AgentuityError;
use super::types::{
    CreatedSession, EventHistory, ListSessions, LoopStateAnswer, Replay, Session, SessionPage,
};

impl AgentuityClient {
    /// `POST /hub/session`. Never repeated when its fate is unknown (no idempotency key exists):
    /// the caller must look the session up (by tag) before trying again.
    pub async fn create_session(&self, body: &Value) -> Result<CreatedSession, AgentuityError> {
        self.hub_create("/session", Some(body), None).await
    }

    pub async fn get_session(&self, id: &str) -> Result<Session, AgentuityError> {
        self.hub_get(&format!("/session/{}", seg(id)), &[]).await
    }

    /// `GET /hub/sessions?search&includeArchived&limit&offset`.
    pub async fn list_sessions(
        &self,
        params: &ListSessions,
    ) -> Result<SessionPage, AgentuityError> {
        let mut query = Vec::new();
        push_opt(&mut query, "search", params.search.as_ref());
        push_opt(
            &mut query,
            "includeArchived",
            params.include_archived.then_some(true),
        );
        push_opt(&mut query, "limit", params.limit);
        push_opt(&mut query, "offset", params.offset);
        let value = self.hub_get("/sessions", &query).await?;
        Ok(SessionPage::from_value(value))
    }

    /// `POST /hub/session/{id}/archive`: stops the runtime, keeps the transcript.
    pub async fn archive_session(&self, id: &str) -> Result<Value, AgentuityError> {
        self.hub_change(Method::POST, &format!("/session/{}/archive", seg(id)), None)
            .await
    }

    /// `POST /hub/session/{id}/resume`: wakes a paused sandbox.
    pub async fn resume_session(&self, id: &str) -> Result<Value, AgentuityError> {
        self.hub_change(Method::POST, &format!("/session/{}/resume", seg(id)), None)
            .await
    }

    pub async fn loop_state(&self, id: &str) -> Result<LoopStateAnswer, AgentuityError> {
        self.hub_get(&format!("/session/{}/loop", seg(id)), &[])
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
        self.hub_get(&format!("/session/{}/replay", seg(id)), &query)
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
        self.hub_get(&format!("/session/{}/events/history", seg(id)), &query)
            .await
    }
}
