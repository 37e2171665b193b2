//! The soak's figures and its verdict: what it prints and whether an invariant broke.

use super::*;

/// Figures collected while soaking.
#[derive(Default)]
pub(super) struct Report {
    pub(super) elapsed: Duration,
    pub(super) finished_in_time: bool,
    pub(super) completed: u64,
    pub(super) failed: u64,
    pub(super) queued: u64,
    pub(super) claimed_at_end: u64,
    pub(super) swept_at_end: u64,
    pub(super) faults: BTreeMap<&'static str, u64>,
    pub(super) expiries: u64,
    pub(super) sim_restarts: u64,
    pub(super) kills: u64,
    pub(super) recoveries: Vec<Duration>,
    pub(super) unmeasured_recoveries: u64,
    pub(super) orphaned_by_kill: u64,
    pub(super) stale_markers: u64,
    /// Operator cancels of a run whose handler worked, and how many were seen through.
    pub(super) operator_cancels: u64,
    pub(super) cancels_checked: u64,
    /// Operator pauses (each resumed a moment later).
    pub(super) pauses: u64,
    /// Runs in status canceled at the end.
    pub(super) canceled: u64,
    /// Child sessions the handlers' spawns made.
    pub(super) children: u64,
    pub(super) transitions: BTreeMap<String, u64>,
    /// AGH's stops and starts of `acp` sessions.
    pub(super) sessions: super::sessions::SessionFigures,
    /// The resident worker and its attached sessions.
    pub(super) attached: super::attached::AttachedFigures,
    pub(super) violations: Vec<String>,
}

impl Report {
    pub(super) fn print(&self, plan: &Plan) {
        let secs = self.elapsed.as_secs_f64().max(0.001);
        let finished = self.completed + self.failed;
        let faults: u64 = self.faults.values().sum();
        let by_kind = counts_text(&self.faults);
        println!(
            "agh-worker soak: seed {}, {} runs, {} worker processes{}",
            plan.seed,
            plan.runs,
            plan.workers,
            if plan.quick { " (quick)" } else { "" }
        );
        println!(
            "  elapsed               {:>8.1} s{}",
            secs,
            if self.finished_in_time {
                ""
            } else {
                "  (stopped at the duration limit)"
            }
        );
        println!("  runs/s                {:>8.1}", finished as f64 / secs);
        println!("  runs completed        {:>8}", self.completed);
        println!("  runs failed           {:>8}", self.failed);
        println!("  runs still queued     {:>8}", self.queued);
        println!(
            "  runs canceled         {:>8}  (operator cancels of a working handler: {}, its group gone within {} ms: {})",
            self.canceled,
            self.operator_cancels,
            super::operator::CANCEL_TOLERANCE.as_millis(),
            self.cancels_checked
        );
        println!(
            "  tasks paused          {:>8}  (each resumed within 1.5 s)",
            self.pauses
        );
        println!(
            "  child sessions        {:>8}  (spawns taking {} ms, past the request timeout; one child per spawn)",
            self.children,
            super::SPAWN_DELAY.as_millis()
        );
        self.sessions.print();
        self.attached.print();
        println!(
            "  leases left at stop   {:>8}  (swept back to the queue: {})",
            self.claimed_at_end, self.swept_at_end
        );
        println!("  faults injected       {faults:>8}  ({by_kind})");
        println!("  leases force-expired  {:>8}", self.expiries);
        println!("  simulator restarts    {:>8}", self.sim_restarts);
        println!("  workers SIGKILLed     {:>8}", self.kills);
        let mut recoveries = self.recoveries.clone();
        recoveries.sort_unstable();
        match (recoveries.last(), recoveries.get(recoveries.len() / 2)) {
            (Some(worst), Some(median)) => println!(
                "  recovery after a kill {:>8} ms worst, {} ms median, {} measured, {} with no run left",
                worst.as_millis(),
                median.as_millis(),
                recoveries.len(),
                self.unmeasured_recoveries
            ),
            _ => println!(
                "  recovery after a kill      n/a  ({} with no run left)",
                self.unmeasured_recoveries
            ),
        }
        println!(
            "  handler groups of a worker SIGKILLed just before the end, left for the next start's sweep: {}",
            self.orphaned_by_kill
        );
        println!(
            "  handler markers left by a handler that died without cleaning up: {}",
            self.stale_markers
        );
        let transitions = counts_text(&self.transitions);
        println!("  ledger transitions    {transitions}");
        if self.violations.is_empty() {
            println!("  invariants            OK");
        } else {
            println!(
                "  invariants            {} VIOLATED:",
                self.violations.len()
            );
            for violation in &self.violations {
                println!("    - {violation}");
            }
        }
    }
}

/// `name count, name count, …`, in the map's order.
pub(super) fn counts_text<K: std::fmt::Display>(counts: &BTreeMap<K, u64>) -> String {
    counts
        .iter()
        .map(|(name, count)| format!("{name} {count}"))
        .collect::<Vec<_>>()
        .join(", ")
}
