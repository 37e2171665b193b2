//! An AGH API that records every call the worker makes through it, in order: the verb, the run,
//! what was sent and whether it failed; a test reads the calls or waits until they satisfy it.

use std::time::Duration;

use agh_worker::api::types::{
    AgentContext, ClaimRequest, CompleteRequest, FailRequest, HeartbeatRequest, LeaseSummary, Me,
    ReleaseRequest, TaskRunDetail, TaskView,
};
use agh_worker::api::{AghClient, ApiError, ClaimOutcome, ErrorKind, TaskEventStream};
use agh_worker::worker::AghApi;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::timeout;

/// One call through the [`Recorder`].
#[derive(Clone, Debug)]
pub(crate) struct Call {
    /// `me`, `context`, `claim`, `heartbeat`, `complete`, `fail`, `release` or `task-run`.
    pub verb: &'static str,
    /// The run the call is about; for a claim, the run claimed; empty otherwise.
    pub run_id: String,
    /// A complete's result, a fail's `{"error", "metadata"}`, a release's reason, the status a
    /// run detail read; null otherwise.
    pub body: Value,
    /// How the call failed, if it did.
    pub error: Option<ErrorKind>,
}

/// Passes every call on to the client it wraps and records it.
pub(crate) struct Recorder {
    inner: AghClient,
    calls: watch::Sender<Vec<Call>>,
}

impl Recorder {
    pub(crate) fn new(inner: AghClient) -> Recorder {
        Recorder {
            inner,
            calls: watch::Sender::new(Vec::new()),
        }
    }

    fn note<T>(&self, verb: &'static str, run_id: &str, body: Value, result: &Result<T, ApiError>) {
        let call = Call {
            verb,
            run_id: run_id.to_owned(),
            body,
            error: result.as_ref().err().map(|err| err.kind),
        };
        self.calls.send_modify(|calls| calls.push(call));
    }

    /// Every call so far.
    pub(crate) fn all_calls(&self) -> Vec<Call> {
        self.calls.borrow().clone()
    }

    /// The calls of `verb` so far.
    pub(crate) fn calls(&self, verb: &str) -> Vec<Call> {
        self.calls
            .borrow()
            .iter()
            .filter(|call| call.verb == verb)
            .cloned()
            .collect()
    }

    /// The complete, fail and release calls so far.
    pub(crate) fn terminal_calls(&self) -> Vec<Call> {
        self.calls
            .borrow()
            .iter()
            .filter(|call| matches!(call.verb, "complete" | "fail" | "release"))
            .cloned()
            .collect()
    }

    /// Resolves once the recorded calls satisfy `ready`; panics naming `what` after `within`.
    pub(crate) async fn until(
        &self,
        what: &str,
        within: Duration,
        ready: impl FnMut(&Vec<Call>) -> bool,
    ) {
        let mut calls = self.calls.subscribe();
        timeout(within, calls.wait_for(ready))
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
            .expect("the recorder lives as long as the test");
    }

    /// Resolves once `count` calls of `verb` were made.
    pub(crate) async fn until_count(&self, verb: &'static str, count: usize, within: Duration) {
        self.until(&format!("{count} {verb} calls"), within, |calls| {
            calls.iter().filter(|call| call.verb == verb).count() >= count
        })
        .await;
    }
}

impl AghApi for Recorder {
    fn session_id(&self) -> &str {
        &self.inner.identity().session_id
    }

    async fn task_run(&self, run_id: &str) -> Result<TaskRunDetail, ApiError> {
        let result = self.inner.task_run(run_id).await;
        let status = match &result {
            Ok(detail) => json!(detail.run.status),
            Err(_) => Value::Null,
        };
        self.note("task-run", run_id, status, &result);
        result
    }

    async fn task(&self, task_id: &str) -> Result<TaskView, ApiError> {
        let result = self.inner.task(task_id).await;
        self.note("task", "", json!({ "task_id": task_id }), &result);
        result
    }

    async fn me(&self) -> Result<Me, ApiError> {
        let result = self.inner.me().await;
        self.note("me", "", Value::Null, &result);
        result
    }

    async fn context(&self) -> Result<AgentContext, ApiError> {
        let result = self.inner.context().await;
        self.note("context", "", Value::Null, &result);
        result
    }

    async fn claim_next(&self, request: &ClaimRequest) -> Result<ClaimOutcome, ApiError> {
        let result = self.inner.claim_next(request).await;
        let run_id = match &result {
            Ok(ClaimOutcome::Claimed(claim)) => claim.run.id.clone(),
            _ => String::new(),
        };
        self.note("claim", &run_id, Value::Null, &result);
        result
    }

    async fn heartbeat(
        &self,
        run_id: &str,
        request: &HeartbeatRequest,
    ) -> Result<LeaseSummary, ApiError> {
        let result = self.inner.heartbeat(run_id, request).await;
        self.note("heartbeat", run_id, Value::Null, &result);
        result
    }

    async fn complete(
        &self,
        run_id: &str,
        request: &CompleteRequest,
    ) -> Result<LeaseSummary, ApiError> {
        let result = self.inner.complete(run_id, request).await;
        let body = request.result.clone().unwrap_or(Value::Null);
        self.note("complete", run_id, body, &result);
        result
    }

    async fn fail(&self, run_id: &str, request: &FailRequest) -> Result<LeaseSummary, ApiError> {
        let result = self.inner.fail(run_id, request).await;
        let body = json!({"error": request.error, "metadata": request.metadata});
        self.note("fail", run_id, body, &result);
        result
    }

    async fn release(
        &self,
        run_id: &str,
        request: &ReleaseRequest,
    ) -> Result<LeaseSummary, ApiError> {
        let result = self.inner.release(run_id, request).await;
        self.note("release", run_id, json!(request.reason), &result);
        result
    }

    /// Passed through, not recorded: the stream is opened beside the lease calls, and noting it
    /// would make their recorded order depend on timing.
    async fn task_events(
        &self,
        task_id: &str,
        after: Option<i64>,
    ) -> Result<TaskEventStream, ApiError> {
        self.inner.task_events(task_id, after).await
    }
}
