//! Fault injection: per-endpoint misbehaviour for the next N matching calls.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The endpoints a fault (or a request counter) can be attached to: the agent API, the run
/// detail (`GET /api/task-runs/{id}`) a worker reads after a lost terminal answer, and the
/// sessions list (`GET /api/sessions`) it reads after a lost spawn answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    Me,
    Context,
    Channels,
    ChannelRecv,
    ChannelSend,
    ChannelReply,
    ClaimNext,
    Heartbeat,
    Complete,
    Fail,
    Release,
    Spawn,
    Soul,
    SoulValidate,
    CoordinatorConfig,
    TaskRun,
    /// `GET /api/sessions`, which a worker reads to find the child of a spawn whose answer was lost.
    Sessions,
    /// `GET /api/tasks/{id}`: the task view.
    Task,
    /// `GET /api/tasks/{id}/stream`
    TaskStream,
    /// `POST /api/tasks/{id}/cancel`
    TaskCancel,
    /// `POST /api/tasks/{id}/pause`
    TaskPause,
    /// `POST /api/tasks/{id}/resume`
    TaskResume,
    /// Matches every endpoint above.
    Any,
}

impl Route {
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Me => "me",
            Route::Context => "context",
            Route::Channels => "channels",
            Route::ChannelRecv => "channel_recv",
            Route::ChannelSend => "channel_send",
            Route::ChannelReply => "channel_reply",
            Route::ClaimNext => "claim_next",
            Route::Heartbeat => "heartbeat",
            Route::Complete => "complete",
            Route::Fail => "fail",
            Route::Release => "release",
            Route::Spawn => "spawn",
            Route::Soul => "soul",
            Route::SoulValidate => "soul_validate",
            Route::CoordinatorConfig => "coordinator_config",
            Route::TaskRun => "task_run",
            Route::Sessions => "sessions",
            Route::Task => "task",
            Route::TaskStream => "task_stream",
            Route::TaskCancel => "task_cancel",
            Route::TaskPause => "task_pause",
            Route::TaskResume => "task_resume",
            Route::Any => "any",
        }
    }

    /// Routes outside the agent API: without either identity header the caller is the
    /// operator; with one, both are checked (`internal/api/core/tasks.go` ~106-131).
    pub(crate) fn accepts_operator(self) -> bool {
        matches!(
            self,
            Route::TaskRun
                | Route::Task
                | Route::TaskStream
                | Route::TaskCancel
                | Route::TaskPause
                | Route::TaskResume
        )
    }

    fn matches(self, route: Route) -> bool {
        self == Route::Any || self == route
    }
}

/// What an injected fault does to a matching request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// Answer with this status and an error envelope carrying `error` (masked over TCP when ≥ 500),
    /// without performing the operation.
    Status { status: u16, error: String },
    /// Wait this long, then handle the request normally.
    Delay(Duration),
    /// Perform the operation (commit it), then abort the connection instead of answering.
    DropAfterCommit,
    /// Answer 200 with an HTML body, without performing the operation.
    Garbage,
    /// Answer 200 with a JSON body cut in half, without performing the operation.
    Truncated,
    /// Answer 200 with a streamed body of this many bytes, without performing the operation.
    Oversize { bytes: u64 },
}

/// One injected fault: `kind` applies to the next `times` requests matching `route`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub route: Route,
    pub kind: FaultKind,
    pub times: u32,
}

impl Fault {
    pub fn new(route: Route, kind: FaultKind, times: u32) -> Fault {
        Fault { route, kind, times }
    }
}

/// Pending faults, consumed first-in first-out per matching request.
#[derive(Debug, Default)]
pub(crate) struct FaultTable {
    pending: Vec<Fault>,
}

impl FaultTable {
    pub(crate) fn add(&mut self, fault: Fault) {
        if fault.times > 0 {
            self.pending.push(fault);
        }
    }

    pub(crate) fn clear(&mut self) {
        self.pending.clear();
    }

    /// Takes one use of the first fault matching `route`, if any.
    pub(crate) fn take(&mut self, route: Route) -> Option<FaultKind> {
        let index = self
            .pending
            .iter()
            .position(|fault| fault.route.matches(route))?;
        let fault = &mut self.pending[index];
        let kind = fault.kind.clone();
        fault.times -= 1;
        if fault.times == 0 {
            self.pending.remove(index);
        }
        Some(kind)
    }
}

/// The admin-surface (JSON) form of a fault.
#[derive(Debug, Deserialize)]
pub(crate) struct FaultRequest {
    pub route: Route,
    pub kind: FaultKindRequest,
    #[serde(default = "one")]
    pub times: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum FaultKindRequest {
    Status {
        status: u16,
        #[serde(default)]
        error: String,
    },
    Delay {
        millis: u64,
    },
    DropAfterCommit,
    Garbage,
    Truncated,
    Oversize {
        bytes: u64,
    },
}

impl From<FaultRequest> for Fault {
    fn from(request: FaultRequest) -> Fault {
        let kind = match request.kind {
            FaultKindRequest::Status { status, error } => FaultKind::Status { status, error },
            FaultKindRequest::Delay { millis } => FaultKind::Delay(Duration::from_millis(millis)),
            FaultKindRequest::DropAfterCommit => FaultKind::DropAfterCommit,
            FaultKindRequest::Garbage => FaultKind::Garbage,
            FaultKindRequest::Truncated => FaultKind::Truncated,
            FaultKindRequest::Oversize { bytes } => FaultKind::Oversize { bytes },
        };
        Fault::new(request.route, kind, request.times)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_applies_exactly_the_given_number_of_times() {
        let mut table = FaultTable::default();
        table.add(Fault::new(Route::Heartbeat, FaultKind::Garbage, 2));
        assert_eq!(table.take(Route::Complete), None);
        assert_eq!(table.take(Route::Heartbeat), Some(FaultKind::Garbage));
        assert_eq!(table.take(Route::Heartbeat), Some(FaultKind::Garbage));
        assert_eq!(table.take(Route::Heartbeat), None);
    }

    #[test]
    fn an_any_route_fault_matches_every_endpoint() {
        let mut table = FaultTable::default();
        table.add(Fault::new(Route::Any, FaultKind::Truncated, 1));
        assert_eq!(table.take(Route::Spawn), Some(FaultKind::Truncated));
        assert_eq!(table.take(Route::Spawn), None);
    }

    #[test]
    fn the_admin_json_form_decodes_into_a_fault() {
        let request: FaultRequest = serde_json::from_str(
            r#"{"route":"claim_next","kind":{"type":"delay","millis":250},"times":3}"#,
        )
        .expect("valid fault json");
        let fault = Fault::from(request);
        assert_eq!(fault.route, Route::ClaimNext);
        assert_eq!(fault.kind, FaultKind::Delay(Duration::from_millis(250)));
        assert_eq!(fault.times, 3);
    }
}
