//! The slot table: which sessions are attached, each with its own worker, within
//! `worker.max_slots`. Slots share one pair of run histograms and one set of request counters,
//! and the counts of slots that are gone are kept, so `/metrics` totals never go down.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::api::ApiRequestCounters;
use crate::assembly::Worker;
use crate::attach::wire::{AttachRequest, RefusalReason};
use crate::util::sync::lock;
use crate::worker::{Counters, RunHistograms, Shutdown, StatusBoard};

/// One attached session's slot.
#[derive(Debug)]
pub struct Slot {
    pub id: u64,
    pub session: AttachRequest,
    pub attached_at: SystemTime,
    pub worker: Arc<Worker>,
    /// The slot's own: a child of the resident's, so a resident drain reaches every slot and a
    /// slot's stop reaches no other.
    pub shutdown: Shutdown,
}

/// A session that gets no slot: why, for the thin process, and what to say to people.
pub type Refusal = (RefusalReason, String);

/// The parts a slot's worker shares with the others.
#[derive(Clone, Debug)]
pub struct Shared {
    pub board: StatusBoard,
    pub requests: Arc<ApiRequestCounters>,
}

/// The slot table.
#[derive(Debug)]
pub struct Slots {
    max: usize,
    histograms: RunHistograms,
    requests: Arc<ApiRequestCounters>,
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    next_id: u64,
    live: BTreeMap<u64, Arc<Slot>>,
    /// Counts of the slots that are gone.
    retired: Counters,
}

impl Slots {
    /// A table of at most `max` slots.
    pub fn new(max: usize) -> Self {
        Slots {
            max,
            histograms: RunHistograms::default(),
            requests: Arc::default(),
            table: Mutex::default(),
        }
    }

    /// The most slots at once.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Gives `session` a slot whose worker `build` makes, unless the table is full or the session
    /// has one already. Building happens under the table's lock, so two attaches of one session
    /// cannot both get a slot.
    pub fn admit(
        &self,
        session: &AttachRequest,
        shutdown: Shutdown,
        build: impl FnOnce(Shared) -> Result<Worker, String>,
    ) -> Result<Arc<Slot>, Refusal> {
        let mut table = lock(&self.table);
        if let Some(slot) = table
            .live
            .values()
            .find(|slot| slot.session.session_id == session.session_id)
        {
            return Err((
                RefusalReason::AlreadyAttached,
                format!(
                    "session {} is attached already (slot {}, from process {}); it is freed when that process goes away",
                    session.session_id, slot.id, slot.session.pid
                ),
            ));
        }
        if table.live.len() >= self.max {
            return Err((
                RefusalReason::Full,
                format!(
                    "the resident worker serves {} sessions, its worker.max_slots; raise it or run another resident worker",
                    self.max
                ),
            ));
        }
        let shared = Shared {
            board: StatusBoard::with_histograms(self.histograms.clone()),
            requests: self.requests.clone(),
        };
        let worker = build(shared).map_err(|problem| (RefusalReason::BadRequest, problem))?;
        table.next_id += 1;
        let slot = Arc::new(Slot {
            id: table.next_id,
            session: session.clone(),
            attached_at: SystemTime::now(),
            worker: Arc::new(worker),
            shutdown,
        });
        table.live.insert(slot.id, slot.clone());
        Ok(slot)
    }

    /// Frees slot `id`, keeping its counts in the totals.
    pub fn free(&self, id: u64) {
        let mut table = lock(&self.table);
        if let Some(slot) = table.live.remove(&id) {
            let counters = slot.worker.status().counters;
            table.retired.add(&counters);
        }
    }

    /// The live slots, oldest first.
    pub fn live(&self) -> Vec<Arc<Slot>> {
        lock(&self.table).live.values().cloned().collect()
    }

    /// The counts of every slot, those gone included.
    pub fn totals(&self) -> Counters {
        let mut totals = self.retired();
        for slot in self.live() {
            totals.add(&slot.worker.status().counters);
        }
        totals
    }

    /// The counts of the slots that are gone.
    pub fn retired(&self) -> Counters {
        lock(&self.table).retired.clone()
    }

    /// The run histograms every slot observes into.
    pub fn histograms(&self) -> &RunHistograms {
        &self.histograms
    }

    /// The request counts of every slot's client.
    pub fn requests(&self) -> &Arc<ApiRequestCounters> {
        &self.requests
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attach::wire::PROTOCOL_VERSION;
    use crate::handler::HandlerConfig;
    use crate::{Config, MatchRule, WorkerBuilder};

    fn session(id: &str) -> AttachRequest {
        AttachRequest {
            version: PROTOCOL_VERSION,
            session_id: id.into(),
            agent: "agh-worker".into(),
            workspace_id: None,
            session_channel: None,
            pid: 7,
        }
    }

    fn build(shared: Shared) -> Result<Worker, String> {
        let config = Config {
            handlers: vec![HandlerConfig::noop("noop", MatchRule::default())],
            ..Config::default()
        };
        WorkerBuilder::new(config)
            .endpoint("http://127.0.0.1:9")
            .map_err(|err| err.to_string())?
            .status_board(shared.board)
            .request_counters(shared.requests)
            .build()
            .map_err(|err| err.to_string())
    }

    #[test]
    fn a_full_table_and_a_second_attach_of_one_session_are_refused_and_a_freed_slot_is_reused() {
        let slots = Slots::new(2);
        let first = slots
            .admit(&session("s1"), Shutdown::default(), build)
            .unwrap();
        let again = slots.admit(&session("s1"), Shutdown::default(), build);
        assert!(matches!(again, Err((RefusalReason::AlreadyAttached, _))));
        slots
            .admit(&session("s2"), Shutdown::default(), build)
            .unwrap();
        let third = slots.admit(&session("s3"), Shutdown::default(), build);
        let Err((RefusalReason::Full, message)) = third else {
            panic!("a third session must be refused");
        };
        assert!(message.contains("worker.max_slots"), "{message}");
        slots.free(first.id);
        let third = slots
            .admit(&session("s3"), Shutdown::default(), build)
            .unwrap();
        assert!(third.id > first.id, "slot ids are never reused");
        assert_eq!(slots.live().len(), 2);
    }

    #[test]
    fn a_worker_that_cannot_be_built_is_a_refusal_that_says_why() {
        let slots = Slots::new(1);
        let refused = slots.admit(&session("s1"), Shutdown::default(), |_| {
            Err("agh.agent is empty".to_string())
        });
        assert!(
            matches!(refused, Err((RefusalReason::BadRequest, ref why)) if why == "agh.agent is empty")
        );
        assert!(slots.live().is_empty());
    }

    #[test]
    fn a_freed_slot_s_counts_stay_in_the_totals() {
        let slots = Slots::new(1);
        let slot = slots
            .admit(&session("s1"), Shutdown::default(), build)
            .unwrap();
        slot.worker
            .status_board()
            .run_ended(crate::worker::RunEnd::Completed);
        assert_eq!(slots.totals().runs_completed, 1);
        slots.free(slot.id);
        assert_eq!(slots.retired().runs_completed, 1);
        assert_eq!(slots.totals().runs_completed, 1, "counted once, not again");
    }
}
