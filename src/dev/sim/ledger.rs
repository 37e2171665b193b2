//! The ledger: request counters, run transitions and online checks of the lease invariants.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::Serialize;

use super::faults::Route;

/// At most this many raw transition events are kept (the most recent ones).
const RECENT_TRANSITIONS: usize = 256;
/// At most this many violations are kept verbatim; the total is always counted.
const KEPT_VIOLATIONS: usize = 100;

/// A change in a run's life, as recorded by the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TransitionKind {
    Enqueued,
    Claimed,
    Heartbeat,
    Completed,
    Failed,
    Released,
    /// The lease passed its `lease_until` (detected by a forced expiry or by the sweep).
    Expired,
    RequeuedBySweep,
    /// The spawn reaper released a reaped child's lease.
    ReleasedByReaper,
    /// An operator cancelled the run: it is over, and its holder's lease with it.
    Canceled,
}

impl TransitionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TransitionKind::Enqueued => "enqueued",
            TransitionKind::Claimed => "claimed",
            TransitionKind::Heartbeat => "heartbeat",
            TransitionKind::Completed => "completed",
            TransitionKind::Failed => "failed",
            TransitionKind::Released => "released",
            TransitionKind::Expired => "expired",
            TransitionKind::RequeuedBySweep => "requeued_by_sweep",
            TransitionKind::ReleasedByReaper => "released_by_reaper",
            TransitionKind::Canceled => "canceled",
        }
    }
}

/// One recorded transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TransitionEvent {
    pub run_id: String,
    pub kind: TransitionKind,
    /// The session that held (or took) the lease, if any.
    pub holder: Option<String>,
    pub at: String,
}

/// A broken invariant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub run_id: String,
    pub rule: String,
    pub detail: String,
}

/// How many requests an endpoint answered with a status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestCount {
    pub route: String,
    pub status: u16,
    pub count: u64,
}

/// A point-in-time copy of the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct LedgerSnapshot {
    /// Current number of known runs per run status (`queued`, `claimed`, `completed`, …).
    pub runs_by_status: BTreeMap<String, u64>,
    /// Number of transitions per kind since start.
    pub transitions: BTreeMap<String, u64>,
    pub transitions_total: u64,
    /// The most recent transitions, oldest first.
    pub recent: Vec<TransitionEvent>,
    /// The first violations found (bounded); `violations_total` counts all of them.
    pub violations: Vec<Violation>,
    pub violations_total: u64,
    pub requests: Vec<RequestCount>,
}

impl LedgerSnapshot {
    pub fn transitions_of(&self, kind: TransitionKind) -> u64 {
        self.transitions.get(kind.as_str()).copied().unwrap_or(0)
    }

    pub fn runs_in_status(&self, status: &str) -> u64 {
        self.runs_by_status.get(status).copied().unwrap_or(0)
    }

    pub fn requests_for(&self, route: Route, status: u16) -> u64 {
        self.requests
            .iter()
            .filter(|count| count.route == route.as_str() && count.status == status)
            .map(|count| count.count)
            .sum()
    }
}

/// What the ledger itself believes about one run, independently of the simulator state.
#[derive(Debug, Default, Clone)]
struct RunView {
    holder: Option<String>,
    /// Sessions whose lease on this run was lost (expired, swept, reaped, released).
    lost_by: Vec<String>,
    terminal: bool,
}

/// The ledger. Memory is bounded: counters are aggregates, raw events are a fixed window, and
/// per-run views are dropped when the simulator forgets the run.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    runs: HashMap<String, RunView>,
    transitions: BTreeMap<TransitionKind, u64>,
    transitions_total: u64,
    recent: VecDeque<TransitionEvent>,
    violations: Vec<Violation>,
    violations_total: u64,
    requests: BTreeMap<(Route, u16), u64>,
}

impl Ledger {
    pub(crate) fn record_request(&mut self, route: Route, status: u16) {
        *self.requests.entry((route, status)).or_insert(0) += 1;
    }

    /// Records a transition and checks it against the invariants: a run never has two holders,
    /// a terminal call is never accepted from a holder that lost its lease, and a run finishes once.
    pub(crate) fn record(
        &mut self,
        run_id: &str,
        kind: TransitionKind,
        holder: Option<&str>,
        at: &str,
    ) {
        *self.transitions.entry(kind).or_insert(0) += 1;
        self.transitions_total += 1;
        if self.recent.len() == RECENT_TRANSITIONS {
            self.recent.pop_front();
        }
        self.recent.push_back(TransitionEvent {
            run_id: run_id.to_owned(),
            kind,
            holder: holder.map(str::to_owned),
            at: at.to_owned(),
        });
        let mut found = Vec::new();
        let view = self.runs.entry(run_id.to_owned()).or_default();
        match kind {
            TransitionKind::Enqueued => {}
            TransitionKind::Claimed => {
                if view.terminal {
                    found.push((
                        "claim_after_terminal",
                        "a finished run was claimed".to_owned(),
                    ));
                }
                if let Some(current) = &view.holder {
                    found.push((
                        "two_holders",
                        format!("claimed by {holder:?} while {current:?} still holds it"),
                    ));
                }
                view.holder = holder.map(str::to_owned);
                if let Some(holder) = holder {
                    view.lost_by.retain(|lost| lost != holder);
                }
            }
            TransitionKind::Heartbeat => {
                if view.holder.as_deref() != holder {
                    found.push((
                        "heartbeat_by_non_holder",
                        format!("heartbeat by {holder:?}, holder is {:?}", view.holder),
                    ));
                }
            }
            TransitionKind::Completed | TransitionKind::Failed => {
                if view.terminal {
                    found.push((
                        "finished_twice",
                        format!("{} after the run had finished", kind.as_str()),
                    ));
                }
                if let Some(holder) = holder
                    && view.lost_by.iter().any(|lost| lost == holder)
                    && view.holder.as_deref() != Some(holder)
                {
                    found.push((
                        "terminal_after_lease_loss",
                        format!(
                            "{} accepted from {holder:?}, whose lease was lost",
                            kind.as_str()
                        ),
                    ));
                } else if view.holder.as_deref() != holder {
                    found.push((
                        "terminal_by_non_holder",
                        format!(
                            "{} by {holder:?}, holder is {:?}",
                            kind.as_str(),
                            view.holder
                        ),
                    ));
                }
                view.terminal = true;
                view.holder = None;
            }
            TransitionKind::Canceled => {
                if let Some(previous) = view.holder.take()
                    && !view.lost_by.contains(&previous)
                {
                    view.lost_by.push(previous);
                }
                view.terminal = true;
            }
            TransitionKind::Released
            | TransitionKind::Expired
            | TransitionKind::RequeuedBySweep
            | TransitionKind::ReleasedByReaper => {
                if let Some(previous) = view.holder.take()
                    && !view.lost_by.contains(&previous)
                {
                    view.lost_by.push(previous);
                }
            }
        }
        for (rule, detail) in found {
            self.violate(run_id, rule, detail);
        }
    }

    /// Forgets the per-run view of a run the simulator no longer keeps.
    pub(crate) fn forget_run(&mut self, run_id: &str) {
        self.runs.remove(run_id);
    }

    fn violate(&mut self, run_id: &str, rule: &str, detail: String) {
        self.violations_total += 1;
        if self.violations.len() < KEPT_VIOLATIONS {
            self.violations.push(Violation {
                run_id: run_id.to_owned(),
                rule: rule.to_owned(),
                detail,
            });
        }
    }

    pub(crate) fn snapshot(&self, runs_by_status: BTreeMap<String, u64>) -> LedgerSnapshot {
        LedgerSnapshot {
            runs_by_status,
            transitions: self
                .transitions
                .iter()
                .map(|(kind, count)| (kind.as_str().to_owned(), *count))
                .collect(),
            transitions_total: self.transitions_total,
            recent: self.recent.iter().cloned().collect(),
            violations: self.violations.clone(),
            violations_total: self.violations_total,
            requests: self
                .requests
                .iter()
                .map(|((route, status), count)| RequestCount {
                    route: route.as_str().to_owned(),
                    status: *status,
                    count: *count,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(ledger: &Ledger) -> Vec<String> {
        ledger
            .violations
            .iter()
            .map(|violation| violation.rule.clone())
            .collect()
    }

    #[test]
    fn a_clean_claim_heartbeat_complete_sequence_has_no_violations() {
        let mut ledger = Ledger::default();
        ledger.record("run-1", TransitionKind::Enqueued, None, "t");
        ledger.record("run-1", TransitionKind::Claimed, Some("sess-a"), "t");
        ledger.record("run-1", TransitionKind::Heartbeat, Some("sess-a"), "t");
        ledger.record("run-1", TransitionKind::Completed, Some("sess-a"), "t");
        assert!(rules(&ledger).is_empty());
        assert_eq!(ledger.snapshot(BTreeMap::new()).transitions_total, 4);
    }

    #[test]
    fn a_second_holder_while_the_first_still_holds_is_flagged() {
        let mut ledger = Ledger::default();
        ledger.record("run-1", TransitionKind::Claimed, Some("sess-a"), "t");
        ledger.record("run-1", TransitionKind::Claimed, Some("sess-b"), "t");
        assert_eq!(rules(&ledger), vec!["two_holders"]);
    }

    #[test]
    fn a_terminal_call_from_a_holder_whose_lease_was_swept_is_flagged() {
        let mut ledger = Ledger::default();
        ledger.record("run-1", TransitionKind::Claimed, Some("sess-a"), "t");
        ledger.record(
            "run-1",
            TransitionKind::RequeuedBySweep,
            Some("sess-a"),
            "t",
        );
        ledger.record("run-1", TransitionKind::Claimed, Some("sess-b"), "t");
        ledger.record("run-1", TransitionKind::Completed, Some("sess-a"), "t");
        assert_eq!(rules(&ledger), vec!["terminal_after_lease_loss"]);
    }

    #[test]
    fn finishing_a_run_twice_is_flagged() {
        let mut ledger = Ledger::default();
        ledger.record("run-1", TransitionKind::Claimed, Some("sess-a"), "t");
        ledger.record("run-1", TransitionKind::Completed, Some("sess-a"), "t");
        ledger.record("run-1", TransitionKind::Failed, Some("sess-a"), "t");
        assert!(rules(&ledger).contains(&"finished_twice".to_owned()));
    }

    #[test]
    fn the_recent_window_and_violation_list_stay_bounded() {
        let mut ledger = Ledger::default();
        for index in 0..1000 {
            let run = format!("run-{index}");
            ledger.record(&run, TransitionKind::Completed, Some("sess-a"), "t");
            ledger.record(&run, TransitionKind::Completed, Some("sess-a"), "t");
        }
        let snapshot = ledger.snapshot(BTreeMap::new());
        assert_eq!(snapshot.recent.len(), RECENT_TRANSITIONS);
        assert_eq!(snapshot.violations.len(), KEPT_VIOLATIONS);
        assert!(snapshot.violations_total >= 1000);
    }

    #[test]
    fn request_counts_are_aggregated_per_route_and_status() {
        let mut ledger = Ledger::default();
        ledger.record_request(Route::ClaimNext, 204);
        ledger.record_request(Route::ClaimNext, 204);
        ledger.record_request(Route::ClaimNext, 200);
        let snapshot = ledger.snapshot(BTreeMap::new());
        assert_eq!(snapshot.requests_for(Route::ClaimNext, 204), 2);
        assert_eq!(snapshot.requests_for(Route::ClaimNext, 200), 1);
    }
}
