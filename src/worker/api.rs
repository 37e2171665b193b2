//! The AGH calls the claim loop and its lease tasks make, as a trait: the real client implements
//! it; tests use an in-memory fake so timer-heavy behaviour can run on paused tokio time.

use std::future::Future;

use crate::api::types::{
    AgentContext, ClaimRequest, CompleteRequest, FailRequest, HeartbeatRequest, LeaseSummary, Me,
    ReleaseRequest, TaskRunDetail, TaskView,
};
use crate::api::{AghClient, ApiError, ClaimOutcome, ErrorKind, TaskEventStream};

/// The AGH calls the worker makes. The real client implements it; tests use an in-memory fake
/// so timer-heavy behaviour can run on paused tokio time.
pub trait AghApi: Send + Sync + 'static {
    /// The session this worker speaks as: a run bound to it is ours.
    fn session_id(&self) -> &str;
    fn me(&self) -> impl Future<Output = Result<Me, ApiError>> + Send;
    fn context(&self) -> impl Future<Output = Result<AgentContext, ApiError>> + Send;
    fn claim_next(
        &self,
        request: &ClaimRequest,
    ) -> impl Future<Output = Result<ClaimOutcome, ApiError>> + Send;
    fn heartbeat(
        &self,
        run_id: &str,
        request: &HeartbeatRequest,
    ) -> impl Future<Output = Result<LeaseSummary, ApiError>> + Send;
    fn complete(
        &self,
        run_id: &str,
        request: &CompleteRequest,
    ) -> impl Future<Output = Result<LeaseSummary, ApiError>> + Send;
    fn fail(
        &self,
        run_id: &str,
        request: &FailRequest,
    ) -> impl Future<Output = Result<LeaseSummary, ApiError>> + Send;
    fn release(
        &self,
        run_id: &str,
        request: &ReleaseRequest,
    ) -> impl Future<Output = Result<LeaseSummary, ApiError>> + Send;
    /// The daemon's record of a run (`GET /api/task-runs/{id}`).
    fn task_run(
        &self,
        run_id: &str,
    ) -> impl Future<Output = Result<TaskRunDetail, ApiError>> + Send;
    /// The task view (`GET /api/tasks/{id}`): the task's description and metadata, its runs.
    fn task(&self, task_id: &str) -> impl Future<Output = Result<TaskView, ApiError>> + Send;
    /// The live events of a task after the event `after` (`GET /api/tasks/{id}/stream`). A
    /// double without a stream answers like a daemon without the route.
    fn task_events(
        &self,
        task_id: &str,
        after: Option<i64>,
    ) -> impl Future<Output = Result<TaskEventStream, ApiError>> + Send {
        let _ = (task_id, after);
        std::future::ready(Err(ApiError::local(
            "task-stream",
            ErrorKind::RouteNotFound,
            "this AGH API offers no task event stream",
        )))
    }
}

impl AghApi for AghClient {
    fn session_id(&self) -> &str {
        &self.identity().session_id
    }
    fn me(&self) -> impl Future<Output = Result<Me, ApiError>> + Send {
        AghClient::me(self)
    }
    fn context(&self) -> impl Future<Output = Result<AgentContext, ApiError>> + Send {
        AghClient::context(self)
    }
    fn claim_next(
        &self,
        request: &ClaimRequest,
    ) -> impl Future<Output = Result<ClaimOutcome, ApiError>> + Send {
        AghClient::claim_next(self, request)
    }
    fn heartbeat(
        &self,
        run_id: &str,
        request: &HeartbeatRequest,
    ) -> impl Future<Output = Result<LeaseSummary, ApiError>> + Send {
        AghClient::heartbeat(self, run_id, request)
    }
    fn complete(
        &self,
        run_id: &str,
        request: &CompleteRequest,
    ) -> impl Future<Output = Result<LeaseSummary, ApiError>> + Send {
        AghClient::complete(self, run_id, request)
    }
    fn fail(
        &self,
        run_id: &str,
        request: &FailRequest,
    ) -> impl Future<Output = Result<LeaseSummary, ApiError>> + Send {
        AghClient::fail(self, run_id, request)
    }
    fn release(
        &self,
        run_id: &str,
        request: &ReleaseRequest,
    ) -> impl Future<Output = Result<LeaseSummary, ApiError>> + Send {
        AghClient::release(self, run_id, request)
    }
    fn task_run(
        &self,
        run_id: &str,
    ) -> impl Future<Output = Result<TaskRunDetail, ApiError>> + Send {
        AghClient::task_run(self, run_id)
    }
    fn task(&self, task_id: &str) -> impl Future<Output = Result<TaskView, ApiError>> + Send {
        AghClient::task(self, task_id)
    }
    fn task_events(
        &self,
        task_id: &str,
        after: Option<i64>,
    ) -> impl Future<Output = Result<TaskEventStream, ApiError>> + Send {
        AghClient::task_events(self, task_id, after)
    }
}
