//! The endpoints only the operator commands (`agh-worker coder …`) call: session upkeep and
//! remote attach, users and participants, workspaces, saved skills and skill buckets, GitHub
//! accounts, custom agents, and the Sessions API (agent executions).

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use super::core::{AgentuityClient, Base, push_opt, seg};
use super::error::{AgentuityError, ErrorClass};
use super::retry::Repeat;
use super::types::{
    CreatedSession, GitHubAccountList, GitHubRepoList, ListAgentSessions, ListAgents,
    ListConnectable, ListParticipants, ListSessions, ListUsers, ParticipantList, SavedSkill,
    SavedSkillList, Session, SessionPage, SkillBucket, SkillBucketList, UserList, Workspace,
    WorkspaceList,
};

impl AgentuityClient {
    // ---- Coder Hub: sessions ----

    /// `PATCH /hub/session/{id}` (label, tags, agents, visibility, metadata).
    pub async fn update_session(&self, id: &str, body: &Value) -> Result<Value, AgentuityError> {
        self.hub_change(Method::PATCH, &format!("/session/{}", seg(id)), Some(body))
            .await
    }

    /// `DELETE /hub/session/{id}`: permanent; loses the transcript and the usage.
    pub async fn delete_session(&self, id: &str) -> Result<Value, AgentuityError> {
        self.hub_change(Method::DELETE, &format!("/session/{}", seg(id)), None)
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
        push_opt(
            &mut query,
            "includeDisconnected",
            params.include_disconnected.then_some(true),
        );
        push_opt(&mut query, "offset", params.offset);
        self.hub_get(&format!("/session/{}/participants", seg(id)), &query)
            .await
    }

    /// `GET /hub/users?search&limit&offset`: `search` matches display names. The Hub answers
    /// `{users, total, limit, offset}` or a bare array of users; the SDK accepts both, and so does
    /// this.
    pub async fn search_users(&self, params: &ListUsers) -> Result<UserList, AgentuityError> {
        let mut query = Vec::new();
        push_opt(&mut query, "search", params.search.as_ref());
        push_opt(&mut query, "limit", params.limit);
        push_opt(&mut query, "offset", params.offset);
        let answer: Value = self.hub_get("/users", &query).await?;
        serde_json::from_value(super::types::listed(answer, "users")).map_err(|err| {
            AgentuityError::Decode {
                method: "GET".into(),
                path: "/api/hub/users".into(),
                message: err.to_string(),
                trace_id: None,
            }
        })
    }

    /// `POST /hub/session/builder`: a Lead + agent-builder session that designs, edits or
    /// publishes a custom agent (`mode`, `sourceSessionId`, `targetAgentId`/`targetAgentSlug`,
    /// `label`, `prompt`, `visibility`). Never repeated when its fate is unknown, like
    /// [`Self::create_session`].
    pub async fn create_builder_session(
        &self,
        body: &Value,
    ) -> Result<CreatedSession, AgentuityError> {
        self.hub_create("/session/builder", Some(body), None).await
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
        self.hub_create("/workspaces", Some(body), Some("workspace"))
            .await
    }

    pub async fn list_workspaces(&self) -> Result<WorkspaceList, AgentuityError> {
        self.hub_get("/workspaces", &[]).await
    }

    /// `GET /hub/workspaces/{id}`; answers the workspace out of `{"workspace": …}`.
    pub async fn get_workspace(&self, id: &str) -> Result<Workspace, AgentuityError> {
        let path = format!("/workspaces/{}", seg(id));
        self.hub_call(
            Method::GET,
            &path,
            &[],
            None,
            Repeat::Safe,
            Some("workspace"),
        )
        .await
    }

    /// `DELETE /hub/workspaces/{id}`; the Hub answers `{"ok": true}`.
    pub async fn delete_workspace(&self, id: &str) -> Result<Value, AgentuityError> {
        self.hub_change(Method::DELETE, &format!("/workspaces/{}", seg(id)), None)
            .await
    }

    /// `POST /hub/skills/library` (`repo`, `skillId`, `name`, optional `description`, `url`,
    /// `source`, `content`); answers the saved skill out of `{"skill": …}`.
    pub async fn save_skill(&self, body: &Value) -> Result<SavedSkill, AgentuityError> {
        self.hub_create("/skills/library", Some(body), Some("skill"))
            .await
    }

    pub async fn list_saved_skills(&self) -> Result<SavedSkillList, AgentuityError> {
        self.hub_get("/skills/library", &[]).await
    }

    /// `DELETE /hub/skills/library/{id}`, `id` being the library record id.
    pub async fn delete_saved_skill(&self, id: &str) -> Result<Value, AgentuityError> {
        let path = format!("/skills/library/{}", seg(id));
        self.hub_change(Method::DELETE, &path, None).await
    }

    /// `POST /hub/skills/buckets` (`name`, `description`, `savedSkillIds`); answers the bucket
    /// out of `{"bucket": …}`.
    pub async fn create_skill_bucket(&self, body: &Value) -> Result<SkillBucket, AgentuityError> {
        self.hub_create("/skills/buckets", Some(body), Some("bucket"))
            .await
    }

    pub async fn list_skill_buckets(&self) -> Result<SkillBucketList, AgentuityError> {
        self.hub_get("/skills/buckets", &[]).await
    }

    pub async fn delete_skill_bucket(&self, id: &str) -> Result<Value, AgentuityError> {
        let path = format!("/skills/buckets/{}", seg(id));
        self.hub_change(Method::DELETE, &path, None).await
    }

    /// `GET /hub/github/accounts`: whether GitHub is connected and the accounts its App
    /// installations reach.
    pub async fn list_github_accounts(&self) -> Result<GitHubAccountList, AgentuityError> {
        self.hub_get("/github/accounts", &[]).await
    }

    /// `GET /hub/github/repos?accountId=`: the repositories of one account of
    /// [`Self::list_github_accounts`].
    pub async fn list_github_repos(
        &self,
        account_id: &str,
    ) -> Result<GitHubRepoList, AgentuityError> {
        self.hub_get("/github/repos", &[("accountId", account_id.to_string())])
            .await
    }

    // ---- Coder Hub: custom agents ----

    /// `GET /hub/agents?includeArchived=true` when asked.
    pub async fn list_agents(&self, params: &ListAgents) -> Result<Value, AgentuityError> {
        let mut query = Vec::new();
        push_opt(
            &mut query,
            "includeArchived",
            params.include_archived.then_some(true),
        );
        self.hub_get("/agents", &query).await
    }

    pub async fn create_agent(&self, body: &Value) -> Result<Value, AgentuityError> {
        self.hub_create("/agents", Some(body), None).await
    }

    pub async fn get_agent(&self, id_or_slug: &str) -> Result<Value, AgentuityError> {
        self.hub_get(&format!("/agents/{}", seg(id_or_slug)), &[])
            .await
    }

    pub async fn update_agent(
        &self,
        id_or_slug: &str,
        body: &Value,
    ) -> Result<Value, AgentuityError> {
        let path = format!("/agents/{}", seg(id_or_slug));
        self.hub_change(Method::PATCH, &path, Some(body)).await
    }

    /// `POST /hub/agents/{id}/publish`. Never repeated when its fate is unknown.
    pub async fn publish_agent(&self, id_or_slug: &str) -> Result<Value, AgentuityError> {
        self.hub_create(&format!("/agents/{}/publish", seg(id_or_slug)), None, None)
            .await
    }

    pub async fn archive_agent(&self, id_or_slug: &str) -> Result<Value, AgentuityError> {
        let path = format!("/agents/{}/archive", seg(id_or_slug));
        self.hub_change(Method::POST, &path, None).await
    }

    pub async fn agent_versions(&self, id_or_slug: &str) -> Result<Value, AgentuityError> {
        self.hub_get(&format!("/agents/{}/versions", seg(id_or_slug)), &[])
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
}

/// An availability flag as the Hub would write it, `unknown` when left out.
fn flag(value: Option<bool>) -> &'static str {
    match value {
        Some(true) => "true",
        Some(false) => "false",
        None => "unknown",
    }
}
