//! What the soak counts of the resident and its attached sessions, and how it prints them.

use super::*;

/// The figures of the resident and its sessions.
#[derive(Default)]
pub(in crate::dev::soak) struct AttachedFigures {
    pub(super) started: u64,
    pub(super) thin_killed: u64,
    pub(super) stops: StopCounts,
    pub(super) resident_kills: u64,
    pub(super) resident_restarts: u64,
    /// Handler groups the ended sessions' slots had at work, all seen gone.
    pub(super) groups_ended: u64,
    /// Ended sessions whose slot `/status` no longer listed, and those it could not be asked.
    pub(super) slots_freed: u64,
    pub(super) slots_unchecked: u64,
    /// Handler groups a killed resident left, gone by the next one's start.
    pub(super) groups_swept: u64,
    /// Runs an ended session held, and how many another session finished.
    pub(super) runs_in_hand: u64,
    pub(super) finished_elsewhere: u64,
    pub(super) log: Arc<ResidentLog>,
}

impl AttachedFigures {
    pub(in crate::dev::soak) fn print(&self) {
        let count = |value: &AtomicU64| value.load(Ordering::Relaxed);
        println!(
            "  attached sessions     {:>8}  (thin acp --attach processes on one resident worker; SIGKILLed: {}; stopped by AGH: {}, {})",
            self.started,
            self.thin_killed,
            self.stops.stopped,
            self.stops.text()
        );
        println!(
            "  resident SIGKILLed    {:>8}  (restarted: {}; attaches {}, of them again after a restart: {}, whose new slot adopted the lease: {} (adoptions in all: {}); handler groups left, swept: {})",
            self.resident_kills,
            self.resident_restarts,
            count(&self.log.attaches),
            count(&self.log.reattaches),
            count(&self.log.adopted_on_reattach),
            count(&self.log.adopted),
            self.groups_swept
        );
        println!(
            "  attached session ends {:>8}  (handler groups ended with the slot: {}; slot gone from /status within {} ms: {}, unanswered: {}; runs in hand {}, finished by another session: {})",
            self.thin_killed + self.stops.stopped + self.stops.stopped_at_end,
            self.groups_ended,
            SLOT_LISTED.as_millis(),
            self.slots_freed,
            self.slots_unchecked,
            self.runs_in_hand,
            self.finished_elsewhere
        );
    }

    pub(super) fn covered(&self) -> bool {
        self.thin_killed > 0
            && self.stops.stopped > 0
            && self.resident_restarts > 0
            && self.log.reattaches.load(Ordering::Relaxed) > 0
    }
}
