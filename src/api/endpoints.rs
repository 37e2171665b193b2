//! The endpoint calls of `AghClient`: one method per AGH endpoint, each with its path, body, accepted
//! statuses and retry kind, plus the answer types a few of them need.

use serde::Serialize;

use super::client::{AghClient, Retry, parse, path_segment};
use super::counters::{CLASS_DEADLINE, CLASS_OK};
use super::error::{ApiError, ErrorKind};
use super::types::*;

/// What a claim-next answered.
#[derive(Clone, Debug, PartialEq)]
pub enum ClaimOutcome {
    /// 200: a run is now leased to this session.
    Claimed(Box<Claim>),
    /// 204: nothing claimable right now.
    NothingToDo,
    /// A waiting claim reached the client's deadline without an answer. Nothing should be
    /// claimed, but a claim committed at the last instant would be lost: check `me` when it matters.
    DeadlineReached,
}

/// Query of `recv`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecvOptions {
    /// Block until a message for the channel is queued (bounded by the long-poll deadline).
    pub wait: bool,
    /// Return at most this many (oldest first).
    pub limit: Option<u32>,
}

/// The answer of the soul endpoints: the soul object, and whether the daemon judged it valid (200) or not (422).
#[derive(Clone, Debug, PartialEq)]
pub struct SoulAnswer {
    pub soul: Soul,
    pub http_status: u16,
}

impl AghClient {
    /// `GET /api/agent/me`
    pub async fn me(&self) -> Result<Me, ApiError> {
        let answer: MeResponse = self.get_json("me", "/api/agent/me", Retry::Read).await?;
        Ok(answer.me)
    }

    /// `GET /api/agent/context`
    pub async fn context(&self) -> Result<AgentContext, ApiError> {
        let answer: ContextResponse = self
            .get_json("context", "/api/agent/context", Retry::Read)
            .await?;
        Ok(answer.context)
    }

    /// `GET /api/agent/channels`
    pub async fn channels(&self) -> Result<Vec<CoordinationChannel>, ApiError> {
        let answer: ChannelsResponse = self
            .get_json("channels", "/api/agent/channels", Retry::Read)
            .await?;
        Ok(answer.channels)
    }

    /// `GET /api/agent/channels/{channel}/recv`. A waiting recv that reaches the client's
    /// deadline answers an empty list: that is the ordinary end of a long-poll.
    pub async fn recv(
        &self,
        channel: &str,
        options: RecvOptions,
    ) -> Result<Vec<ChannelMessage>, ApiError> {
        let mut path = format!(
            "/api/agent/channels/{}/recv",
            path_segment("recv", "channel", channel)?
        );
        let mut query = Vec::new();
        if options.wait {
            query.push("wait=true".to_string());
        }
        if let Some(limit) = options.limit {
            query.push(format!("limit={limit}"));
        }
        if !query.is_empty() {
            path.push('?');
            path.push_str(&query.join("&"));
        }
        if options.wait {
            let request = self.request(reqwest::Method::GET, &path, None::<&()>);
            let answer = self
                .send_once("recv", request, self.options.long_poll_timeout)
                .await;
            self.count(
                "recv",
                match &answer {
                    Ok((200, _)) => CLASS_OK,
                    Ok((status, body)) => {
                        ApiError::from_response("recv", *status, body).kind.as_str()
                    }
                    Err(err) if err.kind == ErrorKind::Timeout => CLASS_DEADLINE,
                    Err(err) => err.kind.as_str(),
                },
            );
            match answer {
                Ok((200, body)) => Ok(parse::<RecvResponse>("recv", &body)?.messages),
                Ok((status, body)) => Err(ApiError::from_response("recv", status, &body)),
                Err(err) if err.kind == ErrorKind::Timeout => Ok(Vec::new()),
                Err(err) => Err(err),
            }
        } else {
            let answer: RecvResponse = self.get_json("recv", &path, Retry::Read).await?;
            Ok(answer.messages)
        }
    }

    /// `POST /api/agent/channels/{channel}/send`. Retried only when an idempotency key makes it safe.
    pub async fn send(
        &self,
        channel: &str,
        body: &SendRequest,
    ) -> Result<ChannelMessage, ApiError> {
        let path = format!(
            "/api/agent/channels/{}/send",
            path_segment("send", "channel", channel)?
        );
        let retry = if body.idempotency_key.is_some() {
            Retry::Terminal
        } else {
            Retry::Never
        };
        let answer: MessageResponse = self.post_json("send", &path, body, &[202], retry).await?;
        Ok(answer.message)
    }

    /// `POST /api/agent/channels/reply`. Retried only when an idempotency key makes it safe.
    pub async fn reply(&self, body: &ReplyRequest) -> Result<ChannelMessage, ApiError> {
        let retry = if body.idempotency_key.is_some() {
            Retry::Terminal
        } else {
            Retry::Never
        };
        let answer: MessageResponse = self
            .post_json("reply", "/api/agent/channels/reply", body, &[202], retry)
            .await?;
        Ok(answer.message)
    }

    /// `GET /api/agent/coordinator/config`
    pub async fn coordinator_config(&self) -> Result<CoordinatorConfig, ApiError> {
        let answer: CoordinatorResponse = self
            .get_json(
                "coordinator-config",
                "/api/agent/coordinator/config",
                Retry::Read,
            )
            .await?;
        Ok(answer.coordinator)
    }

    /// `GET /api/agent/soul`: 200 and 422 both carry the soul object.
    pub async fn soul(&self) -> Result<SoulAnswer, ApiError> {
        self.call(
            "soul",
            Retry::Read,
            self.options.request_timeout,
            || self.request(reqwest::Method::GET, "/api/agent/soul", None::<&()>),
            &[200, 422],
            |status, body| self.soul_answer("soul", status, body),
        )
        .await
    }

    /// `POST /api/agent/soul/validate`: 200 valid, 422 invalid; both carry the soul object.
    pub async fn validate_soul(
        &self,
        request: &SoulValidateRequest,
    ) -> Result<SoulAnswer, ApiError> {
        self.call(
            "soul-validate",
            Retry::Read,
            self.options.request_timeout,
            || {
                self.request(
                    reqwest::Method::POST,
                    "/api/agent/soul/validate",
                    Some(request),
                )
            },
            &[200, 422],
            |status, body| self.soul_answer("soul-validate", status, body),
        )
        .await
    }

    fn soul_answer(
        &self,
        call: &'static str,
        status: u16,
        body: &[u8],
    ) -> Result<SoulAnswer, ApiError> {
        // A 422 that is an error envelope rather than a soul object is a real error.
        if status == 422 {
            let value: serde_json::Value = parse(call, body)?;
            if value.get("error").is_some() && value.get("validation_status").is_none() {
                return Err(ApiError::from_response(call, status, body));
            }
        }
        Ok(SoulAnswer {
            soul: parse(call, body)?,
            http_status: status,
        })
    }

    /// `POST /api/agent/spawn` under its own `timeout`: AGH starts the child's agent process and
    /// its handshake inside the request, and giving up cancels the spawn. Never retried: the
    /// daemon ignores `idempotency_key`, so a repeat can create a second child.
    pub async fn spawn(
        &self,
        request: &SpawnRequest,
        timeout: std::time::Duration,
    ) -> Result<Spawned, ApiError> {
        let answer: SpawnResponse = self
            .call(
                "spawn",
                Retry::Never,
                timeout,
                || self.request(reqwest::Method::POST, "/api/agent/spawn", Some(request)),
                &[201],
                |_, body| parse("spawn", body),
            )
            .await?;
        Ok(answer.spawn)
    }

    /// `GET /api/sessions`: every visible session, outside the agent API (AGH reads no identity
    /// there). The spawner reads it to learn whether a spawn whose answer was lost created a
    /// child (`lineage.parent_session_id`).
    pub async fn sessions(&self) -> Result<Vec<SpawnedSession>, ApiError> {
        let answer: SessionsResponse = self
            .get_json("sessions", "/api/sessions", Retry::Read)
            .await?;
        Ok(answer.sessions)
    }

    /// `POST /api/agent/tasks/claim-next`. Never retried here: a retry could hit the one-lease
    /// rule for a claim the first attempt made; the worker loop decides.
    pub async fn claim_next(&self, request: &ClaimRequest) -> Result<ClaimOutcome, ApiError> {
        let outcome = self.claim_next_once(request).await;
        self.count(
            "claim-next",
            match &outcome {
                Ok(ClaimOutcome::DeadlineReached) => CLASS_DEADLINE,
                Ok(_) => CLASS_OK,
                Err(err) => err.kind.as_str(),
            },
        );
        outcome
    }

    async fn claim_next_once(&self, request: &ClaimRequest) -> Result<ClaimOutcome, ApiError> {
        let deadline = if request.wait {
            self.options.long_poll_timeout
        } else {
            self.options.request_timeout
        };
        let http_request = self.request(
            reqwest::Method::POST,
            "/api/agent/tasks/claim-next",
            Some(request),
        );
        match self.send_once("claim-next", http_request, deadline).await {
            Ok((200, body)) => {
                let answer: ClaimResponse = parse("claim-next", &body)?;
                if answer.claim.run.id.is_empty() {
                    return Err(ApiError::local(
                        "claim-next",
                        ErrorKind::MalformedBody,
                        "the claim has no run id",
                    ));
                }
                Ok(ClaimOutcome::Claimed(Box::new(answer.claim)))
            }
            Ok((204, _)) => Ok(ClaimOutcome::NothingToDo),
            Ok((status, body)) => Err(ApiError::from_response("claim-next", status, &body)),
            Err(err) if err.kind == ErrorKind::Timeout && request.wait => {
                Ok(ClaimOutcome::DeadlineReached)
            }
            Err(err) => Err(err),
        }
    }

    /// `POST /api/agent/tasks/{run}/heartbeat`. One attempt: the lease task paces its own retries.
    pub async fn heartbeat(
        &self,
        run_id: &str,
        request: &HeartbeatRequest,
    ) -> Result<LeaseSummary, ApiError> {
        self.lease_call("heartbeat", run_id, request, Retry::Never)
            .await
    }

    /// `POST /api/agent/tasks/{run}/complete`
    pub async fn complete(
        &self,
        run_id: &str,
        request: &CompleteRequest,
    ) -> Result<LeaseSummary, ApiError> {
        self.lease_call("complete", run_id, request, Retry::Terminal)
            .await
    }

    /// `POST /api/agent/tasks/{run}/fail`
    pub async fn fail(
        &self,
        run_id: &str,
        request: &FailRequest,
    ) -> Result<LeaseSummary, ApiError> {
        self.lease_call("fail", run_id, request, Retry::Terminal)
            .await
    }

    /// `POST /api/agent/tasks/{run}/release`
    pub async fn release(
        &self,
        run_id: &str,
        request: &ReleaseRequest,
    ) -> Result<LeaseSummary, ApiError> {
        self.lease_call("release", run_id, request, Retry::Terminal)
            .await
    }

    /// `GET /api/task-runs/{run}`: the daemon's own record of a run, outside the agent API. It
    /// takes the identity headers like an agent call; the worker reads it to learn whether a
    /// terminal call whose answer was lost took effect.
    pub async fn task_run(&self, run_id: &str) -> Result<TaskRunDetail, ApiError> {
        let path = format!(
            "/api/task-runs/{}",
            path_segment("task-run", "run id", run_id)?
        );
        let answer: TaskRunResponse = self.get_json("task-run", &path, Retry::Read).await?;
        Ok(answer.run)
    }

    /// `GET /api/tasks/{task}`: the task view, the one read with the task's description and its
    /// own metadata. Outside the agent API, it takes the identity headers like an agent call.
    pub async fn task(&self, task_id: &str) -> Result<TaskView, ApiError> {
        let path = format!("/api/tasks/{}", path_segment("task", "task id", task_id)?);
        let answer: TaskViewResponse = self.get_json("task", &path, Retry::Read).await?;
        Ok(answer.task)
    }

    async fn lease_call<B: Serialize>(
        &self,
        call: &'static str,
        run_id: &str,
        body: &B,
        retry: Retry,
    ) -> Result<LeaseSummary, ApiError> {
        let path = format!(
            "/api/agent/tasks/{}/{call}",
            path_segment(call, "run id", run_id)?
        );
        let answer: LeaseResponse = self.post_json(call, &path, body, &[200], retry).await?;
        Ok(answer.lease)
    }
}
