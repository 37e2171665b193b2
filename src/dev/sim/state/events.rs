//! The task event log and its live subscribers, as AGH keeps them.
//!
//! One log for every task, numbered by one sequence global across tasks (AGH takes
//! `MAX(event_seq) + 1` over all task events: `internal/store/globaldb/global_db_task_aux.go`
//! ~1302-1311). Each record is kept as the stream event AGH sends (`TaskStreamEventPayload`,
//! `internal/api/contract/tasks.go` ~213-231; the run as a `TaskRunSummaryPayload`, ~168-188).
//! A subscriber gets the task's history after its cursor, then each new event; its buffer holds
//! 256 events, and a subscriber whose buffer is full is dropped, which ends its stream
//! (`internal/task/live.go` ~13, 45-54, 95-127).

use std::collections::VecDeque;

use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use super::super::clock::Timestamp;
use super::super::errors::SimError;
use super::{SimState, new_id};

/// The per-subscriber buffer of AGH's task stream.
pub(crate) const STREAM_BUFFER: usize = 256;
/// Task events kept per task for the context bundle.
const RECENT_EVENTS_PER_TASK: usize = 50;
/// Stream openings remembered for tests and the bench (the most recent ones).
const KEPT_OPENS: usize = 1_000;
/// Events the log keeps for replay (bounded memory over long soaks); older ones are forgotten.
const KEPT_EVENTS: usize = 50_000;

/// One stream subscriber: the task it follows and where its events go.
#[derive(Debug)]
struct Subscriber {
    task_id: String,
    events: mpsc::Sender<Value>,
}

/// How a stream was asked for, as the log remembers it for tests.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StreamOpen {
    pub task_id: String,
    /// The `after_sequence` query parameter.
    pub after_sequence: Option<i64>,
    /// The `Last-Event-ID` header (it wins over the query).
    pub last_event_id: Option<i64>,
}

/// The log, the live subscribers and the streams opened so far.
#[derive(Debug, Default)]
pub(crate) struct EventLog {
    sequence: i64,
    records: VecDeque<(String, Value)>,
    subscribers: Vec<Subscriber>,
    opened: Vec<StreamOpen>,
}

impl SimState {
    /// Appends an event about `task_id` (and `run_id`, when it is about a run) to the log, the
    /// task's recent events and every subscriber of the task; answers its sequence.
    pub(super) fn record_task_event(
        &mut self,
        task_id: &str,
        run_id: Option<&str>,
        event_type: &str,
        payload: Value,
        now: Timestamp,
    ) -> Option<i64> {
        self.events.sequence += 1;
        let sequence = self.events.sequence;
        let event_id = new_id("evt");
        let run = run_id
            .and_then(|id| self.runs.get(id))
            .map(|run| self.run_summary_payload(run));
        let task = self.tasks.get_mut(task_id)?;
        task.event_seq = sequence as u64;
        let actor = json!({ "kind": "daemon", "ref": "agh-sim" });
        if task.events.len() == RECENT_EVENTS_PER_TASK {
            task.events.pop_front();
        }
        let mut recent = payload.clone();
        if let (Some(id), Value::Object(map)) = (run_id, &mut recent) {
            map.entry("run_id").or_insert_with(|| json!(id));
        }
        task.events.push_back(json!({
            "event_id": event_id,
            "event_type": event_type,
            "sequence": sequence,
            "timestamp": now.to_rfc3339(),
            "payload": recent,
            "actor": actor,
        }));
        let task_ref = self.tasks.get(task_id).map(|task| self.task_ref(task));
        let mut timeline = Map::new();
        timeline.insert("sequence".into(), json!(sequence));
        timeline.insert("event_id".into(), json!(event_id));
        timeline.insert("task".into(), task_ref.unwrap_or(Value::Null));
        if let Some(run) = run {
            timeline.insert("run".into(), run);
        }
        timeline.insert("event_type".into(), json!(event_type));
        timeline.insert("actor".into(), actor);
        timeline.insert(
            "origin".into(),
            json!({ "kind": "daemon", "ref": event_type }),
        );
        if !payload.is_null() {
            timeline.insert("payload".into(), payload);
        }
        timeline.insert("timestamp".into(), json!(now.to_rfc3339()));
        let event = json!({ "sequence": sequence, "type": event_type, "timeline": timeline });
        // A full buffer drops the subscriber, and dropping its sender ends its stream.
        self.events.subscribers.retain(|subscriber| {
            subscriber.task_id != task_id || subscriber.events.try_send(event.clone()).is_ok()
        });
        if self.events.records.len() == KEPT_EVENTS {
            self.events.records.pop_front();
        }
        self.events.records.push_back((task_id.to_owned(), event));
        Some(sequence)
    }

    /// Opens a stream of `task_id`'s events after the cursor (the header wins over the query;
    /// none replays the whole history): the backlog, and the receiver of what follows.
    pub(crate) fn subscribe_task_events(
        &mut self,
        task_id: &str,
        after_sequence: Option<i64>,
        last_event_id: Option<i64>,
    ) -> Result<(Vec<Value>, mpsc::Receiver<Value>), SimError> {
        if !self.tasks.contains_key(task_id) {
            return Err(SimError::new(404, "task: task not found"));
        }
        if self.events.opened.len() == KEPT_OPENS {
            self.events.opened.remove(0);
        }
        self.events.opened.push(StreamOpen {
            task_id: task_id.to_owned(),
            after_sequence,
            last_event_id,
        });
        let after = last_event_id.or(after_sequence).unwrap_or(0);
        let backlog = self
            .events
            .records
            .iter()
            .filter(|(task, event)| task == task_id && event["sequence"].as_i64() > Some(after))
            .map(|(_, event)| event.clone())
            .collect();
        let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
        self.events.subscribers.push(Subscriber {
            task_id: task_id.to_owned(),
            events: sender,
        });
        Ok((backlog, receiver))
    }

    /// Ends every live stream of `task_id` (as a full buffer would); answers how many.
    pub(crate) fn drop_task_streams(&mut self, task_id: &str) -> usize {
        let before = self.events.subscribers.len();
        self.events
            .subscribers
            .retain(|subscriber| subscriber.task_id != task_id);
        before - self.events.subscribers.len()
    }

    /// The streams opened most recently (up to a thousand), oldest first.
    pub(crate) fn stream_opens(&self) -> Vec<StreamOpen> {
        self.events.opened.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::types::TaskSpec;
    use super::super::testing::{T0, claim, state};

    #[test]
    fn sequences_are_global_across_tasks_and_the_task_reference_carries_the_latest() {
        let (mut state, session) = state();
        let first = state.enqueue_task(TaskSpec::titled("a"), T0);
        let second = state.enqueue_task(TaskSpec::titled("b"), T0);
        let claimed = claim(&mut state, &session, T0).expect("a run");
        let seqs = |state: &super::SimState, task: &str| -> Vec<i64> {
            state
                .events
                .records
                .iter()
                .filter(|(id, _)| id == task)
                .filter_map(|(_, event)| event["sequence"].as_i64())
                .collect()
        };
        let (mine, other) = if claimed == first.run_id {
            (vec![1, 3], vec![2])
        } else {
            (vec![1], vec![2, 3])
        };
        assert_eq!(seqs(&state, &first.task_id), mine);
        assert_eq!(seqs(&state, &second.task_id), other);
        let claimed_task = state.runs[&claimed].task_id.clone();
        let task = &state.tasks[&claimed_task];
        assert_eq!(state.task_ref(task)["latest_event_seq"], 3);
    }

    #[test]
    fn a_cursor_skips_history_and_the_header_wins_over_the_query() {
        let (mut state, session) = state();
        let task = state.enqueue_task(TaskSpec::titled("a"), T0);
        claim(&mut state, &session, T0).expect("a run");
        let (all, _live) = state
            .subscribe_task_events(&task.task_id, None, None)
            .expect("known task");
        assert_eq!(all.len(), 2);
        let (after_query, _live) = state
            .subscribe_task_events(&task.task_id, Some(1), None)
            .expect("known task");
        assert_eq!(after_query.len(), 1);
        let (after_header, _live) = state
            .subscribe_task_events(&task.task_id, Some(0), Some(2))
            .expect("known task");
        assert!(after_header.is_empty());
        assert!(
            state
                .subscribe_task_events("task-unknown", None, None)
                .is_err_and(|err| err.status == 404)
        );
    }

    #[test]
    fn a_subscriber_whose_buffer_fills_is_dropped_and_its_stream_ends() {
        let (mut state, session) = state();
        let task = state.enqueue_task(TaskSpec::titled("a"), T0);
        let run = claim(&mut state, &session, T0).expect("a run");
        let (_, mut live) = state
            .subscribe_task_events(&task.task_id, None, None)
            .expect("known task");
        for _ in 0..super::STREAM_BUFFER + 1 {
            state
                .heartbeat(&session, &run, std::time::Duration::from_secs(60), T0)
                .expect("heartbeat");
        }
        let mut received = 0;
        while live.try_recv().is_ok() {
            received += 1;
        }
        assert_eq!(received, super::STREAM_BUFFER);
        assert!(matches!(
            live.try_recv(),
            Err(tokio::sync::mpsc::error::TryRecvError::Disconnected)
        ));
    }
}
